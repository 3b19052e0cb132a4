"""Agent presence: Available, Away or On a call.

What an agent chose (available | away) is kept in PostgreSQL (users.presence, the truth that
survives a Redis flush). What they are now is worked out in Redis by lua/presence.lua, one
record per agent in one hash: On a call while they hold a call (read from the calls' own
claims, the one source of who has a call); else Away if they chose it, or if none of their pages
has been open (push.StreamSlots) for PRESENCE_AWAY_AFTER_SECONDS; else Available. Each change is
announced once on the call-event stream as `agent.presence`, whichever worker noticed it.

An agent becomes known to the live state when a page of theirs opens or they choose, and every
active agent is restored into it when Redis is rebuilt. Every worker's background loop runs
`LivePresence.tick` each second (every known agent: their choice, their pages, their calls); a
page opening, a choice, a claim, a release and a call's end work it out again at once. An agent
not known yet reads as what they chose. Others call presence_of, agents and refresh, inside an
application context.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, current_app

from .db import Database, get_db
from .errors import ApiError, StorageUnavailable
from .live_calls import LiveCalls, get_live
from .redis_store import REDIS_ERRORS, lua_script, run_over_members, text

log = logging.getLogger(__name__)

AVAILABLE, AWAY, ON_CALL = "available", "away", "on_call"
PRESENCES = (AVAILABLE, AWAY, ON_CALL)
# What an agent may choose; ON_CALL is set while they hold a call.
CHOSEN = (AVAILABLE, AWAY)
# The presence hash and the available set lapse if nothing works presence out for this long
# (a retired prefix); every tick renews them.
PRESENCE_TTL_SECONDS = 24 * 3600

# Active agents as the presence script takes them; chosen_at in microseconds, so that of two
# choices the newer one wins in Redis whichever worker brings it.
_AGENT_COLUMNS = """
SELECT id::text, name, presence,
       (EXTRACT(EPOCH FROM COALESCE(presence_changed_at, 'epoch')) * 1000000)::bigint
  FROM users"""
ACTIVE_AGENTS = _AGENT_COLUMNS + " WHERE active"
SOME_ACTIVE_AGENTS = _AGENT_COLUMNS + " WHERE active AND id::text = ANY(%s)"
CHOOSE_PRESENCE = """
UPDATE users SET presence = %s, presence_changed_at = clock_timestamp()
 WHERE id::text = %s AND active
RETURNING id::text, name, presence,
          (EXTRACT(EPOCH FROM presence_changed_at) * 1000000)::bigint
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _agent_row(row: tuple[Any, ...]) -> dict[str, str]:
    """One agent as the presence script takes it."""
    agent_id, name, chosen, chosen_at = row
    return {"id": agent_id, "name": name, "chosen": chosen, "chosen_at": str(chosen_at)}


def active_agents(db: Database, agent_ids: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Active agents (all, or those of `agent_ids`) with their chosen presence."""
    with db.connection() as conn, conn.cursor() as cur:
        if agent_ids is None:
            cur.execute(ACTIVE_AGENTS)
        else:
            cur.execute(SOME_ACTIVE_AGENTS, (list(agent_ids),))
        return [_agent_row(row) for row in cur.fetchall()]


_SOURCE = lua_script("presence.lua")


def _run(
    live: LiveCalls,
    op: str,
    agents: list[dict[str, str]],
    now_ms: int | None,
    *,
    away_after_ms: int = 0,
    add: bool = False,
    forget_others: bool = False,
) -> dict[str, str]:
    """Run lua/presence.lua; the agents whose presence changed, with their new presence."""
    keys = live.keys
    request = {
        "op": op,
        "now_ms": str(_now_ms() if now_ms is None else now_ms),
        "away_after_ms": str(away_after_ms),
        "stream_maxlen": live.stream_maxlen,
        "ttl_seconds": PRESENCE_TTL_SECONDS,
        "agents": agents,
        "add": add,
        "forget_others": forget_others,
    }
    extra_keys = (
        keys.presence,
        keys.available_agents,
        keys.events,
        *(keys.agent_streams(agent["id"]) for agent in agents),
    )
    try:
        (changes,) = run_over_members(
            live.client,
            live.client.register_script(_SOURCE),
            keys.active,
            keys,
            extra_keys,
            (json.dumps(request),),
        )
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", str(exc)) from exc
    flat = [text(item) for item in changes]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def settle(live: LiveCalls, now_ms: int | None = None) -> None:
    """Calls changed hands or ended: agents on a call (or holding one) are worked out again.

    Needs no PostgreSQL and no app context (a background loop, a webhook batch). Redis trouble
    is logged, not raised: the call's own change is already made, and the next tick catches up.
    """
    try:
        _run(live, "settle", [], now_ms)
    except StorageUnavailable as error:
        log.warning("presence not settled after a call changed: %s", error)


def restore(live: LiveCalls, agents: list[dict[str, str]], now_ms: int | None = None) -> None:
    """After Redis lost its data: every active agent's presence from PostgreSQL (what they
    chose) and the restored calls (who is on one), quietly; pages take the snapshot."""
    _run(live, "restore", agents, now_ms, add=True)


def nobody_available(live: LiveCalls) -> bool:
    """True when agents are known to presence and none of them is available (one round trip).

    With no agent known at all (a fresh deployment, or before the first tick) calls ring as
    they always did, for the whole ring timeout.
    """
    keys = live.keys
    try:
        with live.client.pipeline(transaction=False) as pipe:
            pipe.hlen(keys.presence)
            pipe.scard(keys.available_agents)
            known, available = pipe.execute()
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", str(exc)) from exc
    return bool(known) and not available


def records(live: LiveCalls) -> dict[str, dict[str, Any]]:
    """Every known agent's presence record, by agent id."""
    try:
        raw = live.client.hgetall(live.keys.presence)
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", str(exc)) from exc
    return {text(agent_id): json.loads(text(record)) for agent_id, record in raw.items()}


