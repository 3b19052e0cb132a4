"""TelnyxClient against a real local HTTP server (tests/fake_telnyx.py)."""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import Iterator

import pytest
import requests

from telnyx_flask.embedded import free_port
from telnyx_flask.telnyx_api import (
    CALL_ALREADY_ENDED,
    CALL_NOT_ANSWERED,
    TelnyxClient,
    TelnyxError,
    command_id_for,
)

try:
    from tests.fake_telnyx import FAKE_JWT, FakeTelnyx, error_body
except ImportError:  # tests/ is not a package, so pytest put the tests folder itself on sys.path
    from fake_telnyx import FAKE_JWT, FakeTelnyx, error_body

API_KEY = "KEY0123456789SECRET_abcdef"
CALL = "v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTelnyx]:
    with FakeTelnyx() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeTelnyx) -> Iterator[FakeTelnyx]:
    server.reset()
    yield server
    server.reset()


def make_client(fake: FakeTelnyx, **overrides: object) -> TelnyxClient:
    options: dict = {
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "backoff_seconds": 0.001,
        "max_backoff_seconds": 0.005,
    }
    options.update(overrides)
    return TelnyxClient(API_KEY, fake.base_url, **options)


@pytest.fixture
def client(fake: FakeTelnyx) -> Iterator[TelnyxClient]:
    with make_client(fake) as c:
        yield c


@pytest.fixture
def sleeps(client: TelnyxClient) -> list[float]:
    """Record the client's backoff delays instead of sleeping."""
    delays: list[float] = []
    client._sleep = delays.append
    return delays


# --- what each command sends -------------------------------------------------------------------


def test_answer_posts_to_action_path_with_bearer_token_and_returns_data(fake, client):
    result = client.answer(CALL, client_state="aGVsbG8=")

    assert result == {"result": "ok"}
    [cmd] = fake.wait_for_commands(1)
    assert (cmd.action, cmd.call_control_id) == ("answer", CALL)
    assert cmd.headers["Authorization"] == f"Bearer {API_KEY}"
    assert cmd.headers["User-Agent"] == "telnyx-flask/0.1"
    assert cmd.headers["Content-Type"] == "application/json"
    assert cmd.body == {"client_state": "aGVsbG8=", "command_id": command_id_for("answer", CALL)}


def test_transfer_sends_to_and_optional_fields_with_telnyx_names(fake, client):
    client.transfer(
        CALL,
        "sip:alice@example.sip.telnyx.com",
        from_="+15550001111",
        timeout_secs=30,
        client_state="c3RhdGU=",
        target_leg_client_state="bGVn",
    )

    [cmd] = fake.wait_for_commands(1, action="transfer")
    assert cmd.body == {
        "to": "sip:alice@example.sip.telnyx.com",
        "from": "+15550001111",
        "timeout_secs": 30,
        "client_state": "c3RhdGU=",
        "target_leg_client_state": "bGVn",
        "command_id": command_id_for("transfer", CALL, "sip:alice@example.sip.telnyx.com"),
    }


def test_transfer_leaves_out_optional_fields_that_are_not_given(fake, client):
    client.transfer(CALL, "+15557654321")

    [cmd] = fake.wait_for_commands(1, action="transfer")
    assert set(cmd.body) == {"to", "command_id"}


def test_transfer_sends_custom_sip_headers(fake, client):
    headers = [{"name": "X-Call-Control-Id", "value": CALL}]

    client.transfer(CALL, "sip:alice@sip.telnyx.com", custom_headers=headers)

    [cmd] = fake.wait_for_commands(1, action="transfer")
    assert cmd.body["custom_headers"] == [{"name": "X-Call-Control-Id", "value": CALL}]


@pytest.mark.parametrize(
    "headers",
    [
        {"name": "X-Call", "value": "1"},
        [{"name": "Call-Id", "value": "1"}],
        [{"name": "X-Call: 1\r\nX-Evil", "value": "1"}],
        [{"name": "X-Call", "value": "1\r\nX-Evil: 2"}],
        [{"name": "X-Call", "value": ""}],
        [{"name": "X-Call", "value": 7}],
        [{"name": "X-Call", "value": "1", "extra": "2"}],
        ["X-Call: 1"],
    ],
)
def test_transfer_refuses_malformed_custom_headers_before_sending(fake, client, headers):
    with pytest.raises(ValueError, match="custom"):
        client.transfer(CALL, "sip:alice@sip.telnyx.com", custom_headers=headers)
    assert fake.received() == []


