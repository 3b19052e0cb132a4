"""Production fails safe under gunicorn: a stray .env cannot make it development, test calls do
not exist there, and HSTS goes out only over HTTPS."""

from __future__ import annotations

import pytest
import requests

from telnyx_flask import create_app

from .helpers import app_settings, close_app, encode, load_fixture
from .servers import Gunicorn


def test_a_stray_dotenv_cannot_turn_production_into_development(tmp_path, settings, make_agent):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "APP_ENV=development\n"
        "TELNYX_WEBHOOK_VERIFY=false\n"
        "SECRET_KEY=change-me\n"
        "TELNYX_SIMULATOR_URL=http://127.0.0.1:9\n"
    )
    alice = make_agent("Alice")
    # What a careless deploy looks like: no APP_ENV in the real environment, a .env beside it.
    without_app_env = {name: value for name, value in settings.items() if name != "APP_ENV"}
    with Gunicorn(without_app_env, workers=1, dotenv_path=str(dotenv)) as server:
        unsigned = requests.post(
            f"{server.url}/api/telnyx/webhook",
            data=encode(load_fixture("01_call.initiated.json")),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        login = requests.post(
            f"{server.url}/api/auth/login",
            json={"email": alice.email, "password": alice.password},
            timeout=10,
        )
        simulated = requests.post(
            f"{server.url}/api/dev/simulated-calls", headers=alice.headers, timeout=10
        )
    assert unsigned.status_code == 401
    assert login.status_code == 200, login.text
    cookie = login.headers["Set-Cookie"]
    assert "; Secure" in cookie
    assert simulated.status_code == 404


@pytest.fixture(scope="module")
def production(database_url, redis_prefix, fake_telnyx):
    """Production under gunicorn behind one trusted proxy, pointed at a simulator URL."""
    settings = app_settings(database_url, redis_prefix, fake_telnyx.base_url)
    settings.update(TRUSTED_PROXY_COUNT="1", TELNYX_SIMULATOR_URL="http://127.0.0.1:9")
    with Gunicorn(settings, workers=1) as server:
        yield server


def test_simulated_calls_do_not_exist_in_production_even_with_a_simulator_url(production, agent):
    response = requests.post(
        f"{production.url}/api/dev/simulated-calls", headers=agent.headers, timeout=10
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    page = requests.get(f"{production.url}/api/softphone/config", headers=agent.headers, timeout=10)
    assert page.json()["simulator"] == {"enabled": False}


def test_simulated_calls_exist_in_development(settings, make_agent):
    app = create_app(
        {**settings, "APP_ENV": "development", "TELNYX_SIMULATOR_URL": "http://127.0.0.1:9"}
    )
    try:
        alice = make_agent("Alice")
        client = app.test_client()
        response = client.post("/api/dev/simulated-calls", headers=alice.headers)
        page = client.get("/api/softphone/config", headers=alice.headers)
    finally:
        close_app(app)
    assert response.status_code == 502  # the route is there; nothing listens on port 9
    assert response.json["error"]["code"] == "simulator_unavailable"
    assert page.json["simulator"] == {"enabled": True}


def test_hsts_is_sent_when_the_trusted_proxy_says_https(production):
    response = requests.get(
        f"{production.url}/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_hsts_is_never_sent_over_plain_http(production):
    response = requests.get(f"{production.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_with_a_bad_setting_stops_with_one_line_instead_of_respawning(
    database_url, redis_prefix
):
    """A worker that cannot configure itself exits with gunicorn's boot-error code, so the
    master stops at once rather than restarting workers that can only fail again."""
    settings = app_settings(database_url, redis_prefix, "http://127.0.0.1:9/v2")
    settings["SECRET_KEY"] = "change-me"
    server = Gunicorn(settings, workers=2)
    try:
        returncode = server.process.wait(timeout=60)
    finally:
        output = server.stop()
    assert returncode != 0
    assert "configuration error: SECRET_KEY" in output
    assert "Worker failed to boot" in output
