"""The answer race and what follows it: answer, decline and hang up, and a claim's lifecycle.

A claim is the atomic ringing -> answering step in Redis (lua/claim_call.lua): of any number of
agents (and the ring timeout) pressing at once, exactly one gets it. The holder renews it before
each Telnyx command (the fence: a claim given back meanwhile stops the command), gives it back
when Telnyx refuses, and a claim whose holder stopped renewing it (a dead worker) is given back
by the sweep. ring_timeout.py claims through the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from . import metrics, presence
from .call_records import record_agent_action
from .call_status import ANSWERED, ANSWERING, ENDED, RINGING
from .circuit_breaker import TelnyxUnavailable
from .db import Database
from .errors import ApiError, CallNotFound
from .live_calls import Claim, LiveCalls
from .reconcile import GONE_CAUSE, end_gone_call
from .telnyx_api import REJECT_CAUSES, TelnyxClient, TelnyxError
from .users import Agent


class CallTaken(ApiError):
    """Another agent (or the ring timeout) took the call first."""

    status = 409
    code = "call_taken"

    def __init__(self, message: str, claimed_by: dict[str, str | None] | None):
        super().__init__(message)
        self.claimed_by = claimed_by

    def details(self) -> dict[str, Any]:
        return {"claimed_by": self.claimed_by}


class CallNotAnswered(ApiError):
    """The call is still ringing; decline it instead."""

    status = 409
    code = "call_not_answered"


class NotYourCall(ApiError):
    """Only the agent who took a call may hang it up."""

    status = 403
    code = "not_your_call"


class TelnyxRefused(ApiError):
    """Telnyx refused (or never answered) a command."""

    status = 502
    code = "telnyx_refused"

    def __init__(self, error: TelnyxError, *, caller_waiting: bool = False):
        reason = error.detail or error.title or "no answer"
        message = f"Telnyx refused {error.action}: {reason}"
        if caller_waiting:
            message += " (the caller is answered and waiting: try again, or hang up)"
        super().__init__(message)
        self.telnyx_code = error.code
        self.telnyx_status = error.status
        self.caller_waiting = caller_waiting

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "telnyx": {"status": self.telnyx_status, "code": self.telnyx_code}
        }
        if self.caller_waiting:
            details["caller_waiting"] = True
        return details


class TelnyxTimeout(ApiError):
    """Telnyx did not answer in time; it may have acted, so the agent keeps the call."""

    status = 504
    code = "telnyx_timeout"

    def __init__(self, error: TelnyxError, *, caller_waiting: bool = False):
        super().__init__(
            f"Telnyx did not answer {error.action} in time; the call is still yours: "
            "press the button again (a retry is safe), or hang up"
        )
        self.caller_waiting = caller_waiting

    def details(self) -> dict[str, Any]:
        return {"caller_waiting": True} if self.caller_waiting else {}


class TelnyxNotConfigured(ApiError):
    """TELNYX_API_KEY is not set, so no command can be sent."""

    status = 503
    code = "telnyx_not_configured"


def ringing_calls(live: LiveCalls) -> list[dict[str, Any]]:
    """The calls ringing now, oldest first."""
    return live.ringing_calls()


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of the Redis scores."""
    return int(time.time() * 1000)


def require_telnyx(telnyx: TelnyxClient | None) -> TelnyxClient:
    if telnyx is None:
        raise TelnyxNotConfigured("TELNYX_API_KEY is not set; calls cannot be controlled")
    return telnyx


class Claimant(Protocol):
    """Whoever takes a call: an agent, or the ring timeout."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


def claim(
    live: LiveCalls, call_control_id: str, claimant: Claimant, action: str, at_ms: int
) -> Claim:
    """Try to take a ringing call (the race: exactly one claimant wins)."""
    return live.claim_call(call_control_id, claimant.id, claimant.name, action, at_ms)


def renew(
    live: LiveCalls, call_control_id: str, claimant: Claimant, action: str, at_ms: int
) -> Claim:
    """Renew a claim before the next command, or find out it is no longer the claimant's."""
    return live.hold_claim(call_control_id, claimant.id, claimant.name, action, at_ms)


def give_back(live: LiveCalls, call_control_id: str, claimant: Claimant, reason: str) -> bool:
    """Let the call ring again (answering -> ringing) if the claimant still holds it."""
    released = live.release_call(call_control_id, claimant.id, reason)
    if released:
        presence.settle(live)  # an agent who had it is no longer on a call
    return released


