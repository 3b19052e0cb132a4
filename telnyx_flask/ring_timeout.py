"""Ring timeout: a call nobody takes within RING_TIMEOUT_SECONDS is rejected, exactly once."""

from __future__ import annotations

import logging

from . import metrics
from .calls import now_ms
from .live_calls import LiveCalls
from .outbox import REFUSED, SENT, Outbox

log = logging.getLogger(__name__)

TIMEOUT_AGENT_ID = "ring-timeout"
TIMEOUT_AGENT_NAME = "Ring timeout"
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
        """Reject calls that rang too long and give back stale claims; return those rejected."""
        now = now_ms() if now is None else now
        rejected = []
        for call_control_id in self.live.ringing_longer_than(now - self.timeout_ms):
            claim = self.live.claim_call(
                call_control_id, TIMEOUT_AGENT_ID, TIMEOUT_AGENT_NAME, "timeout", now
            )
            if claim.result != "claimed":
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
            self.live.release_call(call_control_id, TIMEOUT_AGENT_ID, "reject refused")
        # Otherwise the outbox retries it (or found the call over and ended it).
        return False

    def _release_stale_claims(self, now: int) -> None:
        """Give back claims whose worker stopped renewing them (it died, say)."""
        for call_control_id, claimer in self.live.claimed_before(now - self.lease_ms):
            if claimer == TIMEOUT_AGENT_ID and self.outbox.pending(call_control_id, "reject"):
                # The reject is still owed: the claim stays until the outbox is done with it.
                self.live.hold_claim(
                    call_control_id, TIMEOUT_AGENT_ID, TIMEOUT_AGENT_NAME, "timeout", now
                )
                continue
            if self.live.release_call(call_control_id, claimer, "claim went stale"):
                log.warning("released a stale claim", extra={"call_control_id": call_control_id})
