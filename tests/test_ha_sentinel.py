"""High availability drill: Redis behind Sentinel loses its primary under ringing calls.

A real primary, replica and three sentinels on loopback (tests/redis_sentinel.py), gunicorn with
two gevent workers and the Telnyx simulator. The primary is SIGKILLed with a write it never passed
on to the replica; the drill measures how long until webhooks are accepted again, until the lost
call rings again and until open pages are told to start afresh, and checks that nothing was lost
or applied twice and that a ringing call can still be answered.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from telnyx_flask.signature import sign

from .helpers import abandoned_call_events, encode, renamed, wait_until
from .redis_sentinel import MASTER_NAME, LocalRedisSentinel
from .servers import SIM_SEED, ready_simulator, running_stack
from .sse_client import Frame, SseClient

pytestmark = pytest.mark.ha

RECOVERY_LIMIT_SECONDS = 30


@pytest.fixture(scope="module")
def sentinel():
    redis_set = LocalRedisSentinel().start()
    yield redis_set
    redis_set.stop()


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix, sentinel):
    overrides = {
        # With sentinels, REDIS_URL says only which database (and password, TLS) to use.
        "REDIS_URL": "redis://127.0.0.1/0",
        "REDIS_SENTINELS": sentinel.sentinels,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
    }
    with running_stack(database_url, redis_prefix, workers=2, **overrides) as stack:
        yield stack


def post_signed(url: str, body: dict) -> requests.Response:
    """Deliver a webhook as Telnyx would: signed (with the simulator's key), stamped now."""
    raw = encode(body)
    return requests.post(
        f"{url}/api/telnyx/webhook",
        data=raw,
        headers={"Content-Type": "application/json", **sign(SIM_SEED, raw, int(time.time()))},
        timeout=10,
    )


def pending(url: str, agent) -> set[str]:
    response = requests.get(f"{url}/api/telnyx/calls/pending", headers=agent.headers, timeout=10)
    if response.status_code != 200:
        return set()
    return {call["call_control_id"] for call in response.json()["calls"]}


def fresh_snapshot(url: str, agent, page: SseClient, timeout: float) -> tuple[SseClient, Frame]:
    """Follow the page until the service tells it to start afresh: a `reset` then a `snapshot`
    on the open stream, or, if the stream was cut, on the reconnection with Last-Event-ID."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": agent.headers["Authorization"]}
    while time.monotonic() < deadline:
        try:
            frame = page.next_event(within=max(0.1, deadline - time.monotonic()))
        except (OSError, AssertionError):
            last = page.last_event_id
            page.close()
            page = SseClient(f"{url}/api/telnyx/events", {**headers, "Last-Event-ID": last})
            continue
        if frame.event == "reset":
            snapshot = page.next_event()
            assert snapshot.event == "snapshot"
            return page, snapshot
    raise AssertionError(f"no reset and snapshot within {timeout} s")


def test_the_primary_killed_under_ringing_calls_fails_over_and_nothing_is_lost(
    sentinel, stack, agent, db_rows
):
    sim, server = ready_simulator(stack), stack[1]
    wait_until(
        lambda: requests.get(f"{server.url}/readyz", timeout=10).status_code == 200,
        30,
        "the service ready on the primary",
    )
    first, second = sim.call(), sim.call()
    sim.wait_delivered()
    page = SseClient(
        f"{server.url}/api/telnyx/events", {"Authorization": agent.headers["Authorization"]}
    )
    try:
        snapshot = page.next_event()
        assert snapshot.event == "snapshot"
        assert {c["call_control_id"] for c in snapshot.json["calls"]} == {first, second}

        # A write the replica never gets: it is cut off while a third call rings, then the
        # primary dies with that call's live state.
        sentinel.cut_replication()
        lost = sim.call()
        sim.wait_delivered()
        assert lost in pending(server.url, agent)
        old_port = sentinel.primary_address()[1]
        sentinel.kill_primary()
        killed_at = time.monotonic()

        # Telnyx goes on sending: a new call's webhook, redelivered until it is accepted.
        incoming = renamed(abandoned_call_events()[:1], f"-failover-{uuid.uuid4().hex[:8]}")[0]
        statuses = []
        while time.monotonic() - killed_at < RECOVERY_LIMIT_SECONDS:
            statuses.append(post_signed(server.url, incoming).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.2)  # Telnyx's own redelivery cadence, not a wait for a state
        accepted_after = time.monotonic() - killed_at
        assert sentinel.primary_address()[1] != old_port  # the sentinels promoted the replica
        assert statuses[-1] == 200, statuses
        assert set(statuses[:-1]) <= {503}, statuses
        # Redelivered once more, it is a duplicate: applied exactly once.
        again = post_signed(server.url, incoming)
        assert again.json()["result"] == "duplicate"
        event_id = incoming["data"]["id"]
        assert db_rows(
            "SELECT count(*) AS n FROM webhook_events WHERE event_id = %s", (event_id,)
        ) == [{"n": 1}]

        # The call whose live state died with the primary rings again, rebuilt from PostgreSQL.
        wait_until(
            lambda: {first, second, lost} <= pending(server.url, agent),
            RECOVERY_LIMIT_SECONDS,
            "the lost call ringing again",
        )
        rebuilt_after = time.monotonic() - killed_at

        # The open page is told to start afresh, with every call in its snapshot.
        page, fresh = fresh_snapshot(server.url, agent, page, RECOVERY_LIMIT_SECONDS)
        page_after = time.monotonic() - killed_at
        ringing = {c["call_control_id"] for c in fresh.json["calls"]}
        assert {first, second, lost} <= ringing
    finally:
        page.close()

    # A ringing call can still be answered, once.
    answered = requests.post(
        f"{server.url}/api/telnyx/calls/{lost}/answer", headers=agent.headers, timeout=30
    )
    assert answered.status_code == 200, answered.text
    assert len(sim.commands("answer", lost)) == 1
    print(
        f"\nRedis primary SIGKILLed: webhooks accepted again after {accepted_after:.1f} s "
        f"({statuses.count(503)} answered 503 first); the lost call ringing again after "
        f"{rebuilt_after:.1f} s; the open page reset after {page_after:.1f} s"
    )
    assert max(accepted_after, rebuilt_after, page_after) < RECOVERY_LIMIT_SECONDS
