"""Calls: what an event does to a call, across the durable record and the live state."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database
from .events import ANNOUNCED_ANSWERED, ANSWERED, WebhookEvent
from .followups import FollowUps
from .live import LiveState
from .records import record_event


@dataclass(frozen=True)
class AppliedEvent:
    """The outcome of one webhook: applied, duplicate or ignored, and what was announced."""

    result: str
    announced: tuple[str, ...] = ()


def apply_event(
    db: Database, live: LiveState, followups: FollowUps, event: WebhookEvent, body: bytes
) -> AppliedEvent:
    """Make an event durable in PostgreSQL, then live in Redis, then issue what follows.

    PostgreSQL goes first so that nothing is announced that is not durable. A duplicate still
    reaches Redis: when an earlier attempt committed but Redis failed, this is the retry that
    finishes the job, and Redis's version check makes a true repeat a no-op.
    """
    recorded = record_event(db, event, body)
    if event.effect is None:
        return AppliedEvent("duplicate" if recorded.duplicate else "ignored")
    call = recorded.call
    announced: list[str] = []
    if call is not None and call.get("call_control_id"):
        announced = live.apply_call_state(call)
        if ANNOUNCED_ANSWERED in announced and call["status"] == ANSWERED:
            followups.call_answered(call["call_control_id"])
    return AppliedEvent("duplicate" if recorded.duplicate else "applied", tuple(announced))


def ringing_calls(live: LiveState) -> list[dict]:
    """The calls ringing now, oldest first."""
    return live.ringing_calls()
