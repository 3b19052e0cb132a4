"""Sessions end when they should (invariant 13), sign-in never stalls the worker, and its limits
and cross-site refusals hold: against real PostgreSQL, Redis and gunicorn."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer
from werkzeug.security import generate_password_hash

from telnyx_flask import create_app
from telnyx_flask.auth import TOKEN_SALT, stream_guard
from telnyx_flask.push import SESSION_REVOKED
from telnyx_flask.redis_store import RedisKeys

from .helpers import (
    abandoned_call_events,
    app_settings,
    close_app,
    empty_redis,
    encode,
    renamed,
    signed_headers,
)
from .servers import Gunicorn, free_port
from .sse_client import SseClient

COOKIE = "telnyx_flask_session"
SAME_ORIGIN = {"Origin": "http://localhost"}


def login(client, email, password, **kwargs):
    return client.post("/api/auth/login", json={"email": email, "password": password}, **kwargs)


def signed_in(client, agent) -> dict[str, str]:
    """Sign the client in (it keeps the cookie); return that sign-in's bearer headers."""
    response = login(client, agent.email, agent.password)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def copy_of_cookie(client):
    """Another client holding the same session cookie, as a thief who copied it would."""
    thief = client.application.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return thief


def revocations(redis_client, redis_prefix) -> list[dict]:
    return [
        json.loads(fields["data"])
        for _, fields in redis_client.xrange(f"{redis_prefix}events")
        if fields["event"] == SESSION_REVOKED
    ]


def guard_for(app, headers):
    """The StreamGuard an event stream opened with these credentials would get."""
    with app.test_request_context("/api/telnyx/events", headers=headers):
        return stream_guard()


# --- Logout ---


def test_a_copied_cookie_stops_working_after_logout(client, agent):
    signed_in(client, agent)
    thief = copy_of_cookie(client)
    assert thief.get("/api/auth/me").status_code == 200
    assert client.post("/api/auth/logout", headers=SAME_ORIGIN).status_code == 200
    response = thief.get("/api/auth/me")
    assert response.status_code == 401
    assert "signed out" in response.get_json()["error"]["message"]


def test_bearer_token_stops_working_after_logout_even_after_redis_is_emptied(
    client, agent, redis_client, redis_prefix
):
    headers = signed_in(client, agent)
    other = client.application.test_client()
    assert other.post("/api/auth/logout", headers=headers).status_code == 200
    empty_redis(redis_client, redis_prefix)
    assert other.get("/api/auth/me", headers=headers).status_code == 401
    # The cookie of the same sign-in has ended with it.
    assert client.get("/api/auth/me").status_code == 401


def test_logout_ends_only_that_sign_in(client, agent):
    first = signed_in(client, agent)
    second = signed_in(client.application.test_client(), agent)
    assert client.post("/api/auth/logout", headers=first).status_code == 200
    assert client.get("/api/auth/me", headers=first).status_code == 401
    assert client.get("/api/auth/me", headers=second).status_code == 200


def test_logout_everywhere_ends_every_session_of_the_agent(client, agent, make_agent):
    bob = make_agent("Bob")
    browser = client.application.test_client()
    signed_in(browser, agent)
    token = signed_in(client.application.test_client(), agent)
    response = client.post("/api/auth/logout?everywhere=true", headers=agent.headers)
    assert response.status_code == 200
    assert client.get("/api/auth/me", headers=token).status_code == 401
    assert client.get("/api/auth/me", headers=agent.headers).status_code == 401
    assert browser.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me", headers=bob.headers).status_code == 200
    # A new sign-in works again.
    assert client.get("/api/auth/me", headers=signed_in(client, agent)).status_code == 200


def test_logout_everywhere_needs_a_session_that_is_still_good(client, agent, make_agent):
    headers = signed_in(client, agent)
    assert client.post("/api/auth/logout", headers=headers).status_code == 200
    response = client.post("/api/auth/logout?everywhere=1", headers=headers)
    assert response.status_code == 401
    assert client.get("/api/auth/me", headers=agent.headers).status_code == 200


def test_logout_everywhere_takes_only_true_or_false(client, agent):
    response = client.post("/api/auth/logout?everywhere=maybe", headers=agent.headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_everywhere"


def test_a_token_from_before_sessions_is_refused(app, client, agent):
    with app.app_context():
        old = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=TOKEN_SALT).dumps(
            {"uid": agent.id, "jti": "0123456789abcdef"}
        )
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "token is not valid"


