"""Prospects for caller lookup: the `prospects import FILE.csv` command."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from .db import get_db
from .phone_numbers import to_e164
from .request_body import is_storable_text

MAX_NAME = 200
MAX_COMPANY = 200
# The agent reads these on the ringing card: a few lines, not a dossier.
MAX_NOTES = 2000
COLUMNS = ("name", "phone", "company", "notes")


@dataclass
class ImportReport:
    """What an import did: rows kept, and the bad ones by line number."""

    imported: int
    problems: list[tuple[int, str]]


def _rows_by_first_line(reader) -> Iterator[tuple[int, list[str]]]:
    """Each CSV row with the file line it starts on (a quoted field may span lines)."""
    starts_at = 1
    for row in reader:
        yield starts_at, row
        starts_at = reader.line_num + 1


def _optional(row: list[str], index: int, column: str, limit: int) -> str | None:
    """An optional column's text, stripped (None when absent or blank); ValueError if too long."""
    value = row[index].strip() if len(row) > index else ""
    if len(value) > limit:
        raise ValueError(f"{column} is {len(value)} characters long; the limit is {limit}")
    return value or None


def _prospect(row: list[str]) -> tuple[str, str, str | None, str | None]:
    """One row as (name, E.164 phone, company, notes); ValueError saying what is wrong."""
    if len(row) > len(COLUMNS):
        raise ValueError(f"expected at most {len(COLUMNS)} columns: {', '.join(COLUMNS)}")
    if not all(is_storable_text(cell) for cell in row):
        raise ValueError("contains a NUL character")
    name = row[0].strip()
    if not name:
        raise ValueError("name is empty")
    phone = to_e164(row[1])
    company = _optional(row, 2, "company", MAX_COMPANY)
    notes = _optional(row, 3, "notes", MAX_NOTES)
    return name[:MAX_NAME], phone, company, notes


def import_prospects(path: Path) -> ImportReport:
    """Read name,phone[,company[,notes]] rows (a header row is optional); keep the good ones,
    report the bad."""
    good: list[tuple[str, str, str | None, str | None]] = []
    problems: list[tuple[int, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line_number, row in _rows_by_first_line(csv.reader(handle)):
            if not row or all(not cell.strip() for cell in row):
                continue
            if line_number == 1 and [c.strip().lower() for c in row[:2]] == ["name", "phone"]:
                continue
            if len(row) < 2:
                problems.append((line_number, "expected two columns: name, phone"))
                continue
            try:
                good.append(_prospect(row))
            except ValueError as error:
                problems.append((line_number, str(error)))
    if good:
        with get_db().connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO prospects (name, phone_number, company, notes)"
                " VALUES (%s, %s, %s, %s)",
                good,
            )
    return ImportReport(len(good), problems)


prospects_cli = AppGroup("prospects", help="Prospects, for naming callers.")


@prospects_cli.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(csv_file: Path) -> None:
    """Import prospects from a CSV of name,phone[,company[,notes]]."""
    report = import_prospects(csv_file)
    for line_number, problem in report.problems:
        click.echo(f"line {line_number}: {problem}", err=True)
    click.echo(f"imported {report.imported} prospects, skipped {len(report.problems)} bad rows")


def init_app(app: Flask) -> None:
    """Register the CLI group."""
    app.cli.add_command(prospects_cli)
