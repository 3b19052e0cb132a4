"""Voicemail for calls nobody takes, through the API and the fake Telnyx: the ring timeout answers
for voicemail, the greeting, the recording with a beep, record_stop and the hangup at the limit
follow from webhooks through the outbox; the outcome, the heard mark and the unheard count."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telnyx_flask import create_app
from telnyx_flask.outbox import VOICEMAIL_MARK
from telnyx_flask.telnyx_api import command_id_for

from .fake_telnyx import FakeTelnyx
from .helpers import answered_call_events, close_app, encode, load_fixture, renamed, signed_headers

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
MAX_SECONDS = 30
GREETING_URL = "https://greetings.example.test/voicemail.mp3"


@pytest.fixture
def settings(settings):
    """Voicemail on (the test helpers turn it off for everyone else), 30 s messages."""
    settings.update(VOICEMAIL="true", VOICEMAIL_MAX_SECONDS=str(MAX_SECONDS))
    return settings


@pytest.fixture
def ringing(post_webhook):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


@contextmanager
def app_with(settings, **overrides):
    """An app with these settings changed, for the tests that need other than the module's."""
    app = create_app({**settings, **overrides})
    try:
        yield app
    finally:
        close_app(app)


def post_to(app, body):
    """post_webhook for an app of app_with."""
    raw = encode(body)
    headers = {"Content-Type": "application/json", **signed_headers(raw)}
    return app.test_client().post("/api/telnyx/webhook", data=raw, headers=headers)


def stream(redis_client, redis_prefix):
    return [
        (f["event"], json.loads(f["data"])) for _, f in redis_client.xrange(f"{redis_prefix}events")
    ]


def time_out(app, redis_client, redis_prefix):
    """The ring timeout's sweep once the call has rung past RING_TIMEOUT_SECONDS."""
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    timeout_ms = app.config["RING_TIMEOUT_SECONDS"] * 1000
    return app.extensions["ring_timeouts"].sweep(now=started_ms + timeout_ms + 1_000)


def deliver(app):
    return app.extensions["outbox"].deliver_due()


def owed(db_rows):
    """What the outbox still owes: action -> seconds until it is due."""
    rows = db_rows(
        "SELECT action, EXTRACT(EPOCH FROM next_attempt_at - now())::float AS due_in"
        " FROM telnyx_outbox WHERE done_at IS NULL"
    )
    return {row["action"]: row["due_in"] for row in rows}


def play_the_clock(db_rows, action):
    """The test plays the clock: the command owed for later is due now."""
    db_rows(
        "UPDATE telnyx_outbox SET next_attempt_at = now() WHERE action = %s RETURNING id", (action,)
    )


def sent(fake_telnyx: FakeTelnyx):
    return [command.action for command in fake_telnyx.received()]


def caller_hangs_up(post_webhook, event_id="hangup"):
    hangup = load_fixture("05_call.hangup.json")
    hangup["data"]["id"] += event_id
    hangup["data"]["payload"].update(hangup_cause="normal_clearing", hangup_source="caller")
    assert post_webhook(hangup).status_code == 200


def recording_saved(post_webhook):
    saved = load_fixture("06_call.recording.saved.json")
    saved["data"]["payload"]["channels"] = "single"
    assert post_webhook(saved).status_code == 200


def leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows):
    """The whole voicemail, from the ring timeout to the saved message."""
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    assert time_out(app, redis_client, redis_prefix) == [CALLER]
    assert post_webhook(load_fixture("03_call.answered.json")).status_code == 200
    assert deliver(app) == ["sent"]
    assert post_webhook(load_fixture("30_call.speak.ended.json")).status_code == 200
    assert deliver(app) == ["sent"]
    caller_hangs_up(post_webhook)
    recording_saved(post_webhook)


def test_a_call_nobody_takes_is_answered_for_voicemail_not_rejected(
    app, ringing, fake_telnyx, db_rows, redis_client, redis_prefix
):
    assert time_out(app, redis_client, redis_prefix) == [CALLER]
    assert sent(fake_telnyx) == ["answer"]
    # Its own command_id: never taken for an agent's answer of the same call.
    answer = fake_telnyx.received("answer")[0].body
    assert answer["command_id"] == command_id_for("answer", CALLER, VOICEMAIL_MARK)
    assert answer["command_id"] != command_id_for("answer", CALLER)
    [call] = db_rows("SELECT voicemail_at, voicemail_plan FROM inbound_calls")
    assert call["voicemail_at"] is not None
    assert call["voicemail_plan"]["greeting"]["action"] == "speak"
    # The pages see the call go to voicemail, not to an agent.
    assert stream(redis_client, redis_prefix)[-1] == (
        "call.claimed",
        {
            "call_control_id": CALLER,
            "agent": {"id": "ring-timeout", "name": "Voicemail"},
            "action": "voicemail",
        },
    )


