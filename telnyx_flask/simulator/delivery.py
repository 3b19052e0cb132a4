"""Signing and delivering webhooks from a background thread, with optional chaos.

One worker sends the queue in order. A call's events (one call_session_id) never overtake each
other: while an event waits for a redelivery or a delay, the later events of the same call wait
behind it, and other calls go ahead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import requests

from ..signature import sign

log = logging.getLogger(__name__)

USER_AGENT = "telnyx-simulator/1.0"


@dataclass(frozen=True)
class Chaos:
    """How deliveries misbehave on request: duplicated, delayed, or reordered per call."""

    duplicate: bool = False
    delay_ms: int = 0
    reorder: bool = False

    def updated(self, changes: dict[str, Any]) -> Chaos:
        """A copy with `changes` applied; ValueError for unknown names or bad values."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown delivery option(s): {', '.join(sorted(unknown))}")
        for name in ("duplicate", "reorder"):
            if name in changes and not isinstance(changes[name], bool):
                raise ValueError(f"{name} must be true or false")
        delay = changes.get("delay_ms", self.delay_ms)
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 60_000:
            raise ValueError("delay_ms must be an integer from 0 to 60000")
        return replace(self, **changes)


@dataclass(eq=False)  # compared by identity: the queue is searched for this very item
class _Outgoing:
    data: dict[str, Any]
    session_id: str
    chaos: Chaos
    queued_at: float
    not_before: float
    attempt: int = 1
    tries: int = 0
    duplicate: bool = False


@dataclass
class _Held:
    deadline: float
    items: list[_Outgoing] = field(default_factory=list)