def release_stale_claims(
    live: LiveCalls, now: int, lease_ms: int, keep: Callable[[str, str], bool]
) -> list[str]:
    """Give back claims not renewed within `lease_ms` (their worker died, say), except those
    `keep(call_control_id, claimer_id)` says are still owed work; return those given back."""
    released = []
    for call_control_id, claimer in live.claimed_before(now - lease_ms):
        if keep(call_control_id, claimer):
            continue
        if live.release_call(call_control_id, claimer, "claim went stale"):
            released.append(call_control_id)
    if released:
        presence.settle(live)
    return released


def _take(live: LiveCalls, call_control_id: str, agent: Agent, action: str) -> str | None:
    """Claim the call for this agent, or raise why not. Pressing again is not a conflict.

    Returns None for a new claim, or the call's status when the agent already held it.
    """
    claimed_at = now_ms()
    taken = claim(live, call_control_id, agent, action, claimed_at)
    if taken.result == "claimed":
        if taken.ringing_since_ms is not None:
            metrics.RING_TO_CLAIM_SECONDS.observe((claimed_at - taken.ringing_since_ms) / 1000)
        return None
    if taken.result == "missing" or taken.status == ENDED:
        raise CallNotFound("no ringing call with that id (unknown, or it has ended)")
    if (
        taken.claimed_by_id == agent.id
        and taken.action == action
        and taken.status in (ANSWERING, ANSWERED)
    ):
        return taken.status  # the same agent's retry: the commands below are idempotent
    who = {"id": taken.claimed_by_id, "name": taken.claimed_by_name}
    metrics.CLAIM_CONFLICTS.inc()
    raise CallTaken(
        f"the call was taken by {taken.claimed_by_name or 'someone else'}",
        who if taken.claimed_by_id else None,
    )


def name_agent_on_record(
    db: Database, live: LiveCalls, call_control_id: str, action: str, agent: Agent
) -> None:
    """Name the agent on the call's record. When the hangup got there first, its log row has
    just changed (a decline is fast: Telnyx's hangup often lands before this), so pages that
    already showed it are told with `call.logged`."""
    call = record_agent_action(db, call_control_id, action, agent.id)
    if call is not None and call.get("ended_at") is not None:
        live.stream.announce(
            "call.logged", {"call_control_id": call_control_id, "outcome": call.get("outcome")}
        )


def sip_uri_for(agent: Agent, sip_domain: str, fallback_username: str | None) -> str:
    """Where an agent's calls are transferred: sip:<username>@<domain>."""
    username = agent.sip_username or fallback_username
    if not username:
        raise ApiError(
            "this agent has no SIP username and TELNYX_SIP_USERNAME is not set",
            status=409,
            code="no_sip_username",
        )
    return f"sip:{username}@{sip_domain}"


def _hold(live: LiveCalls, call_control_id: str, agent: Agent, action: str) -> None:
    """Renew the agent's claim before the next command, or stop: someone else has the call."""
    held = renew(live, call_control_id, agent, action, now_ms())
    if held.result == "held":
        return
    if held.result in ("missing", "ended"):
        raise CallNotFound("the call has ended")
    raise CallTaken(
        f"the call was taken by {held.claimed_by_name or 'someone else'}",
        {"id": held.claimed_by_id, "name": held.claimed_by_name},
    )


def _check_breaker(telnyx: TelnyxClient) -> None:
    """Fail at once, before claiming anything, while Telnyx is known to be down (a look that
    leaves the half-open probe to the command itself)."""
    if telnyx.breaker is not None:
        telnyx.breaker.check()


# Sent with the transfer, so that a page signed in with a WebRTC credential other agents share
# answers only the leg of the call its own agent took.
AGENT_CALL_HEADER = "X-Call-Control-Id"


def _first_command(
    db: Database,
    live: LiveCalls,
    agent: Agent,
    call_control_id: str,
    done: str,
    send: Callable[[], Any],
) -> None:
    """Send the first command of a fresh claim. Refused, or Telnyx known to be down: the claim
    is given back and the call rings again. No answer in time: Telnyx may have acted, so the
    agent keeps the claim (504; a retry sends the same command_id). 90018: the caller is gone,
    and the call ends."""
    try:
        send()
    except TelnyxUnavailable:
        give_back(live, call_control_id, agent, "telnyx unavailable")
        raise
    except TelnyxError as error:
        if error.call_already_ended:
            end_gone_call(db, live, call_control_id, cause=GONE_CAUSE, source="caller")
            raise CallNotFound(f"the caller hung up before the call was {done}") from error
        if error.outcome_unknown:
            raise TelnyxTimeout(error) from error
        give_back(live, call_control_id, agent, f"{error.action} failed")
        raise TelnyxRefused(error) from error


