"""PostgreSQL: a bounded, waiting connection pool, the migrations, and the `db` CLI group."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from flask import Flask, current_app
from flask.cli import AppGroup

from .errors import StorageUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any fixed number will do; it only has to be the same for every process running migrations.
MIGRATION_LOCK_KEY = 7_246_812_901

CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def make_cooperative_under_gevent() -> None:
    """Let psycopg2 yield to other greenlets while it waits, when gevent has patched sockets."""
    try:
        from gevent import monkey
    except ImportError:
        return
    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


class Database:
    """A pool of autocommit connections that waits (bounded) for a free one instead of failing.

    Connections open lazily, are kept for reuse, and are discarded when broken or left in any
    state but idle, so one failed request never poisons the next.
    """

    def __init__(self, dsn: str, size: int, wait_seconds: float, statement_timeout_ms: int):
        self.dsn = dsn
        self.size = size
        self.wait_seconds = wait_seconds
        self.options = f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC"
        self._idle: list[psycopg2.extensions.connection] = []
        self._slots = threading.BoundedSemaphore(size)
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        # Connections must never cross a fork: a worker process starts with a pool of its own.
        if self._pid != os.getpid():
            self._idle = []
            self._slots = threading.BoundedSemaphore(self.size)
            self._pid = os.getpid()

    def _connect(self) -> psycopg2.extensions.connection:
        make_cooperative_under_gevent()
        conn = psycopg2.connect(self.dsn, connect_timeout=3, options=self.options)
        conn.autocommit = True
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """Lend an autocommit connection; StorageUnavailable if PostgreSQL cannot be reached."""
        self._after_fork()
        slots = self._slots
        if not slots.acquire(timeout=self.wait_seconds):
            raise StorageUnavailable("postgresql", "no free database connection")
        conn = None
        try:
            try:
                conn = self._idle.pop() if self._idle else self._connect()
            except CONNECTION_ERRORS as exc:
                raise StorageUnavailable("postgresql", str(exc).strip()) from exc
            try:
                yield conn
            except CONNECTION_ERRORS as exc:
                raise StorageUnavailable("postgresql", str(exc).strip()) from exc
        finally:
            if conn is not None:
                self._give_back(conn)
            slots.release()

    def _give_back(self, conn: psycopg2.extensions.connection) -> None:
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        if conn.closed == 0 and conn.info.transaction_status == idle:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close every idle connection (tests, and worker exit)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def get_db() -> Database:
    """The application's Database."""
    return current_app.extensions["database"]


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


@contextmanager
def throwaway_database(admin_url: str, name: str, migrate: bool = True) -> Iterator[str]:
    """A new database (migrated unless told not to), dropped on exit whatever happened.

    For tests and benchmarks: `admin_url` names any database of a user who may create others.
    """
    admin = psycopg2.connect(admin_url, connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {psycopg2.extensions.quote_ident(name, cur)}")
        url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        try:
            if migrate:
                upgrade(url)
            yield url
        finally:
            with admin.cursor() as cur:
                quoted = psycopg2.extensions.quote_ident(name, cur)
                cur.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        admin.close()


def pending_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Versions present in sql/ but not yet applied to the database."""
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
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
    """Create the pool (connections open lazily) and register the CLI."""
    app.extensions["database"] = Database(
        app.config["DATABASE_URL"],
        size=app.config["DB_POOL_SIZE"],
        wait_seconds=app.config["DB_POOL_TIMEOUT"],
        statement_timeout_ms=app.config["DB_STATEMENT_TIMEOUT_MS"],
    )
    app.cli.add_command(db_cli)
