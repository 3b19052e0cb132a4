"""POST /api/telnyx/webhook: verify, parse, apply, acknowledge."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request

from . import metrics
from .calls import apply_event
from .db import get_db
from .errors import ApiError, PayloadTooLarge, StorageUnavailable
from .live_calls import get_live
from .outbox import get_outbox
from .webhook_events import parse_webhook

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 256 * 1024

bp = Blueprint("webhooks", __name__)


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
        record_calls = current_app.config["RECORD_CALLS"] and current_app.extensions["telnyx"]
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