def test_the_greeting_is_spoken_once_the_caller_is_answered_instead_of_recording_the_call(
    app, ringing, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    time_out(app, redis_client, redis_prefix)
    assert post_webhook(load_fixture("03_call.answered.json")).status_code == 200
    assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "speak"]  # RECORD_CALLS's record_start is not owed
    speak = fake_telnyx.received("speak")[0].body
    assert {key: speak[key] for key in ("payload", "voice", "language", "payload_type")} == {
        "payload": app.config["VOICEMAIL_GREETING"],
        "voice": "female",
        "language": "en-US",
        "payload_type": "text",
    }
    assert speak["command_id"] == command_id_for("speak", CALLER)
    # Should the greeting never end, the caller is still hung up on, after the longest
    # greeting and message.
    assert set(owed(db_rows)) == {"hangup"}
    assert 60 + MAX_SECONDS < owed(db_rows)["hangup"] <= 60 + MAX_SECONDS + 3


def test_the_message_is_recorded_with_a_beep_after_the_greeting_and_ended_at_the_limit(
    app, ringing, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    time_out(app, redis_client, redis_prefix)
    post_webhook(load_fixture("03_call.answered.json"))
    deliver(app)
    assert post_webhook(load_fixture("30_call.speak.ended.json")).status_code == 200
    assert deliver(app) == ["sent"]
    record = fake_telnyx.received("record_start")[0].body
    assert {key: record[key] for key in ("format", "channels", "play_beep", "max_length")} == {
        "format": "mp3",
        "channels": "single",
        "play_beep": True,
        "max_length": MAX_SECONDS + 2,  # Telnyx's own limit, should record_stop be late
    }
    due = owed(db_rows)
    assert set(due) == {"record_stop", "hangup"}
    assert MAX_SECONDS - 2 < due["record_stop"] <= MAX_SECONDS
    assert due["record_stop"] < due["hangup"] <= MAX_SECONDS + 3
    assert deliver(app) == []  # nothing is due before the limit

    play_the_clock(db_rows, "record_stop")
    assert deliver(app) == ["sent"]
    play_the_clock(db_rows, "hangup")
    assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "speak", "record_start", "record_stop", "hangup"]
    assert fake_telnyx.received("hangup")[0].body["command_id"] == command_id_for(
        "hangup", CALLER, VOICEMAIL_MARK
    )


def test_a_configured_greeting_url_is_played_and_its_end_starts_the_recording(
    settings, fake_telnyx, redis_client, redis_prefix
):
    with app_with(settings, VOICEMAIL_GREETING_URL=GREETING_URL) as app:
        post_to(app, load_fixture("01_call.initiated.json"))
        time_out(app, redis_client, redis_prefix)
        post_to(app, load_fixture("03_call.answered.json"))
        assert deliver(app) == ["sent"]
        assert fake_telnyx.received("playback_start")[0].body["audio_url"] == GREETING_URL
        assert fake_telnyx.received("speak") == []
        assert post_to(app, load_fixture("31_call.playback.ended.json")).status_code == 200
        assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "playback_start", "record_start"]


def test_voicemail_is_a_call_with_outcome_voicemail_and_its_message_unheard(
    app, client, agent, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows)
    [row] = db_rows("SELECT outcome, recording_url, heard_at FROM call_logs")
    assert row["outcome"] == "voicemail"
    assert row["recording_url"].startswith("https://recordings.example.test/")
    [call] = client.get("/api/calls", headers=agent.headers).get_json()["calls"]
    assert (call["outcome"], call["has_recording"], call["heard_at"], call["heard_by"]) == (
        "voicemail",
        True,
        None,
        None,
    )
    ended = [data for name, data in stream(redis_client, redis_prefix) if name == "call.ended"]
    assert ended[0]["outcome"] == "voicemail"
    count = client.get("/api/voicemails/unheard", headers=agent.headers)
    assert count.get_json() == {"success": True, "count": 1}
    # The caller is gone: the owed record_stop and hangup are given up when due, never sent.
    play_the_clock(db_rows, "record_stop")
    play_the_clock(db_rows, "hangup")
    assert sorted(deliver(app)) == ["moot", "moot"]
    assert sent(fake_telnyx) == ["answer", "speak", "record_start"]


