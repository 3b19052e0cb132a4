"""Migrations: numbered files applied in order, recorded, safe from several processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from telnyx_flask.migrations import MIGRATION_LOCK_KEY, migration_files, pending_migrations, upgrade

from . import helpers
from .helpers import throwaway_database

ROOT = Path(__file__).parent.parent
EVERY_VERSION = [version for version, _ in migration_files()]
APPLIED_ALL = f"applied {', '.join(EVERY_VERSION)}"


@pytest.fixture
def empty_database():
    """A database with nothing in it, dropped afterwards."""
    name = f"telnyx_flask_migrate_{uuid.uuid4().hex[:10]}"
    with throwaway_database(helpers.ADMIN_DATABASE_URL, name, migrate=False) as url:
        yield url


def applied_versions(url: str) -> list[str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row[0] for row in cur.fetchall()]
    conn.close()
    return versions


def test_upgrade_applies_every_migration_once_in_order(empty_database):
    every = EVERY_VERSION
    assert every == sorted(every)
    assert pending_migrations(empty_database) == every
    assert upgrade(empty_database) == every
    assert upgrade(empty_database) == []
    assert applied_versions(empty_database) == every
    assert pending_migrations(empty_database) == []


def test_cli_upgrade_reports_what_it_did(empty_database):
    env = {**os.environ, "APP_ENV": "development", "DATABASE_URL": empty_database}
    command = [sys.executable, "-m", "flask", "--app", "telnyx_flask", "db", "upgrade"]
    first = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == APPLIED_ALL
    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.stdout.strip() == "database is up to date"


def test_cli_upgrade_names_an_unreachable_database():
    env = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "telnyx_flask", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cannot reach PostgreSQL at DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_processes_upgrading_at_once_wait_for_each_other(empty_database):
    # Hold the migration lock, start several upgraders, see them all wait on it, then let go:
    # they run into each other as closely as they can, and each must still succeed.
    holder = psycopg2.connect(empty_database)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    env = {**os.environ, "APP_ENV": "development", "DATABASE_URL": empty_database}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "telnyx_flask", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 30
        with holder.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
                if cur.fetchone()[0] == len(workers):
                    break
                assert time.monotonic() < deadline, "upgraders never queued on the lock"
                time.sleep(0.05)  # polling the server's lock table, not standing in for a sync
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        holder.close()
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    reports = sorted(stdout.strip() for stdout, _ in outputs)
    assert reports == [APPLIED_ALL, "database is up to date", "database is up to date"]
    assert applied_versions(empty_database) == EVERY_VERSION


def test_badly_named_migration_is_refused(tmp_path):
    (tmp_path / "001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match=r"2_bad\.sql"):
        migration_files(tmp_path)
