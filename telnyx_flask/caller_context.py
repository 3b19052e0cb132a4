"""What an agent sees about a caller before answering: the prospect, and the number's history
(how many calls before, the last one, the last note left on it), read in one indexed statement.

GET /api/telnyx/calls/<call_control_id>/context. The number comes from the live call (Redis) or,
when Redis no longer knows it, from PostgreSQL. "Before" means the number's other calls: the
asked-about call's own log row (once it has ended) is never counted. GET
/api/callers/<number>/context is the same for a number (every call of it counts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify

from .auth import agent_required
from .call_status import checked_call_control_id
from .db import get_db
from .errors import ApiError, CallNotFound
from .live_calls import get_live
from .phone_numbers import normalise_phone

bp = Blueprint("caller_context", __name__)

# Past this many the card says "1000+ calls before": counting stops there, so an auto-dialler's
# ten thousand calls cost what a regular's thousand do.
CALLS_BEFORE_CAP = 1000

# One round trip, each part on its own index:
# - the prospect as the ringing lookup picks it (sql/008: oldest first), by
#   prospects_phone_number_idx;
# - the count as the number's rows, up to one more than CALLS_BEFORE_CAP (an index-only scan of
#   call_logs_phone_number_history_idx, no heap fetches), and apart whether this call has a row
#   of its own (by call_sid, unique);
# - the last call: the first entry of call_logs_phone_number_history_idx that is not this call;
# - the last note: the first entry of the partial call_logs_phone_number_noted_idx (sql/010).
CONTEXT_SQL = """
SELECT p.id::text, p.name, p.company, p.notes,
       (SELECT count(*) FROM (SELECT FROM call_logs WHERE phone_number = %(number)s
                              LIMIT %(count_limit)s) AS counted) AS calls,
       EXISTS (SELECT FROM call_logs
               WHERE call_sid = %(call)s AND phone_number = %(number)s) AS own_row,
       last_call.call_sid, last_call.at, last_call.outcome,
       last_call.agent_id, last_call.agent_name,
       last_note.notes, last_note.disposition, last_note.noted_at,
       last_note.by_id, last_note.by_name
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT id, name, company, notes FROM prospects
    WHERE phone_number = %(number)s ORDER BY created_at, id LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT cl.call_sid, COALESCE(cl.started_at, cl.created_at) AS at, cl.outcome,
           u.id::text AS agent_id, u.name AS agent_name
    FROM call_logs cl LEFT JOIN users u ON u.id = cl.answered_by
    WHERE cl.phone_number = %(number)s AND cl.call_sid <> %(call)s
    ORDER BY COALESCE(cl.started_at, cl.created_at) DESC, cl.id DESC LIMIT 1
) last_call ON true
LEFT JOIN LATERAL (
    SELECT cl.notes, cl.disposition, cl.noted_at, u.id::text AS by_id, u.name AS by_name
    FROM call_logs cl LEFT JOIN users u ON u.id = cl.noted_by
    WHERE cl.phone_number = %(number)s AND cl.call_sid <> %(call)s
      AND (cl.notes IS NOT NULL OR cl.disposition IS NOT NULL)
    ORDER BY COALESCE(cl.started_at, cl.created_at) DESC, cl.id DESC LIMIT 1
) last_note ON true
"""

# The caller's number of a call Redis no longer holds: its durable row.
NUMBER_SQL = "SELECT from_number FROM inbound_calls WHERE call_control_id = %s"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _person(person_id: str | None, name: str | None) -> dict[str, Any] | None:
    return {"id": person_id, "name": name} if person_id is not None else None


def context_params(number: str, call_control_id: str) -> dict[str, Any]:
    """CONTEXT_SQL's parameters (the bench runs the same statement)."""
    return {"number": number, "call": call_control_id, "count_limit": CALLS_BEFORE_CAP + 1}


def context_from_row(number: str, row: tuple) -> dict[str, Any]:
    """CONTEXT_SQL's one row as the API shows it."""
    (
        prospect_id,
        prospect_name,
        company,
        prospect_notes,
        calls,
        own_row,
        last_sid,
        last_at,
        last_outcome,
        last_agent_id,
        last_agent_name,
        note,
        disposition,
        noted_at,
        noted_by_id,
        noted_by_name,
    ) = row
    prospect = None
    if prospect_id is not None:
        prospect = {
            "id": prospect_id,
            "name": prospect_name,
            "company": company,
            "notes": prospect_notes,
        }
    last_call = None
    if last_sid is not None:
        last_call = {
            "call_control_id": last_sid,
            "started_at": _iso(last_at),
            "outcome": last_outcome,
            "agent": _person(last_agent_id, last_agent_name),
        }
    last_note = None
    if note is not None or disposition is not None:
        last_note = {
            "note": note,
            "disposition": disposition,
            "at": _iso(noted_at),
            "by": _person(noted_by_id, noted_by_name),
        }
    # At the cap, at least CALLS_BEFORE_CAP of the rows counted are other calls.
    capped = calls > CALLS_BEFORE_CAP
    return {
        "number": number,
        "prospect": prospect,
        "history": {
            "calls_before": CALLS_BEFORE_CAP if capped else calls - int(own_row),
            "calls_before_capped": capped,
            "last_call": last_call,
            "last_note": last_note,
        },
    }


def caller_context(number: str, call_control_id: str) -> dict[str, Any]:
    """The prospect and history of `number`, leaving out the call `call_control_id` itself."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(CONTEXT_SQL, context_params(number, call_control_id))
        row = cur.fetchone()
    assert row is not None  # FROM (SELECT 1) with LEFT JOINs: always exactly one row
    return context_from_row(number, row)


def caller_number(call_control_id: str) -> str | None:
    """The caller's number of a call, live or durable; None for a call the service never saw
    (or one whose caller gave no number)."""
    call = get_live().call(call_control_id)
    if call is not None and call.get("from"):
        return call["from"]
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(NUMBER_SQL, (call_control_id,))
        row = cur.fetchone()
    return row[0] if row is not None else None


@bp.get("/api/telnyx/calls/<path:call_control_id>/context")
@agent_required
def call_context(call_control_id: str):
    """The caller's context for a ringing (or any known) call."""
    checked_call_control_id(call_control_id)
    number = caller_number(call_control_id)
    if number is None:
        raise CallNotFound("no call with that call_control_id, or its caller gave no number")
    return jsonify({"success": True, "context": caller_context(number, call_control_id)})


@bp.get("/api/callers/<number>/context")
@agent_required
def number_context(number: str):
    """The context of a phone number (E.164, or its digits), as a ringing call from it gets."""
    try:
        e164 = normalise_phone(number)
    except ValueError:
        raise ApiError(
            "number must be a phone number in E.164 (+12025550188) or its digits",
            code="invalid_number",
        ) from None
    # No call is left out: an empty call_sid matches no row.
    return jsonify({"success": True, "context": caller_context(e164, "")})
