"""PostgreSQL is the truth; Redis is rebuilt from it (invariant 10).

Redis may lose everything: a restart without persistence, a failover that loses writes,
eviction. A generation marker key says the live state was built, and on which Redis (its
replication id, which a failover changes); whoever finds it missing or from another Redis (each
worker's background loop, every second, and /readyz) rebuilds the state of every call that is
not over from `inbound_calls` and every agent's presence from `users`, under a lock so that one
process does it, then writes a new marker and a `reset` to the event stream, which makes every
page take a fresh snapshot.
"""

from __future__ import annotations

import logging
import uuid

from . import metrics, presence
from .db import Database
from .live_calls import LiveCalls

log = logging.getLogger(__name__)

REBUILD_LOCK_MS = 10_000
REBUILT_REASON = "live state rebuilt from PostgreSQL"

OPEN_CALLS = """
SELECT call_view(c), (EXTRACT(EPOCH FROM c.created_at) * 1000)::bigint, u.id::text, u.name
  FROM inbound_calls c LEFT JOIN users u ON u.id = c.answered_by
 WHERE c.status <> 'ended' AND c.call_control_id IS NOT NULL
"""


def ensure_live_state(db: Database, live: LiveCalls) -> int | None:
    """Rebuild live state if Redis lost it; the number of calls restored, None if not needed."""
    built, replid = live.live_generation()
    if built:
        return None
    token = uuid.uuid4().hex
    if not live.lock_rebuild(token, REBUILD_LOCK_MS):
        return None  # another process is rebuilding
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(OPEN_CALLS)
        rows = cur.fetchall()
    for call, arrived_ms, agent_id, agent_name in rows:
        # The call keeps the time it first reached the service: its ring timeout still counts
        # from then. A newer state already in Redis (a webhook since the loss) wins.
        claimed_by = (agent_id, agent_name or "") if agent_id else None
        live.apply_call_state(call, arrived_ms=arrived_ms, claimed_by=claimed_by, quiet=True)
    # What each agent chose, and who is on one of the calls just restored.
    presence.restore(live, presence.active_agents(db))
    # Marked with the Redis it was built on: after a failover the marker no longer matches.
    live.finish_rebuild(token, f"{uuid.uuid4().hex} {replid}", REBUILT_REASON)
    metrics.LIVE_REBUILDS.inc()
    metrics.LIVE_REBUILT_CALLS.inc(len(rows))
    # A fresh Redis with nothing to restore is a normal start; restoring calls means a loss.
    level = logging.WARNING if rows else logging.INFO
    log.log(level, "rebuilt the live state of %d call(s) from PostgreSQL", len(rows))
    return len(rows)