def answer_call(
    db: Database,
    live: LiveCalls,
    telnyx: TelnyxClient | None,
    agent: Agent,
    call_control_id: str,
    sip_uri: str,
    deadline_seconds: float,
) -> dict[str, Any]:
    """Take a ringing call for `agent`: claim it, answer the caller, transfer to the agent.

    Both commands fit in `deadline_seconds`. If Telnyx refuses the answer, the claim is released
    and the call rings again. If it refuses the transfer, the caller is already answered: the
    agent keeps the call (502 says so) and may press Answer again to retry the transfer, or hang
    up. If Telnyx does not answer in time it may still act, so the agent keeps the claim (504)
    and a retry sends the same command_ids. A 90018 means the caller is gone: the call ends.
    """
    telnyx = require_telnyx(telnyx)
    deadline = time.monotonic() + deadline_seconds
    _check_breaker(telnyx)
    held = _take(live, call_control_id, agent, "answer")
    presence.settle(live)  # the agent is on a call from the claim on
    if held != ANSWERED:
        # Telnyx requires an incoming call to be answered before it can be transferred.
        _first_command(
            db,
            live,
            agent,
            call_control_id,
            "answered",
            lambda: telnyx.answer(call_control_id, deadline=deadline),
        )
    # The fence: the claim must still be this agent's before the caller is put through.
    _hold(live, call_control_id, agent, "answer")
    try:
        telnyx.transfer(
            call_control_id,
            sip_uri,
            custom_headers=[{"name": AGENT_CALL_HEADER, "value": call_control_id}],
            deadline=deadline,
        )
    except TelnyxError as error:
        if error.call_already_ended:
            end_gone_call(db, live, call_control_id, cause=GONE_CAUSE, source="caller")
            raise CallNotFound("the caller hung up before the call was put through") from error
        if error.outcome_unknown:
            raise TelnyxTimeout(error, caller_waiting=True) from error
        raise TelnyxRefused(error, caller_waiting=True) from error
    name_agent_on_record(db, live, call_control_id, "answer", agent)
    return {"call_control_id": call_control_id, "transferred_to": sip_uri, "agent": agent.public()}


def decline_call(
    db: Database,
    live: LiveCalls,
    telnyx: TelnyxClient | None,
    agent: Agent,
    call_control_id: str,
    cause: str,
    deadline_seconds: float,
) -> dict[str, Any]:
    """Reject a ringing call on the agent's behalf (outcome: declined)."""
    if cause not in REJECT_CAUSES:
        raise ApiError(f"cause must be one of {', '.join(REJECT_CAUSES)}", code="invalid_cause")
    telnyx = require_telnyx(telnyx)
    deadline = time.monotonic() + deadline_seconds
    _check_breaker(telnyx)
    _take(live, call_control_id, agent, "decline")
    _first_command(
        db,
        live,
        agent,
        call_control_id,
        "declined",
        lambda: telnyx.reject(call_control_id, cause, deadline=deadline),
    )
    name_agent_on_record(db, live, call_control_id, "decline", agent)
    return {"call_control_id": call_control_id, "cause": cause}


def end_call(
    db: Database,
    live: LiveCalls,
    telnyx: TelnyxClient | None,
    agent: Agent,
    call_control_id: str,
    deadline_seconds: float,
) -> dict[str, Any]:
    """Hang up a call the agent took; a call that already ended is not an error."""
    telnyx = require_telnyx(telnyx)
    call = live.call(call_control_id)
    if call is None:
        raise CallNotFound("no live call with that id")
    if call["status"] == ENDED:
        return {"call_control_id": call_control_id, "already_ended": True}
    if call["status"] == RINGING:
        raise CallNotAnswered("the call is still ringing: decline it instead")
    claimer = call["claimed_by"]
    if claimer is not None and claimer["id"] != agent.id:
        raise NotYourCall(f"the call is {claimer['name'] or 'another agent'}'s")
    try:
        telnyx.hangup(call_control_id, deadline=time.monotonic() + deadline_seconds)
    except TelnyxError as error:
        if error.call_already_ended:
            end_gone_call(db, live, call_control_id, cause=GONE_CAUSE)
            return {"call_control_id": call_control_id, "already_ended": True}
        if error.outcome_unknown:
            raise TelnyxTimeout(error) from error
        raise TelnyxRefused(error) from error
    return {"call_control_id": call_control_id, "already_ended": False}
