"""Commands the service owes Telnyx, kept in PostgreSQL until Telnyx takes them (invariant 9).

A command that must follow an event (record_start once the caller is answered, reject on ring
timeout, and a voicemail's answer, greeting, recording and hangup: sql/013) is a row of
`telnyx_outbox`, written in the same transaction as the event (see apply_call_event in sql/006
and sql/013) or before the ring timeout acts. Any worker delivers due rows: it leases a batch
(`FOR UPDATE SKIP LOCKED`, then a lease time in `next_attempt_at`, so a worker killed mid-send
only delays the row), sends each once, and records what came of it:

- sent: Telnyx accepted it;
- moot: the call is over (ended in PostgreSQL, or Telnyx answered 90018 / 90015), so there is
  nothing left to do; a 90018 also ends the call here (reconcile.end_gone_call);
- refused: Telnyx refused it for good (a 4xx other than 408, 429 and 90034);
- otherwise (no answer, 5xx, 429...) it is tried again after an exponential, jittered backoff,
  and while the circuit breaker is open it waits for the breaker instead.

A row may be due later (next_attempt_at in the future: a voicemail's record_stop and hangup at
the message's limit); it is sent then, or given up as moot if the call has ended meanwhile.

The deterministic command_id makes every retry, from any worker, safe.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, TypedDict

from flask import Flask, current_app
from psycopg2.extras import Json

from . import metrics
from .circuit_breaker import TelnyxUnavailable
from .db import Database, one_row
from .errors import StorageUnavailable
from .live_calls import LiveCalls
from .reconcile import GONE_CAUSE, end_gone_call
from .telnyx_api import TelnyxClient, TelnyxError, command_id_for

log = logging.getLogger(__name__)

SENT, MOOT, REFUSED, RETRY = "sent", "moot", "refused", "retry"
# The commands the outbox may send (sql/010's telnyx_outbox_action_check).
ACTIONS = ("record_start", "reject", "answer", "speak", "playback_start", "record_stop", "hangup")
# The service answers and hangs up a call itself only for voicemail; the mark keeps those
# commands' ids apart from an agent's answer and hang-up of the same call.
VOICEMAIL_MARK = "voicemail"


def command_id_parts(action: str, args: dict[str, Any]) -> list[str]:
    """What besides the action and the call makes an owed command's command_id."""
    if action == "reject":
        return [args["cause"]]  # as TelnyxClient.reject
    if action in ("answer", "hangup"):
        return [VOICEMAIL_MARK]
    return []


OWE = """
INSERT INTO telnyx_outbox (call_control_id, action, args)
VALUES (%(call_control_id)s, %(action)s, %(args)s)
ON CONFLICT (call_control_id, action) DO UPDATE
    SET outcome = NULL, done_at = NULL, last_error = NULL,
        -- Owed again after a refusal: not at once (it was just refused), after a backoff that
        -- grows with every attempt so far.
        next_attempt_at = now() + make_interval(secs => LEAST(
            %(max_backoff)s, %(backoff)s * power(2, LEAST(telnyx_outbox.attempts, 30))))
    WHERE telnyx_outbox.outcome = 'refused'
"""

# Lease due rows: other workers skip them until the lease runs out or they are done.
LEASE_DUE = """
UPDATE telnyx_outbox o
   SET attempts = o.attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(lease)s)
 WHERE o.id IN (SELECT id FROM telnyx_outbox
                 WHERE done_at IS NULL AND next_attempt_at <= now()
                   AND (%(call_control_id)s::text IS NULL OR call_control_id = %(call_control_id)s)
                   AND (%(action)s::text IS NULL OR action = %(action)s)
                 ORDER BY next_attempt_at
                 LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
RETURNING o.id, o.call_control_id, o.action, o.args, o.attempts,
          (SELECT c.status FROM inbound_calls c WHERE c.call_control_id = o.call_control_id)
"""

FINISH = """
UPDATE telnyx_outbox
   SET outcome = %(outcome)s, done_at = now(), command_id = %(command_id)s,
       last_error = COALESCE(%(error)s, last_error)
 WHERE id = %(id)s
"""

RESCHEDULE = """
UPDATE telnyx_outbox
   SET next_attempt_at = now() + make_interval(secs => %(delay)s), command_id = %(command_id)s,
       last_error = %(error)s, attempts = attempts - %(uncount)s
 WHERE id = %(id)s
"""

STATS = """
SELECT count(*),
       COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)
                        FILTER (WHERE next_attempt_at <= now())), 0)
  FROM telnyx_outbox WHERE done_at IS NULL
"""


class _Once(TypedDict):
    """How the outbox sends a command: one attempt, by a deadline, with its own command_id."""

    attempts: int
    deadline: float
    command_id: str


