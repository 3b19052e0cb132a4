"""PostgreSQL: a bounded, waiting connection pool, cooperative under gevent."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from flask import Flask, current_app

from .errors import StorageUnavailable

log = logging.getLogger(__name__)

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


def one_row(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The row of a statement that always returns exactly one: an aggregate without GROUP BY, a
    function called without FROM, or an INSERT ... RETURNING that cannot skip its row."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"expected one row, got none from: {cur.query!r}")
    return row


class Database:
    """A pool of autocommit connections that waits (bounded) for a free one instead of failing.

    Connections open lazily, are kept for reuse, and are discarded when broken or left in any
    state but idle, so one failed request never poisons the next.
    """

    def __init__(
        self,
        dsn: str,
        size: int,
        wait_seconds: float,
        statement_timeout_ms: int,
        *,
        pgbouncer: bool = False,
    ):
        self.dsn = dsn
        self.size = size
        self.wait_seconds = wait_seconds
        self.statement_timeout_ms = statement_timeout_ms
        self.pgbouncer = pgbouncer
        # Straight to PostgreSQL, the session's settings travel in the startup packet. PgBouncer
        # refuses `options` there (or, told to ignore it, drops it silently), and in transaction
        # mode a session SET would stick to whichever server connection ran it: see _set_up.
        self.options = (
            None if pgbouncer else f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC"
        )
        self._idle: list[psycopg2.extensions.connection] = []
        self._slots = threading.BoundedSemaphore(size)
        self._pid = os.getpid()
        self._timeout_checked = False

    def _after_fork(self) -> None:
        # Connections must never cross a fork: a worker process starts with a pool of its own.
        if self._pid != os.getpid():
            self._idle = []
            self._slots = threading.BoundedSemaphore(self.size)
            self._pid = os.getpid()

    def _connect(self) -> psycopg2.extensions.connection:
        make_cooperative_under_gevent()
        if self.options is None:
            conn = psycopg2.connect(self.dsn, connect_timeout=3)
        else:
            conn = psycopg2.connect(self.dsn, connect_timeout=3, options=self.options)
        conn.autocommit = True
        if self.pgbouncer:
            try:
                self._set_up_behind_pgbouncer(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _set_up_behind_pgbouncer(self, conn: psycopg2.extensions.connection) -> None:
        """Behind PgBouncer in transaction mode: UTC, and a check of statement_timeout.

        TimeZone is one of the parameters PgBouncer tracks per client: after this SET it sets
        it again on every server connection it lends this client. statement_timeout is not
        tracked, so it must come from the role or database (ALTER ROLE ... SET
        statement_timeout); a mismatch with DB_STATEMENT_TIMEOUT_MS is logged, once.
        """
        with conn.cursor() as cur:
            cur.execute(
                "SET TIME ZONE 'UTC'; "
                "SELECT setting::integer FROM pg_settings WHERE name = 'statement_timeout'"
            )
            server_timeout_ms = one_row(cur)[0]
        if server_timeout_ms != self.statement_timeout_ms and not self._timeout_checked:
            log.error(
                "DB_PGBOUNCER: PostgreSQL's statement_timeout is %d ms for this role, not "
                "DB_STATEMENT_TIMEOUT_MS=%d (PgBouncer cannot pass it at connect): run "
                "ALTER ROLE <role> SET statement_timeout = %d",
                server_timeout_ms,
                self.statement_timeout_ms,
                self.statement_timeout_ms,
            )
        self._timeout_checked = True

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
                self._drop_hung_up()
                raise StorageUnavailable("postgresql", str(exc).strip()) from exc
            try:
                yield conn
            except CONNECTION_ERRORS as exc:
                self._drop_hung_up()
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

    def _drop_hung_up(self) -> None:
        """After a connection error, close the idle connections the server has hung up on.

        A restarted PostgreSQL ends every session: each idle connection then holds its
        "terminating connection" message and EOF. Dropping them all at the first failure, rather
        than each at its next use, keeps a restart to one failed request per worker at most.
        """
        keep = []
        for conn in self._idle:
            if conn.closed == 0 and not _has_spoken(conn):
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep

    def close(self) -> None:
        """Close every idle connection (tests, and worker exit)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _has_spoken(conn: psycopg2.extensions.connection) -> bool:
    """Whether an idle connection's socket is readable: the server said something unasked (a
    FATAL on shutdown, or EOF). A healthy idle connection has nothing to read."""
    try:
        poller = select.poll()  # not select(): a busy worker's descriptors pass 1024
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg2.InterfaceError):
        return True


def get_db() -> Database:
    """The application's Database."""
    return current_app.extensions["database"]


def init_app(app: Flask) -> None:
    """Create the pool (connections open lazily)."""
    app.extensions["database"] = Database(
        app.config["DATABASE_URL"],
        size=app.config["DB_POOL_SIZE"],
        wait_seconds=app.config["DB_POOL_TIMEOUT"],
        statement_timeout_ms=app.config["DB_STATEMENT_TIMEOUT_MS"],
        pgbouncer=app.config["DB_PGBOUNCER"],
    )
