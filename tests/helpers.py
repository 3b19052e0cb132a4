"""What tests share besides fixtures: where the test services are, the Telnyx fixtures and
how a webhook is signed, settings for an app against the test services, and a throwaway
database. Imported explicitly (`from .helpers import ...`); conftest.py holds the fixtures."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import redis
from nacl.signing import SigningKey

from telnyx_flask.migrations import upgrade
from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.signature import sign

FIXTURES = Path(__file__).parent / "fixtures" / "telnyx"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Set by conftest.py's pytest_configure: TEST_DATABASE_URL / TEST_REDIS_URL, else the local
# servers on their standard ports, else embedded ones started for this run (as `make run` does).
ADMIN_DATABASE_URL = DEFAULT_DATABASE_URL
TEST_REDIS_URL = DEFAULT_REDIS_URL

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


def wait_until(condition, timeout: float = 30, what: str = "the condition", interval=0.05):
    """Poll `condition` until it returns something true, and return that; fail after `timeout`
    seconds naming `what`. For states the code under test reaches on its own (a row, a key, a
    process gone), where there is nothing to wait on but the state itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def encode(body: dict[str, Any] | bytes) -> bytes:
    """The bytes a webhook body is sent as."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def signed_headers(body: bytes, timestamp: int | None = None, seed: bytes = SIGNING_SEED) -> dict:
    """Telnyx's signature headers for these exact bytes."""
    return sign(seed, body, int(time.time()) if timestamp is None else timestamp)


def empty_redis(client: redis.Redis, prefix: str) -> None:
    """Delete every key under the prefix but the live-state generation marker: emptying the
    store between tests is not Redis losing its data (tests that mean that delete it too)."""
    keep = RedisKeys(prefix).generation
    keys = [key for key in client.scan_iter(match=f"{prefix}*", count=1000) if key != keep]
    if keys:
        client.delete(*keys)


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
        # Tests expect today's reject at the ring timeout; voicemail's tests turn it on.
        "VOICEMAIL": "false",
        "TESTING": True,
    }


def close_app(app) -> None:
    """Stop what an app started: its follow-up pool, stream reader and connections."""
    app.extensions["background"].stop()
    app.extensions["push"].stop()
    app.extensions["database"].close()
    app.extensions["live"].client.close()


# The password make_agent gives agents, which the page tests sign in with.
AGENT_PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class TestAgent:
    """An agent account made for a test, with its bearer-token headers."""

    id: str
    email: str
    name: str
    password: str
    headers: dict[str, str]


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
