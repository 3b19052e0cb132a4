"""Live call state in Redis, shared by every worker: call hashes, the ringing set, the stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import StorageUnavailable
from .events import ANSWERING
from .keys import ACTIVE_CALL_TTL_SECONDS, ENDED_CALL_TTL_SECONDS, RedisKeys

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
# Entries read per round trip when a page catches up from its Last-Event-ID.
CATCH_UP_PAGE = 200

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
    "has_recording",
)


def lua_script(name: str) -> str:
    """The text of one of the package's Lua scripts (lua/NAME)."""
    return resources.files(__package__).joinpath("lua", name).read_text()


class LiveState:
    """Redis access for live call state; created once per process and shared by its requests."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, stream_maxlen: int):
        self.client = client
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self._apply = client.register_script(lua_script("apply_call_state.lua"))
        self._ringing = client.register_script(lua_script("ringing_calls.lua"))
        self._claim = client.register_script(lua_script("claim_call.lua"))
        self._release = client.register_script(lua_script("release_call.lua"))
        self._snapshot = client.register_script(lua_script("snapshot.lua"))
        self._hold = client.register_script(lua_script("hold_claim.lua"))
        self._finish_rebuild = client.register_script(lua_script("finish_rebuild.lua"))

    def apply_call_state(
        self,
        call: dict[str, Any],
        *,
        arrived_ms: int | None = None,
        claimed_by: tuple[str, str] | None = None,
        quiet: bool = False,
    ) -> list[str]:
        """Merge a call's durable state into Redis; return the events it announced.

        Restoring from PostgreSQL passes when the call first arrived (`arrived_ms`, so its ring
        timeout still counts from then), who took it, and `quiet` (pages get a reset instead).
        """
        fields = live_fields(call)
        summary = call_summary(fields)
        ended = {
            **summary,
            "outcome": call.get("outcome"),
            "duration": call.get("duration"),
            "hangup_cause": call.get("hangup_cause"),
        }
        # Pages play recordings through /api/calls/<id>/recording: the pre-signed link, which
        # plays without a sign-in, stays in PostgreSQL.
        recording = {"call_control_id": call["call_control_id"], "has_recording": True}
        # The ring timeout runs on this server's clock from when the call reached it: clock skew
        # or a late delivery must never reject a call before an agent could see it ring.
        score = int(time.time() * 1000) if arrived_ms is None else arrived_ms
        stored = {name: value for name, value in fields.items() if name != "status"}
        if claimed_by is not None:
            stored["claimed_by_id"], stored["claimed_by_name"] = claimed_by
        try:
            announced = self._apply(
                keys=[
                    self.keys.call(call["call_control_id"]),
                    self.keys.ringing,
                    self.keys.events,
                    self.keys.claimed,
                    self.keys.active,
                ],
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
                    "1" if quiet else "0",
                ],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [_text(name) for name in announced]

    def ringing_calls(self) -> list[dict[str, Any]]:
        """The calls ringing now, oldest first."""
        try:
            replies = self._ringing(keys=[self.keys.ringing], args=[self.keys.call("")])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return _summaries(replies)

    def call(self, call_control_id: str) -> dict[str, Any] | None:
        """One live call, or None when Redis does not know it (never seen, or expired)."""
        try:
            fields = self.client.hgetall(self.keys.call(call_control_id))
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if not fields:
            return None
        return call_summary({_text(k): _text(v) for k, v in fields.items()})

    def claim_call(
        self, call_control_id: str, agent_id: str, agent_name: str, action: str, now_ms: int
    ) -> Claim:
        """Atomically move a ringing call to answering for one agent, announcing call.claimed."""
        reply = self._run_claim(self._claim, call_control_id, agent_id, agent_name, action, now_ms)
        if reply[0] == "taken":
            return Claim("taken", reply[1], reply[2] or None, reply[3] or None, reply[4] or None)
        if reply[0] == "claimed" and len(reply) > 1 and reply[1]:
            return Claim("claimed", ringing_since_ms=int(reply[1]))
        return Claim(reply[0])

    def hold_claim(
        self, call_control_id: str, agent_id: str, agent_name: str, action: str, now_ms: int
    ) -> Claim:
        """Renew an agent's claim before the next Telnyx command (or take it back after a
        rebuild); "held", or why not: "taken" (with by whom), "ended" or "missing"."""
        reply = self._run_claim(self._hold, call_control_id, agent_id, agent_name, action, now_ms)
        if reply[0] == "taken":
            return Claim("taken", reply[1], reply[2] or None, reply[3] or None, reply[4] or None)
        if reply[0] == "held":
            return Claim("held", reply[1])
        return Claim(reply[0])

    def _run_claim(
        self,
        script: Any,
        call_control_id: str,
        agent_id: str,
        agent_name: str,
        action: str,
        now_ms: int,
    ) -> list[str]:
        """Run claim_call.lua or hold_claim.lua, which take the same keys and arguments."""
        data = {
            "call_control_id": call_control_id,
            "agent": {"id": agent_id, "name": agent_name},
            "action": action,
        }
        args = [agent_id, agent_name, action, now_ms, json.dumps(data), self.stream_maxlen]
        try:
            reply = script(keys=self._claim_keys(call_control_id), args=[*args, call_control_id])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [_text(item) for item in reply]

    def release_call(self, call_control_id: str, agent_id: str, reason: str) -> bool:
        """Give a claim back (answering -> ringing) if `agent_id` still holds it."""
        data = {"call_control_id": call_control_id, "reason": reason}
        try:
            released = self._release(
                keys=self._claim_keys(call_control_id),
                args=[agent_id, json.dumps(data), self.stream_maxlen],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return bool(released)

    def announce(self, event: str, data: dict[str, Any]) -> None:
        """Add one event to the call-event stream (what the Lua scripts do for state changes)."""
        try:
            self.client.xadd(
                self.keys.events,
                {"event": event, "data": json.dumps(data)},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc

    def ringing_longer_than(self, before_ms: int, limit: int = 50) -> list[str]:
        """call_control_ids of calls ringing since before `before_ms`, oldest first."""
        try:
            members = self.client.zrange(
                self.keys.ringing, "-inf", before_ms, byscore=True, offset=0, num=limit
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [_text(member) for member in members]

    def claimed_before(self, before_ms: int, limit: int = 50) -> list[tuple[str, str]]:
        """(call_control_id, claimer) of claims taken before `before_ms` that are still open."""
        try:
            members = self.client.zrange(
                self.keys.claimed, "-inf", before_ms, byscore=True, offset=0, num=limit
            )
            with self.client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(self.keys.call(_text(member)), "status", "claimed_by_id")
                states = pipe.execute()
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        stale = []
        for member, (status, claimer) in zip(members, states, strict=True):
            if _text(status) == ANSWERING and claimer:
                stale.append((_text(member), _text(claimer)))
            else:
                self.client.zrem(self.keys.claimed, member)
        return stale

    def _claim_keys(self, call_control_id: str) -> list[str]:
        return [
            self.keys.call(call_control_id),
            self.keys.ringing,
            self.keys.claimed,
            self.keys.events,
        ]

    def snapshot(self) -> tuple[str, list[dict[str, Any]]]:
        """(newest stream id, calls ringing or in progress), read atomically."""
        try:
            newest_id, replies = self._snapshot(
                keys=[self.keys.active, self.keys.events], args=[self.keys.call("")]
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return _text(newest_id), _summaries(replies)

    def events_after(self, stream_id: str, page_size: int = CATCH_UP_PAGE) -> Iterator[Any]:
        """Stream entries after `stream_id`, up to the newest one when called.

        Read `page_size` at a time, so a page resuming from far back never holds the stream's
        whole cap in memory. Entries added later are not chased: the caller's live queue has them.
        """
        try:
            newest = self.client.xrevrange(self.keys.events, count=1)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if not newest:
            return
        end = _text(newest[0][0])
        after = stream_id
        while True:
            try:
                page = self.client.xrange(
                    self.keys.events, min=f"({after}", max=end, count=page_size
                )
            except REDIS_ERRORS as exc:
                raise StorageUnavailable("redis", str(exc)) from exc
            yield from page
            if len(page) < page_size:
                return
            after = _text(page[-1][0])

    def aged_out(self, stream_id: str) -> bool:
        """True when entries after `stream_id` were trimmed away, or the id is not this stream's."""
        try:
            info = self.client.xinfo_stream(self.keys.events)
        except redis.ResponseError:
            return True  # no stream at all: an id from before a flush or from elsewhere
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        wanted = parse_stream_id(stream_id) or (0, 0)
        newest = parse_stream_id(_text(info.get("last-generated-id"))) or (0, 0)
        deleted = parse_stream_id(_text(info.get("max-deleted-entry-id"))) or (0, 0)
        first_entry = info.get("first-entry")
        first = parse_stream_id(_text(first_entry[0])) if first_entry else None
        # MAXLEN trims from the head without recording what it removed (Redis 7.0): when
        # anything was trimmed and the resume point is older than the oldest entry kept, the
        # entries right after it may be gone.
        trimmed = info.get("entries-added", 0) > info.get("length", 0)
        older_than_kept = wanted < (first or newest)
        return wanted > newest or deleted > wanted or (trimmed and older_than_kept)

    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.client.ping())

    def has_generation(self) -> bool:
        """False when the marker is gone: Redis lost its data and must be rebuilt."""
        try:
            return bool(self.client.exists(self.keys.generation))
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc

    def lock_rebuild(self, token: str, ttl_ms: int) -> bool:
        """Take the rebuild lock (one rebuilder at a time, everywhere); False if held."""
        try:
            return bool(self.client.set(self.keys.rebuild_lock, token, nx=True, px=ttl_ms))
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc

    def finish_rebuild(self, token: str, generation: str, reason: str) -> None:
        """Mark the new generation, announce `reset` to every page, release the lock."""
        try:
            self._finish_rebuild(
                keys=[self.keys.generation, self.keys.events, self.keys.rebuild_lock],
                args=[generation, json.dumps({"reason": reason}), self.stream_maxlen, token],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc

    def eviction_policy(self) -> str | None:
        """Redis's maxmemory-policy (from INFO, which managed services allow), None if unknown."""
        try:
            info = self.client.info("memory")
        except redis.ResponseError:
            return None  # INFO renamed away, or a stand-in (fakeredis) without it
        policy = info.get("maxmemory_policy")
        return _text(policy) if policy is not None else None


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: claimed, missing, or taken (with by whom, and what they did)."""

    result: str
    status: str | None = None
    claimed_by_id: str | None = None
    claimed_by_name: str | None = None
    action: str | None = None
    ringing_since_ms: int | None = None  # when it started ringing here (a fresh claim)


STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def parse_stream_id(value: str | None) -> tuple[int, int] | None:
    """A Redis stream id "ms-seq" as a comparable pair, or None when malformed.

    ASCII digits only: str.isdigit() also takes "²" and Arabic-Indic digits, which int() or
    Redis then refuse.
    """
    match = STREAM_ID.fullmatch(value) if value else None
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _summaries(replies: list[list[Any]]) -> list[dict[str, Any]]:
    """Calls from flat HGETALL replies, as the API shows them."""
    calls = []
    for flat in replies:
        pairs = [_text(item) for item in flat]
        calls.append(call_summary(dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return calls


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
        "has_recording": "true" if call.get("recording_url") else None,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def call_summary(fields: dict[str, str]) -> dict[str, Any]:
    """A live call as the API shows it (also carrying the seed's from_number/to_number names)."""
    summary: dict[str, Any] = {name: fields.get(name) for name in LIVE_FIELDS}
    if summary["duration"] is not None:
        summary["duration"] = int(summary["duration"])
    summary["has_recording"] = summary["has_recording"] == "true"
    summary["from_number"] = summary["from"]
    summary["to_number"] = summary["to"]
    claimer = fields.get("claimed_by_id")
    summary["claimed_by"] = (
        {"id": claimer, "name": fields.get("claimed_by_name")} if claimer else None
    )
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
