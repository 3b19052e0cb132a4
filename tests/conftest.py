"""Fixtures: a throwaway PostgreSQL database, a private Redis key prefix, signed webhooks, a fake
Telnyx API, and the app wired to all of them; and the hooks that find the test services and
mark tests by what they start. Shared helpers live in helpers.py."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import redis
from playwright.sync_api import Browser, sync_playwright

from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.embedded import Embedded, reachable, start_postgres, start_redis
from telnyx_flask.users import Agent, create_user

from . import helpers
from .browser import CHROMIUM, CHROMIUM_ARGS, AgentPage, chromium_missing_message
from .fake_telnyx import FakeTelnyx
from .helpers import (
    AGENT_PASSWORD,
    TABLES,
    TestAgent,
    app_settings,
    close_app,
    empty_redis,
    encode,
    signed_headers,
    throwaway_database,
)
from .servers import ready_simulator
from .tcp_proxy import TcpProxy, through_proxy

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
    helpers.ADMIN_DATABASE_URL = _choose(
        "PostgreSQL", "TEST_DATABASE_URL", helpers.DEFAULT_DATABASE_URL, 5432, _embedded_postgres
    )
    helpers.TEST_REDIS_URL = _choose(
        "Redis", "TEST_REDIS_URL", helpers.DEFAULT_REDIS_URL, 6379, start_redis
    )


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
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if name == "test_make_run":
            item.add_marker(pytest.mark.slow)
        if any(helper in vars(module) for helper in SERVER_HELPERS):
            item.add_marker(pytest.mark.gunicorn)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return SERVICES


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database with every migration applied, dropped after the session."""
    with throwaway_database(
        helpers.ADMIN_DATABASE_URL, f"telnyx_flask_test_{uuid.uuid4().hex[:10]}"
    ) as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """A key prefix no other test run shares."""
    return f"telnyx-flask-test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """A client for inspecting the test Redis directly."""
    client = redis.Redis.from_url(helpers.TEST_REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_telnyx() -> Iterator[FakeTelnyx]:
    """A local HTTP server standing in for Telnyx's command API."""
    server = FakeTelnyx()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clean_storage(database_url: str, redis_client: redis.Redis, redis_prefix: str) -> Iterator:
    """Empty tables and keys before and after each test."""

    def empty() -> None:
        # DELETE, not TRUNCATE: on tables this small it takes 0.4 ms where TRUNCATE takes 37
        # (new files for every table), and it runs twice per test. Every foreign key is ON
        # DELETE SET NULL or CASCADE (agent_sessions goes with users), so the order is free.
        # A running server's background loops query these tables every second; PostgreSQL may
        # pick the DELETE as a deadlock's victim, and then it simply goes again.
        for attempt in range(3):
            conn = psycopg2.connect(database_url)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute("; ".join(f"DELETE FROM {table}" for table in TABLES))
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


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


@pytest.fixture
def proxied(settings, database_url):
    """An app whose PostgreSQL and Redis connections both pass through cuttable proxies."""
    proxies = {
        "postgresql": TcpProxy.for_url(database_url, 5432),
        "redis": TcpProxy.for_url(helpers.TEST_REDIS_URL, 6379),
    }
    settings["DATABASE_URL"] = through_proxy(database_url, proxies["postgresql"])
    settings["REDIS_URL"] = through_proxy(helpers.TEST_REDIS_URL, proxies["redis"])
    app = create_app(settings)
    yield app, proxies
    helpers.close_app(app)
    for proxy in proxies.values():
        proxy.close()


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


@pytest.fixture
def make_agent(app):
    """Create an agent and return it with a bearer token."""
    counter = itertools.count(1)

    def make(
        name: str | None = None,
        sip_username: str | None = "default",
        password: str = AGENT_PASSWORD,
        role: str = "agent",
    ) -> TestAgent:
        n = next(counter)
        name = name or f"Agent {n}"
        email = f"{name.lower().replace(' ', '.')}@example.test"
        sip = f"agent{n}x" if sip_username == "default" else sip_username
        with app.app_context():
            user_id = create_user(email, name, password, sip, role=role)
            token = issue_token(Agent(user_id, email, name, sip, role))
        return TestAgent(user_id, email, name, password, {"Authorization": f"Bearer {token}"})

    return make


@pytest.fixture
def agent(make_agent) -> TestAgent:
    """One agent, Alice."""
    return make_agent("Alice", sip_username="agentalice")


# --- the page in Chromium: each page-test module brings its own `stack` (running_stack) --------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one module's page tests (which are marked browser)."""
    assert os.path.exists(CHROMIUM), chromium_missing_message()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def base_url(stack) -> str:
    """Where the module's gunicorn serves the page."""
    return stack[1].url


@pytest.fixture
def sim(stack, clean_storage):
    """The module's Telnyx simulator, reset, with the test's storage emptied."""
    return ready_simulator(stack)


@pytest.fixture
def pages(browser, base_url):
    """Open agent pages; each must end the test without a JavaScript error."""
    opened: list[AgentPage] = []

    def open_page(url: str | None = None, **size) -> AgentPage:
        page = AgentPage.open(browser, url or base_url, **size)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        page.close()
    for page in opened:
        assert page.errors == [], page.errors
