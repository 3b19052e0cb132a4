"""Real faults against real parts: gunicorn (gevent workers), PostgreSQL, a Redis server of the
test's own (so it can be flushed and killed), and the Telnyx simulator scripted to refuse,
stall and lose webhooks. Each test is one scenario of DESIGN.md invariants 9-11."""

from __future__ import annotations

import os
import signal
import statistics
import time

import pytest
import redis
import requests

from telnyx_flask.embedded import start_redis

from .helpers import wait_until
from .servers import ready_simulator, running_stack
from .sse_client import SseClient

# Short clocks, so that each scenario runs in seconds: backoff, leases, cool-down, silence.
FAST_CLOCKS = {
    "OUTBOX_BACKOFF_SECONDS": "0.2",
    "OUTBOX_MAX_BACKOFF_SECONDS": "1",
    "OUTBOX_LEASE_SECONDS": "3",
    "TELNYX_BREAKER_FAILURES": "5",
    "TELNYX_BREAKER_COOLDOWN_SECONDS": "3",
    "SILENT_ANSWERED_CALL_SECONDS": "10",
    "SILENT_CALL_CHECK_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def own_redis():
    """A Redis server for this module alone: FLUSHDB and SIGKILL touch nobody else's data."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix, own_redis):
    overrides = {**FAST_CLOCKS, "REDIS_URL": own_redis.url}
    with running_stack(database_url, redis_prefix, workers=2, **overrides) as stack:
        yield stack


@pytest.fixture
def sim(stack, clean_storage, own_redis):
    """The simulator, reset; the service's Redis emptied and its live state built again."""
    redis.Redis.from_url(own_redis.url).flushdb()
    assert requests.get(f"{stack[1].url}/readyz", timeout=10).status_code == 200
    return ready_simulator(stack)


@pytest.fixture
def service(stack):
    with requests.Session() as http:
        http.base_url = stack[1].url
        yield http


def refuse(sim, action: str, status: int, *, code: str = "10007", times: int = 1) -> None:
    response = sim.http.post(
        f"{sim.url}/sim/refusals",
        json={"action": action, "status": status, "code": code, "times": times},
        timeout=5,
    )
    response.raise_for_status()


def delay(sim, action: str, seconds: float, times: int = 1) -> None:
    response = sim.http.post(
        f"{sim.url}/sim/delays",
        json={"action": action, "seconds": seconds, "times": times},
        timeout=5,
    )
    response.raise_for_status()


def press(service, call: str, agent, action: str = "answer") -> requests.Response:
    return service.post(
        f"{service.base_url}/api/telnyx/calls/{call}/{action}", headers=agent.headers, timeout=30
    )


def pending(service, agent) -> list[dict]:
    response = service.get(
        f"{service.base_url}/api/telnyx/calls/pending", headers=agent.headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["calls"]


def log_row(db_rows, call: str) -> dict | None:
    rows = db_rows(
        "SELECT outcome, end_reason, recording_url FROM call_logs WHERE call_sid = %s", (call,)
    )
    return rows[0] if rows else None


def test_record_start_refused_five_times_then_accepted_is_recorded(sim, service, agent, db_rows):
    refuse(sim, "record_start", 500, times=5)
    call = sim.call()
    sim.wait_delivered()
    answered_at = time.monotonic()
    assert press(service, call, agent).status_code == 200
    commands = sim.commands("record_start", call, wait_for=6, timeout=30)
    took = time.monotonic() - answered_at
    assert [c["status"] for c in commands] == [500] * 5 + [200]
    assert len({c["body"]["command_id"] for c in commands}) == 1
    print(f"\nrecording started {took:.1f} s after Answer, on attempt 6 (5 refused with 500)")
    sim.caller_hangs_up(call)
    sim.wait_delivered()
    row = wait_until(lambda: log_row(db_rows, call), 10, "the call's log row")
    # call.recording.saved landed on the call's record.
    assert row["outcome"] == "answered"
    assert row["recording_url"].startswith(sim.url)


def test_flushed_redis_is_rebuilt_and_the_call_rings_again_and_can_be_answered(
    sim, service, agent, stack, own_redis
):
    call = sim.call()
    sim.wait_delivered()
    [before] = pending(service, agent)
    page = SseClient(
        f"{stack[1].url}/api/telnyx/events", {"Authorization": agent.headers["Authorization"]}
    )
    try:
        assert page.next_event().event == "snapshot"
        last_seen = page.last_event_id

        redis.Redis.from_url(own_redis.url).flushdb()
        flushed_at = time.monotonic()
        [after] = wait_until(lambda: pending(service, agent), 10, "the call ringing again")
        took = time.monotonic() - flushed_at
        print(f"\nafter FLUSHDB the call was ringing again in {took:.2f} s")
        assert after["call_control_id"] == call
        # The ring timeout still counts from when the call first arrived.
        assert after["ringing_since"] == before["ringing_since"]

        # The open page is told to start again from a snapshot that has the call.
        assert page.next_event(within=10).event == "reset"
        snapshot = page.next_event()
        assert snapshot.event == "snapshot"
        assert [c["call_control_id"] for c in snapshot.json["calls"]] == [call]
    finally:
        page.close()

    # A page that reconnects from before the flush gets the call too.
    again = SseClient(
        f"{stack[1].url}/api/telnyx/events",
        {"Authorization": agent.headers["Authorization"], "Last-Event-ID": last_seen},
    )
    try:
        frames = [again.next_event(), again.next_event()]
        assert [f.event for f in frames] == ["reset", "snapshot"]
        assert [c["call_control_id"] for c in frames[1].json["calls"]] == [call]
    finally:
        again.close()
    assert press(service, call, agent).status_code == 200


def test_telnyx_down_25_presses_send_few_commands_and_the_open_breaker_answers_at_once(
    sim, service, agent, stack
):
    refuse(sim, "answer", 503, times=100)
    call = sim.call()
    sim.wait_delivered()
    statuses, open_times = [], []
    for _ in range(25):
        started = time.monotonic()
        response = press(service, call, agent)
        elapsed = time.monotonic() - started
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "telnyx_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            open_times.append(elapsed)
    sent = len(sim.commands("answer", call))
    median_ms = statistics.median(open_times) * 1000
    print(
        f"\n25 presses with Telnyx answering 503: {sent} commands sent; "
        f"{len(open_times)} answered by the open breaker, median {median_ms:.1f} ms "
        f"(max {max(open_times) * 1000:.1f} ms)"
    )
    assert sent <= 12
    assert statuses.count(503) >= 20
    ready = requests.get(f"{stack[1].url}/readyz", timeout=5).json()
    assert ready["status"] == "ready"  # Telnyx down must not take the service out of rotation
    assert ready["detail"]["telnyx_circuit"] in ("open", "half_open")


def test_metrics_show_the_outbox_and_the_breaker(sim, service, agent, stack):
    text = requests.get(f"{stack[1].url}/metrics", timeout=5).text
    assert "telnyx_flask_outbox_depth 0.0" in text
    assert 'telnyx_flask_telnyx_circuit_state{state="closed"} 1.0' in text


@pytest.fixture
def short_ring_stack(database_url, redis_prefix, clean_storage, own_redis):
    redis.Redis.from_url(own_redis.url).flushdb()
    overrides = {
        **FAST_CLOCKS,
        "REDIS_URL": own_redis.url,
        "RING_TIMEOUT_SECONDS": "5",
        "CLAIM_LEASE_SECONDS": "10",
    }
    with running_stack(database_url, redis_prefix, workers=2, **overrides) as stack:
        yield stack


def test_a_call_telnyx_says_is_over_never_rings_again(short_ring_stack, agent, db_rows):
    """Every reject answered 422/90018 (the hangup was lost): the call is ended and logged, and
    no page rings again when the claim would have gone stale."""
    simulator, server = short_ring_stack
    refuse(simulator, "reject", 422, code="90018", times=100)
    call = simulator.call()
    row = wait_until(lambda: log_row(db_rows, call), 20, "the call's log row")
    assert (row["outcome"], row["end_reason"]) == ("missed", "ended_at_telnyx")
    page = SseClient(
        f"{server.url}/api/telnyx/events", {"Authorization": agent.headers["Authorization"]}
    )
    try:
        assert page.next_event().json["calls"] == []
        # Watch past a claim lease and a ring timeout: the old ghost re-rang after the lease.
        watch_until = time.monotonic() + 10 + 6
        while (remaining := watch_until - time.monotonic()) > 0:
            try:
                frame = page.next_event(within=remaining)
            except (TimeoutError, OSError):
                break
            assert frame.event not in ("call.ringing", "call.released"), frame
    finally:
        page.close()
    assert len(simulator.commands("reject", call)) == 1
    with requests.Session() as http:
        calls = http.get(
            f"{server.url}/api/telnyx/calls/pending", headers=agent.headers, timeout=5
        ).json()["calls"]
    assert calls == []


def kill_workers(server) -> list[int]:
    victims = server.worker_pids()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return victims


def test_workers_killed_while_sending_record_start_another_worker_sends_it(
    sim, service, agent, stack, db_rows
):
    """The worker acknowledged call.answered (record_start owed) and was sending it when it was
    SIGKILLed; Telnyx never took that attempt. A new worker sends it when the lease runs out."""
    server = stack[1]
    delay(sim, "record_start", 2)  # long enough to kill the sender mid-request...
    refuse(sim, "record_start", 503)  # ...and that attempt never takes effect at Telnyx
    call = sim.call()
    sim.wait_delivered()
    assert press(service, call, agent).status_code == 200
    wait_until(
        lambda: db_rows(
            "SELECT 1 FROM telnyx_outbox WHERE call_control_id = %s AND attempts >= 1", (call,)
        ),
        10,
        "a worker sending record_start",
    )
    victims = kill_workers(server)
    killed_at = time.monotonic()
    commands = sim.commands("record_start", call, wait_for=2, timeout=30)
    took = time.monotonic() - killed_at
    assert sorted(c["status"] for c in commands) == [200, 503]
    print(f"\nrecording started {took:.1f} s after the sending workers were SIGKILLed")
    # Telnyx has taken it; the worker writes down what came of it just after.
    [row] = wait_until(
        lambda: db_rows(
            "SELECT outcome, attempts FROM telnyx_outbox"
            " WHERE call_control_id = %s AND done_at IS NOT NULL",
            (call,),
        ),
        10,
        "the outbox row finished",
    )
    assert row == {"outcome": "sent", "attempts": 2}
    assert not set(server.worker_pids()) & set(victims)
    sim.caller_hangs_up(call)
    sim.wait_delivered()
    assert wait_until(lambda: log_row(db_rows, call), 10, "the log row")["recording_url"]
    server.wait_ready()


def test_telnyx_taking_40_s_to_answer_costs_the_agent_under_10_s_and_no_one_else_takes_it(
    sim, service, agent, make_agent, db_rows
):
    delay(sim, "answer", 40)
    call = sim.call()
    sim.wait_delivered()
    started = time.monotonic()
    response = press(service, call, agent)
    elapsed = time.monotonic() - started
    print(f"\nAnswer against a 40 s Telnyx answered {response.status_code} in {elapsed:.1f} s")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "telnyx_timeout"
    assert elapsed < 10
    bob = press(service, call, make_agent("Bob"))
    assert bob.status_code == 409
    assert bob.json()["error"]["claimed_by"]["id"] == agent.id
    # Telnyx acts on the answer at last: the caller is answered, the call is still Alice's.
    wait_until(
        lambda: db_rows(
            "SELECT 1 FROM inbound_calls WHERE call_control_id = %s AND status = 'answered'",
            (call,),
        ),
        60,
        "Telnyx's late answer",
    )
    assert sim.commands("transfer", call) == []
    # Alice presses again: only the transfer goes, once.
    assert press(service, call, agent).status_code == 200
    assert len(sim.commands("transfer", call)) == 1
    assert len([c for c in sim.commands("answer", call) if not c["duplicate"]]) == 1


def test_an_answered_call_whose_hangup_was_lost_is_ended_after_the_silence(
    sim, service, agent, db_rows
):
    call = sim.call()
    sim.wait_delivered()
    assert press(service, call, agent).status_code == 200
    sim.commands("record_start", call, wait_for=1)
    sim.wait_delivered()
    response = sim.http.post(
        f"{sim.url}/sim/calls/{call}/hangup", json={"deliver": False}, timeout=5
    )
    response.raise_for_status()
    lost_at = time.monotonic()
    row = wait_until(lambda: log_row(db_rows, call), 40, "the call ended by the silence check")
    took = time.monotonic() - lost_at
    print(f"\nthe call whose hangup was lost was ended {took:.1f} s later (bound: 10 s)")
    assert (row["outcome"], row["end_reason"]) == ("answered", "not_alive_at_telnyx")


def test_readyz_warns_when_redis_may_evict_live_calls(stack, own_redis):
    server = redis.Redis.from_url(own_redis.url)
    ready = requests.get(f"{stack[1].url}/readyz", timeout=5).json()
    assert ready["detail"]["redis_eviction_policy"] == "noeviction"
    assert "warning" not in ready["detail"]
    server.config_set("maxmemory-policy", "volatile-lru")
    try:
        ready = requests.get(f"{stack[1].url}/readyz", timeout=5).json()
    finally:
        server.config_set("maxmemory-policy", "noeviction")
    assert ready["status"] == "ready"
    assert ready["detail"]["redis_eviction_policy"] == "volatile-lru"
    assert "can evict live calls" in ready["detail"]["warning"]