# --- Password change and deactivation ---


def test_set_password_ends_every_session(client, runner, agent):
    browser = client.application.test_client()
    signed_in(browser, agent)
    result = runner.invoke(
        args=["users", "set-password", agent.email, "--password-stdin"],
        input="a brand new password\n",
    )
    assert result.exit_code == 0, result.output
    assert browser.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me", headers=agent.headers).status_code == 401
    assert login(client, agent.email, agent.password).status_code == 401
    assert login(client, agent.email, "a brand new password").status_code == 200


def test_deactivate_ends_every_session(app, client, runner, agent, redis_client, redis_prefix):
    browser = client.application.test_client()
    signed_in(browser, agent)
    guard = guard_for(app, agent.headers)
    result = runner.invoke(args=["users", "deactivate", agent.email])
    assert result.exit_code == 0, result.output
    assert browser.get("/api/auth/me").status_code == 403
    assert client.get("/api/auth/me", headers=agent.headers).status_code == 403
    assert guard.still_valid() is False
    assert revocations(redis_client, redis_prefix) == [{"agent_id": agent.id, "session_id": None}]


# --- The lifetime ---


def test_the_session_lifetime_does_not_slide(settings, agent, db_rows):
    settings.update(AUTH_TOKEN_TTL_SECONDS="60", AUTH_SESSION_CACHE_SECONDS="0")
    app = create_app(settings)
    try:
        client = app.test_client()
        headers = signed_in(client, agent)
        newest = (
            "SELECT created_at, expires_at FROM agent_sessions ORDER BY created_at DESC LIMIT 1"
        )
        [before] = db_rows(newest)
        assert (before["expires_at"] - before["created_at"]).total_seconds() == 60
        for _ in range(3):
            response = client.get("/api/auth/me")
            assert response.status_code == 200
            assert "Set-Cookie" not in response.headers  # the cookie is not renewed either
            assert client.get("/api/auth/me", headers=headers).status_code == 200
        assert db_rows(newest) == [before]
        # The lifetime runs out, however busy the session was.
        db_rows("UPDATE agent_sessions SET expires_at = now() - interval '1 second' RETURNING id")
        response = client.get("/api/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["message"] == "session has expired"
        assert client.get("/api/auth/me").status_code == 401
    finally:
        close_app(app)


# --- Open event streams ---


def test_still_valid_flips_after_logout_on_the_same_worker(app, client, agent):
    headers = signed_in(client, agent)
    guard = guard_for(app, headers)
    other = guard_for(app, agent.headers)
    assert guard.agent_id == agent.id
    assert guard.session_id
    assert guard.still_valid() is True
    assert client.post("/api/auth/logout", headers=headers).status_code == 200
    assert guard.still_valid() is False
    assert other.still_valid() is True  # another sign-in of the same agent goes on


def test_still_valid_flips_within_the_cache_window_on_another_worker(settings, client, agent):
    elsewhere = create_app(settings)
    try:
        store = elsewhere.extensions["sessions"]
        now = [1000.0]
        store.clock = lambda: now[0]
        guard = guard_for(elsewhere, agent.headers)
        assert guard.still_valid() is True
        assert client.post("/api/auth/logout", headers=agent.headers).status_code == 200
        # That worker may answer from its cache until the window closes, and no longer.
        now[0] += store.cache_seconds - 0.01
        assert guard.still_valid() is True
        now[0] += 0.02
        assert guard.still_valid() is False
    finally:
        close_app(elsewhere)


def test_still_valid_is_false_after_a_password_change(app, runner, agent):
    guard = guard_for(app, agent.headers)
    runner.invoke(
        args=["users", "set-password", agent.email, "--password-stdin"],
        input="a brand new password\n",
    )
    assert guard.still_valid() is False


def test_each_revocation_is_announced_on_the_event_stream(
    client, runner, agent, redis_client, redis_prefix
):
    headers = signed_in(client, agent)
    guard = guard_for(client.application, headers)
    client.post("/api/auth/logout", headers=headers)
    client.post("/api/auth/logout?everywhere=true", headers=agent.headers)
    runner.invoke(
        args=["users", "set-password", agent.email, "--password-stdin"],
        input="a brand new password\n",
    )
    assert revocations(redis_client, redis_prefix) == [
        {"agent_id": agent.id, "session_id": guard.session_id},
        {"agent_id": agent.id, "session_id": None},
        {"agent_id": agent.id, "session_id": None},
    ]


def test_logout_works_while_redis_is_down(settings, agent):
    settings["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    app = create_app(settings)
    try:
        client = app.test_client()
        assert client.post("/api/auth/logout", headers=agent.headers).status_code == 200
        assert client.get("/api/auth/me", headers=agent.headers).status_code == 401
    finally:
        close_app(app)


# --- Password hashes ---


def test_new_agents_get_argon2id_hashes(agent, db_rows):
    [row] = db_rows("SELECT password_hash FROM users")
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_an_old_werkzeug_hash_still_verifies_and_is_rehashed(client, agent, db_rows):
    old = generate_password_hash(agent.password)
    db_rows("UPDATE users SET password_hash = %s RETURNING id", (old,))
    assert login(client, agent.email, "not the password").status_code == 401
    assert db_rows("SELECT password_hash FROM users")[0]["password_hash"] == old
    assert login(client, agent.email, agent.password).status_code == 200
    [row] = db_rows("SELECT password_hash FROM users")
    assert row["password_hash"].startswith("$argon2id$")
    assert login(client, agent.email, agent.password).status_code == 200


# --- Sign-in limits ---


def test_a_successful_sign_in_clears_the_email_counter(settings, agent):
    settings["LOGIN_MAX_PER_EMAIL"] = "3"
    app = create_app(settings)
    try:
        client = app.test_client()
        for _ in range(2):
            assert login(client, agent.email, "wrong password").status_code == 401
        assert login(client, agent.email, agent.password).status_code == 200
        for _ in range(3):
            assert login(client, agent.email, "wrong password").status_code == 401
        assert login(client, agent.email, "wrong password").status_code == 429
    finally:
        close_app(app)


def test_ipv6_clients_are_limited_per_64(settings):
    settings["LOGIN_MAX_PER_IP"] = "2"
    app = create_app(settings)
    try:
        client = app.test_client()

        def attempt(n: int, address: str) -> int:
            environ = {"REMOTE_ADDR": address}
            return login(client, f"u{n}@example.test", "x", environ_base=environ).status_code

        assert attempt(1, "2001:db8:1:2::1") == 401
        assert attempt(2, "2001:db8:1:2:ffff:ffff:ffff:fffe") == 401
        assert attempt(3, "2001:db8:1:2:abcd::5") == 429  # same /64, another address
        assert attempt(4, "2001:db8:1:3::1") == 401  # the next /64 is someone else
        assert attempt(5, "192.0.2.1") == 401
        assert attempt(6, "192.0.2.2") == 401  # IPv4 is still per address
    finally:
        close_app(app)


def test_forwarded_for_without_a_trusted_proxy_warns_once(client, caplog, monkeypatch):
    monkeypatch.setattr("telnyx_flask.auth._warned_about_forwarded_for", False)
    with caplog.at_level(logging.WARNING, logger="telnyx_flask.auth"):
        for _ in range(3):
            client.get("/api/auth/me", headers={"X-Forwarded-For": "203.0.113.9"})
    warnings = [r for r in caplog.records if "TRUSTED_PROXY_COUNT" in r.getMessage()]
    assert len(warnings) == 1


def test_no_forwarded_for_warning_behind_a_trusted_proxy(settings, caplog, monkeypatch):
    monkeypatch.setattr("telnyx_flask.auth._warned_about_forwarded_for", False)
    settings["TRUSTED_PROXY_COUNT"] = "1"
    app = create_app(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="telnyx_flask.auth"):
            app.test_client().get("/api/auth/me", headers={"X-Forwarded-For": "203.0.113.9"})
        assert not [r for r in caplog.records if "TRUSTED_PROXY_COUNT" in r.getMessage()]
    finally:
        close_app(app)


# --- Login CSRF ---


def test_sign_in_with_a_text_plain_body_is_refused(client, agent):
    body = json.dumps({"email": agent.email, "password": agent.password})
    response = client.post(
        "/api/auth/login", data=body, headers={"Content-Type": "text/plain", **SAME_ORIGIN}
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.get_json()["error"]["message"]
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/login-csrf.html"},
        {"Referer": "http://[::1"},
    ],
)
def test_sign_in_from_another_site_is_refused(client, agent, headers):
    response = login(client, agent.email, agent.password, headers=headers)
    assert response.status_code == 403
    assert "cross-site" in response.get_json()["error"]["message"]
    assert "Set-Cookie" not in response.headers


def test_sign_in_from_the_service_or_an_allowed_origin_works(settings, agent):
    settings["ALLOWED_ORIGINS"] = "https://calls.example.com"
    app = create_app(settings)
    try:
        client = app.test_client()
        for headers in (
            SAME_ORIGIN,
            {"Referer": "http://localhost/"},
            {"Origin": "https://calls.example.com"},
        ):
            assert login(client, agent.email, agent.password, headers=headers).status_code == 200
    finally:
        close_app(app)


def test_sign_in_without_origin_or_referer_is_allowed(client, agent):
    response = login(client, agent.email, agent.password)
    assert response.status_code == 200
    assert response.get_json()["token"]


# --- Sign-in does not stall the worker ---

STORM_SIZE = 30


@pytest.fixture(scope="module")
def one_worker(database_url, redis_prefix, fake_telnyx):
    """The app under gunicorn with a single gevent worker: every request shares one loop."""
    settings = app_settings(database_url, redis_prefix, fake_telnyx.base_url)
    settings.update(RECORD_CALLS="false", LOGIN_MAX_PER_IP="1000", SSE_HEARTBEAT_SECONDS="1")
    with Gunicorn(settings, workers=1, port=free_port()) as gunicorn:
        yield gunicorn


def storm_reached_the_server(redis_client, redis_prefix) -> None:
    """Return once every sign-in of the storm has been counted by the worker, so all of them
    are being hashed (or queued to be) when the call comes in."""
    attempts = RedisKeys(redis_prefix).login_attempts("ip", "127.0.0.1")
    deadline = time.monotonic() + 30
    while int(redis_client.get(attempts) or 0) < STORM_SIZE:
        assert time.monotonic() < deadline, "the sign-ins never reached the worker"
        time.sleep(0.002)  # a counter in another process: there is nothing to block on


def test_a_sign_in_storm_does_not_delay_a_ring(
    one_worker, agent, clean_storage, redis_client, redis_prefix
):
    page = SseClient(f"{one_worker.url}/api/telnyx/events", agent.headers)
    try:
        assert page.next_event().event == "snapshot"
        finished: list[float] = []

        def wrong_sign_in(n: int) -> None:
            body = {"email": f"storm{n}@example.test", "password": "not the password"}
            response = requests.post(f"{one_worker.url}/api/auth/login", json=body, timeout=60)
            assert response.status_code == 401
            finished.append(time.monotonic())

        storm = [threading.Thread(target=wrong_sign_in, args=(n,)) for n in range(STORM_SIZE)]
        storm_began = time.monotonic()
        for thread in storm:
            thread.start()
        storm_reached_the_server(redis_client, redis_prefix)
        [initiated] = renamed(abandoned_call_events()[:1], "-storm")
        raw = encode(initiated)
        sent = time.monotonic()
        response = requests.post(
            f"{one_worker.url}/api/telnyx/webhook", data=raw, headers=signed_headers(raw)
        )
        assert response.status_code == 200
        ring = page.next_event(within=60)
        rang = time.monotonic()
        answered_by_then = len(finished)
        for thread in storm:
            thread.join(60)
        assert ring.event == "call.ringing"
        print(
            f"\nsign-in storm of {STORM_SIZE}: ring reached the page {1000 * (rang - sent):.0f} ms"
            f" after the webhook was sent; {answered_by_then}/{STORM_SIZE} sign-ins answered by"
            f" then; the storm took {1000 * (max(finished) - storm_began):.0f} ms"
        )
        # The loop was free: the ring got through while most of the storm was still being hashed
        # (with hashing on the loop, the webhook waited behind the sign-ins queued before it: 27
        # to 30 of the 30 had been answered when it rang).
        assert answered_by_then < STORM_SIZE // 2
        assert len(finished) == STORM_SIZE
    finally:
        page.close()


def test_an_unknown_email_costs_a_hash_too(app, agent, monkeypatch):
    """Timing must not tell which emails have accounts: both paths verify one argon2id hash."""
    import telnyx_flask.auth as auth

    verified: list[str] = []
    real = auth.verify_password
    monkeypatch.setattr(
        auth,
        "verify_password",
        lambda stored, given: verified.append(stored) or real(stored, given),
    )
    client = app.test_client()
    login(client, agent.email, "not the password")
    login(client, "nobody@example.test", "not the password")
    assert [h.split("$")[1] for h in verified] == ["argon2id", "argon2id"]
