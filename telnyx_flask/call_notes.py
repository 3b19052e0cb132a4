"""After the call: the agent who had it leaves a note and a disposition on its log row.

PUT /api/calls/<call_control_id>/notes replaces both (a field left out or null is cleared), so
the latest save is what the history and the next caller context show. Who may write: the agent
who answered the call, or the one who handed it over (call_logs.transferred_from). When: once
the call has ended, i.e. has its log row. Every page hears `call.noted` and refreshes that row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify

from .auth import agent_required, current_agent
from .call_status import checked_call_control_id
from .claims import NotYourCall
from .db import get_db
from .errors import ApiError, CallNotFound, StorageUnavailable
from .history import call_by_id
from .live_calls import get_live
from .request_body import is_storable_text, json_object

log = logging.getLogger(__name__)

bp = Blueprint("call_notes", __name__)

FIELDS = ("note", "disposition")

# One statement: write the row if this agent had the call, and say why not otherwise (no log
# row yet: is the call known at all?). Later saves replace earlier ones, noted_at included.
WRITE_SQL = """
WITH target AS (
    SELECT id, answered_by, transferred_from FROM call_logs WHERE call_sid = %(call)s
), written AS (
    UPDATE call_logs cl
    SET notes = %(note)s, disposition = %(disposition)s, noted_by = %(agent)s::uuid,
        noted_at = now(), updated_at = now()
    FROM target t
    WHERE cl.id = t.id AND %(agent)s::uuid IN (t.answered_by, t.transferred_from)
    RETURNING cl.id
)
SELECT EXISTS (SELECT 1 FROM target) AS logged,
       EXISTS (SELECT 1 FROM written) AS written,
       EXISTS (SELECT 1 FROM inbound_calls WHERE call_control_id = %(call)s) AS known
"""


class InvalidNote(ApiError):
    """A note body that is not what the endpoint takes."""

    status = 400
    code = "invalid_note"


class NoteTooLong(ApiError):
    """The note is over CALL_NOTE_MAX_CHARS."""

    status = 400
    code = "note_too_long"

    def __init__(self, limit: int):
        super().__init__(f"note must be at most {limit} characters")
        self.limit = limit

    def details(self) -> dict[str, Any]:
        return {"max_chars": self.limit}


class InvalidDisposition(ApiError):
    """A disposition that is not in CALL_DISPOSITIONS."""

    status = 400
    code = "invalid_disposition"

    def __init__(self, allowed: tuple[str, ...]):
        super().__init__(f"disposition must be one of: {', '.join(allowed)}")
        self.allowed = allowed

    def details(self) -> dict[str, Any]:
        return {"dispositions": list(self.allowed)}


class CallNotEnded(ApiError):
    """The call is still ringing or in progress: it has no log row to note yet."""

    status = 409
    code = "call_not_ended"


@dataclass(frozen=True)
class CallNote:
    """What an agent leaves on a call, already checked."""

    note: str | None
    disposition: str | None


def parse_note(body: dict[str, Any], dispositions: tuple[str, ...], max_chars: int) -> CallNote:
    """The note and disposition of a request body; the matching ApiError for anything else."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidNote(f"unknown field {unknown[0][:50]!r}: send note and disposition only")
    note, disposition = body.get("note"), body.get("disposition")
    if note is not None and not isinstance(note, str):
        raise InvalidNote("note must be a string or null")
    if disposition is not None and not isinstance(disposition, str):
        raise InvalidDisposition(dispositions)
    if note is not None:
        if not is_storable_text(note):
            raise InvalidNote("note must not contain NUL characters or lone surrogates")
        note = note.strip() or None
    if note is not None and len(note) > max_chars:
        raise NoteTooLong(max_chars)
    if disposition is not None and disposition not in dispositions:
        raise InvalidDisposition(dispositions)
    if note is None and disposition is None:
        raise InvalidNote("give a note, a disposition, or both")
    return CallNote(note, disposition)


def write_note(call_control_id: str, agent_id: str, note: CallNote) -> None:
    """Store the note on the call's log row; CallNotFound, CallNotEnded or NotYourCall if not."""
    params = {
        "call": call_control_id,
        "agent": agent_id,
        "note": note.note,
        "disposition": note.disposition,
    }
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(WRITE_SQL, params)
        row = cur.fetchone()
    assert row is not None  # a SELECT of three EXISTS: always one row
    logged, written, known = row
    if written:
        return
    if logged:
        raise NotYourCall("only the agent who had this call may leave its note")
    if known:
        raise CallNotEnded("the call has not ended yet: leave the note once it has")
    raise CallNotFound("no call with that call_control_id")


def announce_noted(call_control_id: str, disposition: str | None) -> None:
    """Tell every page to refresh the call's history row; the note is stored whatever happens."""
    try:
        get_live().stream.announce(
            "call.noted", {"call_control_id": call_control_id, "disposition": disposition}
        )
    except StorageUnavailable as error:
        # The pages show it at their next history load; the write must not look failed.
        log.warning("call %s: call.noted not announced: %s", call_control_id, error.detail)


@bp.put("/api/calls/<call_control_id>/notes")
@agent_required
def put_notes(call_control_id: str):
    """Leave (or replace) the note and disposition of a call this agent had."""
    checked_call_control_id(call_control_id)
    config = current_app.config
    note = parse_note(json_object(), config["CALL_DISPOSITIONS"], config["CALL_NOTE_MAX_CHARS"])
    write_note(call_control_id, current_agent().id, note)
    announce_noted(call_control_id, note.disposition)
    return jsonify({"success": True, "call": call_by_id(call_control_id)})
