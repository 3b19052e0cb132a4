"""Live call state in Redis, shared by every worker and host: one hash per call, the ringing,
claimed and active sets, and the atomic steps on them (apply a state, claim, hold, release).

Each step is one Lua script, so a step is all-or-nothing and workers never interleave inside
one; a state no newer than the one held (by version) changes nothing, so events may arrive in any
order and any number of times. Who may claim, and what a claim leads to, is claims.py's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app

from . import metrics
from .call_status import call_summary, live_fields, summaries
from .errors import StorageUnavailable
from .event_stream import EventStream, parse_stream_id
from .redis_store import (
    ACTIVE_CALL_TTL_SECONDS,
    ENDED_CALL_TTL_SECONDS,
    REDIS_ERRORS,
    RedisClient,
    RedisKeys,
    SentinelTarget,
    create_redis,
    lua_script,
    run_over_members,
    text,
)


class LiveCalls:
    """Redis access for live call state; created once per process and shared by its requests."""

    def __init__(self, client: RedisClient, keys: RedisKeys, stream_maxlen: int):
        self.client = client
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self.stream = EventStream(client, keys, stream_maxlen)
        self._apply = client.register_script(lua_script("apply_call_states.lua"))
        self._ringing = client.register_script(lua_script("ringing_calls.lua"))
        self._claim = client.register_script(lua_script("claim_call.lua"))
        self._release = client.register_script(lua_script("release_call.lua"))
        self._hold = client.register_script(lua_script("hold_claim.lua"))
        self._finish_rebuild = client.register_script(lua_script("finish_rebuild.lua"))
        self._stale_claims = client.register_script(lua_script("stale_claims.lua"))
        self._live_generation = client.register_script(lua_script("live_generation.lua"))

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
        state = self.live_state(call, arrived_ms=arrived_ms, claimed_by=claimed_by, quiet=quiet)
        [outcome] = self.apply_call_states([state])
        if isinstance(outcome, StorageUnavailable):
            raise outcome
        return outcome

    def live_state(
        self,
        call: dict[str, Any],
        *,
        arrived_ms: int | None = None,
        claimed_by: tuple[str, str] | None = None,
        quiet: bool = False,
    ) -> dict[str, Any]:
        """What lua/apply_call_states.lua takes for one call, from its durable state."""
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
        # Numbers that must stay exact (a version may be a large bigint) travel as strings.
        return {
            "version": str(call["version"]),
            "status": call["status"],
            "call_control_id": call["call_control_id"],
            "arrived_ms": str(score),
            "fields": stored,
            "summary": summary,
            "ended": ended,
            "recording": recording,
            "quiet": quiet,
        }

    def apply_call_states(
        self, states: list[dict[str, Any]]
    ) -> list[list[str] | StorageUnavailable]:
        """Apply live states (from `live_state`) in order, in one script call: one round trip
        for a whole group commit. Per state, the events it announced, or StorageUnavailable for
        a state Redis failed to apply (that state alone). StorageUnavailable is raised when Redis
        cannot be reached at all."""
        limits = {
            "stream_maxlen": self.stream_maxlen,
            "active_ttl": ACTIVE_CALL_TTL_SECONDS,
            "ended_ttl": ENDED_CALL_TTL_SECONDS,
        }
        keys = self.keys
        call_keys = [keys.call(state["call_control_id"]) for state in states]
        try:
            replies = self._apply(
                keys=[keys.ringing, keys.events, keys.claimed, keys.active, *call_keys],
                args=[json.dumps(states), json.dumps(limits)],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        outcomes: list[list[str] | StorageUnavailable] = []
        for state, (status, detail) in zip(states, replies, strict=True):
            if text(status) != "ok":
                outcomes.append(StorageUnavailable("redis", text(detail)))
                continue
            announced = [text(name) for name in detail]
            if "call.ended" in announced:  # announced once per call, whichever worker did it
                metrics.CALLS_ENDED.labels(state["ended"]["outcome"] or "unknown").inc()
            outcomes.append(announced)
        return outcomes

    def ringing_calls(self) -> list[dict[str, Any]]:
        """The calls ringing now, oldest first."""
        try:
            (replies,) = run_over_members(self.client, self._ringing, self.keys.ringing, self.keys)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return summaries(replies)

    def call(self, call_control_id: str) -> dict[str, Any] | None:
        """One live call, or None when Redis does not know it (never seen, or expired)."""
        try:
            fields = self.client.hgetall(self.keys.call(call_control_id))
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if not fields:
            return None
        return call_summary({text(k): text(v) for k, v in fields.items()})

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
        """Run claim_call.lua or hold_claim.lua, which take the same keys and argument."""
        claim = {
            "call_control_id": call_control_id,
            "agent": {"id": agent_id, "name": agent_name},
            "action": action,
            "now_ms": str(now_ms),
            "stream_maxlen": self.stream_maxlen,
        }
        try:
            reply = script(keys=self._claim_keys(call_control_id), args=[json.dumps(claim)])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [text(item) for item in reply]

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

    def ringing_longer_than(self, before_ms: int, limit: int = 50) -> list[str]:
        """call_control_ids of calls ringing since before `before_ms`, oldest first."""
        try:
            members = self.client.zrange(
                self.keys.ringing, "-inf", before_ms, byscore=True, offset=0, num=limit
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [text(member) for member in members]

    def claimed_before(self, before_ms: int, limit: int = 50) -> list[tuple[str, str]]:
        """(call_control_id, claimer) of claims taken before `before_ms` that are still open.

        Members whose call moved on leave the claimed set in the same step that reads them, so
        a call claimed afresh meanwhile (a newer score) stays in it.
        """
        try:
            members = [
                text(member)
                for member in self.client.zrange(
                    self.keys.claimed, "-inf", before_ms, byscore=True, offset=0, num=limit
                )
            ]
            if not members:
                return []
            reply = self._stale_claims(
                keys=[self.keys.claimed, *(self.keys.call(member) for member in members)],
                args=[before_ms, *members],
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        flat = [text(item) for item in reply]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def _claim_keys(self, call_control_id: str) -> list[str]:
        return [
            self.keys.call(call_control_id),
            self.keys.ringing,
            self.keys.claimed,
            self.keys.events,
        ]

    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.client.ping())

    def live_generation(self) -> tuple[bool, str]:
        """(whether the live state here was built from PostgreSQL, this Redis's replication
        id). False when the marker is gone (Redis lost its data) or was built on another
        replication id (a failover, which may have lost writes): rebuild, then mark it with the
        replication id returned."""
        try:
            built, replid = self._live_generation(keys=[self.keys.generation])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return bool(built), text(replid)

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
        return text(policy) if policy is not None else None


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: claimed, missing, or taken (with by whom, and what they did)."""

    result: str
    status: str | None = None
    claimed_by_id: str | None = None
    claimed_by_name: str | None = None
    action: str | None = None
    ringing_since_ms: int | None = None  # when it started ringing here (a fresh claim)


