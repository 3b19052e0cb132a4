"""Ring timeout: a call nobody takes within RING_TIMEOUT_SECONDS is rejected, exactly once."""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask

from . import metrics
from .calls import now_ms
from .errors import StorageUnavailable
from .live import LiveState
from .telnyx_api import TelnyxClient, TelnyxError

log = logging.getLogger(__name__)

TIMEOUT_AGENT_ID = "ring-timeout"
TIMEOUT_AGENT_NAME = "Ring timeout"
SWEEP_INTERVAL_SECONDS = 1.0
# A claim still open this long belongs to a request that died (a killed worker, say).
STALE_CLAIM_SECONDS = 60


class RingTimeouts:
    """Sweeps the ringing set; every worker runs one, and the atomic claim picks who acts."""

    def __init__(self, live: LiveState, telnyx: TelnyxClient | None, timeout_seconds: int):
        self.live = live
        self.telnyx = telnyx
        self.timeout_ms = timeout_seconds * 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def sweep(self, now: int | None = None) -> list[str]:
        """Reject calls that rang too long and give back stale claims; return those rejected."""
        now = now_ms() if now is None else now
        rejected = []
        for call_control_id in self.live.ringing_longer_than(now - self.timeout_ms):
            claim = self.live.claim_call(
                call_control_id, TIMEOUT_AGENT_ID, TIMEOUT_AGENT_NAME, "timeout", now
            )
            if claim.result != "claimed":
                continue  # another worker (or an agent) got there first
            if self._reject(call_control_id):
                rejected.append(call_control_id)
        for call_control_id, claimer in self.live.claimed_before(now - STALE_CLAIM_SECONDS * 1000):
            if self.live.release_call(call_control_id, claimer, "claim went stale"):
                log.warning("released a stale claim", extra={"call_control_id": call_control_id})
        return rejected

    def _reject(self, call_control_id: str) -> bool:
        if self.telnyx is None:
            log.warning(
                "ring timeout: cannot reject without TELNYX_API_KEY",
                extra={"call_control_id": call_control_id},
            )
            return False
        try:
            self.telnyx.reject(call_control_id, "USER_BUSY")
        except TelnyxError as error:
            if error.call_already_ended:
                return False
            # Give it back: the next sweep tries again.
            self.live.release_call(call_control_id, TIMEOUT_AGENT_ID, "reject failed")
            return False
        metrics.RING_TIMEOUTS.inc()
        log.info("ring timeout: rejected the call", extra={"call_control_id": call_control_id})
        return True

    def start(self) -> None:
        """Run the sweep in the background of this process (a greenlet under gevent)."""
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ring-timeout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background sweep."""
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL_SECONDS):
            try:
                self.sweep()
            except StorageUnavailable as error:
                log.warning("ring timeout sweep: %s unavailable", error.dependency)
            except Exception:
                log.exception("ring timeout sweep failed")


def init_app(app: Flask) -> None:
    """Create the sweeper; it starts with the first request this process serves."""
    timeouts = RingTimeouts(
        app.extensions["live"], app.extensions["telnyx"], app.config["RING_TIMEOUT_SECONDS"]
    )
    app.extensions["ring_timeouts"] = timeouts
    if app.config["RING_TIMEOUT_SWEEP"]:

        @app.before_request
        def start_sweeping() -> None:
            timeouts.start()
