"""Telnyx commands that follow from webhooks (start recording), issued off the request path."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from flask import Flask, current_app

from .telnyx_api import TelnyxClient, TelnyxError

log = logging.getLogger(__name__)


class FollowUps:
    """A small pool that sends follow-up commands so the webhook answers in milliseconds.

    Under gevent the pool's threads are greenlets. Each command carries a deterministic
    command_id, so a repeat (a retried webhook, another worker) is ignored by Telnyx.
    """

    def __init__(self, client: TelnyxClient | None, record_calls: bool, workers: int = 4):
        self.client = client
        self.record_calls = record_calls
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def _submit(self, fn, *args) -> Future:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="telnyx-followup")
        return self._executor.submit(fn, *args)

    def call_answered(self, call_control_id: str) -> Future | None:
        """The caller's leg was answered: start recording it, when recording is on."""
        if not self.record_calls:
            return None
        if self.client is None:
            log.warning(
                "not recording: TELNYX_API_KEY is not set",
                extra={"call_control_id": call_control_id},
            )
            return None
        return self._submit(self._start_recording, call_control_id)

    def _start_recording(self, call_control_id: str) -> None:
        try:
            self.client.record_start(call_control_id, format="mp3", channels="dual")
        except TelnyxError:
            # The client has logged it once, with the call and the command_id. A call that ended
            # first (422 90018) simply has nothing to record.
            return
        log.info("recording started", extra={"call_control_id": call_control_id})

    def shutdown(self, wait: bool = True) -> None:
        """Finish queued commands (tests and worker exit)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None


def get_followups() -> FollowUps:
    """The application's FollowUps."""
    return current_app.extensions["followups"]


def init_app(app: Flask) -> None:
    """Create the Telnyx client and the follow-up pool for this app."""
    api_key = app.config["TELNYX_API_KEY"]
    client = TelnyxClient(api_key, app.config["TELNYX_API_BASE"]) if api_key else None
    app.extensions["telnyx"] = client
    app.extensions["followups"] = FollowUps(client, app.config["RECORD_CALLS"])
