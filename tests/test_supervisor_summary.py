"""The supervisor's numbers against the database (issue 17): 50 simulated calls with known
outcomes go through real gunicorn workers and the simulator, then every tile of
GET /api/supervisor/summary is compared with a count of our own in SQL.

The expected figures are counted here from inbound_calls (the calls' own timestamps), not from
call_logs through call_stats.py, so a wrong definition there, or a wrong answered_at on the log
rows, shows as a difference. Three deployments share one database and Redis in turn, as a team
changing its settings would: missed calls need voicemail off, voicemails need it on.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from .helpers import wait_until
from .servers import running_stack

ZONE = "America/New_York"
SERVICE_LEVEL_SECONDS = 2
KNOWN_OUTCOMES = {"missed": 6, "voicemail": 6, "answered": 18, "abandoned": 10, "declined": 6}
STILL_RINGING = 3
IN_PROGRESS = 1
COMMON = {
    "TEAM_TIMEZONE": ZONE,
    "SERVICE_LEVEL_SECONDS": str(SERVICE_LEVEL_SECONDS),
    "RING_TIMEOUT_SECONDS": "5",
    "PRESENCE_AWAY_AFTER_SECONDS": "3600",
    "AGENT_ACTIONS_PER_MINUTE": "100000",
}
numbers = (f"+1312555{n:04d}" for n in itertools.count(100))


def _post(base: str, path: str, agent, **body) -> requests.Response:
    response = requests.post(f"{base}{path}", headers=agent.headers, json=body or None, timeout=30)
    assert response.status_code == 200, response.text
    return response


def _summary(base: str, supervisor) -> dict:
    response = requests.get(
        f"{base}/api/supervisor/summary", headers=supervisor.headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def _leaving_voicemail(base: str, supervisor) -> dict | None:
    """The live tiles once some caller is leaving a voicemail, else None."""
    live = _summary(base, supervisor)["live"]
    return live if live["leaving_voicemail"] else None


def _logged(db_rows, outcome: str) -> int:
    return db_rows("SELECT count(*) AS n FROM call_logs WHERE outcome = %s", (outcome,))[0]["n"]


def _rung_out(stack, db_rows, calls: int, outcome: str, **call_options) -> None:
    """Calls nobody takes, until the ring timeout has made each one `outcome`."""
    simulator, _ = stack
    for _ in range(calls):
        simulator.call(from_=next(numbers), **call_options)
    wait_until(lambda: _logged(db_rows, outcome) == calls, what=f"{calls} {outcome} calls")


def _expected_today(db_rows, day: date) -> dict:
    """Today's tiles, counted independently from the calls themselves (inbound_calls)."""
    [row] = db_rows(
        """
        WITH today AS (
            SELECT c.*, COALESCE(c.started_at, c.ringing_since) AS began,
                   LEAST(c.answered_at, c.bridged_at) AS picked_up,
                   l.outcome
              FROM inbound_calls c JOIN call_logs l ON l.call_sid = c.call_control_id
             WHERE c.ended_at IS NOT NULL
               AND (COALESCE(c.started_at, c.ringing_since) AT TIME ZONE %(zone)s)::date
                   = %(day)s)
        SELECT count(*) AS offered,
               count(*) FILTER (WHERE outcome = 'answered') AS answered,
               count(*) FILTER (WHERE outcome = 'missed') AS missed,
               count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned,
               count(*) FILTER (WHERE outcome = 'declined') AS declined,
               count(*) FILTER (WHERE outcome = 'voicemail') AS voicemail,
               count(*) FILTER (WHERE outcome = 'answered'
                                  AND picked_up - began <= make_interval(secs => %(sl)s))
                   AS within,
               avg(EXTRACT(EPOCH FROM picked_up - began)) FILTER (WHERE outcome = 'answered')
                   AS asa,
               COALESCE(sum(EXTRACT(EPOCH FROM ended_at - picked_up)::int)
                        FILTER (WHERE outcome = 'answered'), 0) AS talk
          FROM today
        """,
        {"zone": ZONE, "day": day, "sl": SERVICE_LEVEL_SECONDS},
    )
    return row


