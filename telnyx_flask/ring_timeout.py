"""Ring timeout: a call nobody takes within RING_TIMEOUT_SECONDS goes to voicemail (VOICEMAIL on)
or is rejected, exactly once; at once while no agent is available (presence.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from . import metrics
from .claims import claim, give_back, now_ms, release_stale_claims, renew
from .live_calls import LiveCalls
from .outbox import REFUSED, SENT, Outbox
from .presence import nobody_available
from .voicemail import start_voicemail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RingTimeout:
    """The ring timeout as a claimant: it races agents for the call like any of them."""

    id: str = "ring-timeout"
    name: str = "Ring timeout"


RING_TIMEOUT = RingTimeout()
# The same claimant when voicemail takes the call: the pages say where the call went.
VOICEMAIL = RingTimeout(name="Voicemail")
REJECT_CAUSE = "USER_BUSY"


class RingTimeouts:
    """Sweeps the ringing set; every worker runs one, and the atomic claim picks who acts.

    The reject (or the voicemail's answer) is owed through the outbox, so a Telnyx outage or a
    dying worker delays it but never drops it; while it is owed, the ring timeout keeps its
    claim (pages do not ring again). With a `voicemail_plan` (voicemail.voicemail_plan), a call
    nobody took goes to voicemail instead of being rejected.
    """

    def __init__(
        self,
        live: LiveCalls,
        outbox: Outbox,
        timeout_seconds: int,
        claim_lease_seconds: int = 60,
        voicemail_plan: dict[str, Any] | None = None,
    ):
        self.live = live
        self.outbox = outbox
        self.timeout_ms = timeout_seconds * 1000
        self.lease_ms = claim_lease_seconds * 1000
        self.voicemail_plan = voicemail_plan
        self.claimant = RING_TIMEOUT if voicemail_plan is None else VOICEMAIL
        self.claim_action = "timeout" if voicemail_plan is None else "voicemail"

    def sweep(self, now: int | None = None) -> list[str]:
        """Time out calls that rang too long and give back stale claims; return those that went
        to voicemail or were rejected.

        While agents are known and none is available, every ringing call has rung too long.
        """
        now = now_ms() if now is None else now
        timed_out = []
        rang_since = now if nobody_available(self.live) else now - self.timeout_ms
        for call_control_id in self.live.ringing_longer_than(rang_since):
            taken = claim(self.live, call_control_id, self.claimant, self.claim_action, now)
            if taken.result != "claimed":
                continue  # another worker (or an agent) got there first, or it was an orphan
            # Counted when the ring timeout takes the call, whatever Telnyx then makes of the
            # commands that follow (sent at once, or later by the outbox).
            metrics.RING_TIMEOUTS.inc()
            if self._time_out(call_control_id):
                timed_out.append(call_control_id)
        self._release_stale_claims(now)
        return timed_out

    def _time_out(self, call_control_id: str) -> bool:
        """What becomes of a call nobody took (claimed by the ring timeout): voicemail, or the
        reject; True once Telnyx has taken the first command."""
        if self.voicemail_plan is not None:
            return self._voicemail(call_control_id, self.voicemail_plan)
        return self._reject(call_control_id)

    def _voicemail(self, call_control_id: str, plan: dict[str, Any]) -> bool:
        extra = {"call_control_id": call_control_id}
        if self.outbox.telnyx is None:
            log.warning("ring timeout: no voicemail without TELNYX_API_KEY", extra=extra)
            return False
        settings = self.outbox.settings
        if not start_voicemail(
            self.outbox.db,
            call_control_id,
            plan,
            settings.backoff_seconds,
            settings.max_backoff_seconds,
        ):
            # Over or unknown in PostgreSQL: its end reaches the live state by its own webhook.
            log.info("ring timeout: no voicemail, the call is over", extra=extra)
            return False
        outcome = self.outbox.deliver_now(call_control_id, "answer")
        if outcome == SENT:
            log.info("ring timeout: answered the call for voicemail", extra=extra)
            return True
        if outcome == REFUSED:
            # Telnyx refused it for good: give the call back; a later sweep owes it again.
            give_back(self.live, call_control_id, self.claimant, "answer refused")
        return False

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
            log.info("ring timeout: rejected the call", extra=extra)
            return True
        if outcome == REFUSED:
            # Telnyx refused it for good: give the call back; a later sweep owes it again.
            give_back(self.live, call_control_id, self.claimant, "reject refused")
        # Otherwise the outbox retries it (or found the call over and ended it).
        return False

    def _release_stale_claims(self, now: int) -> None:
        """Give back claims whose worker stopped renewing them (it died, say); the ring
        timeout's own claim stays while the outbox still owes its reject or voicemail's answer."""

        def still_owed(call_control_id: str, claimer: str) -> bool:
            if claimer == RING_TIMEOUT.id and (
                self.outbox.pending(call_control_id, "reject")
                or self.outbox.pending(call_control_id, "answer")
            ):
                renew(self.live, call_control_id, self.claimant, self.claim_action, now)
                return True
            return False

        for call_control_id in release_stale_claims(self.live, now, self.lease_ms, still_owed):
            log.warning("released a stale claim", extra={"call_control_id": call_control_id})
