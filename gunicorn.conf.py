"""gunicorn settings for telnyx-flask: gevent workers, each streaming many long-lived requests."""

import multiprocessing
import os

port = os.environ.get("PORT") or os.environ.get("API_PORT") or "3000"
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{port}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", 10000))
# Streams are long-lived; the gevent worker heartbeats the arbiter on its own, so this only
# bounds a worker that is truly stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 60))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 20))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")


def post_worker_init(worker):
    """Make psycopg2 cooperative in each worker, once gevent has patched it, before it serves.

    Not post_fork: that runs before the worker monkey-patches the standard library, and nothing
    may import redis, ssl or psycopg2 ahead of the patch. (The pool also does this on first use.)
    """
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