def test_every_tile_matches_the_database_after_50_calls(
    database_url, redis_prefix, clean_storage, make_agent, db_rows
):
    ann = make_agent("Ann")
    bob = make_agent("Bob")
    cy = make_agent("Cy")
    sue = make_agent("Sue", role="supervisor")

    # Missed: rejected at the ring timeout with voicemail off.
    with running_stack(database_url, redis_prefix, workers=1, VOICEMAIL="false", **COMMON) as a:
        _rung_out(a, db_rows, KNOWN_OUTCOMES["missed"], "missed")
    # Voicemail: the same calls with voicemail on; each caller leaves a three-second message,
    # and while they do, the view counts them as leaving a voicemail, not as calls in progress.
    with running_stack(database_url, redis_prefix, workers=1, VOICEMAIL="true", **COMMON) as b:
        calls = KNOWN_OUTCOMES["voicemail"]
        for _ in range(calls):
            b[0].call(from_=next(numbers), message_seconds=3)
        live = wait_until(
            lambda: _leaving_voicemail(b[1].url, sue), what="callers leaving a voicemail"
        )
        assert live["in_progress"] == 0
        wait_until(lambda: _logged(db_rows, "voicemail") == calls, what=f"{calls} voicemails")

    common = {**COMMON, "RING_TIMEOUT_SECONDS": "600"}  # nothing rings out from here on
    with running_stack(database_url, redis_prefix, workers=2, VOICEMAIL="false", **common) as c:
        simulator, server = c
        base = server.url
        for agent, chosen in ((ann, "available"), (bob, "available"), (cy, "away")):
            requests.put(
                f"{base}/api/agents/me/presence",
                headers=agent.headers,
                json={"presence": chosen},
                timeout=10,
            ).raise_for_status()

        ringing = [simulator.call(from_=next(numbers)) for _ in range(KNOWN_OUTCOMES["answered"])]
        simulator.wait_delivered()
        # Answered one after another, by Ann and Bob in turn: the later ones waited longer than
        # the service level, the earlier ones did not.
        for n, call in enumerate(ringing):
            agent = (ann, bob)[n % 2]
            _post(base, f"/api/telnyx/calls/{call}/answer", agent)
            simulator.wait_delivered()
            _post(base, f"/api/telnyx/calls/{call}/end", agent)
        for _ in range(KNOWN_OUTCOMES["abandoned"]):
            call = simulator.call(from_=next(numbers))
            simulator.wait_delivered()
            simulator.caller_hangs_up(call)
        for _ in range(KNOWN_OUTCOMES["declined"]):
            call = simulator.call(from_=next(numbers))
            simulator.wait_delivered()
            _post(base, f"/api/telnyx/calls/{call}/decline", bob)
        # Still going when the supervisor looks: one call with Ann, three callers waiting.
        with_ann = simulator.call(from_=next(numbers))
        simulator.wait_delivered()
        _post(base, f"/api/telnyx/calls/{with_ann}/answer", ann)
        for _ in range(STILL_RINGING):
            simulator.call(from_=next(numbers))
        simulator.wait_delivered()
        ended = sum(KNOWN_OUTCOMES.values())
        wait_until(
            lambda: db_rows("SELECT count(*) AS n FROM call_logs")[0]["n"] == ended,
            what="every ended call logged",
        )
        assert ended + IN_PROGRESS + STILL_RINGING == 50

        summary = _summary(base, sue)

    # The known outcomes, as the call log has them.
    logged = db_rows("SELECT outcome, count(*) AS n FROM call_logs GROUP BY outcome")
    assert {row["outcome"]: row["n"] for row in logged} == KNOWN_OUTCOMES

    # Today's tiles against our own count for the summary's day, in the team's time zone.
    day = date.fromisoformat(summary["day"])
    assert summary["timezone"] == ZONE
    assert day == datetime.fromisoformat(summary["generated_at"]).astimezone(ZoneInfo(ZONE)).date()
    expected = _expected_today(db_rows, day)
    today = summary["today"]
    for name in ("offered", "answered", "missed", "abandoned", "declined", "voicemail"):
        assert today[name] == expected[name], name
    assert today["answered_within_service_level"] == expected["within"]
    assert today["service_level"] == pytest.approx(
        expected["within"] / expected["offered"], abs=1e-4
    )
    assert today["average_speed_of_answer_seconds"] == pytest.approx(
        float(expected["asa"]), abs=0.05
    )
    assert today["talk_seconds"] == expected["talk"]
    assert summary["service_level_seconds"] == SERVICE_LEVEL_SECONDS

    # The per-hour chart: the same calls, bucketed by the team's local hour.
    by_hour = db_rows(
        "SELECT EXTRACT(HOUR FROM started_at AT TIME ZONE %(zone)s)::int AS hour, outcome,"
        " count(*) AS n FROM call_logs WHERE (started_at AT TIME ZONE %(zone)s)::date = %(day)s"
        " GROUP BY 1, 2",
        {"zone": ZONE, "day": day},
    )
    charted = {
        (hour["hour"], outcome): hour[outcome]
        for hour in summary["hours"]
        for outcome in KNOWN_OUTCOMES
        if hour[outcome]
    }
    assert charted == {(row["hour"], row["outcome"]): row["n"] for row in by_hour}

    # Live tiles: the callers waiting and the call in progress, as PostgreSQL has the calls.
    [live] = db_rows(
        "SELECT count(*) FILTER (WHERE status IN ('ringing', 'answering')) AS ringing,"
        " count(*) FILTER (WHERE status = 'answered') AS in_progress,"
        " min(ringing_since) FILTER (WHERE status IN ('ringing', 'answering')) AS oldest"
        " FROM inbound_calls"
    )
    assert summary["live"]["ringing"] == live["ringing"] == STILL_RINGING
    assert summary["live"]["in_progress"] == live["in_progress"] == IN_PROGRESS
    assert datetime.fromisoformat(summary["live"]["oldest_ringing_since"]) == live["oldest"]
    assert summary["live"]["longest_wait_seconds"] >= 0

    # The agents' table: handled today and talk time per agent, and who is on which call.
    per_agent = db_rows(
        "SELECT u.name, count(c.id) AS handled,"
        " COALESCE(sum(EXTRACT(EPOCH FROM c.ended_at - LEAST(c.answered_at, c.bridged_at))::int),"
        " 0) AS talk FROM users u LEFT JOIN inbound_calls c ON c.answered_by = u.id"
        " AND c.ended_at IS NOT NULL GROUP BY u.name"
    )
    rows = {agent["name"]: agent for agent in summary["agents"]}
    assert set(rows) == {"Ann", "Bob", "Cy", "Sue"}
    for expected_agent in per_agent:
        row = rows[expected_agent["name"]]
        assert row["handled_today"] == expected_agent["handled"], row
        assert row["talk_seconds_today"] == expected_agent["talk"], row
    assert rows["Ann"]["current_call"]["call_control_id"] == with_ann
    assert [rows[name]["current_call"] for name in ("Bob", "Cy", "Sue")] == [None] * 3
    assert rows["Sue"]["role"] == "supervisor"
    assert (rows["Ann"]["presence"], rows["Bob"]["presence"], rows["Cy"]["presence"]) == (
        "on_call",
        "available",
        "away",
    )
    assert summary["presence"] == {
        **{"available": 0, "away": 0, "on_call": 0},
        **Counter(agent["presence"] for agent in summary["agents"]),
    }
