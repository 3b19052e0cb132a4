"""The supervisor's summary, the daily report and the CSV export at 1,000,000 call_logs rows.

One run creates a throwaway database with every migration applied and fills it: 20 users (two
of them supervisors), 1,000,000 inbound calls over the 366 team days before today, skewed so
that weekdays, later months and some random days are busier, in business hours; outcomes mixed
(answered, missed, abandoned, declined, voicemail) and answered_at / duration / ended_at filled
as sql/015's write_call_log would; plus about 3,000 calls today, so "today" is a busy day. It
VACUUM ANALYZEs, then measures the statements the application sends, imported, not copied:

1. the summary's PostgreSQL part: supervisor.TODAY_SQL, HOURS_SQL and AGENTS_SQL with the
   parameters supervisor.summary() builds;
2. the daily report: reports.DAYS_SQL and AGENT_DAYS_SQL over 1, 31 and 366 days, with the
   parameters reports.daily_report() builds;
3. the CSV export: reports.export_chunks over a since/until range holding 100,000 calls (rows per
   second), and one page's query (history.list_sql) at cursors through the range.

For each: the server's execution time (EXPLAIN (ANALYZE, TIMING OFF)) and the client round trip
(psycopg2 over TCP to 127.0.0.1), median and p99; the EXPLAIN (ANALYZE, BUFFERS) plans of the
summary's TODAY_SQL and the 366-day DAYS_SQL; and whether any plan reads call_logs with a Seq
Scan. It prints the figures, writes docs/bench/supervisor-reports.md and drops the database. It
asserts nothing: it measures.

    .venv/bin/python bench/supervisor_reports.py [--rows N] [--samples N] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2

from telnyx_flask.db import Database
from telnyx_flask.history import Cursor, HistoryQuery, list_sql
from telnyx_flask.reports import (
    AGENT_DAYS_SQL,
    DAYS_SQL,
    EXPORT_PAGE_ROWS,
    ReportSpan,
    export_chunks,
)
from telnyx_flask.supervisor import AGENTS_SQL, HOURS_SQL, TODAY_SQL
from telnyx_flask.team_time import day_bounds, today

# The repository root, for the tests' throwaway database helper (bench/ is run as scripts).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import throwaway_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "bench" / "supervisor-reports.md"
EXECUTION_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")
# The configuration's defaults (config.py): what a deployment that sets nothing runs with.
SERVICE_LEVEL_SECONDS = 20
STATEMENT_TIMEOUT_MS = 5000
REPORT_DAYS = (1, 31, 366)
SUMMARY_TARGET_MS = 50.0
PAGE_QUERY = "export: one page's query"

USERS_SQL = """
INSERT INTO users (email, name, sip_username, role)
SELECT 'agent' || i || '@bench.test', 'Agent ' || lpad(i::text, 2, '0'), 'agent' || i,
       CASE WHEN i <= 2 THEN 'supervisor' ELSE 'agent' END
FROM generate_series(1, %(agents)s) AS i
"""

# The year's calls, a number per team day drawn from its weight: weekdays busy, weekends quiet,
# the year growing towards today, and each day +-40 % at random (so some days are the busiest).
# Within a day the calls start in business hours (a triangle peaking at 13:00 local), 3 % at
# any hour. Outcomes and timings as write_call_log writes them: answered_at is the caller leg's
# answer (an agent's, or voicemail's after the 30 s ring timeout), duration the talk time from
# it, ended_at the hang-up. Agents take calls unevenly (the lower numbers more).
DAYS_CTE = """
days AS (
    SELECT d, (%(today)s::date - d) AS day,
           CASE EXTRACT(ISODOW FROM %(today)s::date - d) WHEN 6 THEN 0.35 WHEN 7 THEN 0.2
                ELSE 1.0 END
           * (1.4 - 0.4 * d / 366.0) * (0.6 + 0.8 * random()) AS weight
    FROM generate_series(1, 366) AS d),
per_day AS (
    SELECT day, round(%(rows)s * weight / sum(weight) OVER ())::int AS calls FROM days)
