"""Ended means ended (invariant 10): calls Telnyx says are over are ended here too.

Two ways a call's hangup can go missing (Telnyx gave up redelivering it, or a failover lost it):
- Telnyx answers 90018 ("call already ended") to a command: `end_gone_call`;
- nothing arrives for the call for longer than a bound: `SilentCalls.check` asks Telnyx
  (GET /v2/calls/{call_control_id}) and ends the call if it is no longer alive.
Either way the call is ended in PostgreSQL (with an inferred cause that a late real hangup
replaces) and in Redis, `call.ended` is announced, and the call is logged with its outcome.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import presence
from .call_records import end_call_inferred
from .circuit_breaker import TelnyxUnavailable
from .db import Database
from .live_calls import LiveCalls
from .telnyx_api import TelnyxClient, TelnyxError

log = logging.getLogger(__name__)

# call_logs.end_reason for ends the service concluded (Telnyx's own causes are lower-case words
# too, so these read the same in the history).
GONE_CAUSE = "ended_at_telnyx"
NOT_ALIVE_CAUSE = "not_alive_at_telnyx"
STATUS_DEADLINE_SECONDS = 5.0
# A silent call Telnyx said is alive (or could not say) is asked about again after this.
RECHECK_SECONDS = 300

# Calls gone silent, leased for one check so that one worker asks Telnyx about each.
SILENT_CALLS = """
UPDATE inbound_calls SET alive_checked_at = now()
 WHERE id IN (
    SELECT id FROM inbound_calls
     WHERE status <> 'ended' AND call_control_id IS NOT NULL
       AND last_webhook_at < now() - make_interval(secs => CASE WHEN status = 'ringing'
                THEN %(ringing)s ELSE %(answered)s END)
       AND (alive_checked_at IS NULL
            OR alive_checked_at < now() - make_interval(secs => %(recheck)s))
     ORDER BY last_webhook_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED)
RETURNING call_control_id
"""


def end_gone_call(
    db: Database, live: LiveCalls, call_control_id: str, *, cause: str, source: str = "unknown"
) -> dict[str, Any] | None:
    """End a call Telnyx says is over, everywhere; the call as it now is (None if unknown).

    `source` is who is known to have ended it: "caller" when the caller hung up before an
    agent's command reached the call (outcome abandoned), else "unknown" (outcome missed).
    """
    changed, call = end_call_inferred(db, call_control_id, cause, source)
    if call is not None:  # None only for a call never recorded, which nothing changed
        live.apply_call_state(call)
        presence.settle(live)  # whoever had it is no longer on a call
        if changed:
            log.warning(
                "call ended here because Telnyx says it is over (%s); outcome %s",
                cause,
                call.get("outcome"),
                extra={"call_control_id": call_control_id},
            )
    return call


class SilentCalls:
    """Finds calls with no word from Telnyx for too long, and ends those that are not alive."""

    def __init__(
        self,
        db: Database,
        live: LiveCalls,
        telnyx: TelnyxClient | None,
        *,
        ringing_after_seconds: int,
        answered_after_seconds: int,
    ):
        self.db = db
        self.live = live
        self.telnyx = telnyx
        self.ringing_after_seconds = ringing_after_seconds
        self.answered_after_seconds = answered_after_seconds

    def check(self, limit: int = 20) -> list[str]:
        """Ask Telnyx about calls gone silent; return those ended because they are not alive."""
        telnyx = self.telnyx
        if telnyx is None:
            return []
        params = {
            "ringing": self.ringing_after_seconds,
            "answered": self.answered_after_seconds,
            "recheck": RECHECK_SECONDS,
            "limit": limit,
        }
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(SILENT_CALLS, params)
            silent = [row[0] for row in cur.fetchall()]
        ended = []
        for call_control_id in silent:
            try:
                alive = self._alive(telnyx, call_control_id)
            except TelnyxUnavailable:
                break  # Telnyx is down: ask again after the bound, not now
            if alive is False:
                end_gone_call(self.db, self.live, call_control_id, cause=NOT_ALIVE_CAUSE)
                ended.append(call_control_id)
        return ended

    def _alive(self, telnyx: TelnyxClient, call_control_id: str) -> bool | None:
        """Telnyx's answer: alive, not alive, or None when it could not say."""
        deadline = time.monotonic() + STATUS_DEADLINE_SECONDS
        try:
            data = telnyx.call_status(call_control_id, deadline=deadline)
        except TelnyxError as error:
            if error.status == 404 or error.call_gone:
                return False
            return None
        alive = data.get("is_alive")
        return alive if isinstance(alive, bool) else None
