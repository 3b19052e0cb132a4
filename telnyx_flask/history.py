"""The call history: GET /api/calls (filtered, newest first, cursor-paged) and GET /api/calls/<id>.

Rows come from call_logs, one per ended call. They are ordered by COALESCE(started_at, created_at)
then id, both descending; the cursor is that pair for the last row of a page, so a page never
repeats or skips a row, even among calls that started in the same microsecond.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from .auth import agent_required
from .call_status import MAX_CALL_ID_LENGTH
from .db import get_db
from .errors import ApiError, CallNotFound
from .phone_numbers import normalise_phone

bp = Blueprint("history", __name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
OUTCOMES = ("answered", "missed", "abandoned", "declined", "voicemail")
DIRECTIONS = ("inbound", "outbound")
PARAMETERS = (
    "limit",
    "before",
    "outcome",
    "direction",
    "agent",
    "phone",
    "since",
    "until",
    "disposition",
)
MAX_CURSOR_LENGTH = 200
LIMIT = re.compile(r"[0-9]{1,3}")
# No time zone is further from UTC than Kiribati's +14:00; PostgreSQL refuses 16 h or more.
MAX_UTC_OFFSET = timedelta(hours=14)
WANT_TIMESTAMP = "must be an ISO 8601 timestamp with a time zone"

# The sort key; the same expression as in sql/004's indexes, or they cannot serve the order.
SORT_KEY = "COALESCE(cl.started_at, cl.created_at)"
COLUMNS = (
    "cl.id::text, cl.call_sid, cl.direction, cl.from_number, cl.to_number, cl.prospect_name,"
    " cl.prospect_id::text, cl.outcome, cl.duration, cl.started_at, cl.ended_at, cl.end_reason,"
    " cl.recording_url, u.id::text, u.name, cl.notes, cl.disposition, nu.id::text, nu.name,"
    f" cl.noted_at, tf.id::text, tf.name, cl.heard_at, hb.id::text, hb.name, cl.answered_at,"
    f" {SORT_KEY}"
)
# nu: who left the note; tf: the agent who transferred the call to the one who answered it
# (sql/014), if anyone; hb: who first played a voicemail to the end.
FROM = (
    "FROM call_logs cl LEFT JOIN users u ON u.id = cl.answered_by"
    " LEFT JOIN users nu ON nu.id = cl.noted_by"
    " LEFT JOIN users tf ON tf.id = cl.transferred_from"
    " LEFT JOIN users hb ON hb.id = cl.heard_by"
)


class InvalidParameter(ApiError):
    """A query parameter that is unknown, repeated or has a bad value."""

    status = 400
    code = "invalid_parameter"

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter

    def details(self) -> dict[str, Any]:
        return {"parameter": self.parameter}


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's sort key and id."""

    at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps({"at": self.at.isoformat(), "id": self.id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made; ValueError for anything else."""
        if not text or len(text) > MAX_CURSOR_LENGTH:
            raise ValueError("wrong length")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = json.loads(raw)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError("not a cursor") from None
        if not isinstance(body, dict) or set(body) != {"at", "id"}:
            raise ValueError("not a cursor")
        at, call_id = body["at"], body["id"]
        if not isinstance(at, str) or not isinstance(call_id, str):
            raise ValueError("not a cursor")
        return cls(_aware_timestamp(at), str(uuid.UUID(call_id)))


@dataclass(frozen=True)
class HistoryQuery:
    """One page's worth of filters, already checked."""

    limit: int = DEFAULT_LIMIT
    before: Cursor | None = None
    outcome: str | None = None
    direction: str | None = None
    agent: str | None = None
    phone: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    disposition: str | None = None


def _aware_timestamp(text: str) -> datetime:
    """The instant an ISO 8601 timestamp with a real-world UTC offset names, in UTC; ValueError
    saying what is wrong otherwise. PostgreSQL then only ever sees +00:00."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(WANT_TIMESTAMP) from None
    offset = parsed.utcoffset()
    if offset is None:
        raise ValueError(WANT_TIMESTAMP)
    if abs(offset) > MAX_UTC_OFFSET:
        raise ValueError("must have a UTC offset from -14:00 to +14:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01 at +01:00 is year 0 in UTC
        raise ValueError("is out of range") from None


def _limit(value: str) -> int:
    if not LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidParameter("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _before(value: str) -> Cursor:
    try:
        return Cursor.decode(value)
    except ValueError:
        raise InvalidParameter(
            "before", "before must be a next_cursor value from a previous page"
        ) from None


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidParameter(name, f"{name} must be one of {', '.join(allowed)}")
    return value


def _agent(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidParameter("agent", "agent must be an agent's id (a uuid)") from None


def _phone(value: str) -> str:
    try:
        return normalise_phone(value)
    except ValueError:
        raise InvalidParameter(
            "phone", "phone must be a number in E.164 (+12025550188) or its digits"
        ) from None


def _timestamp(name: str, value: str) -> datetime:
    try:
        return _aware_timestamp(value)
    except ValueError as error:
        hint = " (send + as %2B)" if " " in value else ""
        raise InvalidParameter(name, f"{name} {error}{hint}") from None


def single_values(args: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    """Each query parameter's one value; InvalidParameter for an unknown or repeated one."""
    values: dict[str, str] = {}
    for name, given in args.lists():
        if name not in allowed:
            raise InvalidParameter(name, f"unknown parameter {name[:50]!r}")
        if len(given) > 1:
            raise InvalidParameter(name, f"{name} is given more than once")
        values[name] = given[0]
    return values


def parse_query(args: Any, dispositions: tuple[str, ...] = ()) -> HistoryQuery:
    """Check every query parameter of GET /api/calls; InvalidParameter names the first bad one.

    `dispositions` is the configured list (CALL_DISPOSITIONS) a ?disposition= must be in."""
    values = single_values(args, PARAMETERS)
    checks: dict[str, Callable[[str], Any]] = {
        "limit": _limit,
        "before": _before,
        "outcome": lambda v: _one_of("outcome", v, OUTCOMES),
        "direction": lambda v: _one_of("direction", v, DIRECTIONS),
        "agent": _agent,
        "phone": _phone,
        "since": lambda v: _timestamp("since", v),
        "until": lambda v: _timestamp("until", v),
        "disposition": lambda v: _one_of("disposition", v, dispositions),
    }
    return HistoryQuery(**{name: checks[name](value) for name, value in values.items()})


def list_sql(query: HistoryQuery) -> tuple[str, dict[str, Any]]:
    """The page's SELECT and its parameters; it asks for one row more than the limit.

    The WHERE is built from this fixed list of conditions only; values go in as placeholders.
    """
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": query.limit + 1}
    if query.outcome is not None:
        conditions.append("cl.outcome = %(outcome)s")
        params["outcome"] = query.outcome
    if query.direction is not None:
        conditions.append("cl.direction = %(direction)s")
        params["direction"] = query.direction
    if query.agent is not None:
        conditions.append("cl.answered_by = %(agent)s::uuid")
        params["agent"] = query.agent
    if query.phone is not None:
        conditions.append("cl.phone_number = %(phone)s")
        params["phone"] = query.phone
    if query.disposition is not None:
        conditions.append("cl.disposition = %(disposition)s")
        params["disposition"] = query.disposition
    # since/until are on started_at. Put as the same bounds on the sort key plus "started_at is
    # known" (which says the same thing), they range over the index the page is read from, and
    # the planner, not seeing two correlated conditions, estimates the row count right.
    if query.since is not None or query.until is not None:
        conditions.append("cl.started_at IS NOT NULL")
    if query.since is not None:
        conditions.append(f"{SORT_KEY} >= %(since)s")
        params["since"] = query.since
    if query.until is not None:
        conditions.append(f"{SORT_KEY} < %(until)s")
        params["until"] = query.until
    if query.before is not None:
        conditions.append(f"({SORT_KEY}, cl.id) < (%(before_at)s, %(before_id)s::uuid)")
        params["before_at"] = query.before.at
        params["before_id"] = query.before.id
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT {COLUMNS} {FROM} {where} ORDER BY {SORT_KEY} DESC, cl.id DESC LIMIT %(limit)s"
    return sql, params


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _call(
    row: tuple, include_recording_url: bool = False, include_answered_at: bool = False
) -> dict[str, Any]:
    """A call as the API shows it: whether it has a recording, never the recording's link (a
    pre-signed URL that plays without a sign-in); the proxy alone asks for the link."""
    (
        call_id,
        call_sid,
        direction,
        from_number,
        to_number,
        prospect_name,
        prospect_id,
        outcome,
        duration,
        started_at,
        ended_at,
        end_reason,
        recording_url,
        agent_id,
        agent_name,
        note,
        disposition,
        noted_by_id,
        noted_by_name,
        noted_at,
        transferred_from_id,
        transferred_from_name,
        heard_at,
        heard_by_id,
        heard_by_name,
        answered_at,
        _sort_key,
    ) = row
    call = {
        "id": call_id,
        "call_control_id": call_sid,
        "direction": direction,
        "from": from_number,
        "to": to_number,
        "caller_name": prospect_name,
        "prospect_id": prospect_id,
        "outcome": outcome,
        "duration": duration,
        "started_at": _iso(started_at),
        "ended_at": _iso(ended_at),
        "end_reason": end_reason,
        "has_recording": recording_url is not None,
        "agent": {"id": agent_id, "name": agent_name} if agent_id is not None else None,
        "note": note,
        "disposition": disposition,
        "noted_by": (
            {"id": noted_by_id, "name": noted_by_name} if noted_by_id is not None else None
        ),
        "noted_at": _iso(noted_at),
        "transferred_from": (
            {"id": transferred_from_id, "name": transferred_from_name}
            if transferred_from_id is not None
            else None
        ),
    }
    if outcome == "voicemail":
        # Heard once an agent has played it to the end (voicemail.py).
        call["heard_at"] = _iso(heard_at)
        call["heard_by"] = {"id": heard_by_id, "name": heard_by_name} if heard_by_id else None
    if include_recording_url:
        call["recording_url"] = recording_url
    if include_answered_at:
        call["answered_at"] = _iso(answered_at)
    return call


def exported_call(row: tuple) -> dict[str, Any]:
    """A row of list_sql as the CSV export (reports.py) shows it: the API's call and when it was
    answered."""
    return _call(row, include_answered_at=True)


def call_page(query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of calls, newest first, and the cursor for the next (None on the last page)."""
    sql, params = list_sql(query)
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = Cursor(last[-1], last[0]).encode()
    return [_call(row) for row in page], next_cursor


# By id when the text is a uuid, else by call_sid; an id match wins over a call_sid match.
FIND_SQL = (
    f"SELECT {COLUMNS} {FROM}"
    " WHERE cl.id = %(id)s::uuid OR cl.call_sid = %(sid)s"
    " ORDER BY cl.id = %(id)s::uuid DESC NULLS LAST LIMIT 1"
)


def find_params(call_id: str) -> dict[str, Any]:
    """FIND_SQL's parameters for a call_logs id or a call_control_id."""
    try:
        as_uuid: str | None = str(uuid.UUID(call_id))
    except ValueError:
        as_uuid = None
    return {"id": as_uuid, "sid": call_id}


def find_call(call_id: str, include_recording_url: bool = False) -> dict[str, Any] | None:
    """A call by its call_logs id or its call_control_id, or None."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(FIND_SQL, find_params(call_id))
        row = cur.fetchone()
    return _call(row, include_recording_url) if row is not None else None


@bp.get("/api/calls")
@agent_required
def list_calls():
    """The call history, newest first: filters, `limit`, and `before` = the last next_cursor."""
    dispositions = current_app.config["CALL_DISPOSITIONS"]
    calls, next_cursor = call_page(parse_query(request.args, dispositions))
    return jsonify({"success": True, "calls": calls, "next_cursor": next_cursor})


def call_by_id(call_id: str, include_recording_url: bool = False) -> dict[str, Any]:
    """A call from a URL's id (call_logs id or call_control_id); CallNotFound if none."""
    call = None
    if len(call_id) <= MAX_CALL_ID_LENGTH and call_id.isprintable():
        call = find_call(call_id, include_recording_url)
    if call is None:
        raise CallNotFound("no call with that id or call_control_id")
    return call


@bp.get("/api/calls/<path:call_id>")
@agent_required
def get_call(call_id: str):
    """One call, by its id or its call_control_id."""
    return jsonify({"success": True, "call": call_by_id(call_id)})
