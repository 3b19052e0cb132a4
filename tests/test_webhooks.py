"""Webhook intake: the durable record, the live state, and every kind of bad input."""

from __future__ import annotations

import json
import logging

import flask
import pytest
from flask.sessions import NullSession

from .helpers import abandoned_call_events, answered_call_events, load_fixture, renamed

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
TRANSFER_LEG = "v3:Bk7d2RrT0wq4Ye6Ui8Op1As3Df5Gh7Jk9Lz1Xc3Vb5Nm7Qw9Er1Ty3Ui5Op7As9"
ABANDONED = "v3:Mx2c4Vb6Nm8Qw0Er2Ty4Ui6Op8As0Df2Gh4Jk6Lz8Xc0Vb2Nm4Qw6Er8Ty0Ui2"
RECORDING = "https://recordings.example.test/a1b2c3.mp3?X-Amz-Expires=600"


def stream_events(redis_client, redis_prefix):
    """(event name, data) for every entry on the live stream, in order."""
    return [
        (fields["event"], json.loads(fields["data"]))
        for _, fields in redis_client.xrange(f"{redis_prefix}events")
    ]


@pytest.fixture
def pending(client, agent):
    """The ringing calls, as an agent sees them."""

    def fetch() -> list[dict]:
        response = client.get("/api/telnyx/calls/pending", headers=agent.headers)
        assert response.status_code == 200
        body = response.get_json()
        assert body["success"] is True
        return body["calls"]

    return fetch


def test_answered_call_writes_one_log_row_with_talk_time_and_recording(post_webhook, db_rows):
    for body in answered_call_events():
        assert post_webhook(body).status_code == 200
    [log] = db_rows("SELECT * FROM call_logs")
    assert log["call_sid"] == CALLER
    assert log["direction"] == "inbound"
    assert log["from_number"] == log["phone_number"] == "+13125550147"
    assert log["to_number"] == "+14155550123"
    assert log["outcome"] == "answered"
    # answered 15:04:12.004 (occurred_at), hung up 15:06:47.816 (end_time): 155.8 s of talk
    assert log["duration"] == 155
    assert log["end_reason"] == "normal_clearing"
    assert log["started_at"].isoformat() == "2026-11-20T15:04:05.123456+00:00"
    assert log["ended_at"].isoformat() == "2026-11-20T15:06:47.816307+00:00"
    assert log["recording_url"] == RECORDING
    [call] = db_rows("SELECT * FROM inbound_calls")
    assert call["status"] == "ended"
    assert call["recording_url"] == RECORDING
    assert call["transfer_call_control_id"] == TRANSFER_LEG
    assert call["transfer_to"] == "sip:agentalice@sip.telnyx.com"


def test_caller_hanging_up_while_ringing_is_abandoned(post_webhook, db_rows):
    for body in abandoned_call_events():
        assert post_webhook(body).status_code == 200
    [log] = db_rows("SELECT outcome, duration, end_reason, call_sid FROM call_logs")
    assert log == {
        "outcome": "abandoned",
        "duration": 0,
        "end_reason": "originator_cancel",
        "call_sid": ABANDONED,
    }


def test_unanswered_call_ended_by_the_network_is_missed(post_webhook, db_rows):
    initiated, hangup = abandoned_call_events()
    hangup["data"]["payload"].update(hangup_cause="timeout", hangup_source="unknown")
    post_webhook(initiated)
    post_webhook(hangup)
    assert db_rows("SELECT outcome FROM call_logs") == [{"outcome": "missed"}]


def test_caller_lookup_names_the_prospect_on_the_log_row(post_webhook, db_rows, database_url):
    db_rows(
        "INSERT INTO prospects (name, phone_number) VALUES ('Dana Wu', '+12025550188') RETURNING id"
    )
    for body in abandoned_call_events():
        post_webhook(body)
    [log] = db_rows("SELECT prospect_name, prospect_id IS NOT NULL AS linked FROM call_logs")
    assert log == {"prospect_name": "Dana Wu", "linked": True}


def test_ringing_call_is_pending_and_announced(post_webhook, pending, redis_client, redis_prefix):
    post_webhook(load_fixture("11_missed.call.initiated.json"))
    [call] = pending()
    assert call["call_control_id"] == ABANDONED
    assert call["from"] == call["from_number"] == "+12025550188"
    assert call["caller_name"] == "ACME CORP"
    assert call["ringing_since"] == "2026-11-20T16:10:00.000001+00:00"
    assert [name for name, _ in stream_events(redis_client, redis_prefix)] == ["call.ringing"]


