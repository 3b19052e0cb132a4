"""The schema: numbered migrations in sql/, applied in order under an advisory lock, and the
`db` CLI group (`flask db upgrade [--create-database]`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from flask import Flask, current_app
from flask.cli import AppGroup

from .db import one_row
from .package_files import sql_dir

log = logging.getLogger(__name__)

MIGRATIONS_DIR = sql_dir()
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any fixed number will do; it only has to be the same for every process running migrations.
MIGRATION_LOCK_KEY = 7_246_812_901


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    """The numbered migrations in order, as (version, path)."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file name {path.name!r} is not NNN_name.sql")
        found.append((match.group(1), path))
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migrations share a number")
    return found


def upgrade(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations under an advisory lock; return the versions applied."""
    applied_now = []
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            # Several processes may run this at once (one per host on deploy): one waits.
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
        for version, path in migration_files(directory):
            if version in done:
                continue
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(path.read_text())
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, path.name),
                )
            conn.commit()
            conn.autocommit = True
            applied_now.append(version)
            log.info("applied migration %s", path.name)
    finally:
        conn.close()  # closing the session releases the advisory lock too
    return applied_now


def pending_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Versions present in sql/ but not yet applied to the database."""
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not one_row(cur)[0]:
            return [version for version, _ in migration_files(directory)]
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
    conn.close()
    return [version for version, _ in migration_files(directory) if version not in done]


db_cli = AppGroup("db", help="Database commands.")


def create_database_if_missing(dsn: str) -> bool:
    """Create the database DSN names, through the server's `postgres` database; True if created."""
    target = psycopg2.extensions.parse_dsn(dsn)
    name = target.get("dbname")
    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
        return False
    except psycopg2.OperationalError as exc:
        if name is None or "does not exist" not in str(exc):
            raise
    maintenance = psycopg2.extensions.make_dsn(dsn, dbname="postgres")
    conn = psycopg2.connect(maintenance, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {psycopg2.extensions.quote_ident(name, cur)}")
    except psycopg2.errors.DuplicateDatabase:
        return False  # another process created it first
    finally:
        conn.close()
    return True


@db_cli.command("upgrade")
@click.option("--create-database", is_flag=True, help="Create the database first if it is missing.")
def upgrade_command(create_database: bool) -> None:
    """Apply pending migrations from sql/."""
    dsn = current_app.config["DATABASE_URL"]
    try:
        if create_database and create_database_if_missing(dsn):
            click.echo(f"created database {psycopg2.extensions.parse_dsn(dsn)['dbname']}")
        applied = upgrade(dsn)
    except psycopg2.OperationalError as exc:
        raise click.ClickException(
            f"cannot reach PostgreSQL at DATABASE_URL: {exc}".strip()
        ) from None
    click.echo(f"applied {', '.join(applied)}" if applied else "database is up to date")


def init_app(app: Flask) -> None:
    """Register the `db` CLI group."""
    app.cli.add_command(db_cli)