@dataclass(frozen=True)
class OutboxSettings:
    """How often and how long owed commands are retried."""

    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    lease_seconds: float = 30.0
    keep_done_days: int = 7


@dataclass(frozen=True)
class OwedCommand:
    """A leased row: the command to send now."""

    id: int
    call_control_id: str
    action: str
    args: dict[str, Any]
    attempts: int
    call_status: str | None

    @property
    def command_id(self) -> str:
        """The same id TelnyxClient gives this command, so every retry is one command."""
        parts = command_id_parts(self.action, self.args)
        return command_id_for(self.action, self.call_control_id, *parts)


class Outbox:
    """Writes owed commands and delivers them; one per process, shared by its requests."""

    def __init__(
        self,
        db: Database,
        live: LiveCalls,
        telnyx: TelnyxClient | None,
        settings: OutboxSettings,
    ):
        self.db = db
        self.live = live
        self.telnyx = telnyx
        self.settings = settings
        self._wake = threading.Event()
        self._random = random.Random()

    def owe(self, call_control_id: str, action: str, args: dict[str, Any]) -> None:
        """Write a command down (once per call and action; a refused one is owed again)."""
        if action not in ACTIONS:
            raise ValueError(f"the outbox does not send {action!r}")
        params = {
            "call_control_id": call_control_id,
            "action": action,
            "args": Json(args),
            "backoff": self.settings.backoff_seconds,
            "max_backoff": self.settings.max_backoff_seconds,
        }
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(OWE, params)

    def nudge(self) -> None:
        """Something was just owed: wake this process's delivery loop now."""
        self._wake.set()

    def wait_for_work(self, timeout: float) -> None:
        """Block until nudged or `timeout` passes (the delivery loop's pause)."""
        self._wake.wait(timeout)
        self._wake.clear()

    def deliver_due(self, limit: int = 20) -> list[str]:
        """Send due commands, up to `limit`, one lease at a time; return their outcomes.

        One at a time, so a lease only covers the command being sent: a slow Telnyx never keeps
        a batch of leased rows waiting until their leases run out and another worker sends them.
        """
        outcomes = []
        for _ in range(limit):
            leased = self._lease(None, None, 1)
            if not leased:
                break
            outcomes.append(self._deliver(leased[0]))
        return outcomes

    def deliver_now(self, call_control_id: str, action: str) -> str | None:
        """Send one call's owed command now if it is due; its outcome, or None if not due."""
        leased = self._lease(call_control_id, action, 1)
        return self._deliver(leased[0]) if leased else None

    def pending(self, call_control_id: str, action: str) -> bool:
        """True while the command is owed and not yet done."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM telnyx_outbox WHERE call_control_id = %s AND action = %s"
                " AND done_at IS NULL",
                (call_control_id, action),
            )
            return cur.fetchone() is not None

    def stats(self) -> tuple[int, float]:
        """(commands owed and not done, seconds the oldest due one has been due)."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(STATS)
            count, age = one_row(cur)
        return int(count), float(age)

    def prune(self) -> int:
        """Forget commands done longer ago than keep_done_days; how many."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "DELETE FROM telnyx_outbox WHERE done_at < now() - make_interval(days => %s)",
                (self.settings.keep_done_days,),
            )
            return cur.rowcount

    def _lease(self, call_control_id: str | None, action: str | None, limit: int) -> list:
        params = {
            "lease": self.settings.lease_seconds,
            "call_control_id": call_control_id,
            "action": action,
            "limit": limit,
        }
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(LEASE_DUE, params)
            rows = cur.fetchall()
        return [OwedCommand(*row) for row in rows]

    def _deliver(self, command: OwedCommand) -> str:
        outcome = self._attempt(command)
        metrics.OUTBOX_COMMANDS.labels(command.action, outcome).inc()
        return outcome

    def _attempt(self, command: OwedCommand) -> str:
        extra = {"call_control_id": command.call_control_id}
        if command.call_status == "ended":
            # PostgreSQL's ended state goes to Redis again, in case it never got there.
            end_gone_call(self.db, self.live, command.call_control_id, cause=GONE_CAUSE)
            self._finish(command, MOOT, "the call has ended")
            log.info("%s given up as moot: the call has ended", command.action, extra=extra)
            return MOOT
        telnyx = self.telnyx
        if telnyx is None:
            self._reschedule(command, "TELNYX_API_KEY is not set", uncount=False)
            return RETRY
        try:
            self._send(telnyx, command)
        except TelnyxUnavailable as closed:
            # Not an attempt: wait for the breaker's probe instead of hammering.
            self._reschedule(command, str(closed), delay=closed.retry_after, uncount=True)
            return RETRY
        except TelnyxError as error:
            return self._failed(command, error)
        self._finish(command, SENT)
        log.info("%s sent after %d attempt(s)", command.action, command.attempts, extra=extra)
        return SENT

    def _send(self, telnyx: TelnyxClient, command: OwedCommand) -> None:
        args, call_control_id = command.args, command.call_control_id
        # One attempt, finished well inside the lease, so no other worker sends it meanwhile.
        deadline = time.monotonic() + self.settings.lease_seconds * 0.8
        once = _Once(attempts=1, deadline=deadline, command_id=command.command_id)
        action = command.action
        if action == "record_start":
            telnyx.record_start(
                call_control_id,
                args["format"],
                args["channels"],
                play_beep=args.get("play_beep"),
                max_length=args.get("max_length"),
                **once,
            )
        elif action == "reject":
            telnyx.reject(call_control_id, args["cause"], **once)
        elif action == "answer":
            telnyx.answer(call_control_id, **once)
        elif action == "speak":
            telnyx.speak(
                call_control_id,
                args["payload"],
                args["voice"],
                language=args.get("language"),
                payload_type=args.get("payload_type"),
                **once,
            )
        elif action == "playback_start":
            telnyx.playback_start(call_control_id, args["audio_url"], **once)
        elif action == "record_stop":
            telnyx.record_stop(call_control_id, **once)
        elif action == "hangup":
            telnyx.hangup(call_control_id, **once)
        else:
            raise ValueError(f"the outbox does not send {action!r}")

    def _failed(self, command: OwedCommand, error: TelnyxError) -> str:
        extra = {"call_control_id": command.call_control_id}
        if error.call_gone:
            if error.call_already_ended:
                # First, so that if Redis fails here the row stays leased and is tried again.
                end_gone_call(self.db, self.live, command.call_control_id, cause=GONE_CAUSE)
            self._finish(command, MOOT, str(error))
            log.info(
                "%s given up as moot: Telnyx says the call is over (%s)",
                command.action,
                error.code,
                extra=extra,
            )
            return MOOT
        if not error.transient:
            self._finish(command, REFUSED, str(error))
            log.error("%s refused by Telnyx: %s", command.action, error, extra=extra)
            return REFUSED
        self._reschedule(command, str(error), uncount=False)
        return RETRY

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt `attempts + 1`: doubling, capped, with jitter."""
        ceiling = min(
            self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2 ** (attempts - 1)
        )
        # Jitter spreads out retries from many workers that failed at the same moment.
        return self._random.uniform(ceiling / 2, ceiling)

    def _finish(self, command: OwedCommand, outcome: str, error: str | None = None) -> None:
        params = {
            "id": command.id,
            "outcome": outcome,
            "command_id": command.command_id,
            "error": error,
        }
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(FINISH, params)

    def _reschedule(
        self, command: OwedCommand, error: str, *, delay: float | None = None, uncount: bool
    ) -> None:
        params = {
            "id": command.id,
            "delay": self.backoff(command.attempts) if delay is None else delay,
            "command_id": command.command_id,
            "error": error[:500],
            "uncount": 1 if uncount else 0,
        }
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(RESCHEDULE, params)


