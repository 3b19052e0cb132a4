"""Voicemail for calls nobody takes: the plan a voicemail follows, starting one, and hearing it.

The ring timeout starts a voicemail (start_voicemail: sql/013 keeps the plan on the call and
owes the answer, in one transaction). Everything after follows from Telnyx's webhooks in
apply_call_event: the greeting once the caller is answered, the recording (with a beep, up to
VOICEMAIL_MAX_SECONDS) once the greeting ends, then record_stop and the hangup at the limit. The
call's outcome is then `voicemail` (call_outcome in sql/010: the service answered it), and its
message stays unheard until an agent plays it to the end: POST /api/calls/<id>/heard. A caller
who hangs up before the beep leaves a voicemail with no message: nothing to hear, not unheard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, jsonify
from psycopg2.extras import Json

from .auth import agent_required, current_agent
from .call_status import MAX_CALL_ID_LENGTH
from .db import Database, get_db, one_row
from .errors import ApiError, CallNotFound
from .history import find_params
from .live_calls import LiveCalls, get_live
from .users import Agent

bp = Blueprint("voicemail", __name__)

# The longest a greeting may play: if it never ends (refused, its webhook lost), the hangup
# owed at the answer still comes after this and the longest message.
GREETING_SECONDS = 60
# Telnyx's own limit on the recording (max_length) is this much past the record_stop the service
# owes at VOICEMAIL_MAX_SECONDS: it stops the recording only if that record_stop is late (Telnyx
# unreachable), and never races it.
RECORDING_MARGIN_SECONDS = 2
# The hangup follows record_stop by this much, so the recording is saved before the call ends.
HANGUP_AFTER_SECONDS = 3

START_VOICEMAIL = "SELECT start_voicemail(%(call_control_id)s, %(plan)s, %(backoff)s, %(max)s)"

# The call's log row by id or call_control_id (as history.FIND_SQL).
FIND_FOR_HEARING = (
    "SELECT id, outcome, recording_url IS NOT NULL FROM call_logs"
    " WHERE id = %(id)s::uuid OR call_sid = %(sid)s"
    " ORDER BY id = %(id)s::uuid DESC NULLS LAST LIMIT 1"
)
# One statement, so of two agents finishing it at once exactly one is the first listener.
MARK_HEARD = (
    "UPDATE call_logs SET heard_at = now(), heard_by = %(agent)s::uuid, updated_at = now()"
    " WHERE id = %(id)s AND heard_at IS NULL"
)
HEARD_BY = (
    "SELECT cl.call_sid, cl.heard_at, u.id::text, u.name"
    " FROM call_logs cl LEFT JOIN users u ON u.id = cl.heard_by WHERE cl.id = %(id)s"
)
# Served by call_logs_unheard_voicemail_idx (sql/010): it holds only unheard voicemails. One
# without a recording (the caller hung up before the beep) has nothing to hear.
UNHEARD = (
    "SELECT count(*) FROM call_logs"
    " WHERE outcome = 'voicemail' AND heard_at IS NULL AND recording_url IS NOT NULL"
)


class NotVoicemail(ApiError):
    """Only a voicemail can be heard."""

    status = 409
    code = "not_voicemail"


class NoMessage(ApiError):
    """A voicemail whose caller hung up before leaving a message has nothing to hear."""

    status = 409
    code = "no_message"


def voicemail_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """The commands a voicemail sends, and their arguments, from the configuration."""
    greeting_url = config["VOICEMAIL_GREETING_URL"]
    if greeting_url:
        greeting = {"action": "playback_start", "args": {"audio_url": greeting_url}}
    else:
        greeting = {
            "action": "speak",
            "args": {
                "payload": config["VOICEMAIL_GREETING"],
                "voice": config["VOICEMAIL_VOICE"],
                "language": config["VOICEMAIL_LANGUAGE"],
                "payload_type": "text",
            },
        }
    max_seconds = config["VOICEMAIL_MAX_SECONDS"]
    return {
        "greeting": greeting,
        "record": {
            "format": "mp3",
            "channels": "single",
            "play_beep": True,
            "max_length": max_seconds + RECORDING_MARGIN_SECONDS,
        },
        "max_seconds": max_seconds,
        "greeting_seconds": GREETING_SECONDS,
        "hangup_after_seconds": HANGUP_AFTER_SECONDS,
    }


def start_voicemail(
    db: Database,
    call_control_id: str,
    plan: dict[str, Any],
    backoff_seconds: float,
    max_backoff_seconds: float,
) -> bool:
    """Keep the plan on the call and owe its answer, in one transaction; False when the call
    is unknown, over or answered already (there is nothing to answer)."""
    params = {
        "call_control_id": call_control_id,
        "plan": Json(plan),
        "backoff": backoff_seconds,
        "max": max_backoff_seconds,
    }
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(START_VOICEMAIL, params)
        (started,) = one_row(cur)
    return bool(started)


def mark_heard(db: Database, live: LiveCalls, call_id: str, agent: Agent) -> dict[str, Any]:
    """Mark a voicemail heard by `agent`; the first listener and time are kept. Pages are told
    (`voicemail.heard`) the first time only."""
    if len(call_id) > MAX_CALL_ID_LENGTH or not call_id.isprintable():
        raise CallNotFound("no call with that id or call_control_id")
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(FIND_FOR_HEARING, find_params(call_id))
        row = cur.fetchone()
        if row is None:
            raise CallNotFound("no call with that id or call_control_id")
        log_id, outcome, recorded = row
        if outcome != "voicemail":
            raise NotVoicemail(f"the call is not a voicemail (its outcome is {outcome})")
        if not recorded:
            raise NoMessage("the caller left no message (or it is not saved yet)")
        cur.execute(MARK_HEARD, {"id": log_id, "agent": agent.id})
        first = cur.rowcount == 1
        cur.execute(HEARD_BY, {"id": log_id})
        call_sid, heard_at, heard_by_id, heard_by_name = one_row(cur)
    heard = {
        "call_control_id": call_sid,
        "heard_at": heard_at.isoformat(),
        "heard_by": {"id": heard_by_id, "name": heard_by_name} if heard_by_id else None,
    }
    if first:
        live.stream.announce("voicemail.heard", heard)
    return heard


def unheard_count(db: Database) -> int:
    """How many voicemails nobody has played to the end yet."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(UNHEARD)
        (count,) = one_row(cur)
    return int(count)


@bp.post("/api/calls/<path:call_id>/heard")
@agent_required
def heard(call_id: str):
    """The agent played the voicemail to the end: it is heard (by the first who did)."""
    result = mark_heard(get_db(), get_live(), call_id, current_agent())
    return jsonify({"success": True, **result})


@bp.get("/api/voicemails/unheard")
@agent_required
def unheard():
    """The count of unheard voicemails, for the page's header."""
    return jsonify({"success": True, "count": unheard_count(get_db())})
