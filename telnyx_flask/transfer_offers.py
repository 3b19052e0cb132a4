"""Transfer offers in Redis: an offer kept on the call's live hash (and in a set by expiry), and
the atomic steps on it: make one, settle one (accept, decline, cancel, expire: one winner), and
give an accepted call back. Each step is one Lua script; transfers.py decides what to call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import StorageUnavailable
from .live_calls import LiveCalls
from .redis_store import REDIS_ERRORS, lua_script, text

# How a transfer offer ends (call.transfer_ended's `result`); FAILED: Telnyx refused it.
ACCEPTED, DECLINED, CANCELLED, EXPIRED, FAILED = (
    "accepted",
    "declined",
    "cancelled",
    "expired",
    "failed",
)


@dataclass(frozen=True)
class Offer:
    """An open (or just settled) offer: which one, who offered the call, to whom."""

    offer_id: str
    from_agent: dict[str, str]
    to_agent: dict[str, str]

    @classmethod
    def from_json(cls, encoded: str) -> Offer:
        offer = json.loads(encoded)
        return cls(offer["offer_id"], offer["from_agent"], offer["to_agent"])


@dataclass(frozen=True)
class Settled:
    """The answer to a settle: "settled" or "again" (with the offer), or why not, with the
    agent the offer names ("not_yours": the colleague, "not_offering": the offering agent)."""

    result: str
    offer: Offer | None = None
    agent: dict[str, str] | None = None


class TransferOffers:
    """The transfer scripts, registered once per process on the live state's client."""

    def __init__(self, live: LiveCalls):
        self.live = live
        client = live.client
        self._offer = client.register_script(lua_script("transfer_offer.lua"))
        self._settle = client.register_script(lua_script("transfer_settle.lua"))
        self._give_back = client.register_script(lua_script("transfer_give_back.lua"))

    def _keys(self, call_control_id: str) -> list[str]:
        keys = self.live.keys
        return [keys.call(call_control_id), keys.transfer_offers, keys.events]

    def offer(
        self,
        call_control_id: str,
        offer_id: str,
        from_agent: dict[str, str],
        to_agent: dict[str, str],
        expires_ms: int,
        expires_at: str,
    ) -> list[str]:
        """Open an offer on the call if `from_agent` holds it answered and none is open; the
        script's reply ("offered", or why not and with what)."""
        offer = {
            "call_control_id": call_control_id,
            "offer_id": offer_id,
            "from_agent": from_agent,
            "to_agent": to_agent,
            "expires_ms": str(expires_ms),
            "expires_at": expires_at,
            "stream_maxlen": self.live.stream_maxlen,
        }
        return self._run(self._offer, self._keys(call_control_id), offer)

    def settle(self, call_control_id: str, result: str, by: str, now_ms: int) -> Settled:
        """Close the call's open offer with `result`, if `by` may and nothing else won first."""
        settle = {
            "call_control_id": call_control_id,
            "result": result,
            "by": by,
            "now_ms": str(now_ms),
            "stream_maxlen": self.live.stream_maxlen,
        }
        reply = self._run(self._settle, self._keys(call_control_id), settle)
        if reply[0] in ("settled", "again"):
            return Settled(reply[0], Offer.from_json(reply[1]))
        if reply[0] in ("not_yours", "not_offering"):
            return Settled(reply[0], agent={"id": reply[1], "name": reply[2]})
        return Settled(reply[0])

    def give_back(self, call_control_id: str, offer: Offer, reason: str, now_ms: int) -> bool:
        """Hand an accepted call back to the agent who offered it, if the colleague still holds
        it; announced as call.transfer_ended, result failed."""
        back = {
            "call_control_id": call_control_id,
            "from_agent": offer.from_agent,
            "to_agent": offer.to_agent,
            "reason": reason,
            "now_ms": str(now_ms),
            "stream_maxlen": self.live.stream_maxlen,
        }
        keys = self.live.keys
        reply = self._run(self._give_back, [keys.call(call_control_id), keys.events], back)
        return reply == ["1"]

    def due(self, now_ms: int, limit: int = 50) -> list[str]:
        """call_control_ids whose offer has expired by `now_ms`, soonest first."""
        try:
            members = self.live.client.zrange(
                self.live.keys.transfer_offers, "-inf", now_ms, byscore=True, offset=0, num=limit
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return [text(member) for member in members]

    def _run(self, script: Any, keys: list[str], argument: dict[str, Any]) -> list[str]:
        try:
            reply = script(keys=keys, args=[json.dumps(argument)])
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if isinstance(reply, list):
            return [str(text(item)) for item in reply]
        return [str(text(reply))]