@pytest.mark.parametrize("cause", ["CALL_REJECTED", "USER_BUSY"])
def test_reject_sends_cause(fake, client, cause):
    client.reject(CALL, cause)

    [cmd] = fake.wait_for_commands(1, action="reject")
    assert cmd.body == {"cause": cause, "command_id": command_id_for("reject", CALL, cause)}


def test_reject_defaults_to_call_rejected(fake, client):
    client.reject(CALL)

    assert fake.wait_for_commands(1)[0].body["cause"] == "CALL_REJECTED"


def test_hangup_sends_only_command_id(fake, client):
    client.hangup(CALL)

    [cmd] = fake.wait_for_commands(1, action="hangup")
    assert cmd.body == {"command_id": command_id_for("hangup", CALL)}


def test_record_start_sends_format_channels_and_options(fake, client):
    client.record_start(CALL, "wav", "single", play_beep=False, max_length=600, trim="trim-silence")

    [cmd] = fake.wait_for_commands(1, action="record_start")
    assert cmd.body == {
        "format": "wav",
        "channels": "single",
        "play_beep": False,
        "max_length": 600,
        "trim": "trim-silence",
        "command_id": command_id_for("record_start", CALL),
    }


def test_record_start_defaults_to_dual_channel_mp3(fake, client):
    client.record_start(CALL)

    body = fake.wait_for_commands(1)[0].body
    assert (body["format"], body["channels"]) == ("mp3", "dual")


def test_success_returns_the_data_object(fake, client):
    fake.script("answer", 200, {"data": {"result": "ok", "recording_id": "r-1"}})
    fake.script("hangup", 200, "not json")

    assert client.answer(CALL) == {"result": "ok", "recording_id": "r-1"}
    assert client.hangup(CALL) == {}


def test_unsafe_characters_in_call_control_id_are_quoted(fake, client):
    odd = "v3:a/b?c#d e"

    client.hangup(odd)

    [cmd] = fake.wait_for_commands(1)
    assert (cmd.action, cmd.call_control_id) == ("hangup", odd)


def test_explicit_command_id_is_sent_as_given(fake, client):
    client.hangup(CALL, command_id="my-id-1")

    assert fake.wait_for_commands(1)[0].body["command_id"] == "my-id-1"


def test_borrowed_session_is_used_and_left_open(fake):
    session = requests.Session()
    session.headers["X-Trace"] = "t-1"
    client = TelnyxClient(API_KEY, fake.base_url, session=session)

    client.hangup(CALL)
    client.close()

    assert fake.wait_for_commands(1)[0].headers["X-Trace"] == "t-1"
    assert session.post(f"{fake.base_url}/calls/x/actions/hangup", json={}).status_code == 200
    session.close()


# --- command_id ---------------------------------------------------------------------------------


def test_command_id_for_is_a_deterministic_uuid():
    first = command_id_for("transfer", CALL, "+15551234567")

    assert first == command_id_for("transfer", CALL, "+15551234567")
    assert uuid.UUID(first).version == 5


def test_command_id_for_differs_by_call_action_and_parts():
    ids = {
        command_id_for("transfer", CALL, "+15551234567"),
        command_id_for("transfer", CALL + "x", "+15551234567"),
        command_id_for("transfer", CALL, "+15559999999"),
        command_id_for("hangup", CALL),
        command_id_for("hangup", CALL, ""),
        command_id_for("x", "a|b", "c"),
        command_id_for("x", "a", "b|c"),
    }
    assert len(ids) == 7


