"""Reports (issue 17): the daily report per team day and agent, checked number by number against
the generated calls it is made from; the CSV export of the history, streamed page by page; and
`flask reports daily`."""

from __future__ import annotations

import csv
import io
import random
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extras
import pytest

from telnyx_flask.call_stats import TOTALS_COLUMNS, totals
from telnyx_flask.reports import EXPORT_COLUMNS, NO_CALLS_ROW
from telnyx_flask.team_time import day_bounds

NEW_YORK = ZoneInfo("America/New_York")
SERVICE_LEVEL_SECONDS = 20
# Generated calls fall on these New York days: both of 2026's clock changes and their neighbours.
CALL_DAYS = [date(2026, 3, d) for d in range(6, 11)] + [
    date(2026, 10, 31),
    date(2026, 11, 1),
    date(2026, 11, 2),
]
OUTCOMES = ("answered", "missed", "abandoned", "declined", "voicemail")


@pytest.fixture
def settings(settings):
    """The team works in New York; sessions are read afresh (a role change shows at once)."""
    settings["TEAM_TIMEZONE"] = "America/New_York"
    settings["SERVICE_LEVEL_SECONDS"] = str(SERVICE_LEVEL_SECONDS)
    return settings


@pytest.fixture
def supervisor(make_agent):
    return make_agent("Sue Visor", role="supervisor")


@dataclass
class Call:
    """A generated call_logs row: what the expectations below are computed from."""

    started_at: datetime | None
    created_at: datetime
    direction: str = "inbound"
    outcome: str = "missed"
    answered_at: datetime | None = None
    answered_by: str | None = None
    duration: int = 0

    @property
    def sort_time(self) -> datetime:
        return self.started_at or self.created_at


@pytest.fixture
def insert_calls(database_url):
    """Insert Calls into call_logs in one statement; return their ids."""

    def insert(calls: list[Call], **extra: Any) -> list[str]:
        rows = [
            (
                f"v3:report-{uuid.uuid4().hex}",
                call.direction,
                "+13125550147",
                "+13125550147",
                "+14155550123",
                call.outcome,
                call.started_at,
                call.created_at,
                call.answered_at,
                call.sort_time + timedelta(seconds=call.duration + 30),
                call.duration,
                call.answered_by,
            )
            for call in calls
        ]
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            returned = psycopg2.extras.execute_values(
                cur,
                "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, to_number,"
                " outcome, started_at, created_at, answered_at, ended_at, duration, answered_by)"
                " VALUES %s RETURNING id::text",
                rows,
                fetch=True,
            )
        conn.close()
        return [row[0] for row in returned]

    return insert


def generated_calls(
    agent_ids: list[str], seed: int = 17, days: list[date] = CALL_DAYS
) -> list[Call]:
    """Calls on CALL_DAYS: every outcome, inbound and outbound, waits either side of the service
    level, calls at the first and last moments of each New York day, an answer clocked before
    the call started, an answerer since deleted, and one call with only created_at."""
    rng = random.Random(seed)
    calls: list[Call] = []
    for day in days:
        start, end = day_bounds(day, NEW_YORK)
        moments = [start, end - timedelta(microseconds=1), end - timedelta(minutes=30)]
        moments += [start + (end - start) * rng.random() for _ in range(25)]
        for n, moment in enumerate(moments):
            outcome = OUTCOMES[n % len(OUTCOMES)] if n < 10 else rng.choice(OUTCOMES)
            call = Call(started_at=moment, created_at=moment + timedelta(minutes=1))
            call.outcome = outcome
            call.direction = "outbound" if rng.random() < 0.1 else "inbound"
            if outcome == "answered":
                wait = rng.choice([0, 3, 19, 20, 21, 45, rng.randint(0, 60)])
                call.answered_at = moment + timedelta(seconds=wait)
                call.answered_by = rng.choice([*agent_ids, None])
                call.duration = rng.randint(1, 900)
            elif outcome == "voicemail":
                call.answered_at = moment + timedelta(seconds=30)
                call.duration = rng.randint(5, 120)  # the message: not talk time
            elif outcome == "declined":
                call.answered_by = rng.choice(agent_ids)  # claimed, then declined
            calls.append(call)
        skewed = Call(started_at=start + timedelta(hours=12), created_at=start, outcome="answered")
        skewed.answered_at = skewed.started_at - timedelta(seconds=2)  # clocks that disagree
        skewed.answered_by = agent_ids[0]
        skewed.duration = 60
        calls.append(skewed)
        calls.append(Call(started_at=None, created_at=start + timedelta(hours=13)))
    return calls


