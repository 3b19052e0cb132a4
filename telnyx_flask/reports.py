"""Reports over the call log: the daily report (GET /api/reports/daily, `flask reports daily`)
and the call history as a CSV file (GET /api/calls/export.csv). Supervisors only.

The daily report counts per team day (TEAM_TIMEZONE, or ?tz=) with call_stats.py's definitions,
so a day of the report and the supervisor view's "today" are the same numbers. Every call rings
every available agent, so an agent is offered calls only as part of the team: per agent there are
the calls they answered (how fast, how long, how many within the service level), not offers.

The export pages through the history's own query (history.list_sql, keyset cursors) a few
hundred rows per short use of a pooled connection, and streams each page as CSV lines: memory
stays flat however many calls match, and no connection is held while the client reads.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
import psycopg2.errors
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.cli import AppGroup

from .auth import supervisor_required
from .call_stats import (
    ANSWERED,
    FIELDS,
    IN_RANGE,
    NO_CALLS_ROW,
    SORT_KEY,
    TOTALS_COLUMNS,
    totals,
)
from .db import Database, get_db
from .errors import StorageUnavailable
from .history import (
    Cursor,
    HistoryQuery,
    InvalidParameter,
    exported_call,
    list_sql,
    parse_query,
    single_values,
)
from .team_time import day_bounds, team_zone, time_zone, today

log = logging.getLogger(__name__)

bp = Blueprint("reports", __name__)

# --- The daily report ---

REPORT_PARAMETERS = ("from", "to", "tz")
MAX_DAYS = 366
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Calls are years after 1970; the far end keeps the day after `to` a date Python can hold.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)
# No IANA name is near this long; longer ones are refused before the time zone files are read.
MAX_ZONE_NAME = 64

# The team day a call belongs to: the local date, in the report's zone, of when it started.
LOCAL_DAY = f"({SORT_KEY} AT TIME ZONE %(zone)s)::date"
# Each day that had calls, and (GROUPING = 1) the whole range, in one pass.
DAYS_SQL = f"""
SELECT {LOCAL_DAY}, GROUPING({LOCAL_DAY}), {TOTALS_COLUMNS}
  FROM call_logs cl WHERE {IN_RANGE}
 GROUP BY ROLLUP ({LOCAL_DAY})
"""
# The answered calls per day and agent: call_stats' totals over an agent's answers alone, so its
# "offered" is their answers and its service level their answers within the threshold.
AGENT_DAYS_SQL = f"""
SELECT {LOCAL_DAY}, u.id::text, u.name, {TOTALS_COLUMNS}
  FROM call_logs cl JOIN users u ON u.id = cl.answered_by
 WHERE {IN_RANGE} AND {ANSWERED}
 GROUP BY 1, u.id, u.name
 ORDER BY 1, u.name, u.id
