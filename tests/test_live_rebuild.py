"""PostgreSQL is the truth: when Redis loses its data, live state is rebuilt from it."""

from __future__ import annotations

import pytest

from telnyx_flask.live_rebuild import ensure_live_state

from .helpers import abandoned_call_events, empty_redis, load_fixture, renamed

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


def lose_redis(redis_client, redis_prefix) -> None:
    """What a restart without persistence does to this service's keys."""
    empty_redis(redis_client, redis_prefix)
    redis_client.delete(f"{redis_prefix}live:generation")


def rebuild(app):
    return ensure_live_state(app.extensions["database"], app.extensions["live"])


@pytest.fixture
def built(app, redis_client, redis_prefix):
    """Live state as a running service has it: marked with a generation, built on this Redis."""
    replid = redis_client.info("replication")["master_replid"]
    redis_client.set(f"{redis_prefix}live:generation", f"running {replid}")
    return app


def test_calls_not_over_come_back_with_their_original_ring_clock(
    built, client, agent, post_webhook, redis_client, redis_prefix
):
    post_webhook(load_fixture("01_call.initiated.json"))
    for body in abandoned_call_events():  # an ended call: it stays ended, not restored
        post_webhook(body)
    before = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"]
    score = redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER)

    lose_redis(redis_client, redis_prefix)
    assert client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"] == []
    assert rebuild(built) == 1

    after = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"]
    assert after == before
    # The ring timeout still counts from when the call first reached the service.
    restored = redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER)
    assert abs(restored - score) < 1000
    # And it can be answered.
    response = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert response.status_code == 200


def test_an_answered_call_comes_back_with_its_agent(
    built, client, agent, post_webhook, redis_client, redis_prefix
):
    post_webhook(load_fixture("01_call.initiated.json"))
    assert (
        client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers).status_code == 200
    )
    post_webhook(load_fixture("03_call.answered.json"))
    lose_redis(redis_client, redis_prefix)
    assert rebuild(built) == 1
    call = redis_client.hgetall(f"{redis_prefix}call:{CALLER}")
    assert (call["status"], call["claimed_by_id"], call["claimed_by_name"]) == (
        "answered",
        agent.id,
        "Alice",
    )
    # The agent can still hang up; nobody else can.
    response = client.post(f"/api/telnyx/calls/{CALLER}/end", headers=agent.headers)
    assert response.status_code == 200


def test_pages_are_told_to_take_a_fresh_snapshot(built, post_webhook, redis_client, redis_prefix):
    post_webhook(load_fixture("01_call.initiated.json"))
    lose_redis(redis_client, redis_prefix)
    rebuild(built)
    # Restoring announces nothing call by call: one reset, and the snapshot says the rest.
    [(_, entry)] = redis_client.xrange(f"{redis_prefix}events")
    assert entry["event"] == "reset"


def test_it_happens_once_while_the_marker_is_there(built, post_webhook, redis_client, redis_prefix):
    post_webhook(load_fixture("01_call.initiated.json"))
    assert rebuild(built) is None
    assert redis_client.xlen(f"{redis_prefix}events") == 1  # just call.ringing


def test_a_marker_built_on_another_redis_means_a_failover_and_a_rebuild(
    built, post_webhook, redis_client, redis_prefix
):
    """After a failover the promoted replica holds the marker it copied, but not the writes the
    old primary never passed on: a marker from another replication id is rebuilt from."""
    post_webhook(load_fixture("01_call.initiated.json"))
    redis_client.set(f"{redis_prefix}live:generation", "running 0123456789abcdef")
    # A write the old primary took and lost with it:
    redis_client.delete(f"{redis_prefix}call:{CALLER}")
    redis_client.zrem(f"{redis_prefix}calls:ringing", CALLER)

    assert rebuild(built) == 1
    assert redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER) is not None
    replid = redis_client.info("replication")["master_replid"]
    marker = redis_client.get(f"{redis_prefix}live:generation")
    assert marker.endswith(f" {replid}")
    # Marked with this Redis now: no second rebuild.
    assert rebuild(built) is None


def test_only_one_process_rebuilds_at_a_time(built, redis_client, redis_prefix):
    lose_redis(redis_client, redis_prefix)
    redis_client.set(f"{redis_prefix}live:rebuild-lock", "another-worker", px=10_000)
    assert rebuild(built) is None
    assert not redis_client.exists(f"{redis_prefix}live:generation")


def test_a_newer_state_written_since_the_loss_is_kept(
    built, post_webhook, redis_client, redis_prefix
):
    lose_redis(redis_client, redis_prefix)
    # A webhook lands after the loss and before the rebuild: it already carries the whole call.
    events = renamed([load_fixture("01_call.initiated.json")], "")
    post_webhook(events[0])
    post_webhook(load_fixture("03_call.answered.json"))
    rebuild(built)
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "answered"


def test_readyz_rebuilds_a_lost_live_state(built, client, post_webhook, redis_client, redis_prefix):
    post_webhook(load_fixture("01_call.initiated.json"))
    lose_redis(redis_client, redis_prefix)
    assert client.get("/readyz").status_code == 200
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ringing"


def test_readyz_answers_against_a_redis_without_info(settings):
    """fakeredis (make run's last resort) has no INFO: the policy is unknown, not a 500."""
    import fakeredis

    from telnyx_flask import create_app

    from .helpers import close_app

    settings["REDIS_CLIENT"] = fakeredis.FakeRedis()
    app = create_app(settings)
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["detail"]["redis_eviction_policy"] is None
    finally:
        close_app(app)