"""
CALL_LOGS_SQL = """
WITH {days}, agents AS (SELECT array_agg(id ORDER BY email) AS ids, count(*) AS n FROM users),
     draws AS (
         SELECT day, random() AS r_hour, random() AS r_outcome, random() AS r_agent,
                random() AS r_wait, random() AS r_talk, random() AS r_note, random() AS r_who
         FROM {source}),
     calls AS (
         SELECT d.*,
                (d.day + CASE WHEN r_hour < 0.03 THEN r_hour / 0.03 * interval '24 hours'
                              ELSE interval '7 hours' + (random() + random()) * interval '6 hours'
                         END) AT TIME ZONE %(zone)s AS started,
                CASE WHEN r_outcome < 0.62 THEN 'answered' WHEN r_outcome < 0.76 THEN 'missed'
                     WHEN r_outcome < 0.88 THEN 'abandoned' WHEN r_outcome < 0.93 THEN 'declined'
                     ELSE 'voicemail' END AS outcome,
                agents.ids[1 + floor(power(r_agent, 1.3) * agents.n)::int] AS agent
         FROM draws d, agents),
     timed AS (
         SELECT c.*,
                CASE outcome
                     WHEN 'answered' THEN started + (2 + 45 * r_wait * r_wait) * interval '1 s'
                     WHEN 'voicemail' THEN started + interval '30 s' END AS answered,
                CASE outcome WHEN 'answered' THEN floor(20 + 900 * r_talk * r_talk)::int
                             WHEN 'voicemail' THEN floor(10 + 50 * r_talk)::int
                             ELSE 0 END AS talk,
                CASE outcome WHEN 'missed' THEN interval '30 s'
                             WHEN 'abandoned' THEN (2 + 28 * r_wait) * interval '1 s'
                             WHEN 'declined' THEN (3 + 12 * r_wait) * interval '1 s'
                             ELSE interval '0' END AS ringing
         FROM calls c)
INSERT INTO call_logs (call_sid, call_session_id, direction, from_number, phone_number, to_number,
                       started_at, answered_at, ended_at, duration, outcome, end_reason,
                       hangup_source, answered_by, caller_id, notes, disposition, noted_by,
                       noted_at, created_at, updated_at)
SELECT 'v3:' || md5(%(seed)s || random()::text), md5(random()::text),
       'inbound', '+1' || (3120000000 + floor(power(r_who, 1.5) * 100000)::bigint * 37)::text,
       '+1' || (3120000000 + floor(power(r_who, 1.5) * 100000)::bigint * 37)::text,
       '+14155550123', started, answered,
       COALESCE(answered, started) + ringing + talk * interval '1 s', talk, outcome,
       'normal_clearing', CASE WHEN r_talk < 0.5 THEN 'caller' ELSE 'callee' END,
       CASE WHEN outcome = 'answered' THEN agent END,
       CASE WHEN outcome = 'answered' THEN agent END,
       CASE WHEN r_note < 0.15 THEN 'Note on a call from ' || to_char(started, 'YYYY-MM-DD') END,
       CASE WHEN r_note < 0.25 AND outcome = 'answered'
            THEN (ARRAY['resolved', 'follow-up', 'sale'])[1 + floor(r_note * 12)::int] END,
       CASE WHEN r_note < 0.25 THEN agent END,
       CASE WHEN r_note < 0.25 THEN started + interval '20 minutes' END,
       COALESCE(answered, started) + ringing + talk * interval '1 s',
       COALESCE(answered, started) + ringing + talk * interval '1 s'
