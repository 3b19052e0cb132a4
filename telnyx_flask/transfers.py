"""Transfer to a colleague: offer first, put through on acceptance.

An agent on an answered call offers it to an available colleague; the colleague's page rings.
Accepting, declining, the offering agent cancelling, the offer expiring (TRANSFER_RING_SECONDS)
and the call ending race, and one atomic step in Redis (transfer_offers.py) picks the one that
wins. Only an acceptance moves the call: the claim goes to the colleague, then Telnyx transfers
the caller's leg to the colleague's SIP URI, and the record names both agents. Until then the
caller stays connected to the first agent, so a decline or an expiry leaves the call where it
was; a transfer Telnyx refuses gives the call back to the first agent.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from . import presence
from .circuit_breaker import TelnyxUnavailable
from .claims import (
    AGENT_CALL_HEADER,
    CallNotAnswered,
    NotYourCall,
    TelnyxRefused,
    TelnyxTimeout,
    now_ms,
    require_telnyx,
)
from .db import Database, one_row
from .errors import ApiError, CallNotFound
from .live_calls import LiveCalls
from .reconcile import GONE_CAUSE, end_gone_call
from .telnyx_api import TelnyxClient, TelnyxError, command_id_for
from .transfer_offers import (
    ACCEPTED,
    CANCELLED,
    DECLINED,
    EXPIRED,
    Offer,
    Settled,
    TransferOffers,
)
from .users import Agent

ACTIVE_AGENT = (
    "SELECT id::text, email, name, sip_username FROM users WHERE id = %s::uuid AND active"
)
RECORD_TRANSFER = "SELECT record_transfer(%s, %s, %s, now())"


class UnknownAgent(ApiError):
    """No active agent has that id."""

    status = 404
    code = "unknown_agent"


class TransferToSelf(ApiError):
    """The call is already this agent's."""

    status = 409
    code = "transfer_to_self"


class AgentNotAvailable(ApiError):
    """The colleague is away or on a call: their page would not ring."""

    status = 409
    code = "agent_not_available"

    def __init__(self, message: str, agent_presence: str | None):
        super().__init__(message)
        self.agent_presence = agent_presence

    def details(self) -> dict[str, Any]:
        return {"presence": self.agent_presence}


class TransferAlreadyOffered(ApiError):
    """One offer at a time: the open one must be answered, cancelled or expire first."""

    status = 409
    code = "transfer_already_offered"

    def __init__(self, message: str, offered_to: dict[str, str]):
        super().__init__(message)
        self.offered_to = offered_to

    def details(self) -> dict[str, Any]:
        return {"offered_to": self.offered_to}


class TransferNotOpen(ApiError):
    """No offer is open on the call: another step won the race, or none was made."""

    status = 409
    code = "transfer_not_open"


class NotOfferedToYou(ApiError):
    """The offer names another colleague."""

    status = 403
    code = "not_your_transfer"


def colleague(db: Database, agent_id: str) -> Agent:
    """The active agent with this id (a uuid), or UnknownAgent."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(ACTIVE_AGENT, (agent_id,))
        row = cur.fetchone()
    if row is None:
        raise UnknownAgent("no active agent has that id")
    return Agent(*row)


def record_transfer(db: Database, call_control_id: str, from_id: str, to_id: str) -> dict | None:
    """Name the colleague as the one who answered and the first agent as who handed it over."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(RECORD_TRANSFER, (call_control_id, from_id, to_id))
        return one_row(cur)[0]


def _named(agent: Agent) -> dict[str, str]:
    return {"id": agent.id, "name": agent.name}


def offer_transfer(
    db: Database,
    offers: TransferOffers,
    agent: Agent,
    call_control_id: str,
    colleague_id: str,
    ring_seconds: int,
    shared_sip_username: str | None,
) -> dict[str, Any]:
    """Offer the agent's answered call to an available colleague, whose page then rings."""
    to = colleague(db, colleague_id)
    if to.id == agent.id:
        raise TransferToSelf("the call is already yours: pick a colleague")
    if not (to.sip_username or shared_sip_username):
        # Their Answer could not put the caller through (claims.sip_uri_for would refuse).
        raise ApiError(
            f"{to.name} has no SIP username, so a call cannot be put through to them",
            status=409,
            code="no_sip_username",
        )
    now = presence.presence_of(to.id)
    if now != presence.AVAILABLE:
        raise AgentNotAvailable(f"{to.name} is not available ({now or 'signed out'})", now)
    expires_ms = now_ms() + ring_seconds * 1000
    expires_at = datetime.fromtimestamp(expires_ms / 1000, UTC).isoformat()
    reply = offers.offer(
        call_control_id, uuid.uuid4().hex, _named(agent), _named(to), expires_ms, expires_at
    )
    result = reply[0]
    if result in ("missing", "ended"):
        raise CallNotFound("no live call with that id (unknown, or it has ended)")
    if result == "not_answered":
        raise CallNotAnswered(f"the call is {reply[1]}, not answered: it cannot be transferred yet")
    if result == "not_yours":
        raise NotYourCall(f"the call is {reply[2] or 'another agent'}'s")
    if result == "offer_open":
        offered_to = {"id": reply[1], "name": reply[2]}
        raise TransferAlreadyOffered(
            f"the call is already offered to {reply[2] or 'a colleague'}", offered_to
        )
    return {
        "call_control_id": call_control_id,
        "transfer": {"from_agent": _named(agent), "to_agent": _named(to), "expires_at": expires_at},
    }


