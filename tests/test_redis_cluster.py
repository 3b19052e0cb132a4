"""The service on a real three-master Redis Cluster (REDIS_URL=redis+cluster://): every key in
one slot, every script given its keys, and the spine, the claim race, the ring timeout, stale
claims and the event stream working as they do on one server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from telnyx_flask.push import StreamSettings, event_stream
from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.ring_timeout import RingTimeouts

from .helpers import answered_call_events, load_fixture, renamed
from .redis_cluster import LocalRedisCluster, RedisClusterUnavailable

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
# The default prefix's form, unique to this run: a hash tag, then the namespace.
PREFIX = f"{{telnyx-flask-test-{uuid.uuid4().hex[:8]}}}:"


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    try:
        cluster = LocalRedisCluster()
    except RedisClusterUnavailable as error:
        # Not a skip: the tier is part of `make test`; the Debian redis-server package has both.
        pytest.fail(f"{error}: install redis-server (it brings redis-cli)")
    yield cluster.start()
    cluster.stop()


@pytest.fixture
def settings(settings, redis_cluster):
    """The usual test settings, with Redis being the cluster (emptied for each test)."""
    redis_cluster.flush()
    settings.update(REDIS_URL=redis_cluster.url, REDIS_PREFIX=PREFIX)
    return settings


@pytest.fixture
def cluster(redis_cluster) -> Iterator[redis.RedisCluster]:
    """A cluster client of the test's own, for looking at keys."""
    client = redis.RedisCluster(
        host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True
    )
    yield client
    client.close()


@pytest.fixture
def ringing(post_webhook) -> str:
    """A call ringing now (fixture 01)."""
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


def keys_under_prefix(redis_cluster: LocalRedisCluster) -> dict[str, int]:
    """Every key of the service on every node, with the port of the node holding it."""
    found = {}
    for port, node in zip(redis_cluster.ports, redis_cluster.nodes(), strict=True):
        with node:
            found.update({key: port for key in node.scan_iter(match=f"{PREFIX}*")})
    return found


def answer(app, agent, call_control_id: str = CALLER):
    return app.test_client().post(
        f"/api/telnyx/calls/{call_control_id}/answer", headers=agent.headers
    )


def frames(response) -> Iterator[str]:
    """The frames of a streamed SSE response, as text, skipping heartbeats."""
    for chunk in response.response:
        frame = chunk.decode()
        if not frame.startswith(":"):
            yield frame


def frame_id(frame: str) -> str | None:
    first = frame.split("\n", 1)[0]
    return first[4:] if first.startswith("id: ") else None


def test_a_cluster_url_selects_the_cluster_client(app):
    assert isinstance(app.extensions["live"].client, redis.RedisCluster)


def test_webhooks_reach_postgresql_and_ring_live_with_every_key_in_one_slot(
    app, client, agent, post_webhook, db_rows, redis_cluster, cluster
):
    for event in answered_call_events()[:1]:
        assert post_webhook(event).status_code == 200
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "ringing"}]
    pending = client.get("/api/telnyx/calls/pending", headers=agent.headers)
    assert [call["call_control_id"] for call in pending.get_json()["calls"]] == [CALLER]
    assert answer(app, agent).status_code == 200
    # Sign-in counters (a MULTI pipeline), rate limits and the breaker write keys too.
    assert (
        client.post(
            "/api/auth/login", json={"email": agent.email, "password": agent.password}
        ).status_code
        == 200
    )
    keys = keys_under_prefix(redis_cluster)
    expected = RedisKeys(PREFIX)
    for key in (expected.call(CALLER), expected.events, expected.claimed, expected.active):
        assert key in keys
    assert any(key.startswith(f"{PREFIX}auth:attempts:") for key in keys)
    assert any(key.startswith(f"{PREFIX}limits:") for key in keys)
    slots = {cluster.cluster_keyslot(key) for key in keys}
    assert len(slots) == 1 and len(set(keys.values())) == 1
    assert slots == {cluster.cluster_keyslot(PREFIX)}


def test_of_agents_answering_at_once_exactly_one_wins(
    app, make_agent, ringing, fake_telnyx, cluster
):
    agents = [make_agent(f"Agent{n}") for n in range(6)]
    start = threading.Barrier(len(agents))

    def race(agent):
        start.wait()
        return answer(app, agent)

    with ThreadPoolExecutor(len(agents)) as pool:
        responses = list(pool.map(race, agents))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * (len(agents) - 1)
    [winner] = [agent for agent, r in zip(agents, responses, strict=True) if r.status_code == 200]
    assert len(fake_telnyx.received("answer")) == 1
    for response in responses:
        if response.status_code == 409:
            assert winner.name in json.dumps(response.get_json())
    assert cluster.hget(RedisKeys(PREFIX).call(CALLER), "claimed_by_id") == winner.id


