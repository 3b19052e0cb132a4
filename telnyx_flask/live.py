"""Live call state in Redis, shared by every worker: call hashes, the ringing set, the stream."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import StorageUnavailable
from .keys import ACTIVE_CALL_TTL_SECONDS, ENDED_CALL_TTL_SECONDS, RedisKeys

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)

# The call fields kept live, in the names the page and /calls/pending use.
LIVE_FIELDS = (
    "call_control_id",
    "call_session_id",
    "from",
    "to",
    "caller_name",
    "prospect_id",
    "status",
    "ringing_since",
    "answered_at",
    "ended_at",
    "outcome",
    "duration",
    "hangup_cause",
    "recording_url",
)


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


class LiveState:
    """Redis access for live call state; created once per process and shared by its requests."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, stream_maxlen: int):
        self.client = client
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self._apply = client.register_script(_script("apply_call_state.lua"))
        self._ringing = client.register_script(_script("ringing_calls.lua"))

    def apply_call_state(self, call: dict[str, Any]) -> list[str]:
        """Merge a call's durable state into Redis; return the events it announced."""
        fields = live_fields(call)
        summary = call_summary(fields)
        ended = {
            **summary,
            "outcome": call.get("outcome"),
            "duration": call.get("duration"),
            "hangup_cause": call.get("hangup_cause"),
        }
        recording = {
            "call_control_id": call["call_control_id"],
            "recording_url": call.get("recording_url"),
        }
        ringing_since = _parse_time(call.get("ringing_since"))
        score = int(ringing_since.timestamp() * 1000) if ringing_since else 0
        stored = {name: value for name, value in fields.items() if name != "status"}
        try:
            announced = self._apply(
                keys=[self.keys.call(call["call_control_id"]), self.keys.ringing, self.keys.events],
                args=[
                    call["version"],
                    call["status"],
                    score,
                    json.dumps(stored),
                    call["call_control_id"],
                    json.dumps(summary),
                    json.dumps(summary),
                    json.dumps(ended),
                    json.dumps(recording),
                    self.stream_maxlen,
                    ACTIVE_CALL_TTL_SECONDS,
                    ENDED_CALL_TTL_SECONDS,
                ],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [name.decode() if isinstance(name, bytes) else name for name in announced]

    def ringing_calls(self) -> list[dict[str, Any]]:
        """The calls ringing now, oldest first."""
        try:
            replies = self._ringing(keys=[self.keys.ringing], args=[self.keys.call("")])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        calls = []
        for flat in replies:
            pairs = [item.decode() if isinstance(item, bytes) else item for item in flat]
            calls.append(call_summary(dict(zip(pairs[::2], pairs[1::2], strict=True))))
        return calls

    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.client.ping())


def live_fields(call: dict[str, Any]) -> dict[str, str]:
    """The call view from PostgreSQL as the flat string fields of its Redis hash."""
    values = {
        "call_control_id": call.get("call_control_id"),
        "call_session_id": call.get("call_session_id"),
        "from": call.get("from_number"),
        "to": call.get("to_number"),
        "caller_name": call.get("prospect_name") or call.get("caller_id_name"),
        "prospect_id": call.get("prospect_id"),
        "status": call.get("status"),
        "ringing_since": call.get("ringing_since"),
        "answered_at": call.get("answered_at"),
        "ended_at": call.get("ended_at"),
        "outcome": call.get("outcome"),
        "duration": call.get("duration"),
        "hangup_cause": call.get("hangup_cause"),
        "recording_url": call.get("recording_url"),
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def call_summary(fields: dict[str, str]) -> dict[str, Any]:
    """A live call as the API shows it (also carrying the seed's from_number/to_number names)."""
    summary: dict[str, Any] = {name: fields.get(name) for name in LIVE_FIELDS}
    if summary["duration"] is not None:
        summary["duration"] = int(summary["duration"])
    summary["from_number"] = summary["from"]
    summary["to_number"] = summary["to"]
    return summary


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value))


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


def get_live() -> LiveState:
    """The application's LiveState."""
    return current_app.extensions["live"]


def init_app(app: Flask, client: redis.Redis | None = None) -> None:
    """Create the Redis client once for this app (tests may pass their own)."""
    client = client or create_redis(app.config["REDIS_URL"], app.config["REDIS_POOL_SIZE"])
    app.extensions["live"] = LiveState(
        client, RedisKeys(app.config["REDIS_PREFIX"]), app.config["REDIS_STREAM_MAXLEN"]
    )
