"""gunicorn settings for telnyx-flask: gevent workers, each streaming many long-lived requests."""

import glob
import multiprocessing
import os
import shutil
import tempfile

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
# Request lines come from the app itself (with request ids, and as JSON with LOG_FORMAT=json).
control_socket_disable = True

# /metrics adds up every worker's values: prometheus-client's multiprocess mode keeps them in
# files here. Set before any worker imports the app; emptied at each start (stale files from a
# previous run would be added in).
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="telnyx-flask-metrics-")


def on_starting(server):
    """Start from empty metrics files."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for path in glob.glob(os.path.join(folder, "*.db")):
        os.remove(path)


def on_exit(server):
    """Remove the metrics folder made for this run (one that was set is left alone)."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    """A worker's live gauges (open streams) stop counting when it exits."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Make psycopg2 cooperative in each worker, once gevent has patched it, before it serves.

    Not post_fork: that runs before the worker monkey-patches the standard library, and nothing
    may import redis, ssl or psycopg2 ahead of the patch. (The pool also does this on first use.)
    """
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
