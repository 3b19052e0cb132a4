"""The supervisor's live view: the page (/supervisor) and its numbers (GET /api/supervisor/summary).

Live numbers (callers ringing, calls in progress, who is on which call, presence) come from
Redis, as the agents' pages see them; today's counts come from PostgreSQL's call log
(call_stats.py), so every tile is the database's own count. The page draws from the summary
and keeps it current on the same event stream the agents' pages read (opened with ?watch=true),
asking for the summary again when a call is answered or ends, or someone's presence changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from . import presence
from .auth import supervisor_required
from .call_stats import IN_RANGE, OUTCOMES, SORT_KEY, TOTALS_COLUMNS, totals
from .call_status import ANSWERED, ANSWERING, RINGING
from .db import get_db
from .live_calls import get_live
from .ring_timeout import RING_TIMEOUT
from .softphone import static_page
from .team_time import day_bounds, team_zone, today

bp = Blueprint("supervisor", __name__)

TODAY_SQL = f"SELECT {TOTALS_COLUMNS} FROM call_logs cl WHERE {IN_RANGE}"
# Calls per hour of the team's day and outcome; a day the clocks go back has one 1 a.m. bucket.
HOURS_SQL = f"""
SELECT EXTRACT(HOUR FROM {SORT_KEY} AT TIME ZONE %(zone)s)::int, cl.outcome, count(*)
  FROM call_logs cl WHERE {IN_RANGE} GROUP BY 1, 2
"""
# Every active user, with the calls they answered today and their talk time.
AGENTS_SQL = f"""
SELECT u.id::text, u.name, u.role, count(cl.id),
       COALESCE(sum(cl.duration) FILTER (WHERE cl.outcome = 'answered'), 0)
  FROM users u
  LEFT JOIN call_logs cl ON cl.answered_by = u.id AND cl.outcome = 'answered' AND {IN_RANGE}
 WHERE u.active
 GROUP BY u.id, u.name, u.role
 ORDER BY u.name, u.id
"""


def _seconds_since(value: str | None, now: datetime) -> int | None:
    if not value:
        return None
    try:
        then = datetime.fromisoformat(value)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0, int((now - then).total_seconds()))


def _agent_id(call: dict[str, Any]) -> str | None:
    """The agent holding the call, if an agent does (the ring timeout holds the calls it rejects
    or sends to voicemail)."""
    claimer = call.get("claimed_by")
    return claimer["id"] if claimer and claimer["id"] != RING_TIMEOUT.id else None


def _live(calls: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Callers waiting (ringing, or being answered) and the longest wait; calls in progress."""
    waiting = [call for call in calls if call["status"] in (RINGING, ANSWERING)]
    since = sorted(call["ringing_since"] for call in waiting if call.get("ringing_since"))
    oldest = since[0] if since else None
    answered = [call for call in calls if call["status"] == ANSWERED]
    with_agents = sum(1 for call in answered if _agent_id(call))
    return {
        "ringing": len(waiting),
        "oldest_ringing_since": oldest,
        "longest_wait_seconds": _seconds_since(oldest, now) if oldest else None,
        "in_progress": with_agents,
        # Answered by the service itself: a caller leaving a voicemail message.
        "leaving_voicemail": len(answered) - with_agents,
    }


def _current_calls(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The call each agent holds now, by agent id."""
    held: dict[str, dict[str, Any]] = {}
    for call in calls:
        agent_id = _agent_id(call)
        if agent_id and call["status"] in (ANSWERING, ANSWERED):
            held[agent_id] = {
                "call_control_id": call["call_control_id"],
                "from": call["from"],
                "caller_name": call["caller_name"],
                "status": call["status"],
                "answered_at": call["answered_at"],
            }
    return held


def summary(now: datetime | None = None) -> dict[str, Any]:
    """Everything the supervisor's view shows, as of now."""
    now = now or datetime.now(UTC)
    zone = team_zone()
    day = today(zone, now)
    start, end = day_bounds(day, zone)
    params = {
        "start": start,
        "end": end,
        "zone": zone.key,
        "service_level_seconds": current_app.config["SERVICE_LEVEL_SECONDS"],
    }
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(TODAY_SQL, params)
        today_row = cur.fetchone()
        cur.execute(HOURS_SQL, params)
        hour_rows = cur.fetchall()
        cur.execute(AGENTS_SQL, params)
        agent_rows = cur.fetchall()
    live = get_live()
    _, calls = live.stream.snapshot()
    # As routing sees them: an agent none of whose pages has connected since the live state
    # began is not available for calls (presence.nobody_available), so shows as away here.
    presences = {
        agent_id: record["presence"]
        for agent_id, record in presence.records(live).items()
        if record.get("presence") in presence.PRESENCES
    }
    held = _current_calls(calls)

    hours = [{"hour": hour, **dict.fromkeys(OUTCOMES, 0)} for hour in range(24)]
    for hour, outcome, count in hour_rows:
        if outcome in OUTCOMES:
            hours[hour][outcome] += int(count)
    agents = [
        {
            "id": agent_id,
            "name": name,
            "role": role,
            "presence": presences.get(agent_id, presence.AWAY),
            "current_call": held.get(agent_id),
            "handled_today": int(handled),
            "talk_seconds_today": int(talk),
        }
        for agent_id, name, role, handled, talk in agent_rows
    ]
    by_presence = dict.fromkeys(presence.PRESENCES, 0)
    for agent in agents:
        by_presence[agent["presence"]] += 1
    assert today_row is not None  # an aggregate without GROUP BY always has its one row
    return {
        "generated_at": now.isoformat(),
        "timezone": zone.key,
        "day": day.isoformat(),
        "service_level_seconds": params["service_level_seconds"],
        "live": _live(calls, now),
        "presence": by_presence,
        "today": totals(today_row),
        "hours": hours,
        "agents": agents,
    }


@bp.get("/supervisor")
def page() -> Response:
    """The supervisor's live view (it signs in, and checks the role, through the API)."""
    return static_page("supervisor.html")


@bp.get("/api/supervisor/summary")
@supervisor_required
def get_summary():
    """The live view's numbers: live calls and presence from Redis, today's from PostgreSQL."""
    return jsonify({"success": True, **summary()})