def _average(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _wait(call: Call) -> float:
    assert call.answered_at is not None and call.started_at is not None
    return max(0.0, (call.answered_at - call.started_at).total_seconds())


def expected_totals(calls: list[Call]) -> dict[str, Any]:
    """call_stats' definitions, computed here from the generated calls."""
    offered = [call for call in calls if call.direction == "inbound"]
    answered = [call for call in offered if call.outcome == "answered"]
    waits = [_wait(call) for call in answered]
    in_time = sum(1 for wait in waits if wait <= SERVICE_LEVEL_SECONDS)
    return {
        "offered": len(offered),
        **{o: sum(1 for call in offered if call.outcome == o) for o in OUTCOMES},
        "answered_within_service_level": in_time,
        "service_level": round(in_time / len(offered), 4) if offered else None,
        "average_speed_of_answer_seconds": _average(waits),
        "average_talk_seconds": _average([call.duration for call in answered]),
        "talk_seconds": sum(call.duration for call in answered),
    }


def expected_agents(calls: list[Call], names: dict[str, str]) -> list[dict[str, Any]]:
    """Each agent's answered inbound calls, by name then id."""
    rows = []
    for agent_id in sorted(names, key=lambda i: (names[i], i)):
        theirs = [
            call
            for call in calls
            if call.direction == "inbound"
            and call.outcome == "answered"
            and call.answered_by == agent_id
        ]
        if not theirs:
            continue
        waits = [_wait(call) for call in theirs]
        in_time = sum(1 for wait in waits if wait <= SERVICE_LEVEL_SECONDS)
        rows.append(
            {
                "id": agent_id,
                "name": names[agent_id],
                "answered": len(theirs),
                "average_speed_of_answer_seconds": _average(waits),
                "average_talk_seconds": _average([call.duration for call in theirs]),
                "talk_seconds": sum(call.duration for call in theirs),
                "answered_within_service_level": in_time,
                "service_level": round(in_time / len(theirs), 4),
            }
        )
    return rows


def report(client, who, /, **params):
    return client.get("/api/reports/daily", query_string=params, headers=who.headers)


@pytest.fixture
def team(make_agent) -> dict[str, str]:
    """Three agents: id -> name."""
    agents = [make_agent("Bob"), make_agent("Alice"), make_agent("Carol")]
    return {agent.id: agent.name for agent in agents}


# --- the daily report's numbers -----------------------------------------------------------


def test_every_number_of_the_daily_report_matches_the_generated_calls(
    client, supervisor, team, insert_calls
):
    calls = generated_calls(list(team))
    insert_calls(calls)
    first, last = date(2026, 3, 5), date(2026, 11, 3)
    body = report(client, supervisor, **{"from": str(first), "to": str(last)}).get_json()

    def local_day(call: Call) -> date:
        return call.sort_time.astimezone(NEW_YORK).date()

    all_days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    assert [day["day"] for day in body["days"]] == [str(day) for day in all_days]
    for day, shown in zip(all_days, body["days"], strict=True):
        that_day = [call for call in calls if local_day(call) == day]
        assert shown["totals"] == expected_totals(that_day), day
        assert shown["agents"] == expected_agents(that_day, team), day
        assert bool(that_day) == (day in CALL_DAYS), day
    assert body["total"] == expected_totals(calls)
    assert body["total"]["offered"] > 200
    assert {
        "success": True,
        "timezone": "America/New_York",
        "from": "2026-03-05",
        "to": "2026-11-03",
        "service_level_seconds": SERVICE_LEVEL_SECONDS,
    }.items() <= body.items()


def test_the_report_agrees_with_an_independent_query_per_day(
    client, supervisor, team, insert_calls, db_rows
):
    """Each day's offered and answered counts, asked of PostgreSQL day by day with the day's
    bounds worked out in Python, are the report's (grouped by local date in one query)."""
    insert_calls(generated_calls(list(team), seed=3))
    body = report(client, supervisor, **{"from": "2026-03-05", "to": "2026-03-11"}).get_json()
    for shown in body["days"]:
        start, end = day_bounds(date.fromisoformat(shown["day"]), NEW_YORK)
        [counted] = db_rows(
            "SELECT count(*) AS offered, count(*) FILTER (WHERE outcome = 'answered') AS answered"
            " FROM call_logs WHERE direction = 'inbound'"
            " AND COALESCE(started_at, created_at) >= %s AND COALESCE(started_at, created_at) < %s",
            (start, end),
        )
        assert (shown["totals"]["offered"], shown["totals"]["answered"]) == (
            counted["offered"],
            counted["answered"],
        )


def test_a_call_at_half_past_eleven_at_night_is_on_that_local_day(client, supervisor, insert_calls):
    late = datetime(2026, 3, 7, 23, 30, tzinfo=NEW_YORK)  # 04:30 UTC on the 8th
    insert_calls([Call(started_at=late, created_at=late)])
    days = {"from": "2026-03-07", "to": "2026-03-08"}
    team_days = report(client, supervisor, **days).get_json()["days"]
    assert [day["totals"]["offered"] for day in team_days] == [1, 0]
    utc_days = report(client, supervisor, **days, tz="UTC").get_json()
    assert utc_days["timezone"] == "UTC"
    assert [day["totals"]["offered"] for day in utc_days["days"]] == [0, 1]


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25), (date(2026, 6, 1), 24)],
)
def test_a_day_runs_from_local_midnight_to_the_next_even_when_the_clocks_change(
    client, supervisor, insert_calls, day, hours
):
    start, end = day_bounds(day, NEW_YORK)
    assert end - start == timedelta(hours=hours)
    edges = [start, end - timedelta(microseconds=1)]
    outside = [start - timedelta(microseconds=1), end]
    insert_calls([Call(started_at=at, created_at=at) for at in edges + outside])
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    body = report(client, supervisor, **{"from": str(before), "to": str(after)}).get_json()
    assert [d["totals"]["offered"] for d in body["days"]] == [1, 2, 1]