def test_default_command_id_is_the_same_from_separate_clients(fake):
    # Two clients stand in for two worker processes handling the same webhook.
    with make_client(fake) as one, make_client(fake) as two:
        one.transfer(CALL, "+15551234567")
        two.transfer(CALL, "+15551234567")
        two.transfer(CALL, "+15550000000")
        two.transfer("v3:other", "+15551234567")

    ids = [c.body["command_id"] for c in fake.wait_for_commands(4)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3


def test_503_then_success_resends_the_same_command_id(fake, client, sleeps):
    fake.script("transfer", 503)

    assert client.transfer(CALL, "+15551234567") == {"result": "ok"}

    first, second = fake.wait_for_commands(2)
    assert first.body == second.body
    assert first.body["command_id"] == command_id_for("transfer", CALL, "+15551234567")
    assert len(sleeps) == 1


# --- retries ------------------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_delay(fake):
    client = make_client(fake, max_backoff_seconds=2.0)
    delays: list[float] = []
    client._sleep = delays.append
    fake.script("answer", 429, headers={"Retry-After": "1"})

    assert client.answer(CALL) == {"result": "ok"}

    assert len(fake.wait_for_commands(2)) == 2
    assert delays == [1.0]


def test_retry_after_is_capped_at_max_backoff(fake):
    client = make_client(fake, max_backoff_seconds=0.5)
    delays: list[float] = []
    client._sleep = delays.append
    fake.script("answer", 429, headers={"Retry-After": "30"})

    client.answer(CALL)

    assert delays == [0.5]


def test_backoff_grows_exponentially_with_jitter_within_bounds(fake):
    client = make_client(fake, max_attempts=5, backoff_seconds=0.1, max_backoff_seconds=0.3)
    delays: list[float] = []
    client._sleep = delays.append
    fake.script("hangup", 500, times=4)

    client.hangup(CALL)

    assert len(delays) == 4
    ceilings = [0.1, 0.2, 0.3, 0.3]
    assert all(0.1 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_5xx_is_retried_up_to_max_attempts_then_raises_with_telnyx_error(fake):
    client = make_client(fake, max_attempts=3)
    fake.script("hangup", 503, error_body("10007", "Unexpected error", "Try again"), times=5)

    with pytest.raises(TelnyxError) as caught:
        client.hangup(CALL)

    err = caught.value
    assert len(fake.received("hangup")) == 3
    assert (err.status, err.code, err.title, err.detail) == (
        503,
        "10007",
        "Unexpected error",
        "Try again",
    )
    assert (err.action, err.call_control_id, err.attempts) == ("hangup", CALL, 3)
    assert not err.call_already_ended


def test_dropped_connection_is_retried_then_succeeds(fake, client, sleeps):
    fake.script("answer", FakeTelnyx.DROP)

    assert client.answer(CALL) == {"result": "ok"}

    first, second = fake.wait_for_commands(2)
    assert first.body["command_id"] == second.body["command_id"]


def test_connection_dropped_on_every_attempt_raises_with_no_status(fake, client, sleeps):
    fake.script("hangup", FakeTelnyx.DROP, times=4)

    with pytest.raises(TelnyxError) as caught:
        client.hangup(CALL)

    assert caught.value.status is None
    assert "no answer" in caught.value.detail
    assert len(fake.received()) == 4
    assert len(sleeps) == 3


def test_unreachable_server_raises_telnyx_error_after_all_attempts():
    client = TelnyxClient(
        API_KEY, f"http://127.0.0.1:{free_port()}/v2", max_attempts=2, backoff_seconds=0.001
    )
    delays: list[float] = []
    client._sleep = delays.append

    with pytest.raises(TelnyxError) as caught:
        client.answer(CALL)

    assert caught.value.status is None
    assert caught.value.attempts == 2
    assert len(delays) == 1


# --- errors that are not retried ----------------------------------------------------------------


def test_call_already_ended_is_not_retried(fake, client):
    fake.script("hangup", 422, error_body(CALL_ALREADY_ENDED, "Call has already ended"))

    with pytest.raises(TelnyxError) as caught:
        client.hangup(CALL)

    assert caught.value.call_already_ended
    assert caught.value.code == "90018"
    assert len(fake.received()) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "10009"), (403, "10010"), (404, "10005"), (422, CALL_NOT_ANSWERED), (400, "10015")],
)
def test_other_client_errors_are_not_retried(fake, client, status, code):
    fake.script("transfer", status, error_body(code, "Refused"), times=2)

    with pytest.raises(TelnyxError) as caught:
        client.transfer(CALL, "+15551234567")

    assert (caught.value.status, caught.value.code) == (status, code)
    assert not caught.value.call_already_ended
    assert len(fake.received()) == 1


def test_numeric_error_code_is_converted_to_string(fake, client):
    fake.script("hangup", 422, error_body(90018, "Call has already ended"))

    with pytest.raises(TelnyxError) as caught:
        client.hangup(CALL)

    assert caught.value.code == "90018"
    assert caught.value.call_already_ended


def test_non_json_error_body_gives_status_and_text(fake, client):
    fake.script("answer", 400, "<html>Bad Request</html>")

    with pytest.raises(TelnyxError) as caught:
        client.answer(CALL)

    assert (caught.value.status, caught.value.code) == (400, None)
    assert caught.value.detail == "<html>Bad Request</html>"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"errors": []},
        {"errors": "broken"},
        {"errors": [None]},
        {"errors": [{"title": "No code"}]},
        [1, 2, 3],
        "",
    ],
)
def test_odd_error_bodies_still_raise_telnyx_error(fake, client, body):
    fake.script("answer", 404, body)

    with pytest.raises(TelnyxError) as caught:
        client.answer(CALL)

    assert caught.value.status == 404
    assert caught.value.code is None
    assert CALL in str(caught.value)


