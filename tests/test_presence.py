"""Presence: Available, Away, On a call; chosen by the agent, set by their calls and pages,
announced once on the call-event stream, in the snapshot, rebuilt from PostgreSQL, and the
ring timeout acting at once while nobody is available."""

from __future__ import annotations

import json
import re
import threading
import time
from importlib import resources

import pytest

from telnyx_flask import create_app, presence
from telnyx_flask.call_status import ANSWERED, ANSWERING
from telnyx_flask.live_rebuild import ensure_live_state
from telnyx_flask.push import StreamSettings, event_stream
from telnyx_flask.ring_timeout import RingTimeouts

from .helpers import close_app, empty_redis, load_fixture

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
GRACE_MS = 60_000


def choose(client, agent, body, **kwargs):
    return client.put("/api/agents/me/presence", headers=agent.headers, json=body, **kwargs)


def announced(redis_client, redis_prefix) -> list[tuple[str, str]]:
    """(agent name, presence) of every agent.presence event on the stream, in order."""
    events = []
    for _, fields in redis_client.xrange(f"{redis_prefix}events"):
        if fields["event"] == "agent.presence":
            data = json.loads(fields["data"])
            events.append((data["agent"]["name"], data["presence"]))
    return events


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def live_presence(app):
    return app.extensions["presence"]


@pytest.fixture
def page_open(app, live_presence):
    """Open a page for an agent as GET /api/telnyx/events does: take a stream slot, tell
    presence. Returns the slot (release() is the page closing)."""
    slots = app.extensions["stream_slots"]
    opened = []

    def open_page(agent, at_ms: int | None = None):
        slot = slots.take(agent.id)
        opened.append(slot)
        live_presence.page_opened(agent.id, at_ms)
        return slot

    yield open_page
    for slot in opened:
        slot.release()


def presence_of(app, agent_id: str) -> str | None:
    with app.app_context():
        return presence.presence_of(agent_id)


# --- choosing ------------------------------------------------------------------------------


def test_an_agent_chooses_away_and_back_kept_in_postgresql_and_announced_once_each(
    client, agent, page_open, db_rows, redis_client, redis_prefix
):
    page_open(agent)
    response = choose(client, agent, {"presence": "away"})
    assert response.status_code == 200
    assert response.get_json() == {
        "success": True,
        "presence": {"id": agent.id, "name": "Alice", "presence": "away", "chosen": "away"},
    }
    [row] = db_rows("SELECT presence, presence_changed_at FROM users")
    assert row["presence"] == "away" and row["presence_changed_at"] is not None
    # Choosing the same again changes nothing, and says nothing.
    assert choose(client, agent, {"presence": "away"}).status_code == 200
    body = choose(client, agent, {"presence": "available"}).get_json()
    assert body["presence"]["presence"] == "available"
    assert announced(redis_client, redis_prefix) == [
        ("Alice", "available"),  # known from her page's opening on
        ("Alice", "away"),
        ("Alice", "available"),
    ]
    event = json.loads(redis_client.xrevrange(f"{redis_prefix}events", count=1)[0][1]["data"])
    assert event == {
        "agent": {"id": agent.id, "name": "Alice"},
        "presence": "available",
        "chosen": "available",
    }


def test_an_agent_with_no_page_yet_who_chooses_away_is_announced(
    client, agent, redis_client, redis_prefix
):
    assert choose(client, agent, {"presence": "away"}).status_code == 200
    assert announced(redis_client, redis_prefix) == [("Alice", "away")]


@pytest.mark.parametrize(
    "body",
    [
        {"presence": "on_call"},
        {"presence": "busy"},
        {"presence": "AWAY"},
        {"presence": 1},
        {"presence": None},
        {"presence": ["away"]},
        {},
        ["away"],
        "away",
    ],
)
def test_a_presence_other_than_available_or_away_is_a_400(client, agent, db_rows, body):
    response = choose(client, agent, body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] in ("invalid_presence", "invalid_body")
    assert db_rows("SELECT presence FROM users") == [{"presence": "available"}]


