"""High availability drills for PostgreSQL: a restart under load, and PgBouncer in front.

A throwaway cluster of the tests' own (tests/postgres_cluster.py), gunicorn with two gevent
workers and the Telnyx simulator. The first drill stops PostgreSQL under a steady load of signed
webhooks, each redelivered until accepted as Telnyx does, and starts it again: only 503s while it
is down, every acknowledged webhook kept exactly once, the same workers before and after. The
others run the service behind PgBouncer in transaction mode (DB_PGBOUNCER=true): a call rings and
is answered, one call's webhooks arriving at once in any order and twice land as if in order,
group commits batch, and every server connection PgBouncer lends is UTC with the statement
timeout the role carries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg2
import pytest
import requests

from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.db import Database
from telnyx_flask.errors import StorageUnavailable
from telnyx_flask.migrations import pending_migrations
from telnyx_flask.signature import sign
from telnyx_flask.users import Agent, create_user

from . import helpers
from .helpers import (
    abandoned_call_events,
    answered_call_events,
    app_settings,
    close_app,
    encode,
    renamed,
    wait_until,
)
from .postgres_cluster import ROLE, SERVER_TIME_ZONE, LocalPgBouncer, LocalPostgres
from .servers import SIM_SEED, running_stack

pytestmark = pytest.mark.ha

RECOVERY_LIMIT_SECONDS = 15
LOAD_THREADS = 4
WORKERS = 2
STATEMENT_TIMEOUT_MS = 5000
REDELIVERY_SECONDS = 0.2  # Telnyx's redelivery cadence in this drill, not a wait for a state
PACE_SECONDS = 0.05  # each load thread's gap between two webhooks: a steady, not a flat-out, load


@pytest.fixture(scope="module")
def postgres():
    cluster = LocalPostgres().start()
    # Behind PgBouncer the service cannot pass statement_timeout at connect: the role carries it
    # (docs/deploy.md). Straight to PostgreSQL the connection's own setting overrides this.
    cluster.execute(f"ALTER ROLE {ROLE} SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pgbouncer(postgres):
    # Fewer server connections than the workers' pools hold: clients share them, transaction by
    # transaction, so any session state the service relied on would show.
    bouncer = LocalPgBouncer(postgres, pool_size=3).start()
    yield bouncer
    bouncer.stop()


def post_signed(url: str, body: dict) -> requests.Response:
    """Deliver a webhook as Telnyx would: signed (with the simulator's key), stamped now."""
    raw = encode(body)
    return requests.post(
        f"{url}/api/telnyx/webhook",
        data=raw,
        headers={"Content-Type": "application/json", **sign(SIM_SEED, raw, int(time.time()))},
        timeout=10,
    )


@dataclass
class Attempt:
    event_id: str
    sent: float
    answered: float
    status: int
    code: str | None


def deliver(url: str, body: dict, attempts: list[Attempt], limit: float = 30) -> None:
    """POST until a 2xx, redelivering every refusal as Telnyx does; every attempt is recorded."""
    deadline = time.monotonic() + limit
    while True:
        sent = time.monotonic()
        try:
            response = post_signed(url, body)
            status = response.status_code
            code = None if status < 300 else response.json().get("error", {}).get("code")
        except requests.RequestException as exc:
            status, code = 0, type(exc).__name__
        attempts.append(Attempt(body["data"]["id"], sent, time.monotonic(), status, code))
        if 200 <= status < 300:
            return
        assert time.monotonic() < deadline, f"{body['data']['id']} never accepted"
        time.sleep(REDELIVERY_SECONDS)


def test_postgres_restarted_under_load_loses_nothing_and_the_pool_recovers(postgres, redis_prefix):
    with running_stack(postgres.url(), redis_prefix, workers=WORKERS) as (_sim, server):
        workers_before = sorted(server.worker_pids())
        assert len(workers_before) == WORKERS
        attempts: list[Attempt] = []
        calls: list[list[dict]] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def load(n: int) -> None:
            # Unique calls, one after another, each webhook redelivered until accepted.
            try:
                while not stop.is_set():
                    events = renamed(abandoned_call_events(), f"-pgr{n}-{uuid.uuid4().hex[:8]}")
                    calls.append(events)
                    for body in events:
                        deliver(server.url, body, attempts)
                        time.sleep(PACE_SECONDS)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        def accepted() -> list[Attempt]:
            return [a for a in list(attempts) if 200 <= a.status < 300]

        threads = [threading.Thread(target=load, args=(n,)) for n in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(accepted()) >= 20, 20, "the load under way")
            # Down: a fast stop ends every session. It stays down until the load has been
            # refused by both workers' worth of requests, then comes back.
            stopped_at = time.monotonic()
            postgres.pg_ctl("stop", "-m", "fast")
            wait_until(
                lambda: sum(a.status == 503 for a in list(attempts)) >= LOAD_THREADS,
                RECOVERY_LIMIT_SECONDS,
                "webhooks refused while PostgreSQL is down",
            )
            postgres.pg_ctl("start")
            up_at = time.monotonic()
            first_ok = wait_until(
                lambda: min((a.answered for a in accepted() if a.sent >= up_at), default=None),
                RECOVERY_LIMIT_SECONDS,
                "a webhook accepted after PostgreSQL is back",
            )
            after_up = len([a for a in accepted() if a.sent >= up_at])
            wait_until(
                lambda: len([a for a in accepted() if a.sent >= up_at]) >= after_up + 20,
                RECOVERY_LIMIT_SECONDS,
                "the steady load accepted again",
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert not failures, failures
        workers_after = sorted(server.worker_pids())

    # Only 503 storage_unavailable, never a 500, and only from the stop on.
    refused = [a for a in attempts if not 200 <= a.status < 300]
    assert {(a.status, a.code) for a in refused} == {(503, "storage_unavailable")}, {
        (a.status, a.code) for a in refused
    }
    assert all(a.answered >= stopped_at for a in refused)
    # Back up, a worker refuses at most the one batch that finds its old connections dead
    # (usually none: a refusal during the outage already dropped them).
    late = [a for a in refused if a.sent >= up_at]
    assert len(late) <= WORKERS * LOAD_THREADS, late
    last_refusal = max(a.answered for a in refused)

    # Every acknowledged webhook is stored exactly once, and its call is right.
    acknowledged = {a.event_id for a in attempts if 200 <= a.status < 300}
    sent_ids = [body["data"]["id"] for events in calls for body in events]
    assert acknowledged == set(sent_ids)  # every load thread finished its call
    rows = postgres.execute(
        "SELECT event_id, count(*) FROM webhook_events WHERE event_id = ANY(%s) GROUP BY event_id",
        (sent_ids,),
    )
    assert dict(rows) == dict.fromkeys(acknowledged, 1)
    sessions = [events[0]["data"]["payload"]["call_session_id"] for events in calls]
    hangup_cause = abandoned_call_events()[-1]["data"]["payload"]["hangup_cause"]
    call_rows = postgres.execute(
        "SELECT c.call_session_id, c.status, c.hangup_cause, l.outcome"
        " FROM inbound_calls c JOIN call_logs l ON l.call_session_id = c.call_session_id"
        " WHERE c.call_session_id = ANY(%s)",
        (sessions,),
    )
    assert sorted(call_rows) == sorted(
        (session, "ended", hangup_cause, "abandoned") for session in sessions
    )

    # The pool recovered in place: the same worker processes answered before and after.
    assert workers_after == workers_before
    recovery = first_ok - up_at
    print(
        f"\nPostgreSQL stopped under load: {len(refused)} webhooks answered 503 between "
        f"{min(a.answered for a in refused) - stopped_at:.2f} s and "
        f"{last_refusal - stopped_at:.2f} s after the stop ({len(late)} sent after it was back); "
        f"down for {up_at - stopped_at:.2f} s; webhooks accepted again {recovery:.2f} s after "
        f"PostgreSQL was back; {len(acknowledged)} webhooks of {len(calls)} calls, each once"
    )
    assert recovery < RECOVERY_LIMIT_SECONDS
    assert last_refusal - up_at < RECOVERY_LIMIT_SECONDS


def test_after_a_restart_a_pool_fails_one_request_not_one_per_idle_connection(postgres):
    db = Database(postgres.url(), size=5, wait_seconds=1, statement_timeout_ms=5000)
    held = [db.connection() for _ in range(5)]
    for lent in held:
        lent.__enter__()
    for lent in reversed(held):
        lent.__exit__(None, None, None)
    assert len(db._idle) == 5
    postgres.restart()
    outcomes = []
    for _ in range(5):
        try:
            with db.connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            outcomes.append("ok")
        except StorageUnavailable:
            outcomes.append("503")
    db.close()
    # The first request finds its connection dead; the four others the restart killed are
    # dropped with it, not each at its own request.
    assert outcomes == ["503", "ok", "ok", "ok", "ok"]


# --- PgBouncer in transaction mode ---------------------------------------------------------


def test_without_db_pgbouncer_pgbouncer_refuses_the_connection_settings(pgbouncer):
    # What breaks: psycopg2 sends statement_timeout and timezone as the `options` startup
    # parameter, which PgBouncer refuses (or, told to ignore it, drops without a word).
    db = Database(pgbouncer.url(), size=1, wait_seconds=1, statement_timeout_ms=5000)
    with pytest.raises(StorageUnavailable) as raised, db.connection():
        pass
    assert "unsupported startup parameter: options" in raised.value.detail
    db.close()


def test_behind_pgbouncer_every_server_connection_is_utc_with_the_roles_timeout(pgbouncer):
    db = Database(
        pgbouncer.url(), size=8, wait_seconds=5, statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        pgbouncer=True,
    )  # fmt: skip
    # Other clients of the same server connections leave them in their own time zone.
    others = [psycopg2.connect(pgbouncer.url(), connect_timeout=5) for _ in range(3)]
    for conn in others:
        conn.autocommit = True
    seen, server_pids, theirs = [], set(), []
    lock = threading.Lock()

    def ours() -> None:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('TimeZone'), current_setting('statement_timeout'),"
                " pg_backend_pid() FROM pg_sleep(0.05)"
            )
            zone, timeout, pid = cur.fetchone()
        with lock:
            seen.append((zone, timeout))
            server_pids.add(pid)

    def other(conn) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('TimeZone') FROM pg_sleep(0.05)")
            with lock:
                theirs.append(cur.fetchone()[0])

    for _ in range(3):
        threads = [threading.Thread(target=ours) for _ in range(8)]
        threads += [threading.Thread(target=other, args=(conn,)) for conn in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for conn in others:
        conn.close()
    db.close()
    assert len(seen) == 24
    assert set(seen) == {("UTC", "5s")}
    assert set(theirs) == {SERVER_TIME_ZONE}
    assert len(server_pids) <= pgbouncer.pool_size  # shared, transaction by transaction


def test_behind_pgbouncer_a_statement_timeout_the_role_lacks_is_logged(pgbouncer, caplog):
    db = Database(pgbouncer.url(), size=1, wait_seconds=1, statement_timeout_ms=250, pgbouncer=True)
    with caplog.at_level(logging.ERROR, logger="telnyx_flask.db"), db.connection():
        pass
    db.close()
    assert "statement_timeout is 5000 ms for this role, not DB_STATEMENT_TIMEOUT_MS=250" in (
        caplog.text
    )


def agent_in(database_url: str, redis_prefix: str) -> helpers.TestAgent:
    """An agent with a bearer token, made through the same PgBouncer the service uses."""
    settings = app_settings(database_url, redis_prefix, "http://127.0.0.1:9/v2")
    settings["DB_PGBOUNCER"] = "true"
    app = create_app(settings)
    try:
        with app.app_context():
            email = f"bea.{uuid.uuid4().hex[:6]}@example.test"
            user_id = create_user(email, "Bea", "correct horse battery", "agentbea")
            token = issue_token(Agent(user_id, email, "Bea", "agentbea"))
    finally:
        close_app(app)
    return helpers.TestAgent(user_id, email, "Bea", "", {"Authorization": f"Bearer {token}"})


def batch_totals(url: str) -> tuple[float, float]:
    """(batches, webhooks in them) from /metrics, summed over the workers."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("telnyx_flask_webhook_batch_size_count", "telnyx_flask_webhook_batch_size_sum"):
            values[name] = float(value)
    return (
        values.get("telnyx_flask_webhook_batch_size_count", 0.0),
        values.get("telnyx_flask_webhook_batch_size_sum", 0.0),
    )


CALL_COLUMNS = (
    "c.status, c.started_at, c.answered_at, c.bridged_at, c.ended_at, c.hangup_cause,"
    " c.hangup_source, c.recording_url IS NOT NULL, l.outcome, l.duration, l.end_reason"
)


def test_the_service_behind_pgbouncer_in_transaction_mode(postgres, pgbouncer, redis_prefix):
    # Migrations ran on the direct URL (the fixture): through PgBouncer the service only reads
    # that they are all applied.
    assert pending_migrations(pgbouncer.url()) == []
    agent = agent_in(pgbouncer.url(), redis_prefix)
    overrides = {"DB_PGBOUNCER": "true", "WEBHOOK_BATCH_WINDOW_MS": "20"}
    with running_stack(pgbouncer.url(), redis_prefix, workers=WORKERS, **overrides) as (
        sim,
        server,
    ):
        # A call rings and is answered, once.
        call = sim.call()
        sim.wait_delivered()
        wait_until(
            lambda: (
                call
                in {
                    c["call_control_id"]
                    for c in requests.get(
                        f"{server.url}/api/telnyx/calls/pending", headers=agent.headers, timeout=10
                    ).json()["calls"]
                }
            ),
            10,
            "the call ringing",
        )
        answered = requests.post(
            f"{server.url}/api/telnyx/calls/{call}/answer", headers=agent.headers, timeout=30
        )
        assert answered.status_code == 200, answered.text
        assert len(sim.commands("answer", call)) == 1
        sim.wait_delivered()
        assert postgres.execute(
            "SELECT status, answered_by::text FROM inbound_calls WHERE call_control_id = %s",
            (call,),
        ) == [("answered", agent.id)]

        # Many calls' webhooks at once, each call's in any order and twice: order-safe, once.
        reference = renamed(answered_call_events(), f"-ref-{uuid.uuid4().hex[:8]}")
        for body in reference:
            assert post_signed(server.url, body).status_code == 200
        calls = [
            renamed(answered_call_events(), f"-pgb{n}-{uuid.uuid4().hex[:8]}") for n in range(6)
        ]
        bodies = [body for events in calls for body in events] * 2
        random.Random(14).shuffle(bodies)
        batches_before = batch_totals(server.url)
        attempts: list[Attempt] = []
        failures: list[BaseException] = []
        queue = list(bodies)
        lock = threading.Lock()

        def send() -> None:
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        body = queue.pop()
                    deliver(server.url, body, attempts)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=send) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        assert {a.status for a in attempts} == {200}, {(a.status, a.code) for a in attempts}
        batches_after = batch_totals(server.url)

        # PostgreSQL restarted behind PgBouncer: the service's connections to PgBouncer live
        # on, PgBouncer opens new server connections, the same workers go on.
        workers_before = sorted(server.worker_pids())
        postgres.restart()
        up_at = time.monotonic()
        after_restart: list[Attempt] = []
        incoming = renamed(abandoned_call_events()[:1], f"-pgbr-{uuid.uuid4().hex[:8]}")[0]
        deliver(server.url, incoming, after_restart, limit=RECOVERY_LIMIT_SECONDS)
        recovery = after_restart[-1].answered - up_at
        assert {(a.status, a.code) for a in after_restart[:-1]} <= {(503, "storage_unavailable")}
        assert sorted(server.worker_pids()) == workers_before

    # Each event stored once, whatever arrived twice.
    event_ids = [body["data"]["id"] for events in calls for body in events]
    assert dict(
        postgres.execute(
            "SELECT event_id, count(*) FROM webhook_events WHERE event_id = ANY(%s)"
            " GROUP BY event_id",
            (event_ids,),
        )
    ) == dict.fromkeys(event_ids, 1)

    # Every call ends as the reference call delivered in order did.
    def call_row(events: list[dict]) -> list[tuple]:
        session = events[0]["data"]["payload"]["call_session_id"]
        return postgres.execute(
            f"SELECT {CALL_COLUMNS} FROM inbound_calls c"
            " JOIN call_logs l ON l.call_session_id = c.call_session_id"
            " WHERE c.call_session_id = %s",
            (session,),
        )

    expected = call_row(reference)
    assert len(expected) == 1 and expected[0][0] == "ended"
    for events in calls:
        assert call_row(events) == expected

    # Group commit: more webhooks applied than batches, so some batches held several.
    batches = batches_after[0] - batches_before[0]
    webhooks = batches_after[1] - batches_before[1]
    assert webhooks == len(bodies)
    assert batches < webhooks, (batches, webhooks)
    print(
        f"\nbehind PgBouncer (transaction mode, {pgbouncer.pool_size} server connections): "
        f"{len(bodies)} webhooks of {len(calls)} calls in {batches:.0f} group commits; after a "
        f"PostgreSQL restart, a webhook accepted {recovery:.2f} s after it was back "
        f"({len(after_restart) - 1} answered 503 first)"
    )
    assert recovery < RECOVERY_LIMIT_SECONDS
