"""Ring timeout: a call nobody takes within RING_TIMEOUT_SECONDS is rejected, exactly once; at
once while no agent is available (presence.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import metrics
from .claims import claim, give_back, now_ms, release_stale_claims, renew
from .live_calls import LiveCalls
from .outbox import REFUSED, SENT, Outbox
from .presence import nobody_available

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RingTimeout:
    """The ring timeout as a claimant: it races agents for the call like any of them."""

    id: str = "ring-timeout"
    name: str = "Ring timeout"


RING_TIMEOUT = RingTimeout()
REJECT_CAUSE = "USER_BUSY"


class RingTimeouts:
    """Sweeps the ringing set; every worker runs one, and the atomic claim picks who acts.

    The reject is owed through the outbox, so a Telnyx outage or a dying worker delays it but
    never drops it; while it is owed, the ring timeout keeps its claim (pages do not ring again).
    """

    def __init__(
        self, live: LiveCalls, outbox: Outbox, timeout_seconds: int, claim_lease_seconds: int = 60
    ):
        self.live = live
        self.outbox = outbox
        self.timeout_ms = timeout_seconds * 1000
        self.lease_ms = claim_lease_seconds * 1000

    def sweep(self, now: int | None = None) -> list[str]:
        """Reject calls that rang too long and give back stale claims; return those rejected.

        While agents are known and none is available, every ringing call has rung too long.
        """
        now = now_ms() if now is None else now
        rejected = []
        rang_since = now if nobody_available(self.live) else now - self.timeout_ms
        for call_control_id in self.live.ringing_longer_than(rang_since):
            if claim(self.live, call_control_id, RING_TIMEOUT, "timeout", now).result != "claimed":
                continue  # another worker (or an agent) got there first, or it was an orphan
            if self._reject(call_control_id):
                rejected.append(call_control_id)
        self._release_stale_claims(now)
        return rejected

    def _reject(self, call_control_id: str) -> bool:
        extra = {"call_control_id": call_control_id}
        if self.outbox.telnyx is None:
            # The claim stays until its lease runs out, rather than the call ringing again (and
            # this line repeating) every second.
            log.warning("ring timeout: cannot reject without TELNYX_API_KEY", extra=extra)
            return False
        self.outbox.owe(call_control_id, "reject", {"cause": REJECT_CAUSE})
        outcome = self.outbox.deliver_now(call_control_id, "reject")
        if outcome == SENT:
            metrics.RING_TIMEOUTS.inc()
            log.info("ring timeout: rejected the call", extra=extra)
            return True
        if outcome == REFUSED:
            # Telnyx refused it for good: give the call back; a later sweep owes it again.
            give_back(self.live, call_control_id, RING_TIMEOUT, "reject refused")
        # Otherwise the outbox retries it (or found the call over and ended it).
        return False

    def _release_stale_claims(self, now: int) -> None:
        """Give back claims whose worker stopped renewing them (it died, say); the ring
        timeout's own claim stays while the outbox still owes its reject."""

        def still_owed(call_control_id: str, claimer: str) -> bool:
            if claimer == RING_TIMEOUT.id and self.outbox.pending(call_control_id, "reject"):
                renew(self.live, call_control_id, RING_TIMEOUT, "timeout", now)
                return True
            return False

        for call_control_id in release_stale_claims(self.live, now, self.lease_ms, still_owed):
            log.warning("released a stale claim", extra={"call_control_id": call_control_id})
