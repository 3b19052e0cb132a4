"""The durable record in PostgreSQL: applying a webhook event is one statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg2.errors
from psycopg2.extras import Json

from .db import Database
from .errors import BadWebhook
from .webhook_events import WebhookEvent

APPLY_CALL_EVENT = """
SELECT apply_call_event(
    p_event_id => %(event_id)s, p_event_type => %(event_type)s,
    p_occurred_at => %(occurred_at)s, p_body => %(body)s, p_effect => %(effect)s,
    p_call_session_id => %(call_session_id)s, p_call_control_id => %(call_control_id)s,
    p_call_leg_id => %(call_leg_id)s, p_connection_id => %(connection_id)s, p_leg => %(leg)s,
    p_from => %(from_number)s, p_to => %(to_number)s, p_caller_id_name => %(caller_id_name)s,
    p_start_time => %(start_time)s, p_end_time => %(end_time)s,
    p_hangup_cause => %(hangup_cause)s, p_hangup_source => %(hangup_source)s,
    p_sip_hangup_cause => %(sip_hangup_cause)s, p_recording_url => %(recording_url)s,
    p_record_calls => %(record_calls)s)
"""


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


def record_event(
    db: Database, event: WebhookEvent, body: bytes, record_calls: bool = False
) -> RecordedEvent:
    """Dedupe the event and merge it into inbound_calls and call_logs, in one transaction; with
    `record_calls`, a caller leg answered now owes record_start in that transaction too."""
    params = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "body": RawJson(body),
        "effect": event.effect,
        "call_session_id": event.call_session_id,
        "call_control_id": event.call_control_id,
        "call_leg_id": event.call_leg_id,
        "connection_id": event.connection_id,
        "leg": event.leg,
        "from_number": event.from_number,
        "to_number": event.to_number,
        "caller_id_name": event.caller_id_name,
        "start_time": event.start_time,
        "end_time": event.end_time,
        "hangup_cause": event.hangup_cause,
        "hangup_source": event.hangup_source,
        "sip_hangup_cause": event.sip_hangup_cause,
        "recording_url": event.recording_url,
        "record_calls": record_calls,
    }
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(APPLY_CALL_EVENT, params)
            result = cur.fetchone()[0]
    except psycopg2.errors.UniqueViolation:
        # Only a body that names another session's call_control_id gets here: no retry helps.
        raise BadWebhook(
            "payload.call_control_id already belongs to another call_session_id"
        ) from None
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
        return cur.fetchone()[0]


def end_call_inferred(
    db: Database, call_control_id: str, cause: str, source: str
) -> tuple[bool, dict[str, Any] | None]:
    """End a call Telnyx says is over (unless a webhook already did); (changed, the call)."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT end_call_inferred(%s, %s, %s, now())", (call_control_id, cause, source))
        result = cur.fetchone()[0]
    return result["changed"], result["call"]