"""
AGENT_FIELDS = (
    "answered",
    "average_speed_of_answer_seconds",
    "average_talk_seconds",
    "talk_seconds",
    "answered_within_service_level",
    "service_level",
)


class InvalidRange(InvalidParameter):
    """Dates that are each fine but do not make a range: `to` before `from`, or too long."""

    code = "invalid_range"


@dataclass(frozen=True)
class ReportSpan:
    """The team days a report covers, `first` to `last` inclusive, in `zone`."""

    first: date
    last: date
    zone: ZoneInfo

    def days(self) -> list[date]:
        """Every day of the span, in order."""
        count = (self.last - self.first).days + 1
        return [self.first + timedelta(days=n) for n in range(count)]


def _day(name: str, text: str) -> date:
    if not DAY.fullmatch(text):
        raise InvalidParameter(name, f"{name} must be a date as YYYY-MM-DD")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(name, f"{name} is not a day of the calendar: {text}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidParameter(name, f"{name} must be from {FIRST_DAY} to {LAST_DAY}")
    return day


def _zone(text: str) -> ZoneInfo:
    refusal = f"tz must be an IANA time zone name (such as Europe/Berlin): {text[:64]!r}"
    if len(text) > MAX_ZONE_NAME:
        raise InvalidParameter("tz", refusal)
    try:
        return time_zone(text)
    except ValueError:
        raise InvalidParameter("tz", refusal) from None


def report_span(
    first: str | None, last: str | None, zone_name: str | None, now: datetime | None = None
) -> ReportSpan:
    """Check a report's from, to and tz; InvalidParameter names the first bad one.

    tz defaults to TEAM_TIMEZONE; to to today there; from to `to` (so ?to= alone is one day)."""
    zone = team_zone() if zone_name is None else _zone(zone_name)
    last_day = today(zone, now) if last is None else _day("to", last)
    first_day = last_day if first is None else _day("from", first)
    # The range's fault is named on the date that was given (`to` when both were).
    culprit = "from" if last is None else "to"
    if last_day < first_day:
        raise InvalidRange(culprit, f"to ({last_day}) is before from ({first_day})")
    if (last_day - first_day).days + 1 > MAX_DAYS:
        raise InvalidRange(culprit, f"a report covers at most {MAX_DAYS} days")
    return ReportSpan(first_day, last_day, zone)


def _agent(row: tuple[Any, ...]) -> dict[str, Any]:
    numbers = totals(row[3:])
    return {"id": row[1], "name": row[2], **{field: numbers[field] for field in AGENT_FIELDS}}


def daily_report(span: ReportSpan, service_level_seconds: int) -> dict[str, Any]:
    """The team's totals for each day of the span (days without calls too), the answered calls
    of each agent who answered any that day, and the totals of the whole span."""
    start = day_bounds(span.first, span.zone)[0]
    end = day_bounds(span.last, span.zone)[1]
    params = {
        "start": start,
        "end": end,
        "zone": span.zone.key,
        "service_level_seconds": service_level_seconds,
    }
    try:
        with get_db().connection() as conn, conn.cursor() as cur:
            cur.execute(DAYS_SQL, params)
            day_rows = cur.fetchall()
            cur.execute(AGENT_DAYS_SQL, params)
            agent_rows = cur.fetchall()
    except psycopg2.errors.InvalidParameterValue:
        # A name Python's time zone files have and PostgreSQL's lack (they are usually the same).
        raise InvalidParameter(
            "tz", f"PostgreSQL does not know the time zone {span.zone.key}"
        ) from None
    by_day = {row[0]: totals(row[2:]) for row in day_rows if row[1] == 0}
    whole_span = next(totals(row[2:]) for row in day_rows if row[1] == 1)
    agents_by_day: dict[date, list[dict[str, Any]]] = {}
    for row in agent_rows:
        agents_by_day.setdefault(row[0], []).append(_agent(row))
    no_calls = totals(NO_CALLS_ROW)
    return {
        "timezone": span.zone.key,
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "service_level_seconds": service_level_seconds,
        "days": [
            {
                "day": day.isoformat(),
                "totals": by_day.get(day, no_calls),
                "agents": agents_by_day.get(day, []),
            }
            for day in span.days()
        ],
        "total": whole_span,
    }


# --- The call history as CSV ---

# Rows per page: one short query each; a page is also one chunk of the response.
EXPORT_PAGE_ROWS = 500
EXPORT_COLUMNS = (
    "id",
    "call_control_id",
    "started_at",
    "answered_at",
    "ended_at",
    "direction",
    "from",
    "to",
    "caller_name",
    "outcome",
    "duration",
    "agent",
    "agent_id",
    "disposition",
    "note",
    "transferred_from",
    "end_reason",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A phone number in E.164 is a + and digits: as a formula it is only that number, so it is left
# as it is rather than shown with a quote in every from and to cell.
E164 = re.compile(r"\+[0-9]{1,15}")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run: text that starts like a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not E164.fullmatch(value):
        return "'" + value
    return value


def csv_text(rows: list[list[Any]]) -> str:
    """Rows as CSV lines (RFC 4180: quoted as needed, CRLF), every cell spreadsheet-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([spreadsheet_safe(value) for value in row] for row in rows)
    return buffer.getvalue()


