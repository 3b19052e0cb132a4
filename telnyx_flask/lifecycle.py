"""Whether this worker is stopping (invariant 12): one flag, and who to tell when it flips.

gunicorn.conf.py starts draining when the worker gets SIGTERM; tests call `start_draining(app)`.
While draining, /readyz answers 503, new event streams are refused with 503, and open ones
end at once with a `retry:` hint so their pages resume elsewhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask, current_app

from .errors import ApiError

log = logging.getLogger(__name__)


class WorkerDraining(ApiError):
    """This worker is stopping: the client should go to another one."""

    status = 503
    code = "draining"

    def __init__(self):
        super().__init__("this server is shutting down; reconnect to another")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Draining:
    """The stopping flag of one app in one process, and the callbacks its start runs (once)."""

    def __init__(self):
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def is_draining(self) -> bool:
        """True once start() ran."""
        return self._started.is_set()

    def on_start(self, callback: Callable[[], None]) -> None:
        """Run `callback` when draining starts (at once if it already has)."""
        with self._lock:
            if not self._started.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def start(self) -> None:
        """Start draining; a second call does nothing."""
        with self._lock:
            if self._started.is_set():
                return
            self._started.set()
            callbacks, self._callbacks = self._callbacks, []
        log.info("draining: ending open event streams, refusing new ones")
        for callback in callbacks:
            # One failing callback must not keep the others (and the exit) from happening.
            try:
                callback()
            except Exception:
                log.exception("draining: a shutdown callback failed")


def get_draining() -> Draining:
    """This app's draining state."""
    return current_app.extensions["lifecycle"]


def start_draining(app: Flask) -> None:
    """Start draining `app` (gunicorn's SIGTERM hook, or a test)."""
    app.extensions["lifecycle"].start()


def init_app(app: Flask) -> None:
    """Give the app its draining state (before the modules that register callbacks on it)."""
    app.extensions["lifecycle"] = Draining()
