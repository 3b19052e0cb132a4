"""gunicorn settings for telnyx-flask: gevent workers, each streaming many long-lived requests."""

import glob
import multiprocessing
import os
import shutil
import signal
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
    """Make psycopg2 cooperative in each worker, once gevent has patched it, make SIGTERM
    drain the worker, and start its background work, before it serves.

    Not post_fork: that runs before the worker monkey-patches the standard library, and nothing
    may import redis, ssl or psycopg2 ahead of the patch. (The pool also does this on first use.)
    """
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    _drain_on_sigterm(worker)
    # The worker's background loops (live-state rebuild, ring timeout, owed Telnyx commands,
    # silent calls) start now, not with its first request: a new worker after a crash must
    # deliver what the dead one owed even if no request comes its way.
    from telnyx_flask.background import start_background_work

    start_background_work(worker.wsgi)


def worker_int(worker):
    """SIGINT/SIGQUIT (a quick stop): give open streams their retry hint in the moment left."""
    _start_draining(worker)


def _drain_on_sigterm(worker):
    """On SIGTERM (a graceful stop), end the worker's event streams at once (DESIGN.md, 12).

    gunicorn's own SIGTERM handler only clears `worker.alive`: the gevent worker then stops
    accepting and waits, up to graceful_timeout, for open requests, and an event stream never
    ends by itself. So the handler also starts the app's draining: open streams end with a short
    retry hint (pages resume elsewhere with Last-Event-ID), new ones and /readyz answer 503, and
    ordinary requests in flight finish as before.
    """
    stop_accepting = worker.handle_exit

    def handle_exit(sig, frame):
        stop_accepting(sig, frame)
        _start_draining(worker)

    signal.signal(signal.SIGTERM, handle_exit)
    # As gunicorn set it: SIGTERM must not interrupt system calls of requests in flight.
    signal.siginterrupt(signal.SIGTERM, False)

    serve = worker.handle_request

    def handle_request(*args):
        kept_open = serve(*args)
        if not worker.alive:
            # Close, rather than keep alive, a connection whose request began before the stop:
            # an idle keep-alive would hold the worker for up to `keepalive` seconds, and a page
            # would send its reconnect down it, to this stopping worker.
            raise StopIteration
        return kept_open

    worker.handle_request = handle_request


def _start_draining(worker):
    import gevent

    from telnyx_flask.lifecycle import start_draining

    # A signal handler may run inside gevent's hub, where nothing may block: wake the streams
    # from a greenlet of their own.
    gevent.spawn(start_draining, worker.wsgi)