def test_pending_lists_ringing_calls_in_the_order_they_arrived(post_webhook, pending):
    first, _ = abandoned_call_events()
    later = renamed([first], "-later")[0]
    post_webhook(first)
    post_webhook(later)
    assert [c["call_control_id"] for c in pending()] == [ABANDONED, ABANDONED + "-later"]


def test_transfer_leg_never_rings(post_webhook, pending, redis_client, redis_prefix, db_rows):
    post_webhook(load_fixture("02_call.initiated.leg_b_bridging.json"))
    assert pending() == []
    post_webhook(load_fixture("01_call.initiated.json"))
    assert [c["call_control_id"] for c in pending()] == [CALLER]
    names = [name for name, _ in stream_events(redis_client, redis_prefix)]
    assert names == ["call.ringing"]
    [call] = db_rows("SELECT call_control_id, transfer_call_control_id FROM inbound_calls")
    assert call == {"call_control_id": CALLER, "transfer_call_control_id": TRANSFER_LEG}


def test_transfer_leg_hanging_up_does_not_end_the_call(post_webhook, db_rows, client):
    initiated, leg_b, answered = answered_call_events()[:3]
    for body in (initiated, leg_b, answered):
        post_webhook(body)
    failed_leg_b = load_fixture("05_call.hangup.json")
    failed_leg_b["data"]["id"] = "leg-b-hangup"
    failed_leg_b["data"]["payload"].update(
        call_control_id=TRANSFER_LEG,
        call_leg_id="6a1d3b9f-6b1d-11f1-8d4f-02420aef00b2",
        hangup_cause="timeout",
    )
    post_webhook(failed_leg_b)
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "answered"}]
    assert db_rows("SELECT * FROM call_logs") == []


def test_duplicate_delivery_changes_nothing(post_webhook, db_rows, redis_client, redis_prefix):
    events = answered_call_events()
    for body in events:
        post_webhook(body)
    before = db_rows("SELECT * FROM call_logs")
    stream_before = stream_events(redis_client, redis_prefix)
    for body in events:
        body["meta"]["attempt"] = 2
        response = post_webhook(body)
        assert response.status_code == 200
        assert response.get_json()["result"] == "duplicate"
    assert db_rows("SELECT * FROM call_logs") == before
    assert stream_events(redis_client, redis_prefix) == stream_before
    assert db_rows("SELECT count(*) AS n FROM webhook_events") == [{"n": 6}]


def test_hangup_before_initiated_still_makes_a_correct_record(post_webhook, db_rows, pending):
    initiated, hangup = abandoned_call_events()
    post_webhook(hangup)
    post_webhook(initiated)
    [log] = db_rows("SELECT outcome, from_number, to_number, started_at FROM call_logs")
    assert log["outcome"] == "abandoned"
    assert log["from_number"] == "+12025550188"
    # The late call.initiated must not bring an ended call back to ringing.
    assert pending() == []
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "ended"}]


def test_answered_arriving_after_hangup_corrects_outcome_and_duration(post_webhook, db_rows):
    events = answered_call_events()
    initiated, _leg_b, answered, _bridged, hangup, _recording = events
    for body in (initiated, hangup):
        post_webhook(body)
    assert db_rows("SELECT outcome FROM call_logs") == [{"outcome": "abandoned"}]
    post_webhook(answered)
    assert db_rows("SELECT outcome, duration FROM call_logs") == [
        {"outcome": "answered", "duration": 155}
    ]


@pytest.mark.parametrize("recording_first", [True, False])
def test_recording_lands_on_call_and_log_in_either_order(post_webhook, db_rows, recording_first):
    events = answered_call_events()
    recording = events.pop()
    if recording_first:
        events.insert(0, recording)
    else:
        events.append(recording)
    for body in events:
        assert post_webhook(body).status_code == 200
    assert db_rows("SELECT recording_url FROM call_logs") == [{"recording_url": RECORDING}]
    assert db_rows("SELECT recording_url FROM inbound_calls") == [{"recording_url": RECORDING}]


