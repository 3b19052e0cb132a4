"""Per-agent limits on requests that each cost a Telnyx API call (answer, decline, end, WebRTC
tokens): fixed-window counters in Redis, shared by every worker and host."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .errors import ApiError, StorageUnavailable
from .live_calls import LiveCalls
from .redis_store import REDIS_ERRORS, lua_script


class RateLimited(ApiError):
    """The agent made too many requests of one kind in the current window."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict[str, int]:
        return {"retry_after": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class Limit:
    """So many requests of one kind per window, per agent; `what` names them in the error."""

    name: str
    per_window: int
    window_seconds: int
    what: str


class RateLimiter:
    """Counts an agent's requests against a Limit in one Redis round trip (a Lua script)."""

    def __init__(self, live: LiveCalls):
        self.live = live
        script = lua_script("rate_limit.lua")
        self._script = live.client.register_script(script)

    def check(self, limit: Limit, agent_id: str) -> None:
        """Count one request; raise RateLimited (429, with Retry-After) once over the limit."""
        try:
            allowed, retry_after = self._script(
                keys=[self.live.keys.rate_limit(limit.name, agent_id)],
                args=[limit.window_seconds, limit.per_window],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if not int(allowed):
            retry_after = max(int(retry_after), 1)
            raise RateLimited(
                f"too many {limit.what}: at most {limit.per_window} per "
                f"{_window(limit.window_seconds)}; try again in {retry_after} s",
                retry_after,
            )


def _window(seconds: int) -> str:
    return {60: "minute", 3600: "hour"}.get(seconds, f"{seconds} s")


def agent_actions_limit() -> Limit:
    """Answer, decline, end and the transfer actions together (AGENT_ACTIONS_PER_MINUTE)."""
    per_minute = current_app.config["AGENT_ACTIONS_PER_MINUTE"]
    return Limit("actions", per_minute, 60, "call actions (answer, decline, end)")


def webrtc_tokens_limit() -> Limit:
    """WebRTC login tokens (WEBRTC_TOKENS_PER_HOUR)."""
    per_hour = current_app.config["WEBRTC_TOKENS_PER_HOUR"]
    return Limit("webrtc-token", per_hour, 3600, "WebRTC login tokens")


def check_rate(limit: Limit, agent_id: str) -> None:
    """Count one request of this agent's against `limit` (429 when over)."""
    current_app.extensions["rate_limiter"].check(limit, agent_id)


def init_app(app: Flask) -> None:
    """One limiter per app, over its Redis client (made once, like the other Redis helpers)."""
    app.extensions["rate_limiter"] = RateLimiter(app.extensions["live"])
