"""Whole calls through simulator -> gunicorn (gevent workers) -> simulator, with real stores."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .servers import ready_simulator, running_stack


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    """Four gevent workers and the simulator, shared by this module's tests."""
    # A long ring timeout: the race test keeps 100 calls ringing for a while on a slow machine;
    # and 20 agents each press Answer 100 times in well under a minute, far past the per-agent
    # limit meant for people.
    with running_stack(
        database_url,
        redis_prefix,
        workers=4,
        RING_TIMEOUT_SECONDS="600",
        AGENT_ACTIONS_PER_MINUTE="100000",
    ) as stack:
        yield stack


@pytest.fixture
def sim(stack, clean_storage):
    return ready_simulator(stack)


@pytest.fixture
def service(stack, clean_storage):
    """A requests session against the service, and its base URL."""
    with requests.Session() as http:
        http.base_url = stack[1].url
        yield http


def post(service, path, agent, **kwargs):
    return service.post(f"{service.base_url}{path}", headers=agent.headers, timeout=30, **kwargs)


def pending(service, agent) -> list[str]:
    response = service.get(
        f"{service.base_url}/api/telnyx/calls/pending", headers=agent.headers, timeout=10
    )
    return [call["call_control_id"] for call in response.json()["calls"]]


def log_row(db_rows, call_control_id):
    rows = db_rows(
        "SELECT outcome, duration, end_reason, hangup_source, answered_by::text, recording_url"
        " FROM call_logs WHERE call_sid = %s",
        (call_control_id,),
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_answered_recorded_call_hung_up_by_the_agent(sim, service, agent, db_rows):
    call = sim.call()
    sim.wait_delivered()
    assert pending(service, agent) == [call]

    answered = post(service, f"/api/telnyx/calls/{call}/answer", agent)
    assert answered.status_code == 200, answered.text
    sim.commands("record_start", call, wait_for=1)
    sim.wait_delivered()
    assert pending(service, agent) == []

    ended = post(service, f"/api/telnyx/calls/{call}/end", agent)
    assert ended.json()["already_ended"] is False
    sim.wait_delivered()

    log = log_row(db_rows, call)
    assert log["outcome"] == "answered"
    assert log["answered_by"] == agent.id
    assert log["end_reason"] == "normal_clearing"
    assert log["recording_url"].startswith(sim.url)
    assert requests.get(log["recording_url"], timeout=5).status_code == 200
    actions = [c["action"] for c in sim.commands(call_control_id=call)]
    # record_start follows the call.answered webhook, so it may overtake the transfer.
    assert [a for a in actions if a != "record_start"] == ["answer", "transfer", "hangup"]
    assert actions.count("record_start") == 1
    assert actions.index("record_start") > actions.index("answer")


def test_caller_hangs_up_during_the_call(sim, service, agent, db_rows):
    call = sim.call()
    sim.wait_delivered()
    post(service, f"/api/telnyx/calls/{call}/answer", agent)
    sim.commands("record_start", call, wait_for=1)
    sim.wait_delivered()
    sim.caller_hangs_up(call)
    sim.wait_delivered()
    log = log_row(db_rows, call)
    assert (log["outcome"], log["hangup_source"]) == ("answered", "caller")
    assert log["recording_url"]
    # The agent presses Hang up afterwards: nothing to do, and not an error.
    assert post(service, f"/api/telnyx/calls/{call}/end", agent).json()["already_ended"] is True


def test_caller_abandons_while_ringing(sim, service, agent, db_rows):
    call = sim.call()
    sim.wait_delivered()
    sim.caller_hangs_up(call)
    sim.wait_delivered()
    assert pending(service, agent) == []
    log = log_row(db_rows, call)
    assert (log["outcome"], log["end_reason"], log["duration"]) == (
        "abandoned",
        "originator_cancel",
        0,
    )


def test_declined_call(sim, service, agent, db_rows):
    call = sim.call()
    sim.wait_delivered()
    response = post(
        service, f"/api/telnyx/calls/{call}/decline", agent, json={"cause": "USER_BUSY"}
    )
    assert response.status_code == 200, response.text
    sim.wait_delivered()
    log = log_row(db_rows, call)
    assert (log["outcome"], log["end_reason"]) == ("declined", "user_busy")


def test_failed_transfer_gives_the_call_back(sim, service, agent, make_agent, db_rows):
    sim.http.post(f"{sim.url}/sim/transfer-behaviour", json={"mode": "busy"}, timeout=5)
    call = sim.call()
    sim.wait_delivered()
    assert post(service, f"/api/telnyx/calls/{call}/answer", agent).status_code == 200
    sim.wait_delivered()
    # The agent's phone was busy: leg B hung up, the caller is still connected and answered.
    rows = db_rows(
        "SELECT status, transfer_call_control_id IS NOT NULL AS tried"
        " FROM inbound_calls WHERE call_control_id = %s",
        (call,),
    )
    assert rows == [{"status": "answered", "tried": True}]
    assert db_rows("SELECT * FROM call_logs") == []


def test_duplicated_and_reordered_delivery_gives_the_same_record(sim, service, agent, db_rows):
    sim.http.post(f"{sim.url}/sim/delivery", json={"duplicate": True, "reorder": True}, timeout=5)
    call = sim.call()
    sim.wait_delivered()
    sim.caller_hangs_up(call)
    sim.wait_delivered()
    log = log_row(db_rows, call)
    assert log["outcome"] == "abandoned"
    assert db_rows("SELECT count(*) AS n FROM inbound_calls") == [{"n": 1}]


def test_twenty_agents_race_for_each_of_100_calls_and_one_wins(sim, service, make_agent, db_rows):
    agents = [make_agent(f"Racer {n}") for n in range(20)]
    calls = [sim.call(from_=f"+1312555{n:04d}") for n in range(100)]
    sim.wait_delivered(timeout=60)
    assert sorted(pending(service, agents[0])) == sorted(calls)

    def press_answer(call, agent, start):
        start.wait()
        with requests.Session() as http:
            return agent, http.post(
                f"{service.base_url}/api/telnyx/calls/{call}/answer",
                headers=agent.headers,
                timeout=60,
            )

    with ThreadPoolExecutor(20) as pool:
        for call in calls:
            start = threading.Barrier(20)
            presses = [pool.submit(press_answer, call, agent, start) for agent in agents]
            results = [press.result() for press in presses]
            winners = [agent for agent, response in results if response.status_code == 200]
            assert len(winners) == 1, [r.status_code for _, r in results]
            [winner] = winners
            losers = [response for _, response in results if response.status_code != 200]
            assert [r.status_code for r in losers] == [409] * 19
            assert all(
                r.json()["error"]["claimed_by"] == {"id": winner.id, "name": winner.name}
                for r in losers
            )

    for call in calls:
        assert len(sim.commands("transfer", call)) == 1
        assert len(sim.commands("answer", call)) == 1
    sim.wait_delivered(timeout=60)
    answered_by = db_rows(
        "SELECT count(DISTINCT call_control_id) AS n FROM inbound_calls"
        " WHERE answered_by IS NOT NULL"
    )
    assert answered_by == [{"n": 100}]


def test_ring_timeout_rejects_an_untaken_call_once(
    database_url, redis_prefix, clean_storage, make_agent, db_rows
):
    with running_stack(database_url, redis_prefix, workers=3, RING_TIMEOUT_SECONDS="5") as stack:
        simulator = stack[0]
        call = simulator.call()
        [reject] = simulator.commands("reject", call, wait_for=1, timeout=30)
        assert reject["body"]["cause"] == "USER_BUSY"
        simulator.wait_delivered()
        log = log_row(db_rows, call)
        assert (log["outcome"], log["end_reason"]) == ("missed", "user_busy")
        # Three workers swept; still exactly one reject.
        assert len(simulator.commands("reject", call)) == 1
