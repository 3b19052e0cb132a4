"""Fixtures: a throwaway PostgreSQL database, a private Redis key prefix, signed webhooks, a fake
Telnyx API, and the app wired to all of them."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import redis
from nacl.signing import SigningKey

from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.db import throwaway_database
from telnyx_flask.embedded import Embedded, reachable, start_postgres, start_redis
from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.signature import sign
from telnyx_flask.users import Agent, create_user

from .fake_telnyx import FakeTelnyx

FIXTURES = Path(__file__).parent / "fixtures" / "telnyx"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Set in pytest_configure: TEST_DATABASE_URL / TEST_REDIS_URL, else the local servers on their
# standard ports, else embedded ones started for this run (as `make run` starts them).
ADMIN_DATABASE_URL = DEFAULT_DATABASE_URL
TEST_REDIS_URL = DEFAULT_REDIS_URL
SERVICES: list[str] = []
_embedded: list[Embedded] = []


def _choose(name: str, variable: str, default: str, port: int, start) -> str:
    """The URL in `variable`, else the local server's, else an embedded one's."""
    if os.environ.get(variable):
        SERVICES.append(f"{name}: {variable}")
        return os.environ[variable]
    if reachable("127.0.0.1", port):
        SERVICES.append(f"{name}: the server on 127.0.0.1:{port}")
        return default
    server = start()
    _embedded.append(server)
    SERVICES.append(f"{name}: {server.description}")
    return server.url


def _embedded_postgres() -> Embedded:
    folder = Path(tempfile.mkdtemp(prefix="telnyx-flask-test-pg-"))
    # Stopped in reverse order: the server first, then its folder goes.
    _embedded.append(Embedded("", "", lambda: shutil.rmtree(folder, ignore_errors=True)))
    return start_postgres(folder / "data")


def pytest_configure(config: pytest.Config) -> None:
    global ADMIN_DATABASE_URL, TEST_REDIS_URL
    ADMIN_DATABASE_URL = _choose(
        "PostgreSQL", "TEST_DATABASE_URL", DEFAULT_DATABASE_URL, 5432, _embedded_postgres
    )
    TEST_REDIS_URL = _choose("Redis", "TEST_REDIS_URL", DEFAULT_REDIS_URL, 6379, start_redis)


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in reversed(_embedded):
        server.stop()


# A module that imports one of these starts real gunicorn processes.
SERVER_HELPERS = ("Gunicorn", "running_stack", "start_stack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by what their module starts, for `make test-fast` (-m "not ...")."""
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        name = module.__name__.rsplit(".", 1)[-1]
        if name == "test_page":
            item.add_marker(pytest.mark.browser)
        if name == "test_make_run":
            item.add_marker(pytest.mark.slow)
        if any(helper in vars(module) for helper in SERVER_HELPERS):
            item.add_marker(pytest.mark.gunicorn)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return SERVICES


# Production refuses weak keys; a fixed random one keeps tokens valid across the test servers.
TEST_SECRET_KEY = "Jq3v9XkP2mW7tR8yL4nB6cD1fG5hZ0sQ"
SIGNING_SEED = bytes(range(32))
PUBLIC_KEY = base64.b64encode(bytes(SigningKey(SIGNING_SEED).verify_key)).decode()
TABLES = ("telnyx_outbox", "webhook_events", "call_logs", "inbound_calls", "prospects", "users")


def load_fixture(name: str) -> dict[str, Any]:
    """A webhook body from tests/fixtures/telnyx, as a dict to adjust."""
    return json.loads((FIXTURES / name).read_text())


def answered_call_events() -> list[dict[str, Any]]:
    """The answered and recorded call (fixtures 01-06), in delivery order."""
    return [load_fixture(path.name) for path in sorted(FIXTURES.glob("0*.json"))]


def abandoned_call_events() -> list[dict[str, Any]]:
    """The call abandoned while ringing (fixtures 11-12)."""
    return [load_fixture(path.name) for path in sorted(FIXTURES.glob("1*.json"))]


