"""Redis, as every part of the service uses it: the client (one server, a primary found through
Sentinel, or a Redis Cluster), the errors that mean "Redis is unreachable", the key templates
under one prefix, and the package's Lua scripts."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ClusterError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

# Either client: every use goes through commands both have (scripts, MULTI on one slot, XREAD).
RedisClient = redis.Redis | redis.RedisCluster

# What a lost or slow connection raises, or a cluster that cannot serve (no node reachable, a
# slot without a master during a failover); each caller turns it into StorageUnavailable (503).
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)

# REDIS_URL schemes that select redis-py's RedisCluster, and the scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# Lifetimes: nothing in Redis grows without bound.
ACTIVE_CALL_TTL_SECONDS = 12 * 3600  # longer than any call Telnyx lets run (time_limit is 4 h)
ENDED_CALL_TTL_SECONDS = 3600  # long enough for late redeliveries and a page's history refresh


def text(value: Any) -> Any:
    """A Redis reply item as str (the client returns bytes); anything else unchanged."""
    return value.decode() if isinstance(value, bytes) else value


def lua_script(name: str) -> str:
    """The text of one of the package's Lua scripts (lua/NAME)."""
    return resources.files(__package__).joinpath("lua", name).read_text()


def is_cluster_url(url: str) -> bool:
    """True when REDIS_URL names a Redis Cluster (redis+cluster:// or rediss+cluster://)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def _retry() -> Retry:
    # Retry a dropped connection briefly, but answer well inside Telnyx's webhook timeout.
    return Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2)


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (each new connection asks the sentinels where the primary is,
    and connections to a demoted one are dropped) that waits for a free connection, as
    BlockingConnectionPool does, instead of failing when all are in use."""


@dataclass(frozen=True)
class SentinelTarget:
    """Where Redis is when Sentinel is used: the sentinels, the primary's name, and the
    sentinels' own password, if they have one."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    password: str | None = None


def create_redis(url: str, pool_size: int, sentinel: SentinelTarget | None = None) -> RedisClient:
    """A client over blocking pools: callers wait for a connection instead of failing at 100.

    A cluster URL names any one node; the client finds the others and follows slot moves. It
    gets the same timeouts, with a blocking pool of `pool_size` per node. With `sentinel`, the
    sentinels say where the primary is, and the URL gives the rest (database, password, TLS).
    """
    if sentinel is not None:
        return _sentinel_primary(url, sentinel, pool_size)
    if is_cluster_url(url):
        scheme, rest = url.split("://", 1)
        return redis.RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}",
            retry=_retry(),
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=pool_size,
            timeout=5,
            socket_connect_timeout=3,
            socket_timeout=5,
        )
    pool = redis.BlockingConnectionPool.from_url(
        url,
        retry=_retry(),
        max_connections=pool_size,
        timeout=5,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def _sentinel_primary(url: str, target: SentinelTarget, pool_size: int) -> redis.Redis:
    options = parse_url(url)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    # SentinelConnectionPool picks its own (TLS or not) connection class from `ssl`.
    ssl = options.pop("connection_class", None) is redis.SSLConnection
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "password": target.password,
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        },
    )
    return sentinel.master_for(
        target.master,
        connection_pool_class=BlockingSentinelPool,
        retry=_retry(),
        max_connections=pool_size,
        timeout=5,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
        ssl=ssl,
        **options,
    )


# Settings of the shared client's pools that a blocking reader must not inherit.
_POOL_ONLY = ("max_connections", "timeout", "socket_timeout", "redis_connect_func")


def create_blocking_reader(client: RedisClient) -> RedisClient:
    """A client of its own, like `client`, for one thread's blocking reads (XREAD BLOCK): it
    must not hold a connection the requests need, and waits without a socket timeout."""
    if isinstance(client, redis.RedisCluster):
        manager = client.nodes_manager
        options = {
            name: value
            for name, value in manager.connection_kwargs.items()
            if name not in _POOL_ONLY and not name.startswith("oss_cluster_maint")
        }
        # Any node will do to find the rest; TLS and credentials are in the options.
        node = client.get_default_node() or next(iter(manager.startup_nodes.values()))
        return redis.RedisCluster(
            url=f"redis://{node.host}:{node.port}",
            retry=_retry(),
            socket_timeout=None,
            **options,
        )
    shared = client.connection_pool
    if isinstance(shared, SentinelConnectionPool):
        options = {
            name: value
            for name, value in shared.connection_kwargs.items()
            if name not in ("connection_pool", "connection_class")
        }
        return redis.Redis(
            connection_pool=SentinelConnectionPool(
                shared.service_name,
                shared.sentinel_manager,
                connection_class=shared.connection_class,
                max_connections=1,
                **{**options, "socket_timeout": None},
            )
        )
    pool = redis.ConnectionPool(
        connection_class=shared.connection_class,
        max_connections=1,
        **{**shared.connection_kwargs, "socket_timeout": None},
    )
    return redis.Redis(connection_pool=pool)


# How often a script over a set's members is run again when the set changed under it, before
# the caller gets a 503 (the page or Telnyx then retries).
MEMBER_READS = 5


def run_over_members(
    client: RedisClient,
    script: Any,
    set_key: str,
    keys: RedisKeys,
    extra_keys: tuple[str, ...] = (),
    leading_args: tuple[str, ...] = (),
) -> list[Any]:
    """Run a script over every member of a sorted set of calls, with each call's hash in KEYS.

    A script may touch only the keys it is given, so the members are read first; the script
    answers {'retry', members now} when the set changed since, and runs again with those.
    ARGV is `leading_args`, then the members. Returns the rest of the script's reply after its
    leading word.
    """
    members = [text(member) for member in client.zrange(set_key, 0, -1)]
    for _ in range(MEMBER_READS):
        reply = script(
            keys=[set_key, *extra_keys, *(keys.call(member) for member in members)],
            args=[*leading_args, *members],
        )
        if text(reply[0]) != "retry":
            return reply[1:]
        members = [text(member) for member in reply[1]]
    # Calls came and went faster than the set could be read: as if Redis were slow.
    raise redis.TimeoutError(f"{set_key} kept changing while it was read")


@dataclass(frozen=True)
class RedisKeys:
    """Key templates under a namespace prefix.

    The prefix carries a hash tag (`{telnyx-flask}:`), so every key lands in one slot of a Redis
    Cluster and a script may touch any of them; each script still gets every key in KEYS.
    """

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

    def watch_streams(self, agent_id: str) -> str:
        """As agent_streams, for the agent's pages that only watch (presence does not read it)."""
        return f"{self.prefix}sse:watching:{agent_id}"

    @property
    def presence(self) -> str:
        """Hash of every known agent's presence record (JSON), keyed by agent id."""
        return f"{self.prefix}presence:agents"

    @property
    def available_agents(self) -> str:
        """Set of the agents whose presence is available now (the ring timeout's quick look)."""
        return f"{self.prefix}presence:available"

    def rate_limit(self, action: str, agent_id: str) -> str:
        """Counter of one agent's costly requests of one kind in the current window."""
        return f"{self.prefix}limits:{action}:{agent_id}"

    @property
    def telnyx_breaker(self) -> str:
        """Hash of the circuit breaker around the Telnyx API, shared by every worker; TTL-bound."""
        return f"{self.prefix}telnyx:breaker"

    @property
    def transfer_offers(self) -> str:
        """Sorted set of calls with a transfer offer open, scored by when it expires (ms)."""
        return f"{self.prefix}calls:transfer-offers"
