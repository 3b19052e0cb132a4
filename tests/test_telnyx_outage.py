"""Telnyx is a dependency that fails: deadlines, the shared circuit breaker, and claims that are
never lost while their agent is still talking to Telnyx (invariant 11)."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from telnyx_flask.circuit_breaker import (
    BreakerSettings,
    CircuitBreaker,
    TelnyxUnavailable,
)
from telnyx_flask.live_rebuild import ensure_live_state
from telnyx_flask.redis_store import RedisKeys

from . import helpers
from .helpers import empty_redis, load_fixture

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def ringing(post_webhook):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


def press(client, agent, action="answer"):
    return client.post(f"/api/telnyx/calls/{CALLER}/{action}", headers=agent.headers)


def call_hash(redis_client, redis_prefix):
    return redis_client.hgetall(f"{redis_prefix}call:{CALLER}")


@pytest.fixture
def breaker(redis_prefix):
    client = redis.Redis.from_url(helpers.TEST_REDIS_URL)
    yield CircuitBreaker(
        client, RedisKeys(redis_prefix), BreakerSettings(failure_threshold=3, cooldown_seconds=10)
    )
    client.close()


# --- the breaker on its own, with the clock in the test's hands --------------------------------


def test_breaker_opens_after_failures_in_a_row_and_fails_fast(breaker, clean_storage):
    now = 1_000_000
    breaker.record_failure(now)
    breaker.record_failure(now)
    breaker.allow(now)  # two failures: still closed
    breaker.record_failure(now)
    assert breaker.state() == "open"
    with pytest.raises(TelnyxUnavailable) as refused:
        breaker.allow(now + 4_000)
    assert refused.value.status == 503
    assert refused.value.headers() == {"Retry-After": "6"}


def test_a_success_between_failures_starts_the_count_again(breaker, clean_storage):
    now = 1_000_000
    for _ in range(2):
        breaker.record_failure(now)
    breaker.record_success(now)
    for _ in range(2):
        breaker.record_failure(now)
    assert breaker.state() == "closed"


def test_after_the_cool_down_one_probe_goes_and_its_success_closes_the_breaker(
    breaker, clean_storage
):
    now = 1_000_000
    for _ in range(3):
        breaker.record_failure(now)
    later = now + 10_001
    breaker.allow(later)  # the probe
    assert breaker.state() == "half_open"
    with pytest.raises(TelnyxUnavailable):
        breaker.allow(later + 1)  # everyone else still waits for the probe
    breaker.record_success(later + 2)
    assert breaker.state() == "closed"
    breaker.allow(later + 3)


def test_a_failed_probe_opens_the_breaker_again(breaker, clean_storage):
    now = 1_000_000
    for _ in range(3):
        breaker.record_failure(now)
    breaker.allow(now + 10_001)
    breaker.record_failure(now + 10_002)
    assert breaker.state() == "open"
    with pytest.raises(TelnyxUnavailable):
        breaker.allow(now + 15_000)


def test_the_breaker_lets_requests_through_when_redis_is_unreachable(redis_prefix):
    # No retries: redis-py's default backoff would spend seconds proving the same refusal.
    unreachable = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    breaker = CircuitBreaker(unreachable, RedisKeys(redis_prefix), BreakerSettings())
    breaker.allow()
    breaker.record_failure()


# --- agents pressing buttons while Telnyx fails ------------------------------------------------


def test_telnyx_down_opens_the_breaker_and_later_presses_send_nothing(
    client, agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 503, times=100)
    statuses = [press(client, agent).status_code for _ in range(25)]
    sent = len(fake_telnyx.received("answer"))
    # Five failures in a row open it: the first press retries inside its deadline, the second
    # sends the fifth; every other press is refused at once, before claiming anything.
    assert sent == 5
    assert statuses[:2] == [502, 502]
    assert set(statuses[2:]) == {503}
    refused = press(client, agent)
    assert refused.get_json()["error"]["code"] == "telnyx_unavailable"
    assert int(refused.headers["Retry-After"]) >= 1
    assert call_hash(redis_client, redis_prefix)["status"] == "ringing"


@pytest.fixture
def quick_deadline(settings):
    settings["TELNYX_ACTION_DEADLINE_SECONDS"] = "1"
    return settings


def test_a_slow_answer_returns_504_in_time_and_the_agent_keeps_the_call(
    quick_deadline, client, agent, make_agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 200, delay=3)
    started = time.monotonic()
    response = press(client, agent)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "telnyx_timeout"
    # The deadline bounds the request, whatever Telnyx does.
    assert elapsed < 2.5, elapsed
    # Telnyx may still act on it: the claim is not released, so nobody else can take the call.
    assert call_hash(redis_client, redis_prefix)["claimed_by_id"] == agent.id
    assert press(client, make_agent("Bob")).status_code == 409
    assert fake_telnyx.received("transfer") == []


def test_pressing_again_after_a_504_resends_the_same_commands(
    quick_deadline, client, agent, ringing, fake_telnyx
):
    fake_telnyx.script("answer", 200, delay=3)
    assert press(client, agent).status_code == 504
    assert press(client, agent).status_code == 200
    answers = fake_telnyx.received("answer")
    assert len(answers) == 2
    assert answers[0].body["command_id"] == answers[1].body["command_id"]


def test_a_slow_transfer_returns_504_with_the_caller_waiting(
    quick_deadline, client, agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("transfer", 200, delay=3)
    response = press(client, agent)
    assert response.status_code == 504
    assert response.get_json()["error"]["caller_waiting"] is True
    assert call_hash(redis_client, redis_prefix)["claimed_by_id"] == agent.id


def answer_in_background(client, agent):
    """Press Answer on another thread; return (thread, box holding the response)."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("response", press(client, agent)))
    thread.start()
    return thread, box