class Delivery:
    """Queues webhook events and delivers them, signed, to one webhook URL."""

    def __init__(
        self,
        signing_seed: bytes,
        webhook_url: str | None,
        *,
        timeout: float = 5.0,
        max_attempts: int = 3,
        retry_backoff: float = 0.5,
        reorder_window: float = 1.0,
    ) -> None:
        """Nothing is sent until start()."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._seed = signing_seed
        self._default_url = webhook_url
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self._default_reorder_window = reorder_window
        self.reorder_window = reorder_window
        self.chaos = Chaos()
        self._changed = threading.Condition()
        self._queue: list[_Outgoing] = []
        self._held: dict[str, _Held] = {}
        self._session_chaos: dict[str, dict[str, Any]] = {}
        self._log: list[dict[str, Any]] = []
        self._in_flight: _Outgoing | None = None
        # Bumped by reset(), so an attempt in flight across a reset is not logged or retried.
        self._generation = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> Delivery:
        """Start the delivery thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="telnyx-simulator-delivery", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread; queued events are dropped."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def reset(self) -> None:
        """Drop queued events and the log; chaos and the webhook URL go back to their defaults."""
        with self._changed:
            self._queue.clear()
            self._held.clear()
            self._session_chaos.clear()
            self._log.clear()
            self.chaos = Chaos()
            self.webhook_url = self._default_url
            self.reorder_window = self._default_reorder_window
            self._generation += 1
            self._changed.notify_all()

    # --- settings ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The current chaos options and webhook URL."""
        with self._changed:
            return {
                **asdict(self.chaos),
                "reorder_window_ms": round(self.reorder_window * 1000),
                "webhook_url": self.webhook_url,
            }

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change chaos options, reorder_window_ms or webhook_url; ValueError if invalid."""
        changes = dict(changes)
        url = changes.pop("webhook_url", self.webhook_url)
        if url is not None and (not isinstance(url, str) or not url.startswith("http")):
            raise ValueError("webhook_url must be an http(s) URL or null")
        window = changes.pop("reorder_window_ms", None)
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or not 0 < window <= 600_000
        ):
            raise ValueError("reorder_window_ms must be an integer from 1 to 600000")
        with self._changed:
            self.chaos = self.chaos.updated(changes)
            self.webhook_url = url
            if window is not None:
                self.reorder_window = window / 1000
        return self.settings()

    @staticmethod
    def check_overrides(overrides: Any) -> dict[str, Any]:
        """Validate per-call chaos options (ValueError if invalid) and return them."""
        if not isinstance(overrides, dict):
            raise ValueError("delivery must be an object")
        Chaos().updated(overrides)
        return dict(overrides)

    # --- the calls' side (calls.EventSink) ---------------------------------------------------

    def open_session(self, session_id: str, overrides: dict[str, Any] | None) -> None:
        """Give one call its own chaos options, applied over the global ones."""
        if overrides:
            with self._changed:
                self._session_chaos[session_id] = self.check_overrides(overrides)

    def enqueue(self, data: dict[str, Any], session_id: str) -> None:
        """Queue one event (the `data` of a webhook) for delivery."""
        with self._changed:
            chaos = self.chaos.updated(self._session_chaos.get(session_id, {}))
            now = time.monotonic()
            item = _Outgoing(
                data=data,
                session_id=session_id,
                chaos=chaos,
                queued_at=time.time(),
                not_before=now + chaos.delay_ms / 1000,
            )
            if chaos.reorder:
                held = self._held.setdefault(session_id, _Held(now + self.reorder_window))
                held.items.append(item)
            else:
                self._queue.append(item)
            self._changed.notify_all()

    def close_session(self, session_id: str) -> None:
        """The call has sent its last event: release anything held back for reordering."""
        with self._changed:
            self._release(session_id)
            self._session_chaos.pop(session_id, None)
            self._changed.notify_all()

    def _release(self, session_id: str) -> None:
        held = self._held.pop(session_id, None)
        if held is not None:
            # Reversed rather than shuffled: with two or more events the order always changes.
            self._queue.extend(reversed(held.items))

    # --- observing ---------------------------------------------------------------------------

    def deliveries(
        self, event_type: str | None = None, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every delivery attempt so far, oldest first."""
        with self._changed:
            return [
                entry
                for entry in self._log
                if (event_type is None or entry["event_type"] == event_type)
                and (session_id is None or entry["call_session_id"] == session_id)
            ]

    def pending(self) -> int:
        """Events not yet delivered or given up on (queued, held back, or in flight)."""
        with self._changed:
            return self._pending()

    def _pending(self) -> int:
        # An event in flight stays in the queue until its attempt is over.
        return len(self._queue) + sum(len(h.items) for h in self._held.values())

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued, held back or in flight; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._queue and not self._held and self._in_flight is None,
                timeout=timeout,
            )

    # --- the worker --------------------------------------------------------------------------

    def _next_due(self, now: float) -> tuple[_Outgoing | None, float | None]:
        """The first event that may go now, else when to look again (None: wait for news)."""
        for session_id in [s for s, h in self._held.items() if h.deadline <= now]:
            self._release(session_id)
        wake = min((h.deadline for h in self._held.values()), default=None)
        blocked: set[str] = set()
        for item in self._queue:
            if item.session_id in blocked:
                continue
            blocked.add(item.session_id)  # only a call's first queued event may go
            if item.not_before <= now:
                return item, None
            wake = item.not_before if wake is None else min(wake, item.not_before)
        return None, wake

    def _run(self) -> None:
        with requests.Session() as http:
            while True:
                with self._changed:
                    while True:
                        if self._stopping:
                            return
                        now = time.monotonic()
                        item, wake = self._next_due(now)
                        if item is not None:
                            break
                        self._changed.wait(None if wake is None else wake - now)
                    self._in_flight = item
                    generation = self._generation
                    url = self.webhook_url
                try:
                    status, error = self._send(http, item, url)
                except Exception as exc:
                    # A bug here must not kill the only thread that delivers anything.
                    log.exception("webhook %s could not be sent", item.data["id"])
                    status, error = None, f"not sent: {type(exc).__name__}"
                with self._changed:
                    self._in_flight = None
                    if generation == self._generation:
                        self._after_attempt(item, url, status, error)
                    self._changed.notify_all()

    def _send(
        self, http: requests.Session, item: _Outgoing, url: str | None
    ) -> tuple[int | None, str | None]:
        if url is None:
            return None, "no webhook_url is configured"
        body = json.dumps(
            {"data": item.data, "meta": {"attempt": item.attempt, "delivered_to": url}}
        ).encode()
        # Signed afresh for every attempt, so a redelivery carries a current timestamp.
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **sign(self._seed, body, int(time.time())),
        }
        try:
            with http.post(url, data=body, headers=headers, timeout=self.timeout) as response:
                return response.status_code, None
        except requests.Timeout:
            return None, f"no answer within {self.timeout:g} s"
        except requests.RequestException as exc:
            return None, f"no answer: {type(exc).__name__}"

    def _after_attempt(
        self, item: _Outgoing, url: str | None, status: int | None, error: str | None
    ) -> None:
        item.tries += 1
        self._log.append(
            {
                "event_type": item.data["event_type"],
                "event_id": item.data["id"],
                "call_session_id": item.session_id,
                "attempt": item.attempt,
                "status": status,
                "error": error,
                "duplicate": item.duplicate,
                "delivered_to": url,
                "queued_at": item.queued_at,
                "sent_at": time.time(),
            }
        )
        delivered = status is not None and 200 <= status < 300
        position = self._queue.index(item)
        if not delivered and url is not None and item.tries < self.max_attempts:
            log.info(
                "webhook %s %s attempt %d failed (%s); retrying",
                item.data["event_type"],
                item.data["id"],
                item.attempt,
                status or error,
            )
            item.attempt += 1
            item.not_before = time.monotonic() + self.retry_backoff * 2 ** (item.tries - 1)
            return
        del self._queue[position]
        if not delivered:
            log.warning(
                "webhook %s %s not delivered after %d attempt(s): %s",
                item.data["event_type"],
                item.data["id"],
                item.tries,
                status or error,
            )
        elif item.chaos.duplicate and not item.duplicate:
            # The copy takes the original's place, so it still comes before the call's next event.
            twin = replace(
                item,
                attempt=item.attempt + 1,
                tries=0,
                duplicate=True,
                not_before=time.monotonic() + item.chaos.delay_ms / 1000,
            )
            self._queue.insert(position, twin)
