"""Commands owed to Telnyx are written with the event that owes them and delivered until done."""

from __future__ import annotations

import pytest

from telnyx_flask.outbox import MOOT, REFUSED, RETRY, SENT

from .helpers import answered_call_events

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def settings(settings):
    """A breaker that stays out of the way of these five-failure scenarios (it has its own)."""
    settings["TELNYX_BREAKER_FAILURES"] = "10"
    return settings


def outbox_rows(db_rows):
    return db_rows(
        "SELECT call_control_id, action, attempts, outcome, command_id, last_error,"
        " done_at IS NOT NULL AS done FROM telnyx_outbox ORDER BY id"
    )


def make_due(db_rows) -> None:
    """Skip the backoff: the test plays the clock, the delivery code is unchanged."""
    db_rows("UPDATE telnyx_outbox SET next_attempt_at = now() RETURNING id")


def answer_the_call(post_webhook) -> None:
    initiated, _leg_b, answered, *_ = answered_call_events()
    assert post_webhook(initiated).status_code == 200
    assert post_webhook(answered).status_code == 200


def test_record_start_is_owed_before_the_answered_webhook_is_acknowledged(
    app, post_webhook, fake_telnyx, db_rows
):
    answer_the_call(post_webhook)
    # Nothing was sent on the request path, and yet it is already written down.
    assert fake_telnyx.received() == []
    [row] = outbox_rows(db_rows)
    assert (row["call_control_id"], row["action"], row["done"]) == (CALLER, "record_start", False)

    assert app.extensions["outbox"].deliver_due() == [SENT]
    [command] = fake_telnyx.received("record_start")
    [row] = outbox_rows(db_rows)
    assert (row["outcome"], row["attempts"]) == ("sent", 1)
    # The id the command carried is the one kept: every retry, from any worker, is one command.
    assert row["command_id"] == command.body["command_id"]


def test_a_retried_answered_webhook_owes_nothing_new(app, post_webhook, fake_telnyx, db_rows):
    answer_the_call(post_webhook)
    _initiated, _leg_b, answered, *_ = answered_call_events()
    answered["meta"]["attempt"] = 2
    assert post_webhook(answered).get_json()["result"] == "duplicate"
    app.extensions["outbox"].deliver_due()
    assert len(outbox_rows(db_rows)) == 1
    assert len(fake_telnyx.received("record_start")) == 1


def test_telnyx_failing_five_times_delays_the_recording_but_never_drops_it(
    app, post_webhook, fake_telnyx, db_rows
):
    fake_telnyx.script("record_start", 500, times=5)
    answer_the_call(post_webhook)
    outbox = app.extensions["outbox"]
    outcomes = []
    for _ in range(6):
        outcomes += outbox.deliver_due()
        make_due(db_rows)
    assert outcomes == [RETRY] * 5 + [SENT]
    [row] = outbox_rows(db_rows)
    assert (row["outcome"], row["attempts"]) == ("sent", 6)
    assert "HTTP 500" in row["last_error"]
    # One logical command: every attempt carried the same command_id.
    assert len({c.body["command_id"] for c in fake_telnyx.received("record_start")}) == 1


def test_backoff_doubles_with_jitter_up_to_the_cap(app):
    outbox = app.extensions["outbox"]
    base, cap = outbox.settings.backoff_seconds, outbox.settings.max_backoff_seconds
    for attempts in (1, 2, 3, 4):
        ceiling = min(cap, base * 2 ** (attempts - 1))
        delays = {outbox.backoff(attempts) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert outbox.backoff(40) <= cap


def test_a_failed_attempt_is_not_due_again_until_its_backoff(
    app, post_webhook, fake_telnyx, db_rows
):
    fake_telnyx.script("record_start", 503)
    answer_the_call(post_webhook)
    outbox = app.extensions["outbox"]
    assert outbox.deliver_due() == [RETRY]
    assert outbox.deliver_due() == []  # not yet due: another worker would skip it too
    [due] = db_rows("SELECT next_attempt_at > now() AS later FROM telnyx_outbox")
    assert due["later"] is True


def test_a_command_for_a_call_that_ended_is_given_up_as_moot(
    app, post_webhook, fake_telnyx, db_rows
):
    initiated, _leg_b, answered, _bridged, hangup, _recording = answered_call_events()
    for body in (initiated, answered, hangup):
        post_webhook(body)
    assert app.extensions["outbox"].deliver_due() == [MOOT]
    assert fake_telnyx.received() == []
    assert outbox_rows(db_rows)[0]["outcome"] == "moot"


def test_90018_gives_the_command_up_and_ends_the_call(
    app, post_webhook, fake_telnyx, db_rows, redis_client, redis_prefix
):
    fake_telnyx.script("record_start", 422)  # 90018: the call has already ended
    answer_the_call(post_webhook)
    assert app.extensions["outbox"].deliver_due() == [MOOT]
    [call] = db_rows("SELECT status, end_inferred, hangup_cause FROM inbound_calls")
    assert call == {"status": "ended", "end_inferred": True, "hangup_cause": "ended_at_telnyx"}
    [log] = db_rows("SELECT outcome, end_reason FROM call_logs")
    assert log == {"outcome": "answered", "end_reason": "ended_at_telnyx"}
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ended"


def test_a_lasting_refusal_is_recorded_and_not_retried(app, post_webhook, fake_telnyx, db_rows):
    fake_telnyx.script(
        "record_start", 422, body={"errors": [{"code": "90055", "title": "Already recording"}]}
    )
    answer_the_call(post_webhook)
    assert app.extensions["outbox"].deliver_due() == [REFUSED]
    make_due(db_rows)
    assert app.extensions["outbox"].deliver_due() == []
    assert outbox_rows(db_rows)[0]["outcome"] == "refused"


def test_while_the_breaker_is_open_the_outbox_waits_without_spending_attempts(
    app, post_webhook, fake_telnyx, db_rows
):
    breaker = app.extensions["telnyx"].breaker
    for _ in range(breaker.settings.failure_threshold):
        breaker.record_failure()
    answer_the_call(post_webhook)
    assert app.extensions["outbox"].deliver_due() == [RETRY]
    assert fake_telnyx.received() == []
    [row] = outbox_rows(db_rows)
    assert row["attempts"] == 0
    assert "circuit breaker is open" in row["last_error"]
    [wait] = db_rows(
        "SELECT EXTRACT(EPOCH FROM next_attempt_at - now()) AS seconds FROM telnyx_outbox"
    )
    assert 20 < wait["seconds"] <= breaker.settings.cooldown_seconds + 1