def _live_gauges(live: LiveCalls) -> Iterator[tuple[str, str, dict[str, str], float]]:
    """Scrape-time facts from Redis, one value for the whole service: calls ringing now, how
    long the longest has rung, and when the newest event-stream entry was written."""
    keys = live.keys
    with live.client.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.ringing)
        pipe.zrange(keys.ringing, 0, 0, withscores=True)
        pipe.xrevrange(keys.events, count=1)
        ringing, oldest, newest = pipe.execute()
    yield ("telnyx_flask_calls_ringing", "Calls ringing now, not yet taken", {}, float(ringing))
    waited = time.time() - oldest[0][1] / 1000 if oldest else 0.0
    yield (
        "telnyx_flask_longest_ringing_seconds",
        "How long the call ringing longest has rung (0 when none is ringing)",
        {},
        max(0.0, waited),
    )
    newest_id = parse_stream_id(text(newest[0][0])) if newest else None
    if newest_id is not None:
        yield (
            "telnyx_flask_stream_newest_entry_seconds",
            "Time (Unix seconds, from its stream id) of the newest entry on the event stream",
            {},
            newest_id[0] / 1000,
        )


def get_live() -> LiveCalls:
    """The application's LiveCalls."""
    return current_app.extensions["live"]


def init_app(app: Flask, client: RedisClient | None = None) -> None:
    """Create the Redis client once for this app (tests may pass their own)."""
    sentinel = (
        SentinelTarget(
            app.config["REDIS_SENTINELS"],
            app.config["REDIS_SENTINEL_MASTER"],
            app.config["REDIS_SENTINEL_PASSWORD"],
        )
        if app.config["REDIS_SENTINELS"]
        else None
    )
    client = client or create_redis(
        app.config["REDIS_URL"], app.config["REDIS_POOL_SIZE"], sentinel
    )
    live = LiveCalls(
        client, RedisKeys(app.config["REDIS_PREFIX"]), app.config["REDIS_STREAM_MAXLEN"]
    )
    app.extensions["live"] = live
    metrics.add_scrape_gauges(app, lambda: _live_gauges(live))
