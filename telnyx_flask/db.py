"""PostgreSQL: a bounded, waiting connection pool, cooperative under gevent."""

from __future__ import annotations

import logging
import os
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


def init_app(app: Flask) -> None:
    """Create the pool (connections open lazily)."""
    app.extensions["database"] = Database(
        app.config["DATABASE_URL"],
        size=app.config["DB_POOL_SIZE"],
        wait_seconds=app.config["DB_POOL_TIMEOUT"],
        statement_timeout_ms=app.config["DB_STATEMENT_TIMEOUT_MS"],
    )