def test_a_claim_lost_while_telnyx_was_slow_is_not_transferred(
    app, client, agent, make_agent, ringing, fake_telnyx
):
    bob = make_agent("Bob")
    live = app.extensions["live"]
    fake_telnyx.script("answer", 200, delay=1)
    thread, box = answer_in_background(client, agent)
    fake_telnyx.wait_for_commands(1, action="answer")
    # Meanwhile Alice's claim is given back (as a stale claim would be) and Bob takes the call.
    assert live.release_call(CALLER, agent.id, "went stale")
    assert live.claim_call(CALLER, bob.id, bob.name, "answer", 1).result == "claimed"
    thread.join(10)
    assert box["response"].status_code == 409
    assert box["response"].get_json()["error"]["claimed_by"]["name"] == "Bob"
    assert fake_telnyx.received("transfer") == []


def test_a_claim_lost_to_a_redis_rebuild_mid_answer_is_taken_back(
    app, client, agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 200, delay=1)
    thread, box = answer_in_background(client, agent)
    fake_telnyx.wait_for_commands(1, action="answer")
    # Redis loses everything and is rebuilt from PostgreSQL, which keeps no claims.
    empty_redis(redis_client, redis_prefix)
    redis_client.delete(f"{redis_prefix}live:generation")
    with app.app_context():
        assert ensure_live_state(app.extensions["database"], app.extensions["live"]) == 1
    assert call_hash(redis_client, redis_prefix)["status"] == "ringing"
    thread.join(10)
    assert box["response"].status_code == 200
    assert call_hash(redis_client, redis_prefix)["claimed_by_id"] == agent.id
    assert len(fake_telnyx.received("transfer")) == 1


def test_after_the_cool_down_an_agents_answer_is_the_probe_and_closes_the_breaker(
    client, agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 503, times=5)
    assert press(client, agent).status_code == 502  # four failures
    assert press(client, agent).status_code == 502  # the fifth opens the breaker
    assert press(client, agent).status_code == 503
    # The cool-down has passed (the test plays the clock): the next press is the probe.
    redis_client.hset(f"{redis_prefix}telnyx:breaker", "open_until", 0)
    assert press(client, agent).status_code == 200
    assert redis_client.hget(f"{redis_prefix}telnyx:breaker", "state") is None  # closed