def _export_row(call: dict[str, Any]) -> list[Any]:
    agent = call["agent"] or {}
    transferred_from = call["transferred_from"] or {}
    return [
        call["id"],
        call["call_control_id"],
        call["started_at"],
        call["answered_at"],
        call["ended_at"],
        call["direction"],
        call["from"],
        call["to"],
        call["caller_name"],
        call["outcome"],
        call["duration"],
        agent.get("name"),
        agent.get("id"),
        call["disposition"],
        call["note"],
        transferred_from.get("name"),
        call["end_reason"],
    ]


def _export_page(db: Database, query: HistoryQuery) -> tuple[list[tuple], HistoryQuery | None]:
    """One page of the export and the query for the next (None after the last)."""
    sql, params = list_sql(query)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    page = rows[: query.limit]
    if len(rows) <= query.limit:
        return page, None
    last = page[-1]
    return page, replace(query, before=Cursor(last[-1], last[0]))


def export_chunks(db: Database, query: HistoryQuery) -> Iterator[bytes]:
    """Every call the filters match, newest first, as CSV: the header and the first page, then
    a page per chunk. Each page is one short use of a pooled connection, given back before the
    chunk goes out, so a slow reader holds no connection and no transaction.

    Plain values only (the pool, the query): the chunks are made after the request has ended."""
    next_query: HistoryQuery | None = replace(query, limit=EXPORT_PAGE_ROWS, before=None)
    header: list[list[Any]] = [list(EXPORT_COLUMNS)]
    sent = 0
    while next_query is not None:
        try:
            page, next_query = _export_page(db, next_query)
        except StorageUnavailable as error:
            if not header:
                # The status has gone out: the response is cut short (no last chunk), so the
                # client sees a failed download, never a file that looks complete.
                log.warning(
                    "CSV export cut off after %d calls: %s unavailable: %s",
                    sent,
                    error.dependency,
                    error.detail,
                )
            raise
        rows = [_export_row(exported_call(row)) for row in page]
        yield csv_text(header + rows).encode("utf-8")
        header = []
        sent += len(rows)


def _refuse_paging(args: Mapping[str, Any]) -> None:
    for name in ("limit", "before"):
        if name in args:
            raise InvalidParameter(
                name, f"{name} does not apply: the export has every matching call"
            )


# --- HTTP ---


@bp.get("/api/reports/daily")
@supervisor_required
def get_daily_report():
    """The daily report: ?from=YYYY-MM-DD&to=YYYY-MM-DD&tz=Area/City (all optional)."""
    values = single_values(request.args, REPORT_PARAMETERS)
    span = report_span(values.get("from"), values.get("to"), values.get("tz"))
    report = daily_report(span, current_app.config["SERVICE_LEVEL_SECONDS"])
    return jsonify({"success": True, **report})


