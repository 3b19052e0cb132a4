"""The circuit breaker around the Telnyx API: when Telnyx is plainly down, stop sending.

Its state lives in Redis, so every worker on every host opens and closes together: after
`failure_threshold` consecutive failures (no answer, 5xx) it opens and every call fails at once
with 503 `telnyx_unavailable` and Retry-After; after `cooldown_seconds` one caller probes, and
its success closes it. A 4xx is Telnyx answering, not Telnyx down, so it counts as a success.

Why not pybreaker's CircuitRedisStorage: it reads and writes the state in several round trips
(a race between workers at every transition), lets every worker through while half-open rather
than one probe, and is not keyed under our prefix through KEYS. This is one Lua script.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis
from redis.exceptions import RedisClusterException

from . import metrics
from .errors import ApiError
from .redis_store import RedisClient, RedisKeys, lua_script, text

log = logging.getLogger(__name__)

# Any Redis failure (down, or full under noeviction) must not turn a Telnyx call into a 500; a
# cluster with no reachable node raises RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class TelnyxUnavailable(ApiError):
    """The breaker is open: Telnyx failed again and again, so nothing is sent for now."""

    status = 503
    code = "telnyx_unavailable"

    def __init__(self, retry_after_seconds: float):
        self.retry_after = max(1, math.ceil(retry_after_seconds))
        super().__init__(
            "Telnyx is not answering (the circuit breaker is open); "
            f"try again in {self.retry_after} s"
        )

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class BreakerSettings:
    """When the breaker opens and how long it stays open."""

    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    probe_timeout_seconds: float = 15.0


class CircuitBreaker:
    """Shared open/closed state for calls to Telnyx; `allow()` before, `record_*` after."""

    def __init__(self, client: RedisClient, keys: RedisKeys, settings: BreakerSettings):
        self.client = client
        self.key = keys.telnyx_breaker
        self.settings = settings
        self._script = client.register_script(lua_script("circuit_breaker.lua"))
        # The key outlives a cool-down comfortably; old failures stop counting after it.
        self._ttl_seconds = max(600, int(settings.cooldown_seconds * 4))

    def _run(self, op: str, now_ms: int | None) -> list[str]:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        settings = self.settings
        reply = self._script(
            keys=[self.key],
            args=[
                op,
                now_ms,
                settings.failure_threshold,
                int(settings.cooldown_seconds * 1000),
                int(settings.probe_timeout_seconds * 1000),
                self._ttl_seconds,
            ],
        )
        return [str(text(item)) for item in reply]

    def check(self, now_ms: int | None = None) -> None:
        """Raise TelnyxUnavailable while the breaker is open, without taking the probe: a look
        before an agent's action claims a call (the request itself then asks `allow`)."""
        self._ask("check", now_ms)

    def allow(self, now_ms: int | None = None) -> None:
        """Return if a request may go to Telnyx now; raise TelnyxUnavailable if not.

        Fails open when Redis cannot be asked: the breaker protects Telnyx and our workers, and
        must not itself become the outage.
        """
        self._ask("allow", now_ms)

    def _ask(self, op: str, now_ms: int | None) -> None:
        try:
            reply = self._run(op, now_ms)
        except REDIS_ERRORS as exc:
            log.warning("circuit breaker: redis unavailable (%s); letting the request through", exc)
            return
        if reply[0] == OPEN:
            now_ms = int(time.time() * 1000) if now_ms is None else now_ms
            raise TelnyxUnavailable((int(reply[1]) - now_ms) / 1000)
        if reply[0] == "probe":
            log.info("circuit breaker: cooled down; probing Telnyx")

    def record_success(self, now_ms: int | None = None) -> None:
        """Telnyx answered (any status below 500 but 429): the failures in a row are over."""
        try:
            _, transition = self._run("success", now_ms)
        except REDIS_ERRORS:
            return
        if transition == CLOSED:
            metrics.TELNYX_BREAKER_TRANSITIONS.labels(CLOSED).inc()
            log.warning("circuit breaker closed: Telnyx answers again")

    def record_failure(self, now_ms: int | None = None) -> None:
        """Telnyx did not answer, or answered 5xx."""
        try:
            _, transition = self._run("failure", now_ms)
        except REDIS_ERRORS:
            return
        if transition == "opened":
            metrics.TELNYX_BREAKER_TRANSITIONS.labels(OPEN).inc()
            log.error(
                "circuit breaker opened: %d failures in a row from Telnyx; "
                "commands fail at once for %.0f s, then one probe",
                self.settings.failure_threshold,
                self.settings.cooldown_seconds,
            )

    def state(self) -> str:
        """closed, open or half_open (what /readyz and /metrics show)."""
        try:
            value = self.client.hget(self.key, "state")
        except REDIS_ERRORS:
            return "unknown"
        if value is None:
            return CLOSED
        return text(value)
