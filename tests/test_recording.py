"""Recording starts once, when the caller's leg is answered: owed in the outbox with the event,
sent off the request path."""

from __future__ import annotations

import json

from telnyx_flask import create_app

from .helpers import answered_call_events, close_app, encode, load_fixture, renamed, signed_headers

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


def settle(app) -> list[str]:
    """Send the commands the webhooks owed (what each worker's delivery loop does)."""
    return app.extensions["outbox"].deliver_due()


def test_answered_caller_leg_starts_recording_once(app, post_webhook, fake_telnyx):
    initiated, leg_b, answered, bridged, *_ = answered_call_events()
    for body in (initiated, leg_b, answered, bridged, answered, bridged):
        assert post_webhook(body).status_code == 200
    settle(app)
    [command] = fake_telnyx.wait_for_commands(1, action="record_start")
    assert command.call_control_id == CALLER
    assert command.body["format"] == "mp3"
    assert command.body["channels"] == "dual"
    assert command.headers["Authorization"] == "Bearer KEY_TEST"
    assert [c.action for c in fake_telnyx.received()] == ["record_start"]


def test_parked_call_is_not_recorded(app, post_webhook, fake_telnyx):
    post_webhook(load_fixture("01_call.initiated.json"))
    settle(app)
    assert fake_telnyx.received() == []


def test_call_known_to_have_ended_is_not_recorded(app, post_webhook, fake_telnyx):
    initiated, _leg_b, answered, _bridged, hangup, _recording = answered_call_events()
    for body in (initiated, hangup, answered):
        post_webhook(body)
    settle(app)
    assert fake_telnyx.received() == []


def test_transfer_leg_answering_does_not_start_a_second_recording(app, post_webhook, fake_telnyx):
    initiated, leg_b, answered, *_ = answered_call_events()
    leg_b_answered = renamed([answered], "")[0]
    leg_b_answered["data"]["id"] = "leg-b-answered"
    leg_b_answered["data"]["payload"].update(
        call_control_id=leg_b["data"]["payload"]["call_control_id"],
        call_leg_id=leg_b["data"]["payload"]["call_leg_id"],
    )
    for body in (initiated, leg_b, answered, leg_b_answered):
        post_webhook(body)
    settle(app)
    fake_telnyx.wait_for_commands(1, action="record_start")
    assert len(fake_telnyx.received("record_start")) == 1


def test_recording_off_sends_nothing(settings, fake_telnyx, db_rows):
    settings["RECORD_CALLS"] = "false"
    app = create_app(settings)
    client = app.test_client()
    for body in answered_call_events()[:3]:
        raw = encode(body)
        client.post("/api/telnyx/webhook", data=raw, headers=signed_headers(raw))
    settle(app)
    assert fake_telnyx.received() == []
    assert db_rows("SELECT * FROM telnyx_outbox") == []  # nothing is even owed
    close_app(app)


def test_call_already_ended_when_recording_starts_is_not_an_error(app, post_webhook, fake_telnyx):
    fake_telnyx.script("record_start", 422)
    initiated, _leg_b, answered, *_ = answered_call_events()
    post_webhook(initiated)
    assert post_webhook(answered).status_code == 200
    assert settle(app) == ["moot"]
    # Telnyx said the call had ended (90018): done, not retried.
    assert len(fake_telnyx.received("record_start")) == 1


def test_live_events_and_state_carry_no_recording_link(
    app, client, agent, post_webhook, redis_client, redis_prefix
):
    for body in answered_call_events():
        assert post_webhook(body).status_code == 200
    entries = redis_client.xrange(f"{redis_prefix}events")
    recording = [
        json.loads(fields["data"]) for _, fields in entries if fields["event"] == "call.recording"
    ]
    assert recording == [{"call_control_id": CALLER, "has_recording": True}]
    # The pre-signed link (X-Amz-Expires=600 in the fixture) is nowhere a page can read it.
    live_hash = redis_client.hgetall(f"{redis_prefix}call:{CALLER}")
    assert "recording_url" not in live_hash
    with app.app_context():
        live = app.extensions["live"]
        _, snapshot = live.stream.snapshot()
        summary = live.call(CALLER)
    pending = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_data(as_text=True)
    for text in (
        json.dumps([fields for _, fields in entries]),
        json.dumps(live_hash),
        json.dumps(snapshot),
        json.dumps(summary),
        pending,
    ):
        assert "X-Amz-Expires" not in text
        assert "recording_url" not in text
    assert summary["has_recording"] is True