def _settled(settled: Settled, action: str) -> Offer:
    """The offer the step won, or the error saying why it did not."""
    if settled.result in ("settled", "again") and settled.offer is not None:
        return settled.offer
    if settled.result in ("missing", "ended"):
        raise CallNotFound("the call has ended")
    if settled.result == "not_yours":
        name = settled.agent["name"] if settled.agent else "another agent"
        raise NotOfferedToYou(f"the call is offered to {name}, not to you")
    if settled.result == "not_offering":
        raise NotYourCall(f"only the agent who offered the call can {action} the offer")
    raise TransferNotOpen(
        f"no transfer is open on this call to {action}: it was accepted, declined, "
        "cancelled or it expired"
    )


def decline_transfer(offers: TransferOffers, agent: Agent, call_control_id: str) -> dict:
    """The colleague says no: the call stays with the agent who offered it."""
    offer = _settled(offers.settle(call_control_id, DECLINED, agent.id, now_ms()), "decline")
    return {"call_control_id": call_control_id, "result": DECLINED, "from_agent": offer.from_agent}


def cancel_transfer(offers: TransferOffers, agent: Agent, call_control_id: str) -> dict:
    """The offering agent takes the offer back before the colleague answers it."""
    offer = _settled(offers.settle(call_control_id, CANCELLED, agent.id, now_ms()), "cancel")
    return {"call_control_id": call_control_id, "result": CANCELLED, "to_agent": offer.to_agent}


def expire_offers(offers: TransferOffers, now: int | None = None) -> list[str]:
    """Close the offers nobody answered in time (every worker sweeps; one step wins each)."""
    now = now_ms() if now is None else now
    return [
        call_control_id
        for call_control_id in offers.due(now)
        if offers.settle(call_control_id, EXPIRED, "", now).result == "settled"
    ]


def accept_transfer(
    db: Database,
    live: LiveCalls,
    offers: TransferOffers,
    telnyx: TelnyxClient | None,
    agent: Agent,
    call_control_id: str,
    sip_uri: str,
    deadline_seconds: float,
) -> dict[str, Any]:
    """The colleague takes the call: win the race, then have Telnyx put the caller through.

    Refused by Telnyx (or Telnyx known to be down), the call goes back to the agent who offered
    it (502 / 503). No answer in time: Telnyx may have acted, so the colleague keeps it (504)
    and accepting again resends the same command. 90018: the caller is gone, the call ends (404).
    """
    telnyx = require_telnyx(telnyx)
    deadline = time.monotonic() + deadline_seconds
    if telnyx.breaker is not None:
        telnyx.breaker.check()  # before the race: nothing is won while Telnyx is known down
    offer = _settled(offers.settle(call_control_id, ACCEPTED, agent.id, now_ms()), "accept")
    from_id = offer.from_agent["id"]
    try:
        telnyx.transfer(
            call_control_id,
            sip_uri,
            custom_headers=[{"name": AGENT_CALL_HEADER, "value": call_control_id}],
            # answer_call sent a transfer on this call already: each hand-over is its own.
            command_id=command_id_for("transfer", call_control_id, agent.id, offer.offer_id),
            deadline=deadline,
        )
    except TelnyxUnavailable:
        _give_back(offers, call_control_id, offer, "Telnyx is unavailable")
        raise
    except TelnyxError as error:
        if error.call_already_ended:
            end_gone_call(db, live, call_control_id, cause=GONE_CAUSE)
            raise CallNotFound("the caller hung up before the transfer was put through") from error
        if error.outcome_unknown:
            raise TelnyxTimeout(error) from error
        _give_back(offers, call_control_id, offer, f"Telnyx refused the transfer: {error}")
        raise TelnyxRefused(error) from error
    call = record_transfer(db, call_control_id, from_id, agent.id)
    if call is not None and call.get("ended_at") is not None:
        live.stream.announce(
            "call.logged", {"call_control_id": call_control_id, "outcome": call.get("outcome")}
        )
    presence.refresh([from_id, agent.id])
    return {
        "call_control_id": call_control_id,
        "transferred_to": sip_uri,
        "agent": agent.public(),
        "from_agent": offer.from_agent,
    }


def _give_back(offers: TransferOffers, call_control_id: str, offer: Offer, reason: str) -> None:
    if offers.give_back(call_control_id, offer, reason, now_ms()):
        presence.refresh([offer.from_agent["id"], offer.to_agent["id"]])