def test_a_body_that_is_not_json_is_a_400(client, agent):
    response = client.put(
        "/api/agents/me/presence",
        headers={**agent.headers, "Content-Type": "application/json"},
        data=b'{"presence": "away"',
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_body"


def test_an_oversized_body_is_a_413(client, agent):
    response = client.put(
        "/api/agents/me/presence",
        headers={**agent.headers, "Content-Type": "application/json"},
        data=b'{"presence": "' + b"a" * (2 * 1024 * 1024) + b'"}',
    )
    assert response.status_code == 413


def test_choosing_a_presence_needs_an_agent(client, agent):
    response = client.put("/api/agents/me/presence", json={"presence": "away"})
    assert response.status_code == 401
    response = client.put(
        "/api/agents/me/presence",
        json={"presence": "away"},
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert response.status_code == 401


def test_switching_too_often_is_a_429_that_leaves_answering_alone(app, client, agent):
    app.config["AGENT_ACTIONS_PER_MINUTE"] = 2  # read at each request
    assert choose(client, agent, {"presence": "away"}).status_code == 200
    assert choose(client, agent, {"presence": "available"}).status_code == 200
    response = choose(client, agent, {"presence": "away"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["error"]["message"].startswith("too many presence changes")
    # Call actions have their own count: a 404 for an unknown call, not a 429.
    other = client.post("/api/telnyx/calls/v3:nobody/answer", headers=agent.headers)
    assert other.status_code == 404


def test_two_choices_at_once_leave_redis_with_what_postgresql_kept(app, agent, page_open, db_rows):
    page_open(agent)
    start = threading.Barrier(8)
    clients = [app.test_client() for _ in range(8)]

    def press(n):
        start.wait()
        return choose(clients[n], agent, {"presence": "away" if n % 2 else "available"})

    threads = [threading.Thread(target=press, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [row] = db_rows("SELECT presence FROM users")
    assert presence_of(app, agent.id) == row["presence"]


# --- on a call -----------------------------------------------------------------------------


def test_answering_puts_the_agent_on_a_call_and_the_end_gives_back_what_they_chose(
    app, client, agent, make_agent, page_open, post_webhook, redis_client, redis_prefix
):
    bob = make_agent("Bob")
    page_open(agent)
    page_open(bob)
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    assert presence_of(app, agent.id) == "available"

    answer = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert answer.status_code == 200
    assert presence_of(app, agent.id) == "on_call"
    assert presence_of(app, bob.id) == "available"
    # Choosing Away during the call is kept for afterwards; On a call shows meanwhile.
    assert choose(client, agent, {"presence": "away"}).get_json()["presence"] == {
        "id": agent.id,
        "name": "Alice",
        "presence": "on_call",
        "chosen": "away",
    }
    post_webhook(load_fixture("03_call.answered.json"))
    assert presence_of(app, agent.id) == "on_call"

    post_webhook(load_fixture("05_call.hangup.json"))
    assert presence_of(app, agent.id) == "away"
    assert announced(redis_client, redis_prefix) == [
        ("Alice", "available"),
        ("Bob", "available"),
        ("Alice", "on_call"),
        ("Alice", "on_call"),  # her choice changed: her other pages show it
        ("Alice", "away"),
    ]
    # Each after what caused it: the claim, then On a call; the end, then Away.
    events = [f["event"] for _, f in redis_client.xrange(f"{redis_prefix}events")]
    assert events[events.index("call.claimed") + 1] == "agent.presence"
    assert events[events.index("call.ended") + 1 :] == ["agent.presence"]


def test_a_claim_given_back_because_telnyx_refused_leaves_the_agent_available(
    app, client, agent, page_open, post_webhook, fake_telnyx, redis_client, redis_prefix
):
    page_open(agent)
    post_webhook(load_fixture("01_call.initiated.json"))
    fake_telnyx.script("answer", 400)
    response = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert response.status_code == 502
    assert presence_of(app, agent.id) == "available"
    assert announced(redis_client, redis_prefix) == [
        ("Alice", "available"),
        ("Alice", "on_call"),
        ("Alice", "available"),
    ]


def test_declining_does_not_put_the_agent_on_a_call(
    app, client, agent, page_open, post_webhook, redis_client, redis_prefix
):
    page_open(agent)
    post_webhook(load_fixture("01_call.initiated.json"))
    response = client.post(f"/api/telnyx/calls/{CALLER}/decline", headers=agent.headers)
    assert response.status_code == 200
    assert presence_of(app, agent.id) == "available"
    assert announced(redis_client, redis_prefix) == [("Alice", "available")]


# --- pages ---------------------------------------------------------------------------------


def test_an_agent_whose_pages_are_all_gone_for_longer_than_the_grace_is_away_until_one_opens(
    app, agent, page_open, live_presence, redis_client, redis_prefix
):
    start = now_ms()
    first, second = page_open(agent, start), page_open(agent, start)
    first.release()
    live_presence.tick(start + 1_000)
    assert presence_of(app, agent.id) == "available"  # one page is still open
    second.release()
    live_presence.tick(start + 2_000)  # the loop notices the last page went
    live_presence.tick(start + 2_000 + GRACE_MS)
    assert presence_of(app, agent.id) == "available"  # not more than 60 s yet
    live_presence.tick(start + 2_001 + GRACE_MS)
    assert presence_of(app, agent.id) == "away"
    live_presence.tick(start + 5_000 + GRACE_MS)
    assert announced(redis_client, redis_prefix) == [("Alice", "available"), ("Alice", "away")]

    page_open(agent)
    assert presence_of(app, agent.id) == "available"
    assert announced(redis_client, redis_prefix) == [
        ("Alice", "available"),
        ("Alice", "away"),
        ("Alice", "available"),
    ]


def test_a_page_back_within_the_grace_keeps_the_agent_available(
    app, agent, page_open, live_presence, redis_client, redis_prefix
):
    start = now_ms()
    page_open(agent, start).release()
    live_presence.tick(start + 1_000)
    page_open(agent, start + 30_000)
    live_presence.tick(start + 1_000 + GRACE_MS + 1)
    assert presence_of(app, agent.id) == "available"
    assert announced(redis_client, redis_prefix) == [("Alice", "available")]


def test_the_page_route_makes_its_agent_known(client, agent, app):
    response = client.get("/api/telnyx/events", headers=agent.headers)
    try:
        assert response.status_code == 200
        with app.app_context():
            known = presence.records(app.extensions["live"])
        assert known[agent.id]["presence"] == "available"
    finally:
        response.close()


def test_two_workers_racing_announce_each_change_once(
    settings, agent, page_open, live_presence, redis_client, redis_prefix
):
    start = now_ms()
    page_open(agent, start).release()
    live_presence.tick(start)
    workers = [create_app(settings) for _ in range(4)]
    try:
        barrier = threading.Barrier(len(workers))
        changes: list[dict[str, str]] = []

        def tick(worker):
            barrier.wait()
            changes.append(worker.extensions["presence"].tick(start + GRACE_MS + 1))

        threads = [threading.Thread(target=tick, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for worker in workers:
            close_app(worker)
    assert sorted(map(len, changes)) == [0, 0, 0, 1]
    assert announced(redis_client, redis_prefix) == [("Alice", "available"), ("Alice", "away")]


def test_an_agent_no_longer_active_is_forgotten(
    app, agent, make_agent, page_open, live_presence, db_rows
):
    bob = make_agent("Bob")
    page_open(agent)
    page_open(bob)
    db_rows("UPDATE users SET active = false WHERE id = %s RETURNING id", (bob.id,))
    live_presence.tick()
    with app.app_context():
        assert [a["name"] for a in presence.live_agents(app.extensions["live"])] == ["Alice"]
        assert [a["name"] for a in presence.agents()] == ["Alice"]
    assert presence_of(app, bob.id) is None


# --- snapshot, interface and rebuild ------------------------------------------------------


def test_the_snapshot_lists_the_agents_with_their_presence(
    app, client, agent, make_agent, page_open
):
    bob = make_agent("Bob")
    page_open(agent)
    page_open(bob)
    choose(client, bob, {"presence": "away"})
    with app.test_request_context():
        body = event_stream(app.extensions["push"], None, StreamSettings(heartbeat_seconds=5))
        try:
            frames = [next(body), next(body)]
        finally:
            body.close()
    assert frames[0].startswith(b"retry: ")
    lines = frames[1].decode().splitlines()
    assert lines[1] == "event: snapshot"
    snapshot = json.loads(lines[2].removeprefix("data: "))
    assert snapshot["agents"] == [
        {"id": agent.id, "name": "Alice", "presence": "available", "chosen": "available"},
        {"id": bob.id, "name": "Bob", "presence": "away", "chosen": "away"},
    ]


def test_agents_and_presence_of_read_live_presence_and_otherwise_the_choice(
    app, client, agent, make_agent, page_open
):
    bob, carol = make_agent("Bob"), make_agent("Carol")
    page_open(agent)
    page_open(bob)
    choose(client, bob, {"presence": "away"})
    with app.app_context():
        assert presence.agents() == [
            {"id": agent.id, "name": "Alice", "presence": "available"},
            {"id": bob.id, "name": "Bob", "presence": "away"},
            # No page since presence was last rebuilt: what she chose.
            {"id": carol.id, "name": "Carol", "presence": "available"},
        ]
        assert presence.presence_of("5f1c7c1e-0000-4000-8000-000000000000") is None


def test_refresh_works_out_agents_again_after_a_call_changes_hands(
    app, agent, page_open, post_webhook, redis_client, redis_prefix
):
    page_open(agent)
    post_webhook(load_fixture("01_call.initiated.json"))
    # A claim made below claims.py (as a transfer does), then refresh.
    live = app.extensions["live"]
    assert live.claim_call(CALLER, agent.id, "Alice", "answer", now_ms()).result == "claimed"
    assert presence_of(app, agent.id) == "available"
    with app.app_context():
        presence.refresh([agent.id])
    assert presence_of(app, agent.id) == "on_call"


def test_a_redis_flush_restores_presence_from_postgresql_and_the_restored_calls(
    app, client, agent, make_agent, page_open, post_webhook, redis_client, redis_prefix
):
    replid = redis_client.info("replication")["master_replid"]
    redis_client.set(f"{redis_prefix}live:generation", f"running {replid}")
    bob = make_agent("Bob")
    page_open(agent)
    page_open(bob)
    choose(client, bob, {"presence": "away"})
    post_webhook(load_fixture("01_call.initiated.json"))
    assert client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers).status_code
    post_webhook(load_fixture("03_call.answered.json"))

    empty_redis(redis_client, redis_prefix)
    redis_client.delete(f"{redis_prefix}live:generation")
    assert ensure_live_state(app.extensions["database"], app.extensions["live"]) == 1

    with app.app_context():
        assert presence.live_agents(app.extensions["live"]) == [
            {"id": agent.id, "name": "Alice", "presence": "on_call", "chosen": "available"},
            {"id": bob.id, "name": "Bob", "presence": "away", "chosen": "away"},
        ]
    # Quietly: the pages take the snapshot after the reset.
    events = [f["event"] for _, f in redis_client.xrange(f"{redis_prefix}events")]
    assert events == ["reset"]
    # The call's end still gives Alice back.
    post_webhook(load_fixture("05_call.hangup.json"))
    assert presence_of(app, agent.id) == "available"


# --- the ring timeout when nobody is available --------------------------------------------


@pytest.fixture
def ringing(post_webhook, redis_client, redis_prefix):
    """A call ringing now, and when it started ringing here (ms)."""
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))


def sweeper(app) -> RingTimeouts:
    return RingTimeouts(app.extensions["live"], app.extensions["outbox"], timeout_seconds=30)


def test_with_every_agent_away_a_ringing_call_gets_the_ring_timeouts_outcome_at_once(
    app, client, agent, make_agent, page_open, ringing, fake_telnyx
):
    bob = make_agent("Bob")
    page_open(agent)
    page_open(bob)
    choose(client, bob, {"presence": "away"})
    assert sweeper(app).sweep(now=ringing + 1_000) == []  # Alice is available: it rings
    choose(client, agent, {"presence": "away"})

    assert sweeper(app).sweep(now=ringing + 1_000) == [CALLER]
    [reject] = fake_telnyx.received("reject")
    assert reject.call_control_id == CALLER


def test_with_the_only_agent_on_a_call_a_new_call_gets_the_outcome_at_once(
    app, client, agent, page_open, ringing, post_webhook, fake_telnyx
):
    page_open(agent)
    client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    second = load_fixture("11_missed.call.initiated.json")
    post_webhook(second)
    second_id = second["data"]["payload"]["call_control_id"]
    assert sweeper(app).sweep(now=ringing + 1_000) == [second_id]


def test_with_no_agent_known_to_presence_calls_ring_the_whole_ring_timeout(
    app, agent, ringing, fake_telnyx
):
    # Alice exists but has had no page and made no choice since presence was last built.
    assert sweeper(app).sweep(now=ringing + 29_000) == []
    assert fake_telnyx.received("reject") == []
    assert sweeper(app).sweep(now=ringing + 31_000) == [CALLER]


def test_the_presence_script_spells_the_presences_and_statuses_of_the_python_side():
    script = resources.files("telnyx_flask").joinpath("lua", "presence.lua").read_text()
    assert set(re.findall(r"return '(\w+)'", script)) == set(presence.PRESENCES)
    assert set(re.findall(r"call\[1\] == '(\w+)'", script)) == {ANSWERING, ANSWERED}