@bp.get("/api/calls/export.csv")
@supervisor_required
def export_calls() -> Response:
    """Every call GET /api/calls would list with the same filters, as one CSV file."""
    _refuse_paging(request.args)
    query = parse_query(request.args, current_app.config["CALL_DISPOSITIONS"])
    chunks = export_chunks(get_db(), query)
    first = next(chunks)  # the first page's query, while an error can still be a 503
    response = Response(itertools.chain((first,), chunks), content_type="text/csv; charset=utf-8")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response.headers["Content-Disposition"] = f'attachment; filename="calls-{stamp}.csv"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- CLI ---


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: tuple[str, ...], rows: list[list[Any]], text_columns: int = 1) -> str:
    """Columns lined up: the first `text_columns` to the left, the numbers to the right."""
    cells = [list(header), *([str(value) for value in row] for row in rows)]
    widths = [max(len(row[n]) for row in cells) for n in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(width) if n < text_columns else cell.rjust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


TEAM_HEADER = (
    "day",
    "offered",
    "answered",
    "missed",
    "abandoned",
    "declined",
    "voicemail",
    "in SL",
    "SL",
    "ASA s",
    "avg talk s",
    "talk s",
)
AGENT_HEADER = ("day", "agent", "answered", "in SL", "SL", "ASA s", "avg talk s", "talk s")


def _team_cells(label: str, numbers: dict[str, Any]) -> list[Any]:
    return [
        label,
        numbers["offered"],
        numbers["answered"],
        numbers["missed"],
        numbers["abandoned"],
        numbers["declined"],
        numbers["voicemail"],
        numbers["answered_within_service_level"],
        _percent(numbers["service_level"]),
        _seconds(numbers["average_speed_of_answer_seconds"]),
        _seconds(numbers["average_talk_seconds"]),
        numbers["talk_seconds"],
    ]


def report_table(report: dict[str, Any]) -> str:
    """The report as two tables to read in a terminal: the team's days, then the agents'."""
    team = [_team_cells(day["day"], day["totals"]) for day in report["days"]]
    team.append(_team_cells("total", report["total"]))
    agents = [
        [
            day["day"],
            agent["name"],
            agent["answered"],
            agent["answered_within_service_level"],
            _percent(agent["service_level"]),
            _seconds(agent["average_speed_of_answer_seconds"]),
            _seconds(agent["average_talk_seconds"]),
            agent["talk_seconds"],
        ]
        for day in report["days"]
        for agent in day["agents"]
    ]
    title = (
        f"Calls from {report['from']} to {report['to']} ({report['timezone']}); SL: answered"
        f" within {report['service_level_seconds']} s\n\n"
    )
    agents_part = (
        _table(AGENT_HEADER, agents, text_columns=2)
        if agents
        else "No calls answered by an agent.\n"
    )
    return title + _table(TEAM_HEADER, team) + "\nAnswered calls per agent\n" + agents_part


def report_csv(report: dict[str, Any]) -> str:
    """The report as CSV: a row per day (agent empty), one per agent and day (the figures of
    their answered calls; offered and the other outcomes empty), and the total (day "total")."""
    rows: list[list[Any]] = [["day", "agent_id", "agent", *FIELDS]]
    for day in report["days"]:
        rows.append([day["day"], None, None, *(day["totals"][f] for f in FIELDS)])
        for agent in day["agents"]:
            rows.append([day["day"], agent["id"], agent["name"], *(agent.get(f) for f in FIELDS)])
    rows.append(["total", None, None, *(report["total"][f] for f in FIELDS)])
    return csv_text(rows)


def report_json(report: dict[str, Any]) -> str:
    """The report as GET /api/reports/daily answers it (less "success")."""
    return json.dumps(report, indent=2) + "\n"


FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {
    "table": report_table,
    "json": report_json,
    "csv": report_csv,
}

reports_cli = AppGroup("reports", help="Reports over the call log.")


@reports_cli.command("daily")
@click.option("--from", "first", metavar="YYYY-MM-DD", help="First day (default: --to).")
@click.option("--to", "last", metavar="YYYY-MM-DD", help="Last day (default: today).")
@click.option("--tz", "zone_name", metavar="AREA/CITY", help="Time zone (default: TEAM_TIMEZONE).")
@click.option(
    "--format", "output", type=click.Choice(tuple(FORMATS)), default="table", show_default=True
)
def daily_command(first: str | None, last: str | None, zone_name: str | None, output: str) -> None:
    """The daily report: each team day's calls, and each agent's answered calls."""
    try:
        span = report_span(first, last, zone_name)
        report = daily_report(span, current_app.config["SERVICE_LEVEL_SECONDS"])
    except InvalidParameter as error:
        raise click.ClickException(f"--{error.parameter}: {error.message}") from None
    except StorageUnavailable as error:
        raise click.ClickException(f"{error.message}: {error.detail}") from None
    click.echo(FORMATS[output](report), nl=False)


def init_app(app: Flask) -> None:
    """Register the CLI group."""
    app.cli.add_command(reports_cli)