def test_days_without_calls_are_listed_with_zeros(client, supervisor, database_url):
    body = report(client, supervisor, **{"from": "2026-02-27", "to": "2026-03-02"}).get_json()
    assert [day["day"] for day in body["days"]] == [
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
    ]
    # A day without calls shows what the totals' own SQL gives over no calls.
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {TOTALS_COLUMNS} FROM call_logs cl WHERE false",
            {"service_level_seconds": SERVICE_LEVEL_SECONDS},
        )
        nothing = cur.fetchone()
    conn.close()
    assert nothing == NO_CALLS_ROW
    zeros = totals(nothing)
    assert totals(NO_CALLS_ROW) == zeros
    assert zeros["offered"] == 0 and zeros["average_speed_of_answer_seconds"] is None
    assert all(day == {"day": day["day"], "totals": zeros, "agents": []} for day in body["days"])
    assert body["total"] == zeros


def test_the_range_defaults_to_today_in_the_team_zone(client, supervisor):
    today = datetime.now(UTC).astimezone(NEW_YORK).date().isoformat()
    body = report(client, supervisor).get_json()
    assert (body["from"], body["to"], len(body["days"])) == (today, today, 1)
    only_to = report(client, supervisor, to="2026-03-08").get_json()
    assert (only_to["from"], only_to["to"]) == ("2026-03-08", "2026-03-08")
    since = (datetime.now(UTC).astimezone(NEW_YORK).date() - timedelta(days=2)).isoformat()
    only_from = report(client, supervisor, **{"from": since}).get_json()
    assert (only_from["from"], only_from["to"], len(only_from["days"])) == (since, today, 3)


def test_366_days_is_the_longest_report(client, supervisor):
    body = report(client, supervisor, **{"from": "2028-01-01", "to": "2028-12-31"}).get_json()
    assert len(body["days"]) == 366


def test_todays_report_agrees_with_the_supervisor_summary(client, supervisor, team, insert_calls):
    today = datetime.now(UTC).astimezone(NEW_YORK).date()
    calls = generated_calls(list(team), seed=11, days=[today])
    insert_calls(calls)
    summary = client.get("/api/supervisor/summary", headers=supervisor.headers).get_json()
    body = report(client, supervisor).get_json()
    assert body["days"][0]["day"] == summary["day"]
    assert body["days"][0]["totals"] == summary["today"]
    assert summary["today"]["offered"] > 10
    handled = {a["id"]: a["handled_today"] for a in summary["agents"] if a["handled_today"]}
    assert {a["id"]: a["answered"] for a in body["days"][0]["agents"]} == handled
    talk = {a["id"]: a["talk_seconds_today"] for a in summary["agents"] if a["handled_today"]}
    assert {a["id"]: a["talk_seconds"] for a in body["days"][0]["agents"]} == talk