FROM timed
"""
YEAR_SOURCE = "per_day, generate_series(1, per_day.calls)"
TODAY_SOURCE = "(SELECT %(today)s::date AS day) AS t, generate_series(1, %(today_calls)s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="call_logs rows over the year")
    parser.add_argument("--today-calls", type=int, default=3000, help="call_logs rows today")
    parser.add_argument("--agents", type=int, default=20, help="users rows")
    parser.add_argument(
        "--samples",
        type=int,
        default=100,
        help="runs of each quick query (the summary, a 1-day report, an export page); the"
        " 31-day report runs a fifth as often, the 366-day one a twentieth (at least 3)",
    )
    parser.add_argument("--timezone", default="Europe/Berlin", help="the team's TEAM_TIMEZONE")
    parser.add_argument("--export-rows", type=int, default=100_000, help="calls to export")
    parser.add_argument(
        "--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.samples < 3 or args.agents < 3 or args.export_rows < 1000:
        parser.error("--rows >= 1000, --samples >= 3, --agents >= 3, --export-rows >= 1000")
    args.zone = ZoneInfo(args.timezone)
    return args


def scalar(cur: Any, sql: str, params: Any = None) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()[0]


def fill(cur: Any, args: argparse.Namespace, day: date) -> float:
    """Users, the year's calls, today's; then the visibility map and statistics a live table has.

    call_logs' secondary indexes are dropped for the load and built again from their own
    definitions afterwards: building each once is much faster than maintaining them all row by
    row, and the planner sees the same indexes."""
    started = time.perf_counter()
    params = {
        "rows": args.rows,
        "agents": args.agents,
        "today": day,
        "today_calls": args.today_calls,
        "zone": args.timezone,
        "seed": "bench",
    }
    cur.execute("SELECT setseed(0.20261201)")
    cur.execute(USERS_SQL, params)
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'call_logs'"
        " AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conname = i.indexname)"
    )
    indexes = cur.fetchall()
    for name, _ in indexes:
        cur.execute(f"DROP INDEX {name}")
    cur.execute(CALL_LOGS_SQL.format(days=DAYS_CTE, source=YEAR_SOURCE), params)
    cur.execute(CALL_LOGS_SQL.format(days=DAYS_CTE, source=TODAY_SOURCE), params)
    cur.execute("SET maintenance_work_mem = '256MB'")
    for _, definition in indexes:
        cur.execute(definition)
    cur.execute("RESET maintenance_work_mem")
    cur.execute("VACUUM (ANALYZE) users, call_logs")
    return time.perf_counter() - started


def explain(
    cur: Any, sql: str, params: dict[str, Any], plan: bool = False
) -> tuple[float, list[str]]:
    """EXPLAIN ANALYZE's execution time, and the plan. Without per-node timing unless the plan
    is wanted: reading the clock at each of a million rows would add more than they cost."""
    options = "ANALYZE, BUFFERS" + ("" if plan else ", TIMING OFF")
    cur.execute(f"EXPLAIN ({options}) {sql}", params)
    lines = [row[0] for row in cur.fetchall()]
    match = EXECUTION_TIME.search("\n".join(lines))
    return (float(match.group(1)) if match else float("nan")), lines


def round_trip_ms(cur: Any, sql: str, params: dict[str, Any]) -> float:
    """The statement as the application sends it, timed around execute + fetchall."""
    started = time.perf_counter()
    cur.execute(sql, params)
    cur.fetchall()
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], fraction: float) -> float:
    """The value at that fraction of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def seq_scans(plan: list[str]) -> list[str]:
    """The plan's lines that read call_logs sequentially."""
    return [line.strip() for line in plan if "Seq Scan on call_logs" in line]


