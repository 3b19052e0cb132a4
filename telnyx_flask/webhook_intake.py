"""Webhook intake, POST /api/telnyx/webhook: verify, parse, apply, acknowledge.

Applying an event is two steps in a fixed order: PostgreSQL first (call_records: dedupe and the
order-safe merge, one statement), then Redis (live_calls: the same state, by version), then a
nudge to the outbox for any command the event left owed. A 2xx only follows all of it, so
Telnyx's retry finishes whatever a failure interrupted.

Webhooks that arrive together in one worker are applied together (group_commit.py): one
statement and one transaction in PostgreSQL and one script call in Redis for the batch, each
request still answered with its own outcome. WEBHOOK_BATCH_WINDOW_MS=0 applies each alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import Blueprint, Flask, Request, current_app, jsonify, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from . import metrics, presence
from .call_records import RecordedEvent, record_events
from .db import Database, get_db
from .errors import ApiError, PayloadTooLarge, StorageUnavailable
from .group_commit import GroupCommit
from .live_calls import LiveCalls, get_live
from .outbox import Outbox, get_outbox
from .telnyx_api import get_telnyx
from .webhook_events import WebhookEvent, parse_webhook

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 256 * 1024
WEBHOOK_PATH = "/api/telnyx/webhook"

bp = Blueprint("webhooks", __name__)


@dataclass(frozen=True)
class AppliedEvent:
    """The outcome of one webhook: applied, duplicate or ignored, and what was announced."""

    result: str
    announced: tuple[str, ...] = ()


@dataclass(frozen=True)
class Incoming:
    """A verified, parsed webhook, waiting to be applied."""

    event: WebhookEvent
    body: bytes


def apply_event(
    db: Database,
    live: LiveCalls,
    outbox: Outbox,
    event: WebhookEvent,
    body: bytes,
    record_calls: bool,
) -> AppliedEvent:
    """Make an event durable in PostgreSQL, then live in Redis, then wake what it owes Telnyx.

    PostgreSQL goes first so that nothing is announced that is not durable; a command the
    event owes (record_start) is written in that same transaction (invariant 9). A duplicate
    still reaches Redis: when an earlier attempt committed but Redis failed, this is the retry
    that finishes the job, and Redis's version check makes a true repeat a no-op.
    """
    [outcome] = apply_events(db, live, outbox, [Incoming(event, body)], record_calls)
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


def apply_events(
    db: Database, live: LiveCalls, outbox: Outbox, batch: list[Incoming], record_calls: bool
) -> list[AppliedEvent | ApiError]:
    """apply_event for a batch: one PostgreSQL statement, then one Redis script call; per
    event, its outcome or the error that is its alone (BadWebhook, or Redis failing that one
    state). StorageUnavailable is raised when a store fails the batch as a whole.

    PostgreSQL gets the batch ordered by call, so that concurrent batches lock the calls they
    share in one order; Redis gets the states in that order too, so one call's versions rise.
    """
    order = sorted(
        range(len(batch)),
        key=lambda i: (batch[i].event.call_session_id or "", batch[i].event.event_id),
    )
    recorded = record_events(
        db, [(batch[i].event, batch[i].body) for i in order], record_calls=record_calls
    )
    if any(isinstance(r, RecordedEvent) and r.owed for r in recorded):
        outbox.nudge()
    outcomes: list[AppliedEvent | ApiError | None] = [None] * len(batch)
    states: list[dict] = []
    live_results: list[tuple[int, str]] = []
    for i, r in zip(order, recorded, strict=True):
        if isinstance(r, ApiError):
            outcomes[i] = r
            continue
        effect = batch[i].event.effect
        result = "duplicate" if r.duplicate else "ignored" if effect is None else "applied"
        if effect is not None and r.call is not None and r.call.get("call_control_id"):
            states.append(live.live_state(r.call))
            live_results.append((i, result))
        else:
            outcomes[i] = AppliedEvent(result)
    if states:
        applied = live.apply_call_states(states)
        for (i, result), announced in zip(live_results, applied, strict=True):
            if isinstance(announced, ApiError):
                outcomes[i] = announced
            else:
                outcomes[i] = AppliedEvent(result, tuple(announced))
        if any(isinstance(a, list) and "call.ended" in a for a in applied):
            presence.settle(live)  # whoever had an ended call is no longer on it
    finished = [outcome for outcome in outcomes if outcome is not None]
    if len(finished) != len(batch):
        raise RuntimeError(f"{len(batch) - len(finished)} event(s) of a batch got no outcome")
    return finished


def apply_batch(batch: list[Incoming]) -> list[AppliedEvent | ApiError]:
    """The group commit's `apply`: apply_events with this application's stores and settings.
    It runs in the request context of the request that opened the batch."""
    metrics.WEBHOOK_BATCH_SIZE.observe(len(batch))
    return apply_events(get_db(), get_live(), get_outbox(), batch, record_calls=_record_calls())


def _record_calls() -> bool:
    return bool(current_app.config["RECORD_CALLS"] and get_telnyx())


class SessionsExceptWebhooks(SecureCookieSessionInterface):
    """Flask's cookie session, not opened for Telnyx's webhooks: they carry no cookie, and
    parsing and signing cookies on the busiest route would be work for nothing."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path == WEBHOOK_PATH:
            return None  # Flask substitutes its (empty, never saved) null session
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Register the route and, unless WEBHOOK_BATCH_WINDOW_MS is 0, the worker's group commit."""
    app.session_interface = SessionsExceptWebhooks()
    window_ms = app.config["WEBHOOK_BATCH_WINDOW_MS"]
    app.extensions["webhook_batches"] = (
        GroupCommit(apply_batch, window_ms / 1000, app.config["WEBHOOK_BATCH_MAX_EVENTS"])
        if window_ms > 0
        else None
    )
    app.register_blueprint(bp)


def read_body(limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes even when no Content-Length was sent."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"webhook body is over {limit // 1024} KiB")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"webhook body is over {limit // 1024} KiB")
    return body


@bp.post(WEBHOOK_PATH)
def receive_webhook():
    """Take one Telnyx webhook; 2xx only once it is in PostgreSQL and in the live state."""
    started = time.perf_counter()
    event_type, result = None, "failed"
    try:
        body = read_body(MAX_WEBHOOK_BYTES)
        verifier = current_app.extensions["webhook_verifier"]
        if verifier is not None:
            verifier.verify(request.headers, body)
        event = parse_webhook(body)
        event_type = event.event_type
        batches: GroupCommit[Incoming, AppliedEvent] | None = current_app.extensions[
            "webhook_batches"
        ]
        if batches is not None:
            applied = batches.submit(Incoming(event, body))
        else:
            applied = apply_event(
                get_db(), get_live(), get_outbox(), event, body, record_calls=_record_calls()
            )
        result = applied.result
    except StorageUnavailable:
        raise  # failed: Telnyx retries
    except ApiError:
        result = "rejected"  # bad signature, malformed, too large: a retry won't help
        raise
    finally:
        metrics.webhook_handled(event_type, result, time.perf_counter() - started)
    # One line per webhook costs a write per request; it is there when LOG_LEVEL=DEBUG.
    log.debug(
        "webhook %s %s result=%s",
        event.event_type,
        event.event_id,
        applied.result,
        extra={"call_control_id": event.call_control_id},
    )
    return jsonify({"result": applied.result, "event_id": event.event_id})
