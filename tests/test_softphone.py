"""The page's server side: GET /, its settings, WebRTC tokens, test calls, recordings."""

from __future__ import annotations

import json

import pytest
from werkzeug.wrappers import Request, Response

from telnyx_flask import create_app
from telnyx_flask.users import set_phone

from .fake_telnyx import FAKE_JWT
from .helpers import answered_call_events, close_app
from .webhook_sink import ThreadedServer

AUDIO = bytes(range(256)) * 64  # 16 KiB standing in for an MP3


@pytest.fixture
def build_app(settings):
    """Apps with settings changed from the test defaults, closed after the test."""
    built = []

    def build(**changes):
        app = create_app({**settings, **changes})
        built.append(app)
        return app

    yield build
    for app in built:
        close_app(app)


@pytest.fixture
def audio_host():
    """Serves AUDIO at /ok.mp3 (with Range support); /gone.mp3 is 403 like an expired link."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path == "/ok.mp3":
            response = Response(AUDIO, mimetype="audio/mpeg")
            return response.make_conditional(
                request, accept_ranges=True, complete_length=len(AUDIO)
            )
        return Response("<Error>AccessDenied</Error>", status=403, mimetype="application/xml")

    server = ThreadedServer(app, "audio-host").start()
    yield server.url
    server.stop()


def with_recording(post_webhook, url: str) -> str:
    """Deliver the answered-and-recorded call with its recording at `url`; its call_sid."""
    events = answered_call_events()
    for event in events:
        if event["data"]["event_type"] == "call.recording.saved":
            event["data"]["payload"]["recording_urls"] = {"mp3": url, "wav": None}
        assert post_webhook(event).status_code == 200
    return events[0]["data"]["payload"]["call_control_id"]


def test_the_page_is_served_with_a_strict_content_security_policy(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b'<script type="module" src="/static/js/app.js">' in response.data
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["Cache-Control"] == "no-cache"
    assert client.get("/static/js/app.js").status_code == 200


def test_page_settings_need_a_signed_in_agent(client):
    response = client.get("/api/softphone/config")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_page_settings_say_where_calls_go_and_why_browser_audio_is_off(client, agent):
    body = client.get("/api/softphone/config", headers=agent.headers).json
    assert body["agent"]["name"] == "Alice"
    assert body["sip_uri"] == "sip:agentalice@sip.telnyx.com"
    assert body["webrtc"]["enabled"] is False
    assert body["webrtc"]["reason"] == "this agent has no Telnyx telephony credential"
    assert body["simulator"] == {"enabled": False}


def test_browser_audio_is_on_with_a_credential_and_the_sdk(build_app, tmp_path, make_agent):
    sdk = tmp_path / "bundle.mjs"
    sdk.write_text("export class TelnyxRTC {}")
    app = build_app(WEBRTC_SDK_PATH=str(sdk))
    agent = _agent_with_credential(app, make_agent)
    client = app.test_client()
    body = client.get("/api/softphone/config", headers=agent.headers).json
    assert body["webrtc"] == {
        "enabled": True,
        "reason": None,
        "sdk_url": "/vendor/telnyx-webrtc.mjs",
        "call_header": "X-Call-Control-Id",
    }
    served = client.get("/vendor/telnyx-webrtc.mjs")
    assert served.status_code == 200
    assert served.mimetype == "text/javascript"
    assert served.data == b"export class TelnyxRTC {}"


def _agent_with_credential(app, make_agent, credential="cred-alice"):
    agent = make_agent("Alice", sip_username="gencredalice")
    with app.app_context():
        set_phone(agent.email, None, credential)
    return agent


def test_webrtc_off_by_setting_or_without_the_sdk(build_app, make_agent, tmp_path):
    app = build_app(WEBRTC_SDK_PATH=str(tmp_path / "missing.mjs"))
    agent = _agent_with_credential(app, make_agent)
    body = app.test_client().get("/api/softphone/config", headers=agent.headers).json
    assert "not installed" in body["webrtc"]["reason"]
    missing = app.test_client().get("/vendor/telnyx-webrtc.mjs")
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "not_installed")

    app = build_app(WEBRTC_ENABLED="false")
    body = app.test_client().get("/api/softphone/config", headers=agent.headers).json
    assert body["webrtc"]["reason"].endswith("(WEBRTC_ENABLED=false)")


def test_webrtc_token_is_minted_from_the_agents_credential(app, client, make_agent, fake_telnyx):
    agent = _agent_with_credential(app, make_agent, "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    response = client.post("/api/telnyx/webrtc/token", headers=agent.headers)
    assert response.status_code == 200, response.json
    assert response.json == {"success": True, "login_token": FAKE_JWT, "expires_in": 86400}
    assert response.headers["Cache-Control"] == "no-store"
    assert fake_telnyx.token_requests == ["3fa85f64-5717-4562-b3fc-2c963f66afa6"]


def test_webrtc_token_falls_back_to_the_shared_credential_only_when_enabled(
    build_app, make_agent, fake_telnyx
):
    app = build_app(
        TELNYX_CREDENTIAL_ID="shared-cred",
        TELNYX_SIP_PASSWORD="sip-secret-password",
        WEBRTC_SHARED_CREDENTIAL="true",
    )
    agent = make_agent("Alice", sip_username="alice")
    response = app.test_client().post("/api/telnyx/webrtc/token", headers=agent.headers)
    assert response.status_code == 200
    assert b"sip-secret-password" not in response.data
    assert fake_telnyx.token_requests == ["shared-cred"]


def test_the_shared_credential_is_refused_unless_enabled_and_the_page_is_told_why(
    build_app, make_agent, fake_telnyx, tmp_path
):
    sdk = tmp_path / "bundle.mjs"
    sdk.write_text("export class TelnyxRTC {}")
    app = build_app(TELNYX_CREDENTIAL_ID="shared-cred", WEBRTC_SDK_PATH=str(sdk))
    agent = make_agent("Alice", sip_username="alice")
    client = app.test_client()

    token = client.post("/api/telnyx/webrtc/token", headers=agent.headers)

    assert token.status_code == 409
    assert token.json["error"]["code"] == "webrtc_not_configured"
    assert "WEBRTC_SHARED_CREDENTIAL=false" in token.json["error"]["message"]
    assert fake_telnyx.token_requests == []
    webrtc = client.get("/api/softphone/config", headers=agent.headers).json["webrtc"]
    assert webrtc["enabled"] is False
    assert webrtc["reason"] == (
        "this agent has no Telnyx telephony credential of its own, and sharing "
        "TELNYX_CREDENTIAL_ID between agents is off (WEBRTC_SHARED_CREDENTIAL=false)"
    )
    # An agent with a credential of their own is not affected.
    bob = make_agent("Bob")
    with app.app_context():
        set_phone(bob.email, None, "cred-bob")
    assert client.post("/api/telnyx/webrtc/token", headers=bob.headers).status_code == 200


def test_webrtc_tokens_are_limited_per_agent_per_hour(
    build_app, make_agent, fake_telnyx, redis_client, redis_prefix
):
    app = build_app(WEBRTC_TOKENS_PER_HOUR="3")
    alice = _agent_with_credential(app, make_agent, "cred-alice")
    client = app.test_client()
    for _ in range(3):
        assert client.post("/api/telnyx/webrtc/token", headers=alice.headers).status_code == 200

    refused = client.post("/api/telnyx/webrtc/token", headers=alice.headers)

    assert refused.status_code == 429
    error = refused.json["error"]
    assert error["code"] == "rate_limited"
    assert error["message"].startswith("too many WebRTC login tokens: at most 3 per hour")
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert fake_telnyx.token_requests == ["cred-alice"] * 3  # the refused one cost Telnyx nothing
    key = f"{redis_prefix}limits:webrtc-token:{alice.id}"
    assert 0 < redis_client.ttl(key) <= 3600


def test_webrtc_token_refusals(client, agent, app, make_agent, settings):
    assert client.post("/api/telnyx/webrtc/token").status_code == 401
    response = client.post("/api/telnyx/webrtc/token", headers=agent.headers)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "webrtc_not_configured"
    # A session cookie from another site may not mint tokens.
    bob = make_agent("Bob")
    with app.app_context():
        set_phone(bob.email, None, "cred-bob")
    login = client.post("/api/auth/login", json={"email": bob.email, "password": bob.password})
    assert login.status_code == 200
    cross_site = client.post("/api/telnyx/webrtc/token", headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403


def test_webrtc_token_when_telnyx_refuses(build_app, make_agent):
    app = build_app(TELNYX_API_BASE="http://127.0.0.1:9/v2")  # nothing listens on port 9
    app.extensions["telnyx"].max_attempts = 1
    agent = _agent_with_credential(app, make_agent)
    response = app.test_client().post("/api/telnyx/webrtc/token", headers=agent.headers)
    assert response.status_code == 502
    assert response.json["error"]["code"] == "telnyx_refused"
    assert response.json["error"]["message"].startswith("Telnyx refused telephony_token")


def test_set_phone_validates_and_clears(app, make_agent, db_rows):
    agent = make_agent("Alice", sip_username="alice")
    with app.app_context():
        with pytest.raises(ValueError, match="credential id"):
            set_phone(agent.email, None, "has spaces")
        with pytest.raises(ValueError, match="no agent"):
            set_phone("nobody@example.test", "bob", None)
        set_phone(agent.email, "gencredx", "cred-1")
        set_phone(agent.email, None, "")
    rows = db_rows("SELECT sip_username, telephony_credential_id FROM users")
    assert rows == [{"sip_username": "gencredx", "telephony_credential_id": None}]


def test_users_set_phone_command(runner, make_agent, db_rows):
    agent = make_agent("Alice", sip_username="alice")
    result = runner.invoke(
        args=["users", "set-phone", agent.email, "--telephony-credential-id", "cred-9"]
    )
    assert result.exit_code == 0, result.output
    assert "updated" in result.output
    assert db_rows("SELECT sip_username, telephony_credential_id FROM users") == [
        {"sip_username": "alice", "telephony_credential_id": "cred-9"}
    ]
    result = runner.invoke(args=["users", "set-phone", agent.email])
    assert result.exit_code != 0
    assert "give --sip-username" in result.output


def test_simulated_calls_need_the_simulator(build_app, make_agent):
    app = build_app(APP_ENV="development")
    response = app.test_client().post("/api/dev/simulated-calls", headers=make_agent().headers)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "simulator_not_configured"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_body"),
        (b"[]", 400, "invalid_body"),
        (json.dumps({"from": "not a number"}).encode(), 400, "invalid_from"),
        (json.dumps({"to": 12}).encode(), 400, "invalid_to"),
        (json.dumps({"from": "+1" + "2" * 40}).encode(), 400, "invalid_from"),
        (b"{" + b" " * (2 * 1024 * 1024) + b"}", 413, "request_entity_too_large"),
    ],
)
def test_simulated_call_bad_input(build_app, make_agent, body, status, code):
    app = build_app(APP_ENV="development", TELNYX_SIMULATOR_URL="http://127.0.0.1:9")
    agent = make_agent()
    response = app.test_client().post(
        "/api/dev/simulated-calls",
        data=body,
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert response.json["error"]["code"] == code


def test_simulated_call_when_the_simulator_is_down(build_app, make_agent):
    app = build_app(APP_ENV="development", TELNYX_SIMULATOR_URL="http://127.0.0.1:9")
    agent = make_agent()
    response = app.test_client().post("/api/dev/simulated-calls", headers=agent.headers)
    assert response.status_code == 502
    assert response.json["error"]["code"] == "simulator_unavailable"


def test_a_recording_streams_through_the_service_with_ranges(
    build_app, agent, post_webhook, audio_host
):
    client = build_app(RECORDING_HOSTS=audio_host).test_client()
    call = with_recording(post_webhook, f"{audio_host}/ok.mp3")
    whole = client.get(f"/api/calls/{call}/recording", headers=agent.headers)
    assert whole.status_code == 200
    assert whole.data == AUDIO
    assert whole.mimetype == "audio/mpeg"
    assert whole.headers["Cache-Control"] == "private, no-store"
    part = client.get(
        f"/api/calls/{call}/recording", headers={**agent.headers, "Range": "bytes=100-199"}
    )
    assert part.status_code == 206
    assert part.data == AUDIO[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(AUDIO)}"


def test_an_expired_recording_link_is_a_clear_410(build_app, agent, post_webhook, audio_host):
    client = build_app(RECORDING_HOSTS=audio_host).test_client()
    call = with_recording(post_webhook, f"{audio_host}/gone.mp3")
    response = client.get(f"/api/calls/{call}/recording", headers=agent.headers)
    assert response.status_code == 410
    assert "expired" in response.json["error"]["message"]


def test_recording_refusals(build_app, agent, post_webhook):
    client = build_app(RECORDING_HOSTS="http://127.0.0.1:9").test_client()
    call = with_recording(post_webhook, "http://127.0.0.1:9/unreachable.mp3")
    assert client.get(f"/api/calls/{call}/recording").status_code == 401
    down = client.get(f"/api/calls/{call}/recording", headers=agent.headers)
    assert down.status_code == 502
    assert down.json["error"]["code"] == "recording_unavailable"
    missing = client.get("/api/calls/no-such-call/recording", headers=agent.headers)
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "call_not_found"
    long_id = client.get(f"/api/calls/{'x' * 300}/recording", headers=agent.headers)
    assert long_id.status_code == 404


def test_a_call_without_a_recording(client, agent, post_webhook):
    events = answered_call_events()[:5]  # no call.recording.saved
    for event in events:
        assert post_webhook(event).status_code == 200
    call = events[0]["data"]["payload"]["call_control_id"]
    response = client.get(f"/api/calls/{call}/recording", headers=agent.headers)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "no_recording"
