"""Call statuses and their order, and a live call as the API and the pages see it.

The order is forward-only: ringing < answering < answered < ended. STATUS_RANK is the one
source; sql/002's call_status_rank() and lua/apply_call_state.lua's `rank` table spell the same
ranks, and tests/test_one_source.py proves all three agree.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .redis_store import text

RINGING, ANSWERING, ANSWERED, ENDED = "ringing", "answering", "answered", "ended"
# The longest call id a URL may carry (Telnyx's call_control_ids are about 70 characters).
MAX_CALL_ID_LENGTH = 256
STATUS_RANK = {RINGING: 1, ANSWERING: 2, ANSWERED: 3, ENDED: 4}

# The call fields kept live, in the names the page and /calls/pending use.
LIVE_FIELDS = (
    "call_control_id",
    "call_session_id",
    "from",
    "to",
    "caller_name",
    "prospect_id",
    "status",
    "ringing_since",
    "answered_at",
    "ended_at",
    "outcome",
    "duration",
    "hangup_cause",
    "has_recording",
)


def summaries(replies: list[list[Any]]) -> list[dict[str, Any]]:
    """Calls from flat HGETALL replies, as the API shows them."""
    calls = []
    for flat in replies:
        pairs = [text(item) for item in flat]
        calls.append(call_summary(dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return calls


def live_fields(call: dict[str, Any]) -> dict[str, str]:
    """The call view from PostgreSQL as the flat string fields of its Redis hash."""
    values = {
        "call_control_id": call.get("call_control_id"),
        "call_session_id": call.get("call_session_id"),
        "from": call.get("from_number"),
        "to": call.get("to_number"),
        "caller_name": call.get("prospect_name") or call.get("caller_id_name"),
        "prospect_id": call.get("prospect_id"),
        "status": call.get("status"),
        "ringing_since": call.get("ringing_since"),
        "answered_at": call.get("answered_at"),
        "ended_at": call.get("ended_at"),
        "outcome": call.get("outcome"),
        "duration": call.get("duration"),
        "hangup_cause": call.get("hangup_cause"),
        "has_recording": "true" if call.get("recording_url") else None,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def call_summary(fields: dict[str, str]) -> dict[str, Any]:
    """A live call as the API shows it (also carrying the seed's from_number/to_number names)."""
    summary: dict[str, Any] = {name: fields.get(name) for name in LIVE_FIELDS}
    if summary["duration"] is not None:
        summary["duration"] = int(summary["duration"])
    summary["has_recording"] = summary["has_recording"] == "true"
    summary["from_number"] = summary["from"]
    summary["to_number"] = summary["to"]
    claimer = fields.get("claimed_by_id")
    summary["claimed_by"] = (
        {"id": claimer, "name": fields.get("claimed_by_name")} if claimer else None
    )
    summary["transfer"] = transfer_offer(fields)
    return summary


def transfer_offer(fields: dict[str, str]) -> dict[str, Any] | None:
    """The transfer offer open on a call (lua/transfer_offer.lua keeps it on the hash), or None."""
    to_id = fields.get("transfer_to_id")
    if not to_id or fields.get("status") == ENDED:
        return None
    return {
        "from_agent": {
            "id": fields.get("transfer_from_id"),
            "name": fields.get("transfer_from_name"),
        },
        "to_agent": {"id": to_id, "name": fields.get("transfer_to_name")},
        "expires_at": fields.get("transfer_expires_at"),
    }


def checked_call_control_id(value: str) -> str:
    """A call_control_id from a URL, or a 400 when it cannot be one."""
    if not value or len(value) > MAX_CALL_ID_LENGTH or not value.isprintable():
        raise ApiError("call_control_id is malformed", code="invalid_call_control_id")
    return value
