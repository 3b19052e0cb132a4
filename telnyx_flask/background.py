"""Each worker's background work: loops started when the worker boots (gunicorn.conf.py), or
with the first request a process serves under another server.

- live state: rebuild Redis from PostgreSQL when its generation marker is gone (every second);
- ring timeout: reject calls that rang too long, give back stale claims (every second);
- outbox: deliver the commands owed to Telnyx (every second, and at once when nudged);
- silent calls: ask Telnyx about calls with no webhook for too long (every 30 s);
- transfer offers: close those nobody answered within TRANSFER_RING_SECONDS (every second).
- presence: work out every agent's presence (their choice, pages and calls), every second.

Every worker runs all of them; atomic claims, row leases and a Redis lock decide who acts.
Under gevent the threads are greenlets.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from flask import Flask

from .db import Database
from .errors import StorageUnavailable
from .live_calls import LiveCalls
from .live_rebuild import ensure_live_state
from .outbox import Outbox, run_delivery
from .presence import LivePresence
from .reconcile import SilentCalls
from .ring_timeout import RingTimeouts
from .transfer_offers import TransferOffers
from .transfers import expire_offers
from .voicemail import voicemail_plan

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class BackgroundWork:
    """This process's loops; `start()` is idempotent per process, `stop()` ends them."""

    def __init__(
        self,
        db: Database,
        live: LiveCalls,
        outbox: Outbox,
        ring_timeouts: RingTimeouts,
        silent_calls: SilentCalls,
        silent_check_seconds: float,
        transfer_offers: TransferOffers,
        presence: LivePresence,
    ):
        self.db = db
        self.live = live
        self.outbox = outbox
        self.ring_timeouts = ring_timeouts
        self.silent_calls = silent_calls
        self.silent_check_seconds = silent_check_seconds
        self.transfer_offers = transfer_offers
        self.presence = presence
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pid: int | None = None
        self._lock = threading.Lock()
        # Once stopped (the worker drains), a request served afterwards must not start it again.
        self._stopped = False

    def start(self) -> None:
        """Start the loops in this process, once."""
        with self._lock:
            if self._stopped or (self._threads and self._pid == os.getpid()):
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._threads = [
                self._spawn("live-state", self._every(TICK_SECONDS, self._keep_live_state)),
                self._spawn("ring-timeout", self._every(TICK_SECONDS, self.ring_timeouts.sweep)),
                self._spawn("outbox", lambda: run_delivery(self.outbox, self._stop, TICK_SECONDS)),
                self._spawn(
                    "silent-calls", self._every(self.silent_check_seconds, self.silent_calls.check)
                ),
                self._spawn("transfer-expiry", self._every(TICK_SECONDS, self._expire_transfers)),
                self._spawn("presence", self._every(TICK_SECONDS, self.presence.tick)),
            ]

    def stop(self, wait: bool = True) -> None:
        """End the loops for good (each finishes the step it is in); `wait` for them to."""
        self._stopped = True
        self._stop.set()
        self.outbox.nudge()
        if wait and self._pid == os.getpid():
            for thread in self._threads:
                thread.join(timeout=5)
        self._threads = []

    def _keep_live_state(self) -> None:
        ensure_live_state(self.db, self.live)

    def _expire_transfers(self) -> None:
        expire_offers(self.transfer_offers)

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _every(self, seconds: float, step: Callable[[], object]) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    step()
                except StorageUnavailable as error:
                    log.warning("%s: %s unavailable", step.__name__, error.dependency)
                except Exception:
                    log.exception("background step %s failed", step.__name__)

        return loop


def start_background_work(app: Flask) -> None:
    """Start this process's loops now, if BACKGROUND_TASKS is on (gunicorn's post_worker_init:
    a worker that serves no request still delivers what is owed)."""
    if app.config["BACKGROUND_TASKS"]:
        app.extensions["background"].start()


def init_app(app: Flask) -> None:
    """Create the ring timeout, silent-call check and the loops; start them with the first
    request when BACKGROUND_TASKS is on (tests that drive each step by hand turn it off), and
    stop them when the worker drains (a new worker takes over what they were doing)."""
    config = app.config
    db, live, outbox = app.extensions["database"], app.extensions["live"], app.extensions["outbox"]
    ring_timeouts = RingTimeouts(
        live,
        outbox,
        config["RING_TIMEOUT_SECONDS"],
        config["CLAIM_LEASE_SECONDS"],
        voicemail_plan=voicemail_plan(config) if config["VOICEMAIL"] else None,
    )
    silent_calls = SilentCalls(
        db,
        live,
        app.extensions["telnyx"],
        ringing_after_seconds=config["SILENT_RINGING_CALL_SECONDS"],
        answered_after_seconds=config["SILENT_ANSWERED_CALL_SECONDS"],
    )
    work = BackgroundWork(
        db,
        live,
        outbox,
        ring_timeouts,
        silent_calls,
        config["SILENT_CALL_CHECK_SECONDS"],
        app.extensions["transfer_offers"],
        app.extensions["presence"],
    )
    app.extensions["ring_timeouts"] = ring_timeouts
    app.extensions["silent_calls"] = silent_calls
    app.extensions["background"] = work
    # No new step starts once the worker stops; a command being sent finishes or its lease ends.
    app.extensions["lifecycle"].on_start(lambda: work.stop(wait=False))
    if config["BACKGROUND_TASKS"]:

        @app.before_request
        def start_background_work() -> None:
            work.start()