def run_delivery(outbox: Outbox, stop: threading.Event, interval_seconds: float = 1.0) -> None:
    """The delivery loop of one process: due commands every interval, and at once when nudged."""
    last_prune = 0.0
    while not stop.is_set():
        try:
            while outbox.deliver_due() and not stop.is_set():
                pass  # a full batch: more may be due
            if time.monotonic() - last_prune > 3600:
                outbox.prune()
                last_prune = time.monotonic()
        except StorageUnavailable as error:
            log.warning("outbox: %s unavailable", error.dependency)
        except Exception:
            log.exception("outbox delivery failed")
        outbox.wait_for_work(interval_seconds)


def _outbox_gauges(outbox: Outbox):
    depth, oldest = outbox.stats()
    yield (
        "telnyx_flask_outbox_depth",
        "Owed Telnyx commands not yet done (due now, or waiting for a retry)",
        {},
        depth,
    )
    yield (
        "telnyx_flask_outbox_oldest_due_seconds",
        "How long the oldest owed command has been due (0 when none is)",
        {},
        oldest,
    )


def get_outbox() -> Outbox:
    """The application's Outbox."""
    return current_app.extensions["outbox"]


def init_app(app: Flask) -> None:
    """Create this app's outbox (its loop runs with the other background work)."""
    config = app.config
    app.extensions["outbox"] = outbox = Outbox(
        app.extensions["database"],
        app.extensions["live"],
        app.extensions["telnyx"],
        OutboxSettings(
            backoff_seconds=config["OUTBOX_BACKOFF_SECONDS"],
            max_backoff_seconds=config["OUTBOX_MAX_BACKOFF_SECONDS"],
            lease_seconds=config["OUTBOX_LEASE_SECONDS"],
        ),
    )
    metrics.add_scrape_gauges(app, lambda: _outbox_gauges(outbox))