def test_a_caller_who_hangs_up_during_the_greeting_is_sent_nothing_more(
    app, client, agent, ringing, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    time_out(app, redis_client, redis_prefix)
    post_webhook(load_fixture("03_call.answered.json"))
    deliver(app)
    caller_hangs_up(post_webhook)
    # Telnyx ends the greeting too when the caller hangs up (status call_hangup).
    speak_ended = load_fixture("30_call.speak.ended.json")
    speak_ended["data"]["payload"]["status"] = "call_hangup"
    assert post_webhook(speak_ended).status_code == 200
    assert deliver(app) == []
    play_the_clock(db_rows, "hangup")
    assert deliver(app) == ["moot"]
    assert sent(fake_telnyx) == ["answer", "speak"]
    # A voicemail with no message: nothing to hear, so not counted unheard.
    [call] = client.get("/api/calls", headers=agent.headers).get_json()["calls"]
    assert (call["outcome"], call["has_recording"]) == ("voicemail", False)
    assert client.get("/api/voicemails/unheard", headers=agent.headers).get_json()["count"] == 0
    response = client.post(f"/api/calls/{CALLER}/heard", headers=agent.headers)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "no_message"


def test_a_refused_answer_gives_the_call_back_and_is_owed_again_after_a_backoff(
    app, ringing, fake_telnyx, db_rows, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 400)
    assert time_out(app, redis_client, redis_prefix) == []
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ringing"
    # The next sweep owes it again, not at once: the call stays with voicemail meanwhile.
    assert time_out(app, redis_client, redis_prefix) == []
    assert len(fake_telnyx.received("answer")) == 1
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "claimed_by_name") == "Voicemail"
    play_the_clock(db_rows, "answer")
    assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "answer"]
    assert fake_telnyx.received("reject") == []


def test_a_slow_or_failing_telnyx_delays_the_greeting_and_the_outbox_sends_it_later(
    app, ringing, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    fake_telnyx.script("answer", FakeTelnyx.DROP)
    assert time_out(app, redis_client, redis_prefix) == []
    # No answer came: Telnyx may have acted, so the claim stays and the same command goes again.
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "claimed_by_name") == "Voicemail"
    play_the_clock(db_rows, "answer")
    assert deliver(app) == ["sent"]
    first, second = fake_telnyx.received("answer")
    assert first.body["command_id"] == second.body["command_id"]
    fake_telnyx.script("speak", 503)
    post_webhook(load_fixture("03_call.answered.json"))
    assert deliver(app) == ["retry"]
    play_the_clock(db_rows, "speak")
    assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "answer", "speak", "speak"]


def test_the_claim_for_voicemail_does_not_go_stale_while_its_answer_is_owed(
    app, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script("answer", 503, times=10)
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    sweeper = app.extensions["ring_timeouts"]
    sweeper.sweep(now=started_ms + 31_000)
    sweeper.sweep(now=started_ms + 31_000 + 61_000)  # past the claim's lease
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "answering"
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "claimed_by_name") == "Voicemail"


def test_voicemail_off_rejects_the_call_as_before(
    settings, fake_telnyx, redis_client, redis_prefix, db_rows
):
    with app_with(settings, VOICEMAIL="false") as app:
        assert post_to(app, load_fixture("01_call.initiated.json")).status_code == 200
        assert time_out(app, redis_client, redis_prefix) == [CALLER]
    assert sent(fake_telnyx) == ["reject"]
    assert db_rows("SELECT voicemail_at FROM inbound_calls") == [{"voicemail_at": None}]


# --- heard ----------------------------------------------------------------------------------


