"""The PostgreSQL pool: connections are reused, waited for when busy, and dropped when broken."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from telnyx_flask.db import Database
from telnyx_flask.errors import StorageUnavailable


def backend_pid(database: Database) -> int:
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@pytest.fixture
def database(database_url):
    db = Database(database_url, size=1, wait_seconds=1, statement_timeout_ms=5000)
    yield db
    db.close()


def test_connections_are_reused(database):
    assert backend_pid(database) == backend_pid(database)


def test_a_busy_pool_waits_for_a_free_connection(database):
    held, release, got = threading.Event(), threading.Event(), []

    def holder():
        with database.connection():
            held.set()
            release.wait(5)

    def waiter():
        got.append(backend_pid(database))

    holding = threading.Thread(target=holder)
    holding.start()
    held.wait(5)
    waiting = threading.Thread(target=waiter)
    waiting.start()
    release.set()
    waiting.join(5)
    holding.join(5)
    assert len(got) == 1


def test_a_pool_busy_for_too_long_is_storage_unavailable(database):
    with (
        database.connection(),
        pytest.raises(StorageUnavailable) as raised,
        database.connection(),
    ):
        pass
    assert raised.value.dependency == "postgresql"


def test_a_broken_connection_is_dropped_not_reused(database, database_url):
    first = backend_pid(database)
    with psycopg2.connect(database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (first,))
    admin.close()
    with pytest.raises(StorageUnavailable):
        backend_pid(database)
    assert backend_pid(database) != first


def test_a_statement_over_the_timeout_is_cancelled_as_unavailable(database_url):
    db = Database(database_url, size=1, wait_seconds=1, statement_timeout_ms=100)
    before = backend_pid(db)
    with pytest.raises(StorageUnavailable) as raised, db.connection() as conn:
        conn.cursor().execute("SELECT pg_sleep(1)")
    assert isinstance(raised.value.__cause__, psycopg2.errors.QueryCanceled)
    # An overloaded database gets a 503 (Telnyx retries); the connection itself is fine and kept.
    assert backend_pid(db) == before
    db.close()
