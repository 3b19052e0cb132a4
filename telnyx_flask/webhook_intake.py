"""Webhook intake, POST /api/telnyx/webhook: verify, parse, apply, acknowledge.

Applying an event is two steps in a fixed order: PostgreSQL first (call_records: dedupe and the
order-safe merge, one statement), then Redis (live_calls: the same state, by version), then a
nudge to the outbox for any command the event left owed. A 2xx only follows all of it, so
Telnyx's retry finishes whatever a failure interrupted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify, request

from . import metrics
from .call_records import record_event
from .db import Database, get_db
from .errors import ApiError, PayloadTooLarge, StorageUnavailable
from .live_calls import LiveCalls, get_live
from .outbox import Outbox, get_outbox
from .telnyx_api import get_telnyx
from .webhook_events import WebhookEvent, parse_webhook

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 256 * 1024

bp = Blueprint("webhooks", __name__)


@dataclass(frozen=True)
class AppliedEvent:
    """The outcome of one webhook: applied, duplicate or ignored, and what was announced."""

    result: str
    announced: tuple[str, ...] = ()


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
    recorded = record_event(db, event, body, record_calls=record_calls)
    if recorded.owed:
        outbox.nudge()
    if event.effect is None:
        return AppliedEvent("duplicate" if recorded.duplicate else "ignored")
    call = recorded.call
    announced: list[str] = []
    if call is not None and call.get("call_control_id"):
        announced = live.apply_call_state(call)
    return AppliedEvent("duplicate" if recorded.duplicate else "applied", tuple(announced))


def read_body(limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes even when no Content-Length was sent."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"webhook body is over {limit // 1024} KiB")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"webhook body is over {limit // 1024} KiB")
    return body


@bp.post("/api/telnyx/webhook")
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
        record_calls = current_app.config["RECORD_CALLS"] and get_telnyx()
        applied = apply_event(
            get_db(), get_live(), get_outbox(), event, body, record_calls=bool(record_calls)
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
