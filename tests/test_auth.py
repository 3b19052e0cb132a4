"""Signing in: cookie for the page, bearer token for API clients, limits, cross-site refusal."""

from __future__ import annotations

import time

import pytest

from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.users import Agent


def login(client, email, password, **kwargs):
    return client.post("/api/auth/login", json={"email": email, "password": password}, **kwargs)


def test_login_returns_a_token_and_sets_a_safe_cookie(client, agent):
    response = login(client, agent.email.upper(), agent.password)
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"] == {
        "id": agent.id,
        "email": agent.email,
        "name": "Alice",
        "sip_username": "agentalice",
        "role": "agent",
    }
    assert body["token"]
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie
    # The cookie alone now identifies the agent.
    assert client.get("/api/auth/me").get_json()["user"]["id"] == agent.id
    # So does the token alone, from a client with no cookie.
    other = client.application.test_client()
    me = other.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.get_json()["user"]["email"] == agent.email


def test_wrong_password_and_unknown_email_get_the_same_answer(client, agent):
    wrong = login(client, agent.email, "not the password")
    unknown = login(client, "nobody@example.test", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()
    assert wrong.get_json()["error"]["code"] == "wrong_credentials"


@pytest.mark.parametrize(
    "body",
    [None, "not json", {"email": "a@b.c"}, {"password": "x"}, {"email": 5, "password": "x"}],
)
def test_malformed_login_is_400(client, body):
    if body is None:
        response = client.post("/api/auth/login", headers={"Content-Type": "application/json"})
    elif isinstance(body, str):
        response = client.post(
            "/api/auth/login", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = client.post("/api/auth/login", json=body)
    assert response.status_code == 400
    assert response.is_json


def test_oversized_body_is_413_json(client):
    response = client.post(
        "/api/auth/login",
        data="x" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


@pytest.mark.parametrize("path", ["/api/auth/me", "/api/telnyx/calls/pending"])
def test_agent_endpoints_need_credentials(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer ", "Basic dXNlcjpwYXNz", "token"])
def test_bad_bearer_is_401(client, header):
    assert client.get("/api/auth/me", headers={"Authorization": header}).status_code == 401


def test_tampered_token_is_401(client, agent):
    token = agent.headers["Authorization"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = client.get("/api/auth/me", headers={"Authorization": tampered})
    assert response.status_code == 401


def test_expired_token_is_401(app, client, agent, monkeypatch):
    with app.app_context():
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() - 13 * 3600)
        token = issue_token(Agent(agent.id, agent.email, agent.name, None))
        monkeypatch.setattr(time, "time", real_time)
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "token has expired"


def test_token_from_another_secret_is_401(settings, client, agent):
    settings["SECRET_KEY"] = "Zx8Kp2Lm9Qw4Er7Ty1Ui6Op3As5Df0Gh"
    other_app = create_app(settings)
    with other_app.app_context():
        token = issue_token(Agent(agent.id, agent.email, agent.name, None))
    assert (
        client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )


def test_deactivated_agent_cannot_sign_in_or_use_a_token(client, runner, agent):
    result = runner.invoke(args=["users", "deactivate", agent.email])
    assert result.exit_code == 0, result.output
    assert login(client, agent.email, agent.password).status_code == 403
    response = client.get("/api/auth/me", headers=agent.headers)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_logout_revokes_the_bearer_token(client, agent):
    assert client.post("/api/auth/logout", headers=agent.headers).status_code == 200
    response = client.get("/api/auth/me", headers=agent.headers)
    assert response.status_code == 401
    assert "signed out" in response.get_json()["error"]["message"]


def test_logout_ends_the_cookie_session(client, agent):
    login(client, agent.email, agent.password)
    origin = {"Origin": "http://localhost"}
    assert client.post("/api/auth/logout", headers=origin).status_code == 200
    assert client.get("/api/auth/me").status_code == 401


def test_valid_bearer_wins_over_the_cookie(client, agent, make_agent):
    bob = make_agent("Bob")
    login(client, agent.email, agent.password)
    me = client.get("/api/auth/me", headers=bob.headers).get_json()["user"]
    assert me["name"] == "Bob"


def test_cookie_post_from_another_site_is_refused(client, agent):
    login(client, agent.email, agent.password)
    url = "/api/telnyx/calls/v3:nothing/answer"
    for headers in (
        {},
        {"Origin": "https://evil.example"},
        {"Referer": "https://evil.example/page"},
    ):
        response = client.post(url, headers=headers)
        assert response.status_code == 403, headers
        assert "cross-site" in response.get_json()["error"]["message"]
    # The same origin gets through to the call lookup (404: no such call).
    assert client.post(url, headers={"Origin": "http://localhost"}).status_code == 404
    # A bearer client needs no Origin at all.
    assert (
        client.post(url, headers={"Authorization": agent.headers["Authorization"]}).status_code
        == 404
    )


def test_sign_in_attempts_are_limited_per_email(settings, agent):
    settings["LOGIN_MAX_PER_EMAIL"] = "3"
    client = create_app(settings).test_client()
    for _ in range(3):
        assert login(client, agent.email, "wrong password").status_code == 401
    response = login(client, agent.email, agent.password)
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 300
    assert response.get_json()["error"]["code"] == "too_many_attempts"


def test_sign_in_attempts_are_limited_per_address(settings):
    settings["LOGIN_MAX_PER_IP"] = "2"
    client = create_app(settings).test_client()
    for n in range(2):
        assert login(client, f"user{n}@example.test", "whatever").status_code == 401
    assert login(client, "user9@example.test", "whatever").status_code == 429
    other_address = login(
        client, "user9@example.test", "whatever", environ_base={"REMOTE_ADDR": "10.9.9.9"}
    )
    assert other_address.status_code == 401


def test_users_cli_creates_lists_and_refuses_duplicates(runner, db_rows):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "Dana@Example.test",
            "--name",
            "Dana",
            "--sip-username",
            "dana1",
            "--password-stdin",
        ],
        input="a long password\n",
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "dana@example.test",
            "--name",
            "Dana",
            "--password-stdin",
        ],
        input="a long password\n",
    )
    assert again.exit_code != 0
    assert "already exists" in again.output
    listing = runner.invoke(args=["users", "list"])
    assert "Dana@Example.test\tDana\tdana1\tagent\tactive" in listing.output
    [row] = db_rows("SELECT password_hash FROM users")
    assert "a long password" not in row["password_hash"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-email", "--name", "X"], "not an email address"),
        (
            ["--email", "x@example.test", "--name", "X", "--sip-username", "9lives"],
            "must start with a letter",
        ),
    ],
)
def test_users_cli_rejects_bad_input(runner, args, message):
    result = runner.invoke(
        args=["users", "create", *args, "--password-stdin"], input="a long password\n"
    )
    assert result.exit_code != 0
    assert message in result.output