def test_recording_falls_back_to_wav(post_webhook, db_rows):
    events = answered_call_events()
    events[-1]["data"]["payload"]["recording_urls"]["mp3"] = None
    for body in events:
        post_webhook(body)
    [log] = db_rows("SELECT recording_url FROM call_logs")
    assert log["recording_url"].endswith(".wav?X-Amz-Expires=600")


def test_live_stream_announces_each_step_once(post_webhook, redis_client, redis_prefix):
    for body in answered_call_events():
        post_webhook(body)
    events = stream_events(redis_client, redis_prefix)
    assert [name for name, _ in events] == [
        "call.ringing",
        "call.answered",
        "call.ended",
        "call.recording",
    ]
    ended = events[2][1]
    assert ended["outcome"] == "answered"
    assert ended["duration"] == 155
    assert ended["hangup_cause"] == "normal_clearing"
    assert all(data["call_control_id"] == CALLER for _, data in events)


def test_ended_call_leaves_the_ringing_set_and_expires(post_webhook, redis_client, redis_prefix):
    for body in abandoned_call_events():
        post_webhook(body)
    assert redis_client.zcard(f"{redis_prefix}calls:ringing") == 0
    ttl = redis_client.ttl(f"{redis_prefix}call:{ABANDONED}")
    assert 0 < ttl <= 3600


def test_every_key_has_a_ttl_or_a_cap(post_webhook, redis_client, redis_prefix):
    for body in answered_call_events() + abandoned_call_events():
        post_webhook(body)
    post_webhook(renamed([load_fixture("01_call.initiated.json")], "-still-ringing")[0])
    # The one key without a lifetime: the live-state generation marker, a single small string
    # whose loss means "rebuild from PostgreSQL".
    marker = f"{redis_prefix}live:generation"
    for key in redis_client.scan_iter(match=f"{redis_prefix}*"):
        if key == marker:
            continue
        kind = redis_client.type(key)
        if kind == "hash":
            assert redis_client.ttl(key) > 0, key
        else:
            # The stream is capped by XADD MAXLEN; the ringing set is pruned on every read.
            assert kind in ("stream", "zset"), key


def test_unhandled_event_type_is_stored_and_acknowledged(post_webhook, db_rows):
    response = post_webhook(load_fixture("20_unhandled.call.dtmf.received.json"))
    assert response.status_code == 200
    assert response.get_json()["result"] == "ignored"
    [event] = db_rows("SELECT event_type, payload FROM webhook_events")
    assert event["event_type"] == "call.dtmf.received"
    assert event["payload"]["data"]["payload"]["digit"] == "5"
    assert db_rows("SELECT * FROM inbound_calls") == []


