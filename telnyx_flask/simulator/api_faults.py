"""Telnyx misbehaving on request: API requests refused with an error, or handled slowly.

Both are queued per action ("answer", "hangup", ... or "status" for GET /v2/calls/<id>) and
taken by requests in the order they arrive.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import UNEXPECTED_ERROR, TelnyxApiError

MAX_DELAY_SECONDS = 120.0


class Refusals:
    """Errors to answer the next requests of an action with, instead of handling them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, list[TelnyxApiError]] = {}

    def add(self, action: str, error: TelnyxApiError, times: int) -> None:
        """Refuse the next `times` requests of `action` with `error`."""
        with self._lock:
            self._queued.setdefault(action, []).extend([error] * times)

    def take(self, action: str) -> TelnyxApiError | None:
        """The error the next `action` request gets, if one is queued."""
        with self._lock:
            queued = self._queued.get(action)
            return queued.pop(0) if queued else None

    def clear(self) -> None:
        """Forget every queued refusal."""
        with self._lock:
            self._queued.clear()


class ResetWhileWaiting(TelnyxApiError):
    """A delayed request cut short by /sim/reset: it belongs to a run the reset forgot."""

    def __init__(self) -> None:
        super().__init__(500, UNEXPECTED_ERROR, "the simulator was reset while this request waited")


@dataclass
class Delay:
    """One request held back: what it was, how long it waits, and whether it still does."""

    action: str
    call_control_id: str
    seconds: float
    started_at: float
    generation: int  # of the Delays when taken: a reset since then ends the wait
    waiting: bool = True

    def snapshot(self) -> dict[str, Any]:
        """The delayed request as GET /sim/delays shows it."""
        return {
            "action": self.action,
            "call_control_id": self.call_control_id,
            "seconds": self.seconds,
            "started_at": self.started_at,
            "waiting": self.waiting,
        }


class Delays:
    """Waits before the next requests of an action are handled, as a slow Telnyx makes them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queued: dict[str, list[float]] = {}
        self._log: list[Delay] = []
        # Bumped by clear(), so a request waiting across a reset knows to give up.
        self._generation = 0

    def add(self, action: str, seconds: float, times: int) -> None:
        """Hold back the next `times` requests of `action` for `seconds` each."""
        if not 0 < seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"seconds must be more than 0 and at most {MAX_DELAY_SECONDS:g}")
        with self._changed:
            self._queued.setdefault(action, []).extend([float(seconds)] * times)

    def take(self, action: str, call_control_id: str) -> Delay | None:
        """The delay the next `action` request gets, if one is queued; logged as it starts."""
        with self._changed:
            queued = self._queued.get(action)
            if not queued:
                return None
            delay = Delay(action, call_control_id, queued.pop(0), time.time(), self._generation)
            self._log.append(delay)
            self._changed.notify_all()
            return delay

    def wait(self, delay: Delay) -> None:
        """Block for the delay; raise ResetWhileWaiting if clear() is called meanwhile."""
        # Only this object's own condition is involved, and waiting releases it: other requests,
        # and the calls' lock, are never held up by a delayed one.
        with self._changed:
            reset = self._changed.wait_for(
                lambda: self._generation != delay.generation, timeout=delay.seconds
            )
            delay.waiting = False
            self._changed.notify_all()
        if reset:
            raise ResetWhileWaiting()

    def snapshot(self) -> dict[str, Any]:
        """Delays still queued per action, and every request held back so far, oldest first."""
        with self._changed:
            return self._snapshot()

    def wait_for_delayed(self, n: int, timeout: float) -> tuple[dict[str, Any], bool]:
        """Block until at least n requests have been held back; return the snapshot and whether."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._log) >= n, timeout=timeout)
            return self._snapshot(), arrived

    def _snapshot(self) -> dict[str, Any]:
        return {
            "queued": {action: list(each) for action, each in self._queued.items() if each},
            "delayed": [delay.snapshot() for delay in self._log],
        }

    def clear(self) -> None:
        """Forget queued delays and the log, and wake every waiting request to give up."""
        with self._changed:
            self._queued.clear()
            self._log.clear()
            self._generation += 1
            self._changed.notify_all()
