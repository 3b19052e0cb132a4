"""The durable record of calls in PostgreSQL: applying a webhook event (dedupe and the
order-safe merge, one statement: apply_call_event in sql/), naming the agent on a call, and
ending a call Telnyx says is over. history.py reads what these write."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.errors
from psycopg2.extras import Json

from .db import Database, one_row
from .errors import BadWebhook
from .webhook_events import WebhookEvent

APPLY_CALL_EVENT = "SELECT apply_call_event(%(event)s, %(body)s, %(record_calls)s)"
APPLY_CALL_EVENTS = "SELECT apply_call_events(%(events)s, %(bodies)s::json[], %(record_calls)s)"
# What one bad event makes PostgreSQL refuse a whole batch for (a body naming another session's
# call_control_id, a value out of range), or a deadlock: the batch is then applied event by
# event, so only the bad event fails.
BATCH_REFUSED = (psycopg2.IntegrityError, psycopg2.DataError, psycopg2.errors.DeadlockDetected)


@dataclass(frozen=True)
class RecordedEvent:
    """What PostgreSQL made of an event: whether it was seen before, the call as it now is, and
    whether it left a command owed to Telnyx (in telnyx_outbox)."""

    duplicate: bool
    leg: str | None
    call: dict[str, Any] | None
    owed: bool = False


class RawJson(Json):
    """Pass the body to PostgreSQL as received, without decoding and re-encoding it."""

    def dumps(self, obj: Any) -> str:
        return obj.decode() if isinstance(obj, bytes) else obj


def event_fields(event: WebhookEvent) -> dict[str, Any]:
    """The event as the webhook_event composite reads it (sql/008): the dataclass's fields by
    name, and its effect."""
    fields = {
        field.name: value.isoformat() if isinstance(value, datetime) else value
        for field in dataclasses.fields(event)
        if (value := getattr(event, field.name)) is not None
    }
    return {**fields, "effect": event.effect}


def record_event(
    db: Database, event: WebhookEvent, body: bytes, record_calls: bool = False
) -> RecordedEvent:
    """Dedupe the event and merge it into inbound_calls and call_logs, in one transaction; with
    `record_calls`, a caller leg answered now owes record_start in that transaction too."""
    params = {
        "event": Json(event_fields(event)),
        "body": RawJson(body),
        "record_calls": record_calls,
    }
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(APPLY_CALL_EVENT, params)
            result = one_row(cur)[0]
    except psycopg2.errors.UniqueViolation:
        # Only a body that names another session's call_control_id gets here: no retry helps.
        raise BadWebhook(
            "payload.call_control_id already belongs to another call_session_id"
        ) from None
    except psycopg2.DataError as exc:
        # A value parse_webhook let through that PostgreSQL cannot store: no retry helps either.
        raise BadWebhook(
            f"payload has a value PostgreSQL refuses: {exc.diag.message_primary}"
        ) from None
    return _recorded(result)


def record_events(
    db: Database, events: list[tuple[WebhookEvent, bytes]], record_calls: bool = False
) -> list[RecordedEvent | BadWebhook]:
    """record_event for many events in one statement and one transaction (a group commit), in
    the order given; per event, what record_event returns or the BadWebhook it raises.

    If PostgreSQL refuses the batch for one bad event, nothing of it was written, and the events
    are applied one by one so that only the bad one fails. StorageUnavailable (PostgreSQL
    unreachable, or lost mid-batch) fails the whole batch: nothing of it was committed.
    """
    if len(events) == 1:
        return [_recorded_or_refused(db, *events[0], record_calls)]
    params = {
        "events": Json([event_fields(event) for event, _ in events]),
        "bodies": [RawJson(body) for _, body in events],
        "record_calls": record_calls,
    }
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(APPLY_CALL_EVENTS, params)
            results = one_row(cur)[0]
    except BATCH_REFUSED:
        return [_recorded_or_refused(db, event, body, record_calls) for event, body in events]
    return [_recorded(result) for result in results]


def _recorded_or_refused(
    db: Database, event: WebhookEvent, body: bytes, record_calls: bool
) -> RecordedEvent | BadWebhook:
    try:
        return record_event(db, event, body, record_calls)
    except BadWebhook as refused:
        return refused


def _recorded(result: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        result["duplicate"], result["leg"], result["call"], bool(result.get("owed"))
    )


def record_agent_action(
    db: Database, call_control_id: str, action: str, agent_id: str
) -> dict[str, Any] | None:
    """Name the agent who answered or declined the call on its durable record."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT record_agent_action(%s, %s, %s, now())", (call_control_id, action, agent_id)
        )
        return one_row(cur)[0]


def end_call_inferred(
    db: Database, call_control_id: str, cause: str, source: str
) -> tuple[bool, dict[str, Any] | None]:
    """End a call Telnyx says is over (unless a webhook already did); (changed, the call)."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT end_call_inferred(%s, %s, %s, now())", (call_control_id, cause, source))
        result = one_row(cur)[0]
    return result["changed"], result["call"]