# --- the daily report's refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code", "parameter"),
    [
        ("from=2026-3-5", "invalid_parameter", "from"),
        ("from=20260305", "invalid_parameter", "from"),
        ("from=2026-02-30", "invalid_parameter", "from"),
        ("to=2026-03-05T00:00", "invalid_parameter", "to"),
        ("to=", "invalid_parameter", "to"),
        ("to=%D9%A2%D9%A0%D9%A2%D9%A6-03-05", "invalid_parameter", "to"),  # Arabic digits
        ("from=0001-01-01&to=2026-01-01", "invalid_parameter", "from"),
        ("to=9999-12-31", "invalid_parameter", "to"),
        ("from=2026-03-06&to=2026-03-05", "invalid_range", "to"),
        ("from=2026-01-01&to=2027-01-02", "invalid_range", "to"),
        ("tz=Mars/Olympus_Mons", "invalid_parameter", "tz"),
        ("tz=America", "invalid_parameter", "tz"),  # a folder of the zone files
        ("tz=../../etc/passwd", "invalid_parameter", "tz"),
        ("tz=" + "A" * 300, "invalid_parameter", "tz"),
        ("tz=", "invalid_parameter", "tz"),
        ("tz=%00", "invalid_parameter", "tz"),
        ("day=2026-03-05", "invalid_parameter", "day"),
        ("from=2026-03-05&from=2026-03-06", "invalid_parameter", "from"),
        ("tz=UTC&tz=UTC", "invalid_parameter", "tz"),
    ],
)
def test_bad_report_parameters_get_400_naming_them(client, supervisor, query, code, parameter):
    response = client.get(f"/api/reports/daily?{query}", headers=supervisor.headers)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert (error["code"], error["parameter"]) == (code, parameter)
    assert error["message"]


@pytest.mark.parametrize("path", ["/api/reports/daily", "/api/calls/export.csv"])
def test_reports_are_for_supervisors_only(client, agent, path):
    assert client.get(path).status_code == 401
    refused = client.get(path, headers=agent.headers)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "supervisors_only"


# --- the CSV export -----------------------------------------------------------------------


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert rows[0] == list(EXPORT_COLUMNS)
    return [dict(zip(EXPORT_COLUMNS, row, strict=True)) for row in rows[1:]]


def export(client, who, /, **params):
    return client.get("/api/calls/export.csv", query_string=params, headers=who.headers)


@pytest.fixture
def many_calls(database_url):
    """Insert `count` more inbound calls, three to a start time (ties the cursor must break by
    id), each older than the last."""
    inserted = 0

    def insert(count: int) -> None:
        nonlocal inserted
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO call_logs (call_sid, from_number, phone_number, to_number, outcome,"
                " started_at, ended_at, duration, notes)"
                " SELECT 'v3:many-' || g, '+13125550147', '+13125550147', '+14155550123',"
                " (ARRAY['answered','missed','abandoned','declined','voicemail'])[1 + mod(g, 5)],"
                " timestamptz '2026-11-20 15:00Z' - (g / 3) * interval '1 second',"
                " timestamptz '2026-11-20 15:01Z', mod(g, 300), 'note ' || g"
                " FROM generate_series(%s, %s) g",
                (inserted + 1, inserted + count),
            )
        conn.close()
        inserted += count

    return insert


def test_every_call_arrives_once_in_the_history_order(client, supervisor, many_calls, db_rows):
    many_calls(5000)
    expected = [
        row["id"]
        for row in db_rows(
            "SELECT id::text FROM call_logs ORDER BY COALESCE(started_at, created_at) DESC, id DESC"
        )
    ]
    response = export(client, supervisor)
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="calls-') and disposition.endswith('.csv"')
    assert response.headers["Cache-Control"] == "private, no-store"
    assert [row["id"] for row in read_csv(response)] == expected
    assert len(expected) == 5000


def _peak_bytes_of_export(client, supervisor) -> tuple[int, int]:
    """Peak memory traced while the export is made and read (nothing kept), and its lines."""
    tracemalloc.start()
    try:
        response = client.get("/api/calls/export.csv", headers=supervisor.headers, buffered=False)
        lines = sum(chunk.count(b"\r\n") for chunk in response.response)
        response.close()
        return tracemalloc.get_traced_memory()[1], lines
    finally:
        tracemalloc.stop()


def test_the_exports_memory_does_not_grow_with_its_rows(client, supervisor, many_calls):
    """Five times the rows, about the same peak: a page is in memory at a time, never the file.
    (docs/reports.md quotes these figures.)"""
    many_calls(1000)
    small, small_lines = _peak_bytes_of_export(client, supervisor)
    many_calls(4000)
    large, large_lines = _peak_bytes_of_export(client, supervisor)
    assert (small_lines, large_lines) == (1001, 5001)
    print(f"peak traced memory: 1000 rows {small} B, 5000 rows {large} B")
    assert large < small * 1.3