def renamed(events: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """The same events for a different call: every id gets `suffix`, so calls don't collide."""
    out = []
    for event in copy.deepcopy(events):
        event["data"]["id"] += suffix
        payload = event["data"]["payload"]
        for field in ("call_control_id", "call_leg_id", "call_session_id"):
            if payload.get(field):
                payload[field] += suffix
        out.append(event)
    return out


def encode(body: dict[str, Any] | bytes) -> bytes:
    """The bytes a webhook body is sent as."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def signed_headers(body: bytes, timestamp: int | None = None, seed: bytes = SIGNING_SEED) -> dict:
    """Telnyx's signature headers for these exact bytes."""
    return sign(seed, body, int(time.time()) if timestamp is None else timestamp)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database with every migration applied, dropped after the session."""
    with throwaway_database(
        ADMIN_DATABASE_URL, f"telnyx_flask_test_{uuid.uuid4().hex[:10]}"
    ) as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """A key prefix no other test run shares."""
    return f"telnyx-flask-test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """A client for inspecting the test Redis directly."""
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_telnyx() -> Iterator[FakeTelnyx]:
    """A local HTTP server standing in for Telnyx's command API."""
    server = FakeTelnyx()
    server.start()
    yield server
    server.stop()


def empty_redis(client: redis.Redis, prefix: str) -> None:
    """Delete every key under the prefix but the live-state generation marker: emptying the
    store between tests is not Redis losing its data (tests that mean that delete it too)."""
    keep = RedisKeys(prefix).generation
    keys = [key for key in client.scan_iter(match=f"{prefix}*", count=1000) if key != keep]
    if keys:
        client.delete(*keys)


@pytest.fixture
def clean_storage(database_url: str, redis_client: redis.Redis, redis_prefix: str) -> Iterator:
    """Empty tables and keys before and after each test."""

    def empty() -> None:
        # A running server's background loops query these tables every second; PostgreSQL may
        # pick the TRUNCATE as a deadlock's victim, and then it simply goes again.
        for attempt in range(3):
            conn = psycopg2.connect(database_url)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
                break
            except psycopg2.errors.DeadlockDetected:
                if attempt == 2:
                    raise
            finally:
                conn.close()
        empty_redis(redis_client, redis_prefix)

    empty()
    yield
    empty()


def app_settings(database_url: str, redis_prefix: str, telnyx_base: str) -> dict[str, Any]:
    """Production-mode settings pointing at the test services."""
    return {
        "APP_ENV": "production",
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "DB_POOL_TIMEOUT": "2",
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_PREFIX": redis_prefix,
        "TELNYX_API_KEY": "KEY_TEST",
        "TELNYX_API_BASE": telnyx_base,
        "TELNYX_PUBLIC_KEY": PUBLIC_KEY,
        "TELNYX_SIP_DOMAIN": "sip.telnyx.com",
        "BACKGROUND_TASKS": "false",
        "TESTING": True,
    }


@pytest.fixture
def settings(database_url, redis_prefix, fake_telnyx, clean_storage) -> dict[str, Any]:
    """The app's settings; a test may change them before asking for `app`."""
    fake_telnyx.reset()
    return app_settings(database_url, redis_prefix, fake_telnyx.base_url)


@pytest.fixture
def app(settings):
    """The application, against the test database, Redis prefix and fake Telnyx."""
    app = create_app(settings)
    yield app
    close_app(app)


def close_app(app) -> None:
    """Stop what an app started: its follow-up pool, stream reader and connections."""
    app.extensions["background"].stop()
    app.extensions["push"].stop()
    app.extensions["database"].close()
    app.extensions["live"].client.close()


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


@pytest.fixture
def post_webhook(client):
    """Send a body to the webhook endpoint, signed like Telnyx signs it."""

    def post(body: dict[str, Any] | bytes, headers: dict[str, str] | None = None, **kwargs):
        raw = encode(body)
        all_headers = {"Content-Type": "application/json", **signed_headers(raw)}
        all_headers.update(headers or {})
        return client.post("/api/telnyx/webhook", data=raw, headers=all_headers, **kwargs)

    return post


@pytest.fixture
def db_rows(database_url):
    """Run a query against the test database and return rows as dicts."""

    def query(sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            columns = [c.name for c in cur.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
        conn.close()
        return rows

    return query


@dataclass(frozen=True)
class TestAgent:
    """An agent account made for a test, with its bearer-token headers."""

    id: str
    email: str
    name: str
    password: str
    headers: dict[str, str]


@pytest.fixture
def make_agent(app):
    """Create an agent and return it with a bearer token."""
    counter = itertools.count(1)

    def make(
        name: str | None = None,
        sip_username: str | None = "default",
        password: str = "correct horse battery",
    ) -> TestAgent:
        n = next(counter)
        name = name or f"Agent {n}"
        email = f"{name.lower().replace(' ', '.')}@example.test"
        sip = f"agent{n}x" if sip_username == "default" else sip_username
        with app.app_context():
            user_id = create_user(email, name, password, sip)
            token = issue_token(Agent(user_id, email, name, sip))
        return TestAgent(user_id, email, name, password, {"Authorization": f"Bearer {token}"})

    return make


@pytest.fixture
def agent(make_agent) -> TestAgent:
    """One agent, Alice."""
    return make_agent("Alice", sip_username="agentalice")
