"""Agent presence: Available, Away or On a call.

Interface only, for now (issue 16, part 1 fills it in): every active agent reads as available.
Other modules depend on these names and signatures, not on how presence is kept. Each function
runs inside an application context.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .db import get_db

AVAILABLE, AWAY, ON_CALL = "available", "away", "on_call"
PRESENCES = (AVAILABLE, AWAY, ON_CALL)
# What an agent may choose; ON_CALL is set while they hold a call.
CHOSEN = (AVAILABLE, AWAY)


def presence_of(agent_id: str) -> str | None:
    """The agent's presence now, or None when there is no such active agent."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT presence FROM users WHERE id::text = %s AND active", (agent_id,))
        row = cur.fetchone()
    return row[0] if row else None


def agents() -> list[dict[str, Any]]:
    """Every active agent with their presence now: {"id", "name", "presence"}, by name."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT id::text, name, presence FROM users WHERE active ORDER BY name, id")
        return [{"id": row[0], "name": row[1], "presence": row[2]} for row in cur.fetchall()]


def refresh(agent_ids: Iterable[str]) -> None:
    """Work out these agents' presence again and announce what changed (a call changed hands)."""
