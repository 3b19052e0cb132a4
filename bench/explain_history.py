"""Call history query plans: EXPLAIN (ANALYZE, BUFFERS) of GET /api/calls on 100,000 call_logs rows.

One run creates a throwaway database with every migration applied, fills it with realistic rows
(a few hundred agents and prospects, 100,000 calls over six months), ANALYZEs it, and explains the
history's queries exactly as telnyx_flask/history.py builds them: the first page, pages behind a
cursor, each filter, and the combinations. It prints each plan and its execution time (median of
several warm runs), writes them to docs/bench/history-explain.txt, and drops the database. It
measures; it asserts nothing (the summary flags any query that reads call_logs with a Seq Scan).

    .venv/bin/python bench/explain_history.py [--rows N] [--runs R] [--output PATH]
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from telnyx_flask.history import FIND_SQL, Cursor, HistoryQuery, find_params, list_sql
from telnyx_flask.phone_numbers import normalise_phone

# The repository root, for the tests' throwaway database helper (bench/ is run as scripts).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import throwaway_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "bench" / "history-explain.txt"
EXECUTION_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")

AGENTS_SQL = """
INSERT INTO users (email, name, sip_username, active)
SELECT 'agent' || i || '@bench.test', 'Agent ' || i, 'agent' || i, mod(i, 25) <> 0
FROM generate_series(1, %(agents)s) AS i
"""

PROSPECTS_SQL = """
INSERT INTO prospects (name, phone_number)
SELECT 'Prospect ' || i, '+1' || (2025550000 + i * 7919)::text
FROM generate_series(1, %(prospects)s) AS i
"""

# Outcomes about as a sales line sees them: 62% answered, 18% missed, 15% abandoned, 5% declined.
# 30% of calls come from known prospects (a few hundred numbers that call often), the rest from
# 40,000 other numbers; 0.5% have no started_at (their start never arrived); answered calls have
# an agent, talk time and mostly a recording; 30% have a disposition (6% each of five).
CALL_LOGS_SQL = """
WITH agents AS (SELECT array_agg(id ORDER BY email) AS ids FROM users),
     leads AS (
         SELECT array_agg(id ORDER BY phone_number) AS ids,
                array_agg(name ORDER BY phone_number) AS names,
                array_agg(phone_number ORDER BY phone_number) AS phones,
                count(*) AS n
         FROM prospects),
     draws AS (
         SELECT i,
                now() - random() * interval '180 days' AS started,
                random() AS r_outcome, random() AS r_known, random() AS r_who, random() AS r_agent,
                random() AS r_ring, random() AS r_talk, random() AS r_null, random() AS r_record,
                random() AS r_noted
         FROM generate_series(1, %(rows)s) AS i),
     calls AS (
         SELECT d.*,
                CASE WHEN r_outcome < 0.62 THEN 'answered' WHEN r_outcome < 0.80 THEN 'missed'
                     WHEN r_outcome < 0.95 THEN 'abandoned' ELSE 'declined' END AS outcome,
                CASE WHEN r_known < 0.3 THEN 1 + floor(r_who * leads.n)::int END AS lead,
                make_interval(secs => 2 + r_ring * 28) AS ring,
                20 + floor(r_talk * 900)::int AS talk
         FROM draws d, leads)
INSERT INTO call_logs (call_sid, call_session_id, direction, from_number, phone_number, to_number,
                       started_at, ended_at, duration, outcome, end_reason, hangup_source,
                       answered_by, caller_id, prospect_id, prospect_name, recording_url,
                       disposition, created_at, updated_at)
SELECT 'v3:' || md5('leg' || i) || md5('call' || i),
       md5('session' || i)::uuid::text,
       'inbound',
       COALESCE(leads.phones[lead], '+1' || (3125550000 + floor(r_who * 40000))::bigint::text),
       COALESCE(leads.phones[lead], '+1' || (3125550000 + floor(r_who * 40000))::bigint::text),
       '+14155550123',
       CASE WHEN r_null >= 0.005 THEN started END,
       started + ring + CASE WHEN outcome = 'answered' THEN make_interval(secs => talk)
                             ELSE interval '0' END,
       CASE WHEN outcome = 'answered' THEN talk ELSE 0 END,
       outcome,
       CASE outcome WHEN 'answered' THEN 'normal_clearing' WHEN 'abandoned' THEN 'originator_cancel'
                    WHEN 'declined' THEN 'call_rejected' ELSE 'timeout' END,
       CASE WHEN outcome IN ('answered', 'abandoned') THEN 'caller' ELSE 'callee' END,
       CASE WHEN outcome = 'answered' THEN agents.ids[1 + floor(r_agent * %(agents)s)::int] END,
       CASE WHEN outcome = 'answered' THEN agents.ids[1 + floor(r_agent * %(agents)s)::int] END,
       leads.ids[lead],
       leads.names[lead],
       CASE WHEN outcome = 'answered' AND r_record < 0.9
            THEN 'https://s3.amazonaws.com/telnyx-recordings/' || md5('rec' || i) || '.mp3' END,
       CASE WHEN r_noted < 0.30
            THEN (ARRAY['resolved', 'follow-up', 'sale', 'wrong number', 'spam'])
                 [1 + floor(r_noted / 0.06)::int] END,
       started + ring + make_interval(secs => talk + 1),
       started + ring + make_interval(secs => talk + 1)
