"""Redis, as every part of the service uses it: the client, the errors that mean "Redis is
unreachable", the key templates under one prefix, and the package's Lua scripts."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# What a lost or slow connection raises; each caller turns it into StorageUnavailable (503).
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)

# Lifetimes: nothing in Redis grows without bound.
ACTIVE_CALL_TTL_SECONDS = 12 * 3600  # longer than any call Telnyx lets run (time_limit is 4 h)
ENDED_CALL_TTL_SECONDS = 3600  # long enough for late redeliveries and a page's history refresh


def text(value: Any) -> Any:
    """A Redis reply item as str (the client returns bytes); anything else unchanged."""
    return value.decode() if isinstance(value, bytes) else value


def lua_script(name: str) -> str:
    """The text of one of the package's Lua scripts (lua/NAME)."""
    return resources.files(__package__).joinpath("lua", name).read_text()


def create_redis(url: str, pool_size: int) -> redis.Redis:
    """A client over a blocking pool: callers wait for a connection instead of failing at 100."""
    # Retry a dropped connection briefly, but answer well inside Telnyx's webhook timeout.
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2)
    pool = redis.BlockingConnectionPool.from_url(
        url,
        retry=retry,
        max_connections=pool_size,
        timeout=5,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


@dataclass(frozen=True)
class RedisKeys:
    """Key templates under a namespace prefix (use a hash tag like `{tf}:` on Redis Cluster)."""

    prefix: str

    def call(self, call_control_id: str) -> str:
        """Hash of one live call, keyed by the caller leg's call_control_id; TTL-bound."""
        return f"{self.prefix}call:{call_control_id}"

    @property
    def ringing(self) -> str:
        """Sorted set of ringing calls' call_control_ids, scored by when they reached us (ms)."""
        return f"{self.prefix}calls:ringing"

    @property
    def events(self) -> str:
        """The capped stream of call events that the SSE endpoint reads."""
        return f"{self.prefix}events"

    def login_attempts(self, kind: str, value: str) -> str:
        """Counter of sign-in attempts per client address or per email hash; one window long."""
        return f"{self.prefix}auth:attempts:{kind}:{value}"

    @property
    def claimed(self) -> str:
        """Sorted set of calls an agent is taking (answering), scored by claim time (ms)."""
        return f"{self.prefix}calls:claimed"

    @property
    def active(self) -> str:
        """Sorted set of calls not yet ended (ringing, being taken, connected), by arrival (ms)."""
        return f"{self.prefix}calls:active"

    @property
    def generation(self) -> str:
        """Marks live state built from PostgreSQL; its absence means Redis lost its data."""
        return f"{self.prefix}live:generation"

    @property
    def rebuild_lock(self) -> str:
        """Held (with a TTL) by the one process rebuilding live state from PostgreSQL."""
        return f"{self.prefix}live:rebuild-lock"

    def agent_streams(self, agent_id: str) -> str:
        """Sorted set of one agent's open event streams, scored by when each slot lapses (ms)."""
        return f"{self.prefix}sse:streams:{agent_id}"

    def rate_limit(self, action: str, agent_id: str) -> str:
        """Counter of one agent's costly requests of one kind in the current window."""
        return f"{self.prefix}limits:{action}:{agent_id}"

    @property
    def telnyx_breaker(self) -> str:
        """Hash of the circuit breaker around the Telnyx API, shared by every worker; TTL-bound."""
        return f"{self.prefix}telnyx:breaker"