def test_unknown_payload_keys_and_missing_optional_fields_are_accepted(post_webhook, db_rows):
    body = load_fixture("11_missed.call.initiated.json")
    payload = body["data"]["payload"]
    for field in ("state", "start_time", "caller_id_name", "client_state"):
        payload.pop(field)
    payload["brand_new_field"] = {"nested": [1, 2]}
    assert post_webhook(body).status_code == 200
    [call] = db_rows("SELECT status, ringing_since FROM inbound_calls")
    assert call["status"] == "ringing"
    # Without start_time, the event's own occurred_at is when it began ringing.
    assert call["ringing_since"].isoformat() == "2026-11-20T16:10:00.000001+00:00"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "data is missing"),
        (json.dumps({"data": {"event_type": "call.hangup"}}).encode(), "data.id is missing"),
        (json.dumps({"data": {"id": "x"}}).encode(), "data.event_type is missing"),
        (
            json.dumps(
                {
                    "data": {
                        "id": "x",
                        "event_type": "call.hangup",
                        "payload": {"call_session_id": "s"},
                    }
                }
            ).encode(),
            "call_control_id is missing",
        ),
        (
            json.dumps(
                {
                    "data": {
                        "id": "x",
                        "event_type": "call.initiated",
                        "payload": {"call_control_id": "c"},
                    }
                }
            ).encode(),
            "call_session_id is missing",
        ),
        (
            json.dumps(
                {"data": {"id": "x", "event_type": "call.hangup", "payload": "nope"}}
            ).encode(),
            "payload must be an object",
        ),
        (
            json.dumps(
                {
                    "data": {
                        "id": "x",
                        "event_type": "call.hangup",
                        "occurred_at": "yesterday",
                        "payload": {},
                    }
                }
            ).encode(),
            "occurred_at",
        ),
    ],
)
def test_malformed_body_is_400_with_a_clear_message(post_webhook, db_rows, body, message):
    response = post_webhook(body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "malformed_webhook"
    assert message in error["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


def test_recording_saved_without_call_control_id_is_accepted(post_webhook):
    assert post_webhook(load_fixture("06_call.recording.saved.json")).status_code == 200


def test_body_over_256_kib_is_413(post_webhook, db_rows):
    body = load_fixture("20_unhandled.call.dtmf.received.json")
    body["data"]["payload"]["padding"] = "x" * (256 * 1024)
    response = post_webhook(body)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert db_rows("SELECT * FROM webhook_events") == []


def test_body_is_stored_exactly_as_received(post_webhook, db_rows):
    body = load_fixture("20_unhandled.call.dtmf.received.json")
    # An escaped NUL, which jsonb would refuse, and spacing a re-encoder would change.
    raw = json.dumps(body, indent=3).replace('"digit": "5"', '"digit": "\\u0000"').encode()
    assert post_webhook(raw).status_code == 200
    [event] = db_rows("SELECT payload::text AS payload FROM webhook_events")
    assert event["payload"].encode() == raw


def test_nul_in_a_payload_field_is_dropped_not_refused(post_webhook, db_rows):
    # A caller can put a NUL in their SIP display name; refusing the webhook would refuse the
    # call (and every retry of it), so the NUL goes and the call rings.
    body = load_fixture("11_missed.call.initiated.json")
    payload = body["data"]["payload"]
    payload["from"] = "+1202555\u00000188"
    payload["call_session_id"] += "\u0000"
    assert post_webhook(body).status_code == 200
    [call] = db_rows("SELECT from_number, call_session_id FROM inbound_calls")
    assert call["from_number"] == "+12025550188"
    assert call["call_session_id"] == payload["call_session_id"].replace("\x00", "")


def test_body_that_is_not_utf8_is_400(post_webhook, db_rows):
    raw = json.dumps(load_fixture("20_unhandled.call.dtmf.received.json")).encode("utf-16")
    response = post_webhook(raw)
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["error"]["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


def test_wrong_method_and_unknown_path_answer_json(client):
    response = client.get("/api/telnyx/webhook")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.is_json


def test_a_call_control_id_claimed_by_two_sessions_is_400_not_500(post_webhook, db_rows):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    other = load_fixture("01_call.initiated.json")
    other["data"]["id"] += "-other"
    other["data"]["payload"]["call_session_id"] += "-other"
    other["data"]["payload"]["call_leg_id"] += "-other"
    response = post_webhook(other)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_webhook"
    assert db_rows("SELECT count(*) AS n FROM inbound_calls") == [{"n": 1}]


def test_the_webhook_route_opens_no_session_and_logs_success_at_debug(
    app, client, post_webhook, agent, caplog
):
    """The lean path: a webhook neither reads nor writes the session cookie, and only a refused
    or failed one gets an INFO access line (a successful one is counted in the metrics)."""
    signed_in = client.post(
        "/api/auth/login", json={"email": agent.email, "password": agent.password}
    )
    assert signed_in.status_code == 200
    assert client.get_cookie("telnyx_flask_session") is not None
    with caplog.at_level(logging.DEBUG, logger="telnyx_flask.access"):
        accepted = post_webhook(load_fixture("11_missed.call.initiated.json"))
        refused = post_webhook(b"{}", headers={"telnyx-signature-ed25519": "bad"})
    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert "Set-Cookie" not in accepted.headers
    cookie = {"Cookie": f"telnyx_flask_session={client.get_cookie('telnyx_flask_session').value}"}
    with app.test_request_context("/api/telnyx/webhook", method="POST", headers=cookie):
        assert isinstance(flask.session, NullSession)
    with app.test_request_context("/api/auth/me", headers=cookie):
        assert "uid" in flask.session
    levels = {
        record.status: record.levelname
        for record in caplog.records
        if record.name == "telnyx_flask.access"
    }
    assert levels == {200: "DEBUG", 401: "INFO"}
    # The agent's session, on the agent's routes, is untouched.
    assert client.get("/api/auth/me").status_code == 200