def live_agents(live: LiveCalls) -> list[dict[str, Any]]:
    """The agents presence knows, as the snapshot lists them: {"id", "name", "presence",
    "chosen"}."""
    listed = [
        {
            "id": agent_id,
            "name": record.get("name") or "",
            "presence": record["presence"],
            "chosen": record.get("chosen"),
        }
        for agent_id, record in records(live).items()
        if record.get("presence") in PRESENCES
    ]
    return sorted(listed, key=lambda agent: (agent["name"], agent["id"]))


class LivePresence:
    """Presence for one app: PostgreSQL's choices and the pages' slots, worked out in Redis."""

    def __init__(self, db: Database, live: LiveCalls, away_after_seconds: int):
        self.db = db
        self.live = live
        self.away_after_ms = away_after_seconds * 1000

    def tick(self, now_ms: int | None = None) -> dict[str, str]:
        """Every known agent worked out again (the background loop, each second): their choice
        and name from PostgreSQL, their pages, their calls; agents no longer active are
        forgotten. Returns the changes."""
        return _run(
            self.live,
            "observe",
            active_agents(self.db),
            now_ms,
            away_after_ms=self.away_after_ms,
            forget_others=True,
        )

    def refresh(self, agent_ids: Iterable[str], now_ms: int | None = None) -> dict[str, str]:
        """These agents worked out again, if known (a call was handed over, say)."""
        agents = active_agents(self.db, sorted(set(agent_ids)))
        if not agents:
            return {}
        return _run(self.live, "observe", agents, now_ms, away_after_ms=self.away_after_ms)

    def page_opened(self, agent_id: str, now_ms: int | None = None) -> dict[str, str]:
        """A page of the agent's opened (its slot is taken): known from now on, and not away
        for want of a page."""
        agents = active_agents(self.db, [agent_id])
        return _run(
            self.live, "observe", agents, now_ms, away_after_ms=self.away_after_ms, add=True
        )

    def choose(self, agent_id: str, chosen: str, now_ms: int | None = None) -> dict[str, Any]:
        """Record the agent's choice in PostgreSQL, then work out their presence with it."""
        if chosen not in CHOSEN:
            raise ApiError(f"presence must be one of {', '.join(CHOSEN)}", code="invalid_presence")
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(CHOOSE_PRESENCE, (chosen, agent_id))
            row = cur.fetchone()
        if row is None:
            raise ApiError("no such active agent", status=404, code="agent_not_found")
        agent = _agent_row(row)
        _run(
            self.live,
            "observe",
            [agent],
            now_ms,
            away_after_ms=self.away_after_ms,
            add=True,
        )
        record = records(self.live).get(agent["id"], {})
        return {
            "id": agent["id"],
            "name": agent["name"],
            "presence": record.get("presence", chosen),
            "chosen": chosen,
        }


def get_presence() -> LivePresence:
    """The application's LivePresence."""
    return current_app.extensions["presence"]


def presence_of(agent_id: str) -> str | None:
    """The agent's presence now, or None when there is no such active agent."""
    rows = active_agents(get_db(), [agent_id])
    if not rows:
        return None
    record = records(get_live()).get(agent_id)
    # Not yet known to the live state (no page yet, and no tick since they were added): their
    # own choice.
    return record["presence"] if record else rows[0]["chosen"]


def agents() -> list[dict[str, Any]]:
    """Every active agent with their presence now: {"id", "name", "presence"}, by name."""
    known = records(get_live())
    listed = [
        {
            "id": row["id"],
            "name": row["name"],
            "presence": known.get(row["id"], {}).get("presence", row["chosen"]),
        }
        for row in active_agents(get_db())
    ]
    return sorted(listed, key=lambda agent: (agent["name"], agent["id"]))


def page_opened(agent_id: str) -> None:
    """A page of this agent's opened. Storage trouble is logged, not raised: the page works
    without it, and the background loop catches up."""
    try:
        get_presence().page_opened(agent_id)
    except StorageUnavailable as error:
        log.warning("presence not updated for an opened page: %s", error)


def refresh(agent_ids: Iterable[str]) -> None:
    """Work out these agents' presence again and announce what changed (a call changed hands).

    Storage trouble is logged, not raised: the background loop corrects it within a second.
    """
    try:
        get_presence().refresh(agent_ids)
    except StorageUnavailable as error:
        log.warning("presence not refreshed: %s", error)


def init_app(app: Flask) -> None:
    """Presence for this app (before the background loops, which tick it)."""
    app.extensions["presence"] = LivePresence(
        app.extensions["database"],
        app.extensions["live"],
        app.config["PRESENCE_AWAY_AFTER_SECONDS"],
    )
