"""Ended means ended: a call Telnyx says is over never rings again and is logged with an
outcome, whether the hangup webhook came or not (invariant 10)."""

from __future__ import annotations

import pytest

from telnyx_flask.ring_timeout import RingTimeouts

from .helpers import answered_call_events, load_fixture

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def ringing(post_webhook):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


def pending(client, agent) -> list[str]:
    calls = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"]
    return [call["call_control_id"] for call in calls]


def log_row(db_rows):
    [row] = db_rows("SELECT outcome, end_reason, hangup_source, duration FROM call_logs")
    return row


def test_a_ring_timeout_reject_answered_90018_ends_the_call_for_good(
    app, client, agent, ringing, fake_telnyx, db_rows, redis_client, redis_prefix
):
    """The lost-hangup ghost: Telnyx answers every reject with 90018. Before, the claim went
    stale after 60 s and every page rang again, once a minute, for 12 hours."""
    fake_telnyx.script("reject", 422, times=100)  # 90018: call already ended
    sweeper = RingTimeouts(app.extensions["live"], app.extensions["outbox"], timeout_seconds=30)
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    for seconds in range(31, 81):  # a sweep a second, for the 80 s after the ring timeout
        sweeper.sweep(now=started_ms + seconds * 1000)
        assert pending(client, agent) == []
    assert len(fake_telnyx.received("reject")) == 1
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ended"
    assert log_row(db_rows) == {
        "outcome": "missed",
        "end_reason": "ended_at_telnyx",
        "hangup_source": "unknown",
        "duration": 0,
    }
    # The pages were told.
    events = [f["event"] for _, f in redis_client.xrange(f"{redis_prefix}events")]
    assert events[-1] == "call.ended"


def test_answering_a_call_telnyx_says_is_over_ends_it_instead_of_ringing_again(
    client, agent, ringing, fake_telnyx, db_rows, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 422)  # 90018
    response = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert response.status_code == 404
    assert pending(client, agent) == []
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ended"
    assert log_row(db_rows)["outcome"] == "abandoned"


def test_a_late_real_hangup_replaces_the_inferred_end(
    client, agent, ringing, fake_telnyx, post_webhook, db_rows
):
    fake_telnyx.script("answer", 422)
    client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    hangup = load_fixture("12_missed.call.hangup.json")
    hangup["data"]["payload"].update(
        call_control_id=CALLER,
        call_session_id=load_fixture("01_call.initiated.json")["data"]["payload"][
            "call_session_id"
        ],
        call_leg_id=load_fixture("01_call.initiated.json")["data"]["payload"]["call_leg_id"],
    )
    assert post_webhook(hangup).status_code == 200
    row = log_row(db_rows)
    assert row["end_reason"] == hangup["data"]["payload"]["hangup_cause"]
    [call] = db_rows("SELECT end_inferred FROM inbound_calls")
    assert call["end_inferred"] is False


def test_hanging_up_a_call_telnyx_says_is_over_is_200_and_ends_it(
    client, agent, post_webhook, fake_telnyx, db_rows, redis_client, redis_prefix
):
    initiated, _leg_b, answered, *_ = answered_call_events()
    post_webhook(initiated)
    assert (
        client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers).status_code == 200
    )
    post_webhook(answered)
    fake_telnyx.script("hangup", 422)
    response = client.post(f"/api/telnyx/calls/{CALLER}/end", headers=agent.headers)
    assert response.get_json()["already_ended"] is True
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ended"
    assert log_row(db_rows)["outcome"] == "answered"


def make_silent(db_rows, hours: float) -> None:
    db_rows(
        "UPDATE inbound_calls SET last_webhook_at = now() - make_interval(secs => %s) RETURNING id",
        (hours * 3600,),
    )


def answered_call(post_webhook) -> None:
    initiated, _leg_b, answered, *_ = answered_call_events()
    post_webhook(initiated)
    post_webhook(answered)


def test_a_silent_answered_call_that_telnyx_says_is_not_alive_is_ended(
    app, post_webhook, fake_telnyx, db_rows, redis_client, redis_prefix
):
    answered_call(post_webhook)
    silent = app.extensions["silent_calls"]
    make_silent(db_rows, 3.9)
    assert silent.check() == []  # within the 4 h bound: nobody asks Telnyx
    assert fake_telnyx.received("status") == []

    make_silent(db_rows, 4.1)
    fake_telnyx.script("status", 200, body={"data": {"is_alive": False, "call_duration": 900}})
    assert silent.check() == [CALLER]
    [lookup] = fake_telnyx.received("status")
    assert lookup.call_control_id == CALLER
    row = log_row(db_rows)
    assert (row["outcome"], row["end_reason"]) == ("answered", "not_alive_at_telnyx")
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ended"


def test_a_silent_call_that_is_still_alive_is_left_and_not_asked_about_again_at_once(
    app, post_webhook, fake_telnyx, db_rows
):
    answered_call(post_webhook)
    make_silent(db_rows, 5)
    silent = app.extensions["silent_calls"]
    assert silent.check() == []  # the fake says is_alive: true
    assert silent.check() == []
    assert len(fake_telnyx.received("status")) == 1
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "answered"}]


def test_a_silent_ringing_call_unknown_to_telnyx_is_ended_as_missed(
    app, ringing, fake_telnyx, db_rows, client, agent
):
    make_silent(db_rows, 1)  # ring timeout (30 s) + 2 min is long past
    fake_telnyx.script("status", 404)
    assert app.extensions["silent_calls"].check() == [CALLER]
    assert log_row(db_rows)["outcome"] == "missed"
    assert pending(client, agent) == []


def test_a_status_lookup_that_fails_leaves_the_call_alone(app, ringing, fake_telnyx, db_rows):
    make_silent(db_rows, 1)
    fake_telnyx.script("status", 500, times=10)
    assert app.extensions["silent_calls"].check() == []
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "ringing"}]


def test_orphaned_ringing_entries_are_dropped_and_do_not_block_ring_timeouts(
    app, ringing, fake_telnyx, redis_client, redis_prefix
):
    """Fifty members of the ringing set whose hashes are gone used to be swept (and skipped)
    first, forever, so no real call ever timed out again."""
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    redis_client.zadd(
        f"{redis_prefix}calls:ringing", {f"v3:orphan-{i}": started_ms - 1000 - i for i in range(50)}
    )
    sweeper = RingTimeouts(app.extensions["live"], app.extensions["outbox"], timeout_seconds=30)
    later = started_ms + 31_000
    assert sweeper.sweep(now=later) == []  # the fifty orphans came first, and are dropped
    assert redis_client.zrange(f"{redis_prefix}calls:ringing", 0, -1) == [CALLER]
    assert sweeper.sweep(now=later + 1000) == [CALLER]