def test_telnyx_error_survives_pickling():
    err = TelnyxError("hangup", CALL, 422, "90018", "Call has already ended", "x", attempts=2)

    copy = pickle.loads(pickle.dumps(err))

    assert (copy.status, copy.code, copy.attempts, str(copy)) == (422, "90018", 2, str(err))
    assert copy.call_already_ended
    token_error = TelnyxError("telephony_token", "cred-1", 404, subject="credential")
    assert str(pickle.loads(pickle.dumps(token_error))) == str(token_error)
    assert "on credential cred-1" in str(token_error)


# --- argument validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.answer(""), "call_control_id"),
        (lambda c: c.hangup("   "), "call_control_id"),
        (lambda c: c.transfer(CALL, ""), "to"),
        (lambda c: c.transfer(CALL, "+1555", timeout_secs=4), "timeout_secs"),
        (lambda c: c.transfer(CALL, "+1555", timeout_secs=601), "timeout_secs"),
        (lambda c: c.transfer(CALL, "+1555", timeout_secs=True), "timeout_secs"),
        (lambda c: c.reject(CALL, "NO_ANSWER"), "cause"),
        (lambda c: c.record_start(CALL, "ogg"), "format"),
        (lambda c: c.record_start(CALL, "mp3", "stereo"), "channels"),
    ],
)
def test_invalid_arguments_raise_value_error_before_sending(fake, client, call, message):
    with pytest.raises(ValueError, match=message):
        call(client)

    assert fake.received() == []


@pytest.mark.parametrize("seconds", [5, 600])
def test_transfer_timeout_bounds_are_inclusive(fake, client, seconds):
    client.transfer(CALL, "+15551234567", timeout_secs=seconds)

    assert fake.wait_for_commands(1)[0].body["timeout_secs"] == seconds


# --- logging ------------------------------------------------------------------------------------


def test_retries_and_failures_are_logged_without_the_api_key(fake, client, caplog):
    caplog.set_level(logging.DEBUG)
    fake.script("hangup", 503, times=4)
    fake.script("answer", FakeTelnyx.DROP)

    with pytest.raises(TelnyxError) as caught:
        client.hangup(CALL)
    client.answer(CALL)

    ours = [r for r in caplog.records if r.name == "telnyx_flask.telnyx_api"]
    retries = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    failures = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(retries) == 4  # three for hangup, one for answer
    assert all(CALL in m for m in retries)
    assert sum("hangup" in m for m in retries) == 3
    assert len(failures) == 1
    assert CALL in failures[0]
    assert "hangup" in failures[0]
    assert API_KEY not in caplog.text
    assert API_KEY not in str(caught.value) + repr(caught.value) + repr(client)


def test_call_already_ended_is_logged_at_info_not_warning(fake, client, caplog):
    caplog.set_level(logging.INFO, logger="telnyx_flask.telnyx_api")
    fake.script("hangup", 422)

    with pytest.raises(TelnyxError):
        client.hangup(CALL)

    assert [r.levelno for r in caplog.records] == [logging.INFO]


# --- the fake itself ----------------------------------------------------------------------------


def test_fake_wait_for_commands_reports_what_arrived_on_timeout(fake, client):
    client.hangup(CALL)

    with pytest.raises(AssertionError, match="hangup"):
        fake.wait_for_commands(1, action="answer", timeout=0.05)


def test_fake_serves_a_credential_token(fake):
    response = requests.post(f"{fake.base_url}/telephony_credentials/cred-1/token", timeout=2)

    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.count(".") == 2
    assert fake.token_requests == ["cred-1"]


def test_webrtc_token_is_the_plain_text_body(fake, client):
    assert client.webrtc_token("cred-1") == FAKE_JWT
    assert fake.token_requests == ["cred-1"]


def test_webrtc_token_errors_name_the_credential():
    client = TelnyxClient(API_KEY, "http://127.0.0.1:9/v2", max_attempts=2, backoff_seconds=0)
    with pytest.raises(TelnyxError) as caught:
        client.webrtc_token("cred-1")
    assert str(caught.value).startswith(
        "Telnyx telephony_token on credential cred-1 failed: no answer"
    )
    assert caught.value.attempts == 2
    with pytest.raises(ValueError):
        client.webrtc_token(" ")