def test_the_first_agent_to_play_it_to_the_end_is_kept_as_the_listener(
    app, client, agent, make_agent, post_webhook, db_rows, redis_client, redis_prefix
):
    leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows)
    bob = make_agent("Bob")
    first = client.post(f"/api/calls/{CALLER}/heard", headers=agent.headers)
    assert first.status_code == 200
    assert first.get_json()["heard_by"] == {"id": agent.id, "name": "Alice"}
    again = client.post(f"/api/calls/{CALLER}/heard", headers=bob.headers)
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    heard = [data for name, data in stream(redis_client, redis_prefix) if name == "voicemail.heard"]
    assert heard == [
        {
            "call_control_id": CALLER,
            "heard_at": first.get_json()["heard_at"],
            "heard_by": {"id": agent.id, "name": "Alice"},
        }
    ]
    [call] = client.get("/api/calls", headers=bob.headers).get_json()["calls"]
    assert call["heard_by"] == {"id": agent.id, "name": "Alice"}
    assert call["heard_at"] == first.get_json()["heard_at"]
    assert client.get("/api/voicemails/unheard", headers=bob.headers).get_json()["count"] == 0


def test_a_voicemail_is_heard_by_its_history_id_too(
    app, client, agent, post_webhook, db_rows, redis_client, redis_prefix
):
    leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows)
    [row] = db_rows("SELECT id::text FROM call_logs")
    response = client.post(f"/api/calls/{row['id']}/heard", headers=agent.headers)
    assert response.status_code == 200
    assert response.get_json()["call_control_id"] == CALLER


def test_only_a_voicemail_can_be_heard(client, agent, post_webhook):
    for body in answered_call_events():
        post_webhook(body)
    response = client.post(f"/api/calls/{CALLER}/heard", headers=agent.headers)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "not_voicemail"


@pytest.mark.parametrize("call_id", ["v3:nobody", "x" * 300, "v3:tab\there"])
def test_hearing_an_unknown_or_malformed_call_is_404(client, agent, call_id):
    response = client.post(f"/api/calls/{call_id}/heard", headers=agent.headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "call_not_found"


def test_heard_and_the_unheard_count_need_an_agent(client):
    assert client.post(f"/api/calls/{CALLER}/heard").status_code == 401
    assert client.get("/api/voicemails/unheard").status_code == 401


def test_the_unheard_count_counts_only_unheard_messages(
    app, client, agent, post_webhook, db_rows, redis_client, redis_prefix
):
    assert client.get("/api/voicemails/unheard", headers=agent.headers).get_json() == {
        "success": True,
        "count": 0,
    }
    leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows)
    assert client.get("/api/voicemails/unheard", headers=agent.headers).get_json()["count"] == 1


def test_a_voicemail_is_counted_among_calls_ended_by_its_outcome(
    app, client, post_webhook, db_rows, redis_client, redis_prefix
):
    def ended_voicemails() -> float | None:
        metrics = client.get("/metrics").get_data(as_text=True)
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                if sample.name == "telnyx_flask_calls_ended_total" and sample.labels == {
                    "outcome": "voicemail"
                }:
                    return sample.value
        return None

    before = ended_voicemails()
    assert before is not None  # the series exists from the start, for increase() to see
    leave_voicemail(app, post_webhook, redis_client, redis_prefix, db_rows)
    assert ended_voicemails() == before + 1


def test_a_repeated_greeting_end_owes_the_recording_once(
    app, ringing, fake_telnyx, post_webhook, redis_client, redis_prefix
):
    time_out(app, redis_client, redis_prefix)
    post_webhook(load_fixture("03_call.answered.json"))
    deliver(app)
    speak_ended = load_fixture("30_call.speak.ended.json")
    for _ in range(2):
        response = post_webhook(speak_ended)
        assert response.status_code == 200
    assert response.get_json()["result"] == "duplicate"
    assert deliver(app) == ["sent"]
    assert sent(fake_telnyx) == ["answer", "speak", "record_start"]


def test_a_greeting_that_ends_on_a_call_the_service_never_saw_is_stored_not_a_call(
    post_webhook, db_rows, redis_client, redis_prefix
):
    [speak_ended] = renamed([load_fixture("30_call.speak.ended.json")], "-elsewhere")
    response = post_webhook(speak_ended)
    assert response.status_code == 200
    assert db_rows("SELECT count(*) AS n FROM inbound_calls") == [{"n": 0}]
    assert db_rows("SELECT event_type FROM webhook_events") == [{"event_type": "call.speak.ended"}]
    assert stream(redis_client, redis_prefix) == []