def test_ring_timeout_rejects_once_however_many_workers_sweep(app, ringing, fake_telnyx, cluster):
    live, outbox = app.extensions["live"], app.extensions["outbox"]
    sweepers = [RingTimeouts(live, outbox, timeout_seconds=30) for _ in range(3)]
    started_ms = int(cluster.zscore(RedisKeys(PREFIX).ringing, CALLER))
    assert [s.sweep(now=started_ms + 29_000) for s in sweepers] == [[], [], []]
    swept = [s.sweep(now=started_ms + 31_000) for s in sweepers]
    assert sorted(map(len, swept)) == [0, 0, 1]
    assert len(fake_telnyx.received("reject")) == 1


def test_claimed_before_names_stale_claims_and_prunes_calls_that_moved_on(
    app, agent, ringing, cluster
):
    live, keys = app.extensions["live"], RedisKeys(PREFIX)
    assert live.claim_call(CALLER, agent.id, agent.name, "answer", now_ms=1_000).result == "claimed"
    cluster.zadd(keys.claimed, {"gone-call": 500})  # its hash expired long ago
    assert live.claimed_before(61_000) == [(CALLER, agent.id)]
    assert cluster.zrange(keys.claimed, 0, -1) == [CALLER]
    sweeper = RingTimeouts(live, app.extensions["outbox"], timeout_seconds=30)
    sweeper.sweep(now=1_000 + 61_000)
    assert cluster.hget(keys.call(CALLER), "status") == "ringing"


def test_a_call_claimed_afresh_while_stale_claims_are_read_stays_claimed(
    app, agent, make_agent, ringing, cluster, monkeypatch
):
    live, keys = app.extensions["live"], RedisKeys(PREFIX)
    bob = make_agent("Bob")
    live.claim_call(CALLER, agent.id, agent.name, "answer", now_ms=1_000)
    read_members = live.client.zrange

    def read_then_another_worker_acts(*args, **kwargs):
        members = read_members(*args, **kwargs)
        # Between the read and the pruning: the stale claim is given back and Bob takes it.
        assert live.release_call(CALLER, agent.id, "claim went stale")
        assert live.claim_call(CALLER, bob.id, bob.name, "answer", now_ms=90_000).result == (
            "claimed"
        )
        return members

    monkeypatch.setattr(live.client, "zrange", read_then_another_worker_acts)
    assert live.claimed_before(61_000) == []
    monkeypatch.undo()
    # Bob's claim is still in the claimed set, so a later sweep can still find it stale.
    assert cluster.zscore(keys.claimed, CALLER) == 90_000
    assert live.claimed_before(150_000) == [(CALLER, bob.id)]


def test_a_snapshot_taken_while_calls_arrive_is_retried_until_it_has_them_all(
    app, post_webhook, ringing, monkeypatch
):
    stream = app.extensions["live"].stream
    read_members = stream.client.zrange
    arrivals = iter(renamed([load_fixture("01_call.initiated.json")], "-second"))

    def read_then_a_call_arrives(*args, **kwargs):
        members = read_members(*args, **kwargs)
        for event in arrivals:  # once: a second call rings between the read and the script
            assert post_webhook(event).status_code == 200
        return members

    monkeypatch.setattr(stream.client, "zrange", read_then_a_call_arrives)
    newest_id, calls = stream.snapshot()
    assert sorted(call["call_control_id"] for call in calls) == [CALLER, f"{CALLER}-second"]
    # The id is the newest entry, the second call's call.ringing, read with the calls.
    [(entry_id, fields)] = stream.client.xrevrange(stream.keys.events, count=1)
    assert newest_id == entry_id.decode()
    assert json.loads(fields[b"data"])["call_control_id"] == f"{CALLER}-second"


def test_the_event_stream_gives_a_snapshot_then_replays_after_last_event_id(
    app, client, agent, post_webhook, ringing
):
    first = client.get("/api/telnyx/events", headers=agent.headers, buffered=False)
    try:
        assert first.status_code == 200
        opened = frames(first)
        assert next(opened).startswith("retry:")
        snapshot = next(opened)
        assert "event: snapshot" in snapshot
        assert CALLER in snapshot
        resume_from = frame_id(snapshot)
    finally:
        first.close()
    assert answer(app, agent).status_code == 200
    resumed = client.get(
        "/api/telnyx/events",
        headers={**agent.headers, "Last-Event-ID": resume_from},
        buffered=False,
    )
    try:
        replay = frames(resumed)
        assert next(replay).startswith("retry:")
        claimed = next(replay)
        assert "event: call.claimed" in claimed
        assert frame_id(claimed) > resume_from
    finally:
        resumed.close()


def test_the_worker_stream_reader_delivers_a_live_event(app, agent, post_webhook):
    hub = app.extensions["push"]
    body = event_stream(hub, None, StreamSettings(heartbeat_seconds=0.2, lifetime_seconds=20))
    try:
        assert next(body).startswith(b"retry:")
        assert b"event: snapshot" in next(body)
        assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = next(body)
            if frame.startswith(b"id: "):
                assert b"event: call.ringing" in frame
                assert CALLER.encode() in frame
                break
        else:
            raise AssertionError("the reader delivered nothing")
    finally:
        body.close()
    # The reader is a cluster client of its own, not one of the requests' connections.
    assert isinstance(hub._client, redis.RedisCluster)
    assert hub._client is not app.extensions["live"].client