class Measures:
    """Timings by label (in the order first seen), and every Seq Scan of call_logs seen."""

    def __init__(self) -> None:
        self.server: dict[str, list[float]] = {}
        self.trips: dict[str, list[float]] = {}
        self.seq_scans: dict[str, list[str]] = {}

    def add(self, label: str, server: float | None, trip: float | None) -> None:
        if server is not None:
            self.server.setdefault(label, []).append(server)
            self.trips.setdefault(label, [])
        if trip is not None:
            self.trips.setdefault(label, []).append(trip)
            self.server.setdefault(label, [])

    def statement(self, cur: Any, label: str, sql: str, params: dict[str, Any]) -> float:
        """One sample of a statement both ways; its round trip."""
        server, plan = explain(cur, sql, params)
        if seq_scans(plan):
            self.seq_scans[label] = seq_scans(plan)
        trip = round_trip_ms(cur, sql, params)
        self.add(label, server, trip)
        return trip

    def rows(self) -> list[str]:
        lines = []
        for label in self.server:
            server, trips = self.server[label], self.trips[label]
            cells = [label, str(max(len(server), len(trips)))]
            for values in (server, trips):
                cells += (
                    [f"{statistics.median(values):.2f}", f"{percentile(values, 0.99):.2f}"]
                    if values
                    else ["-", "-"]
                )
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def summary_params(args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    """What supervisor.summary() passes its three statements."""
    start, end = day_bounds(today(args.zone, now), args.zone)
    return {
        "start": start,
        "end": end,
        "zone": args.zone.key,
        "service_level_seconds": SERVICE_LEVEL_SECONDS,
    }


def report_params(span: ReportSpan) -> dict[str, Any]:
    """What reports.daily_report() passes DAYS_SQL and AGENT_DAYS_SQL."""
    return {
        "start": day_bounds(span.first, span.zone)[0],
        "end": day_bounds(span.last, span.zone)[1],
        "zone": span.zone.key,
        "service_level_seconds": SERVICE_LEVEL_SECONDS,
    }


def measure_summary(cur: Any, args: argparse.Namespace, now: datetime, m: Measures) -> None:
    """The summary's three statements, in turn, as one request sends them."""
    params = summary_params(args, now)
    for _ in range(5):  # warm the connection, the plan cache and the day's pages
        for sql in (TODAY_SQL, HOURS_SQL, AGENTS_SQL):
            round_trip_ms(cur, sql, params)
    for _ in range(args.samples):
        total = 0.0
        server_total = 0.0
        for label, sql in (
            ("summary: TODAY_SQL", TODAY_SQL),
            ("summary: HOURS_SQL", HOURS_SQL),
            ("summary: AGENTS_SQL", AGENTS_SQL),
        ):
            total += m.statement(cur, label, sql, params)
            server_total += m.server[label][-1]
        m.add("**summary: all three**", server_total, total)


def measure_reports(cur: Any, args: argparse.Namespace, now: datetime, m: Measures) -> None:
    """DAYS_SQL then AGENT_DAYS_SQL, as one report request sends them, for each span."""
    last = today(args.zone, now)
    for days in REPORT_DAYS:
        span = ReportSpan(last - timedelta(days=days - 1), last, args.zone)
        params = report_params(span)
        samples = {1: args.samples, 31: max(3, args.samples // 5)}.get(
            days, max(3, args.samples // 20)
        )
        round_trip_ms(cur, DAYS_SQL, params)  # warm
        for _ in range(samples):
            both = m.statement(cur, f"report {days} d: DAYS_SQL", DAYS_SQL, params)
            both += m.statement(cur, f"report {days} d: AGENT_DAYS_SQL", AGENT_DAYS_SQL, params)
            server = m.server[f"report {days} d: DAYS_SQL"][-1]
            server += m.server[f"report {days} d: AGENT_DAYS_SQL"][-1]
            m.add(f"**report {days} d: both**", server, both)


def export_range(cur: Any, args: argparse.Namespace, now: datetime) -> HistoryQuery:
    """since/until covering the newest `export_rows` calls before today (ties aside)."""
    until = day_bounds(today(args.zone, now), args.zone)[0]
    since = scalar(
        cur,
        "SELECT started_at FROM call_logs WHERE started_at < %s"
        " ORDER BY started_at DESC OFFSET %s LIMIT 1",
        (until, args.export_rows - 1),
    )
    return HistoryQuery(since=since, until=until)


def measure_export(
    cur: Any, url: str, args: argparse.Namespace, now: datetime, m: Measures
) -> dict[str, Any]:
    """The whole export through export_chunks and a pool like the application's, then single
    pages of it (list_sql at cursors spread through the range)."""
    query = export_range(cur, args, now)
    db = Database(url, size=1, wait_seconds=5, statement_timeout_ms=STATEMENT_TIMEOUT_MS)
    runs = []
    try:
        for _ in range(2):
            started = time.perf_counter()
            rows = 0
            size = 0
            chunk_ms = []
            chunk_started = time.perf_counter()
            for chunk in export_chunks(db, query):
                chunk_ms.append((time.perf_counter() - chunk_started) * 1000)
                rows += chunk.count(b"\r\n")
                size += len(chunk)
                chunk_started = time.perf_counter()
            runs.append((time.perf_counter() - started, rows - 1, size, chunk_ms))
    finally:
        db.close()
    seconds, rows, size, chunk_ms = min(runs)
    for ms in chunk_ms:
        m.add("export: one chunk (page + CSV)", None, ms)
    # Cursors at evenly spaced rows of the range: pages from its newest to its oldest calls.
    cur.execute(
        "SELECT at, id::text FROM (SELECT COALESCE(started_at, created_at) AS at, id,"
        " row_number() OVER (ORDER BY COALESCE(started_at, created_at) DESC, id DESC) AS n"
        " FROM call_logs WHERE started_at >= %(since)s AND started_at < %(until)s) AS ranked"
        " WHERE n %% %(step)s = 0",
        {
            "since": query.since,
            "until": query.until,
            "step": max(1, args.export_rows // args.samples),
        },
    )
    cursors: list[Cursor | None] = [None] + [Cursor(at, id) for at, id in cur.fetchall()]
    for cursor in cursors[: args.samples]:
        sql, params = list_sql(replace(query, limit=EXPORT_PAGE_ROWS, before=cursor))
        m.statement(cur, PAGE_QUERY, sql, params)
    middle = cursors[len(cursors) // 2]
    sql, params = list_sql(replace(query, limit=EXPORT_PAGE_ROWS, before=middle))
    page_plan = explain(cur, sql, params, plan=True)[1]
    return {
        "seconds": seconds,
        "rows": rows,
        "bytes": size,
        "since": query.since,
        "until": query.until,
        "all_runs": [run[0] for run in runs],
        "page_plan": page_plan,
    }


def data_facts(cur: Any, fill_seconds: float, args: argparse.Namespace, now: datetime) -> dict:
    """What the filled tables hold, for the report."""
    start, end = day_bounds(today(args.zone, now), args.zone)
    per_day = (
        "SELECT (COALESCE(started_at, created_at) AT TIME ZONE %(zone)s)::date AS day,"
        " count(*) AS n FROM call_logs GROUP BY 1"
    )
    cur.execute(
        f"SELECT min(n), percentile_disc(0.5) WITHIN GROUP (ORDER BY n), max(n), count(*)"
        f" FROM ({per_day}) AS d WHERE day < %(today)s",
        {"zone": args.timezone, "today": today(args.zone, now)},
    )
    quietest, median_day, busiest, days = cur.fetchone()
    cur.execute("SELECT outcome, count(*) FROM call_logs GROUP BY 1 ORDER BY 2 DESC")
    outcomes = ", ".join(f"{outcome} {count:,}" for outcome, count in cur.fetchall())
    return {
        "rows": scalar(cur, "SELECT count(*) FROM call_logs"),
        "today": scalar(
            cur,
            "SELECT count(*) FROM call_logs WHERE started_at >= %s AND started_at < %s",
            (start, end),
        ),
        "days": days,
        "quietest": quietest,
        "median_day": median_day,
        "busiest": busiest,
        "outcomes": outcomes,
        "numbers": scalar(cur, "SELECT count(DISTINCT phone_number) FROM call_logs"),
        "users": scalar(cur, "SELECT count(*) FROM users"),
        "sizes": scalar(
            cur,
            "SELECT 'call_logs ' || pg_size_pretty(pg_table_size('call_logs'))"
            " || ', its indexes ' || pg_size_pretty(pg_indexes_size('call_logs'))",
        ),
        "server": scalar(cur, "SHOW server_version"),
        "settings": ", ".join(
            f"{name} {scalar(cur, f'SHOW {name}')}"
            for name in ("shared_buffers", "work_mem", "jit", "max_parallel_workers_per_gather")
        ),
        "fill_seconds": fill_seconds,
    }


def median(m: Measures, label: str, server: bool = True) -> float:
    return statistics.median((m.server if server else m.trips)[label])


def plan_fact(plan: list[str], pattern: str) -> str | None:
    """The first match of `pattern`'s group in a plan, if any."""
    found = re.search(pattern, "\n".join(plan))
    return found.group(1) if found else None


def meaning(m: Measures, export: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """The short paragraph: what the figures say, from the figures and the plans."""
    summary_ms = median(m, "**summary: all three**", server=False)
    day_ms = median(m, "**report 1 d: both**", server=False)
    month_ms = median(m, "**report 31 d: both**", server=False)
    year_ms = median(m, "**report 366 d: both**", server=False)
    verdict = "within" if summary_ms < SUMMARY_TARGET_MS else "OVER"
    scanned = ", ".join(m.seq_scans) or "none"
    year_plan = results["year_plan"]
    year_rows = plan_fact(year_plan, r"Seq Scan on call_logs cl .*actual time=\S+ rows=(\d+)")
    loops = plan_fact(year_plan, r"Seq Scan on call_logs cl .*loops=(\d+)")
    year_read = int(year_rows) * int(loops) if year_rows and loops else None
    sort = plan_fact(year_plan, r"Sort Method: ([a-z ]+?)(?:  |$)")
    jit = plan_fact(year_plan, r"JIT:(?:\n.*){3}Total ([0-9.]+) ms")
    page_ms = median(m, PAGE_QUERY)
    scan = "parallel Seq Scan" if "Parallel Seq Scan" in " ".join(year_plan) else "Seq Scan"
    month_read = (
        "with a Seq Scan"
        if any(label.startswith("report 31") for label in m.seq_scans)
        else "through the sort-key index"
    )
    chunk_ms = median(m, "export: one chunk (page + CSV)", server=False)
    lines = [
        f"- **The summary** (its three statements in turn) takes {summary_ms:.1f} ms (median"
        f" round trip), {verdict} a {SUMMARY_TARGET_MS:g} ms budget: each reads only today's"
        " calls through an index on the sort key (the plan below), so it grows with one day's"
        " calls, not with the table.",
        f"- **The daily report** grows with its span: {day_ms:.0f} ms for one day,"
        f" {month_ms:.0f} ms for 31 days (read {month_read}), {year_ms:,.0f} ms"
        f" for 366 days, {'under' if year_ms < STATEMENT_TIMEOUT_MS else 'OVER'} the default"
        f" statement timeout of {STATEMENT_TIMEOUT_MS:,} ms (DB_STATEMENT_TIMEOUT_MS)"
        + (
            f", but only {STATEMENT_TIMEOUT_MS / year_ms:.1f} times under it."
            if STATEMENT_TIMEOUT_MS / 4 < year_ms < STATEMENT_TIMEOUT_MS
            else "."
        ),
    ]
    if year_read is not None:
        lines.append(
            f"- Where the year's time goes (plans below): the range is {year_read:,} of"
            f" {results['table_rows']:,} rows, so the planner rightly reads the table with a"
            f" {scan} rather than through an index; then every row is sorted by"
            f" its local day for the ROLLUP ({sort or 'sort'}, at work_mem"
            f" {results['work_mem']}) and goes through call_stats' ten aggregates."
            + (f" JIT compilation adds {float(jit):.0f} ms." if jit else "")
            + " The work is per row: a year's report in milliseconds would need totals kept per"
            " day (or per quarter hour, for any zone's days) as calls are logged."
        )
    lines += [
        f"- Plans that read call_logs with a Seq Scan: {scanned}.",
        f"- **The export** streamed {export['rows']:,} calls in {export['seconds']:.1f} s"
        f" ({export['rows'] / export['seconds']:,.0f} rows/s, {export['bytes'] / 1e6:.1f} MB of"
        f" CSV). A page's query is {page_ms:.2f} ms on the server wherever the page is (keyset"
        f" cursors: the last page costs what the first does) of a {chunk_ms:.1f} ms chunk: the"
        " rest is the client decoding 500 rows and writing them as CSV.",
    ]
    return lines


def report(
    args: argparse.Namespace, facts: dict[str, Any], m: Measures, results: dict[str, Any]
) -> str:
    """The Markdown written to the output file (and printed)."""
    export = results["export"]
    load = results["load"]
    lines = [
        f"# The supervisor's summary and reports at {facts['rows']:,} calls",
        "",
        "Issue 17: how long the PostgreSQL part of `GET /api/supervisor/summary`, the daily report",
        "(`GET /api/reports/daily`) and the CSV export (`GET /api/calls/export.csv`) take on a",
        "year of a busy team's calls.",
        "",
        "## How it is measured",
        "",
        "`bench/supervisor_reports.py` makes a throwaway database with every migration, fills",
        "it, runs `VACUUM (ANALYZE)`, then sends the application's own statements (imported from",
        "`telnyx_flask.supervisor` and `telnyx_flask.reports`) with the parameters the",
        f"application builds (team time zone {args.timezone}, service level"
        f" {SERVICE_LEVEL_SECONDS} s, today = {results['day']}):",
        "",
        "- **server**: the `Execution Time` of `EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)`, what",
        "  PostgreSQL spends without the network or the client;",
        "- **round trip**: the plain statement timed in Python around `execute` + `fetchall`",
        "  with psycopg2 over TCP to 127.0.0.1: what the request waits for.",
        "",
        f"Samples: {args.samples} of the summary, the 1-day report and the export's page query;"
        " a fifth as many of the 31-day report, a twentieth (at least 3) of the 366-day one. The"
        " export runs whole twice through `reports.export_chunks` and a pool like the"
        " application's (the faster run is shown); a chunk is one page's query plus its CSV.",
        "",
        "## Data",
        "",
        f"- {facts['rows']:,} call_logs rows: {facts['days']} team days before today"
        f" (quietest {facts['quietest']:,} calls, median {facts['median_day']:,}, busiest"
        f" {facts['busiest']:,}: weekends are quiet, the year grows, days vary +-40 %) and"
        f" {facts['today']:,} today (over the whole team day, hours still to come included: the"
        f" statements range over the day); all inbound, from {facts['numbers']:,} numbers",
        f"- outcomes: {facts['outcomes']}; answered_at, duration and ended_at as write_call_log"
        " fills them",
        f"- {facts['users']} users (2 supervisors); agents take calls unevenly",
        f"- sizes: {facts['sizes']} (indexes built after the load, so without a live table's"
        " bloat)",
        f"- fill, index builds and VACUUM ANALYZE took {facts['fill_seconds']:.0f} s",
        f"- PostgreSQL {facts['server']} ({facts['settings']}, as installed); Python"
        f" {platform.python_version()} on {platform.platform()}, {os.cpu_count()} cores shared"
        f" with other work (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the"
        " end of the run)",
        "",
        "## Results (ms)",
        "",
        "| statement | samples | server median | server p99 | round trip median | round trip p99 |",
        "|---|---:|---:|---:|---:|---:|",
        *m.rows(),
        "",
        f"The export: {export['rows']:,} calls (started {export['since']:%Y-%m-%d %H:%M} to"
        f" {export['until']:%Y-%m-%d %H:%M} UTC) in {export['seconds']:.2f} s, "
        f"**{export['rows'] / export['seconds']:,.0f} rows/s**, {export['bytes'] / 1e6:.1f} MB"
        f" (runs: {', '.join(f'{s:.2f} s' for s in export['all_runs'])}).",
        "",
        "## What this means",
        "",
        *meaning(m, export, results),
        "",
        "## Plan: the summary's TODAY_SQL (per-node timing on)",
        "",
        "```",
        *results["today_plan"],
        "```",
        "",
        "## Plan: the 366-day report's DAYS_SQL (per-node timing on)",
        "",
        "```",
        *results["year_plan"],
        "```",
        "",
        "## Plan: the 366-day report's AGENT_DAYS_SQL (per-node timing on)",
        "",
        "```",
        *results["year_agents_plan"],
        "```",
        "",
        "## Plan: an export page in the middle of the range (per-node timing on)",
        "",
        "```",
        *export["page_plan"],
        "```",
        "",
    ]
    return "\n".join(lines)


def timed(label: str, step: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    print(f"{label}...", file=sys.stderr, flush=True)
    value = step()
    print(f"  {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    """Build, fill, measure, write the report, drop."""
    args = parse_args(argv)
    now = datetime.now(UTC)
    day = today(args.zone, now)
    name = f"telnyx_flask_bench_{uuid.uuid4().hex[:10]}"
    with throwaway_database(args.database_admin_url, name) as url:
        conn = psycopg2.connect(url, options="-c timezone=UTC")
        conn.autocommit = True
        m = Measures()
        try:
            with conn.cursor() as cur:
                fill_seconds = timed(
                    f"filling {args.rows:,} + {args.today_calls:,} call_logs rows",
                    lambda: fill(cur, args, day),
                )
                facts = data_facts(cur, fill_seconds, args, now)
                timed("the summary", lambda: measure_summary(cur, args, now, m))
                timed("the daily reports", lambda: measure_reports(cur, args, now, m))
                export = timed("the export", lambda: measure_export(cur, url, args, now, m))
                year = report_params(ReportSpan(day - timedelta(days=365), day, args.zone))
                results = {
                    "day": day,
                    "export": export,
                    "today_plan": explain(cur, TODAY_SQL, summary_params(args, now), True)[1],
                    "year_plan": explain(cur, DAYS_SQL, year, True)[1],
                    "year_agents_plan": explain(cur, AGENT_DAYS_SQL, year, True)[1],
                    "load": os.getloadavg(),
                    "table_rows": facts["rows"],
                    "work_mem": scalar(cur, "SHOW work_mem"),
                }
        finally:
            conn.close()
    text = report(args, facts, m, results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