FROM calls, agents, leads
"""


@dataclass
class Explained:
    """One query's plan and timings."""

    label: str
    plan: list[str]
    times_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def seq_scan(self) -> bool:
        return any("Seq Scan on call_logs" in line for line in self.plan)

    @property
    def indexes(self) -> list[str]:
        text = "\n".join(self.plan)
        found = re.findall(r"Index (?:Only )?Scan (?:Backward )?using (\w+)", text)
        found += re.findall(r"Bitmap Index Scan on (\w+)", text)
        return sorted({name for name in found if name.startswith("call_logs")})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="call_logs rows")
    parser.add_argument("--agents", type=int, default=300, help="users rows")
    parser.add_argument("--prospects", type=int, default=500, help="prospects rows")
    parser.add_argument("--runs", type=int, default=7, help="timed EXPLAIN ANALYZE runs per query")
    parser.add_argument(
        "--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.agents < 1 or args.prospects < 1 or args.runs < 1:
        parser.error("--rows must be at least 1000; --agents, --prospects, --runs positive")
    return args


def fill(cur: Any, args: argparse.Namespace) -> None:
    """Agents, prospects and call_logs rows, then fresh statistics and visibility map."""
    counts = {"rows": args.rows, "agents": args.agents, "prospects": args.prospects}
    cur.execute("SELECT setseed(0.20261120)")
    cur.execute(AGENTS_SQL, counts)
    cur.execute(PROSPECTS_SQL, counts)
    cur.execute(CALL_LOGS_SQL, counts)
    # A live table has been vacuumed by autovacuum; a just-loaded one has not.
    cur.execute("VACUUM (ANALYZE) users, prospects, call_logs")


def scalar(cur: Any, sql: str, params: Any = None) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()[0]


def cursor_at(cur: Any, query: HistoryQuery, offset: int) -> Cursor:
    """The cursor a client holds after paging `offset` rows into this query's results."""
    sql, params = list_sql(HistoryQuery(**{**query.__dict__, "limit": 1}))
    sql = sql.replace("LIMIT %(limit)s", "OFFSET %(offset)s LIMIT 1")
    cur.execute(sql, {**params, "offset": offset - 1})
    row = cur.fetchone()
    return Cursor(row[-1], row[0])


def queries(cur: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, sql, params) for every query the history runs, with realistic values."""
    busy_agent = scalar(
        cur,
        "SELECT answered_by::text FROM call_logs WHERE answered_by IS NOT NULL"
        " GROUP BY answered_by ORDER BY count(*) DESC LIMIT 1",
    )
    frequent_prospect = scalar(
        cur,
        "SELECT phone_number FROM call_logs WHERE prospect_id IS NOT NULL"
        " GROUP BY phone_number ORDER BY count(*) DESC LIMIT 1",
    )
    other_caller = scalar(
        cur,
        "SELECT phone_number FROM call_logs WHERE prospect_id IS NULL"
        " GROUP BY phone_number ORDER BY count(*) DESC LIMIT 1",
    )
    rows = scalar(cur, "SELECT count(*) FROM call_logs")
    newest = scalar(cur, "SELECT max(started_at) FROM call_logs")
    day = newest - timedelta(days=30)
    week = newest - timedelta(days=90)
    one_call = scalar(cur, "SELECT id::text FROM call_logs ORDER BY random() LIMIT 1")
    one_sid = scalar(cur, "SELECT call_sid FROM call_logs ORDER BY random() LIMIT 1")

    everything = HistoryQuery()
    missed = HistoryQuery(outcome="missed")
    # digits only, as a client typing the number would send it
    digits = re.sub(r"\D", "", frequent_prospect)
    plans: list[tuple[str, HistoryQuery]] = [
        ("first page (limit 50)", everything),
        ("first page (limit 200)", HistoryQuery(limit=200)),
        ("second page (cursor after 50 rows)", HistoryQuery(before=cursor_at(cur, everything, 50))),
        (
            f"deep page (cursor after {rows // 2} rows)",
            HistoryQuery(before=cursor_at(cur, everything, rows // 2)),
        ),
        (
            f"last page (cursor after {rows - 20} rows)",
            HistoryQuery(before=cursor_at(cur, everything, rows - 20)),
        ),
        ("outcome=answered", HistoryQuery(outcome="answered")),
        ("outcome=declined", HistoryQuery(outcome="declined")),
        (
            "outcome=missed, page behind a cursor",
            HistoryQuery(outcome="missed", before=cursor_at(cur, missed, 5000)),
        ),
        ("disposition=sale", HistoryQuery(disposition="sale")),
        (
            "disposition=spam, page behind a cursor",
            HistoryQuery(
                disposition="spam", before=cursor_at(cur, HistoryQuery(disposition="spam"), 2000)
            ),
        ),
        ("disposition=sale + agent", HistoryQuery(disposition="sale", agent=busy_agent)),
        ("direction=inbound", HistoryQuery(direction="inbound")),
        ("direction=outbound (none exist)", HistoryQuery(direction="outbound")),
        ("agent=<busiest agent>", HistoryQuery(agent=busy_agent)),
        ("agent + outcome=answered", HistoryQuery(agent=busy_agent, outcome="answered")),
        ("agent + outcome=missed (none exist)", HistoryQuery(agent=busy_agent, outcome="missed")),
        (f"phone={digits} (a prospect, digits)", HistoryQuery(phone=normalise_phone(digits))),
        (f"phone={other_caller} (not a prospect)", HistoryQuery(phone=other_caller)),
        ("phone=+19995550000 (never called)", HistoryQuery(phone="+19995550000")),
        ("since/until: one day", HistoryQuery(since=day, until=day + timedelta(days=1))),
        ("since only: last 30 days", HistoryQuery(since=newest - timedelta(days=30))),
        ("until only: before 90 days ago", HistoryQuery(until=week)),
        (
            "since/until: one week + outcome=declined",
            HistoryQuery(since=week, until=week + timedelta(days=7), outcome="declined"),
        ),
        (
            "since/until: one week + agent",
            HistoryQuery(since=week, until=week + timedelta(days=7), agent=busy_agent),
        ),
    ]
    out = [(label, *list_sql(query)) for label, query in plans]
    out.append(("GET /api/calls/<id> by id", FIND_SQL, find_params(one_call)))
    out.append(("GET /api/calls/<id> by call_sid", FIND_SQL, find_params(one_sid)))
    return out


def explain(cur: Any, label: str, sql: str, params: dict[str, Any], runs: int) -> Explained:
    """Warm the query up, then EXPLAIN (ANALYZE, BUFFERS) it `runs` times; keep the last plan."""
    cur.execute(sql, params)
    cur.fetchall()
    times, plan = [], []
    for _ in range(runs):
        cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = [row[0] for row in cur.fetchall()]
        match = EXECUTION_TIME.search("\n".join(plan))
        times.append(float(match.group(1)) if match else float("nan"))
    return Explained(label, plan, times)


def report(args: argparse.Namespace, server: str, sizes: str, results: list[Explained]) -> str:
    """The text written to the output file (and printed)."""
    lines = [
        "Call history query plans (bench/explain_history.py)",
        f"PostgreSQL: {server}",
        f"Python {platform.python_version()} on {platform.platform()}",
        f"Data: {args.rows} call_logs rows, {args.agents} users, {args.prospects} prospects",
        f"Sizes: {sizes}",
        f"Times: EXPLAIN ANALYZE execution time, median of {args.runs} warm runs",
        "",
        f"{'query':<48} {'median ms':>10} {'max ms':>8}  seq scan  indexes",
    ]
    for result in results:
        lines.append(
            f"{result.label[:48]:<48} {result.median_ms:>10.3f} {max(result.times_ms):>8.3f}"
            f"  {'YES' if result.seq_scan else 'no':<8}  {', '.join(result.indexes) or '-'}"
        )
    for result in results:
        lines += ["", f"== {result.label}", *result.plan]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build, fill, explain, write the report, drop."""
    args = parse_args(argv)
    name = f"telnyx_flask_bench_{uuid.uuid4().hex[:10]}"
    with throwaway_database(args.database_admin_url, name) as url:
        conn = psycopg2.connect(url, options="-c timezone=UTC")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                print(f"filling {args.rows} call_logs rows...", file=sys.stderr)
                fill(cur, args)
                server = scalar(cur, "SHOW server_version")
                sizes = scalar(
                    cur,
                    "SELECT 'call_logs ' || pg_size_pretty(pg_table_size('call_logs'))"
                    " || ', its indexes ' || pg_size_pretty(pg_indexes_size('call_logs'))",
                )
                results = [
                    explain(cur, label, sql, params, args.runs)
                    for label, sql, params in queries(cur)
                ]
        finally:
            conn.close()
    text = report(args, server, sizes, results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
