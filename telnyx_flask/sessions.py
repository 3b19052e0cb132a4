"""Agents' sessions, kept in PostgreSQL (the authority): started at sign-in, checked on each
request and by open event streams, ended by sign-out, a new password or deactivation."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app

from .db import Database
from .errors import ApiError, StorageUnavailable
from .live_calls import LiveCalls, get_live
from .push import SESSION_REVOKED
from .redis_store import REDIS_ERRORS

log = logging.getLogger(__name__)

# Bounds the per-worker cache of session checks; past it the cache starts again empty.
SESSION_CACHE_ENTRIES = 10_000


class NotAuthenticated(ApiError):
    """No valid session cookie or bearer token."""

    status = 401
    code = "unauthenticated"


@dataclass(frozen=True)
class SessionClaims:
    """What a cookie or a bearer token says: whose session, which, of which generation."""

    user_id: str
    session_id: str
    generation: int


@dataclass(frozen=True)
class SessionState:
    """A session's row joined with its agent's, as PostgreSQL has them."""

    user_id: str
    generation: int
    expires_at: datetime
    revoked: bool
    current_generation: int
    active: bool
    email: str
    name: str
    sip_username: str | None
    role: str = "agent"

    def problem(self, claims: SessionClaims) -> str | None:
        """Why these claims are no longer good (None when they are)."""
        if claims.user_id != self.user_id:
            return "session is not valid"
        if self.revoked or claims.generation != self.generation:
            return "session has been signed out"
        if self.generation != self.current_generation:
            return "session has been signed out"
        if self.expires_at <= datetime.now(UTC):
            return "session has expired"
        return None


START_SESSION = """
WITH expired AS (
    DELETE FROM agent_sessions WHERE user_id = %(user_id)s AND expires_at < now()
)
INSERT INTO agent_sessions (user_id, generation, expires_at)
SELECT id, session_generation, now() + make_interval(secs => %(lifetime)s)
FROM users WHERE id = %(user_id)s
RETURNING id::text, generation
"""

SESSION_STATE = """
SELECT s.user_id::text, s.generation, s.expires_at, s.revoked_at IS NOT NULL,
       u.session_generation, u.active, u.email, u.name, u.sip_username, u.role
FROM agent_sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = %s
"""

REVOKE_SESSION = """
UPDATE agent_sessions SET revoked_at = now()
WHERE id = %s AND revoked_at IS NULL RETURNING user_id::text
"""

END_AGENT_SESSIONS = """
WITH revoked AS (
    UPDATE agent_sessions SET revoked_at = now()
    WHERE user_id = %(user_id)s AND revoked_at IS NULL AND expires_at > now()
)
UPDATE users SET session_generation = session_generation + 1, updated_at = now()
WHERE id = %(user_id)s RETURNING id::text
"""


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


class SessionStore:
    """Sessions in PostgreSQL, with each worker's answers kept for at most `cache_seconds`.

    Holds the Database itself (not the app), so an open event stream can re-check its session
    outside any request.
    """

    def __init__(
        self,
        db: Database,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, SessionState | None]] = {}

    def start(self, user_id: str, lifetime_seconds: int) -> SessionClaims:
        """A new session for the agent, ending `lifetime_seconds` from now whatever happens."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(START_SESSION, {"user_id": user_id, "lifetime": lifetime_seconds})
            row = cur.fetchone()
        if row is None:
            raise NotAuthenticated("account no longer exists")
        return SessionClaims(user_id, row[0], row[1])

    def state(self, session_id: str) -> SessionState | None:
        """The session as PostgreSQL has it (or had it within `cache_seconds`); None if unknown."""
        now = self.clock()
        cached = self._cache.get(session_id)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        state = self._read(session_id) if _is_uuid(session_id) else None
        if self.cache_seconds > 0:
            if len(self._cache) >= SESSION_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[session_id] = (now, state)
        return state

    def _read(self, session_id: str) -> SessionState | None:
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(SESSION_STATE, (session_id,))
            row = cur.fetchone()
        if row is None:
            return None
        user_id, generation, expires_at, revoked, current, active, email, name, sip, role = row
        return SessionState(
            user_id, generation, expires_at, revoked, current, active, email, name, sip, role
        )

    def still_valid(self, claims: SessionClaims) -> bool:
        """True while the session is neither revoked, expired, outdated nor its agent inactive.

        When PostgreSQL cannot answer, the last answer stands: ending every stream in an outage
        would only send every page back to sign in against the same outage.
        """
        try:
            state = self.state(claims.session_id)
        except StorageUnavailable as error:
            log.warning("session check: %s unavailable; keeping the last answer", error.dependency)
            cached = self._cache.get(claims.session_id)
            if cached is None:
                return True
            state = cached[1]
        return state is not None and state.active and state.problem(claims) is None

    def revoke(self, session_id: str) -> str | None:
        """End one session; return its agent's id (None if it had already ended, or never was)."""
        if not _is_uuid(session_id):
            return None
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(REVOKE_SESSION, (session_id,))
            row = cur.fetchone()
        self._cache.pop(session_id, None)
        return row[0] if row else None

    def end_all(self, user_id: str) -> bool:
        """End every session of the agent (bump its generation); False if there is no agent."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(END_AGENT_SESSIONS, {"user_id": user_id})
            found = cur.fetchone() is not None
        self.forget_agent(user_id)
        return found

    def forget_agent(self, user_id: str) -> None:
        """Drop this worker's cached answers about the agent's sessions."""
        for session_id, (_, state) in list(self._cache.items()):
            if state is not None and state.user_id == user_id:
                self._cache.pop(session_id, None)


def get_sessions() -> SessionStore:
    """The application's SessionStore."""
    return current_app.extensions["sessions"]


def announce_revoked(live: LiveCalls, agent_id: str, session_id: str | None) -> None:
    """Tell every worker's open streams that a session (None: all the agent's) has ended.

    Best effort: the streams' periodic still_valid() check, against PostgreSQL, is the authority.
    """
    try:
        live.stream.announce(SESSION_REVOKED, {"agent_id": agent_id, "session_id": session_id})
    except (StorageUnavailable, *REDIS_ERRORS) as error:
        log.warning("could not announce the end of agent %s's session(s): %s", agent_id, error)


def end_agent_sessions(user_id: str) -> bool:
    """End every session of the agent and announce it (inside an app context)."""
    found = get_sessions().end_all(user_id)
    if found:
        announce_revoked(get_live(), user_id, None)
    return found
