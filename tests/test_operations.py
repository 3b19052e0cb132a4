"""Operating it: /metrics summed over gunicorn workers, JSON logs with request ids, and refusing
to serve when the schema is behind."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from telnyx_flask.logs import JsonFormatter, RequestContext

from . import helpers
from .helpers import answered_call_events, encode, signed_headers, throwaway_database
from .servers import ROOT, ready_simulator, running_stack
from .sse_client import SseClient


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        LOG_FORMAT="json",
        RING_TIMEOUT_SECONDS="300",
        SSE_HEARTBEAT_SECONDS="1",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


@pytest.fixture
def sim(stack, clean_storage):
    return ready_simulator(stack)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by name and sorted labels."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before, after, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_a_call_across_both_workers(sim, stack, make_agent):
    server = stack[1]
    alice, bob = make_agent("Alice"), make_agent("Bob")
    before = samples(server.url)

    call = sim.call()
    sim.wait_delivered()
    won = requests.post(
        f"{server.url}/api/telnyx/calls/{call}/answer", headers=alice.headers, timeout=10
    )
    lost = requests.post(
        f"{server.url}/api/telnyx/calls/{call}/answer", headers=bob.headers, timeout=10
    )
    assert (won.status_code, lost.status_code) == (200, 409)
    sim.commands("record_start", call, wait_for=1)
    requests.post(f"{server.url}/api/telnyx/calls/{call}/end", headers=alice.headers, timeout=10)
    sim.wait_delivered()
    # Forty refused webhooks, each on its own connection, so both workers take some.
    for _ in range(40):
        requests.post(
            f"{server.url}/api/telnyx/webhook",
            data=b"{}",
            headers={"Connection": "close", "Content-Type": "application/json"},
            timeout=10,
        )
    after = samples(server.url)

    webhooks = "telnyx_flask_webhooks_total"
    assert delta(before, after, webhooks, event_type="call.initiated", result="applied") == 2
    assert delta(before, after, webhooks, event_type="call.answered", result="applied") == 2
    assert delta(before, after, webhooks, event_type="call.hangup", result="applied") == 2
    assert delta(before, after, webhooks, event_type="unknown", result="rejected") == 40
    handled = delta(before, after, "telnyx_flask_webhook_seconds_count")
    assert handled == sum(
        delta(before, after, name, **dict(labels)) for (name, labels) in after if name == webhooks
    )
    # Every webhook that got past verification went through a group commit, alone or not.
    accepted = sum(
        delta(before, after, name, **dict(labels))
        for (name, labels) in after
        if name == webhooks and dict(labels)["result"] != "rejected"
    )
    assert delta(before, after, "telnyx_flask_webhook_batch_size_sum") == accepted >= 6
    api = "telnyx_flask_telnyx_api_requests_total"
    for action in ("answer", "transfer", "record_start", "hangup"):
        assert delta(before, after, api, action=action, status="200") == 1, action
    assert delta(before, after, "telnyx_flask_claim_conflicts_total") == 1
    assert delta(before, after, "telnyx_flask_ring_to_claim_seconds_count") == 1
    assert delta(before, after, "telnyx_flask_ring_timeouts_total") == 0


def test_open_streams_are_counted_while_open(sim, stack, agent):
    server = stack[1]
    gauge = ("telnyx_flask_sse_streams", ())
    assert samples(server.url).get(gauge, 0) == 0
    stream = SseClient(f"{server.url}/api/telnyx/events", headers=agent.headers)
    try:
        stream.next_event()  # the snapshot: the stream is open
        assert samples(server.url)[gauge] == 1
    finally:
        stream.close()
    # The server notices a closed stream at its next write: a heartbeat, every second here.
    deadline = time.monotonic() + 10
    while samples(server.url).get(gauge, 0) != 0:
        assert time.monotonic() < deadline, "the closed stream is still counted"
        time.sleep(0.2)  # polling /metrics: there is nothing to wait on


def test_json_log_lines_carry_request_ids_and_calls(sim, stack, agent):
    server = stack[1]
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    call = sim.call()
    sim.wait_delivered()
    answered = requests.post(
        f"{server.url}/api/telnyx/calls/{call}/answer",
        headers={**agent.headers, "X-Request-ID": request_id},
        timeout=10,
    )
    assert answered.headers["X-Request-ID"] == request_id
    generated = requests.get(f"{server.url}/api/auth/me", headers=agent.headers, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])

    lines = [json.loads(line) for line in server.read_output().splitlines() if line.startswith("{")]
    answer_line = next(
        line
        for line in lines
        if line.get("request_id") == request_id and line["logger"] == "telnyx_flask.access"
    )
    assert answer_line["call_control_id"] == call
    assert (answer_line["method"], answer_line["status"]) == ("POST", 200)
    assert answer_line["path"] == f"/api/telnyx/calls/{call}/answer"
    assert {"time", "level", "message", "duration_ms"} <= set(answer_line)
    assert any(line.get("request_id") == generated.headers["X-Request-ID"] for line in lines)


def test_logs_never_carry_secrets_or_bodies(app, client, agent, caplog_json):
    password_response = client.post(
        "/api/auth/login", json={"email": agent.email, "password": "correct horse battery"}
    )
    token = password_response.json["token"]
    body = encode(answered_call_events()[0])
    client.post("/api/telnyx/webhook", data=body, headers=signed_headers(body))
    client.post("/api/telnyx/webhook", data=b'{"secret": "in a bad body"}')
    client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    logged = caplog_json.getvalue()
    assert logged.count("\n") >= 4
    for secret in ("correct horse battery", token, "in a bad body", "KEY_TEST", "test-secret"):
        assert secret not in logged
    assert body.decode()[:60] not in logged


@pytest.fixture
def caplog_json():
    """The package's log lines as JSON, in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContext())
    logger = logging.getLogger("telnyx_flask")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    for line in buffer.getvalue().splitlines():
        json.loads(line)  # every line is one JSON object


def test_serving_is_refused_while_the_schema_is_behind(database_url, redis_prefix):
    name = f"telnyx_flask_test_{uuid.uuid4().hex[:10]}"
    with throwaway_database(helpers.ADMIN_DATABASE_URL, name, migrate=False) as url:
        env = {
            **os.environ,
            **helpers.app_settings(url, redis_prefix, "http://127.0.0.1:9/v2"),
            "DOTENV_PATH": "/nonexistent",
        }
        env = {k: v for k, v in env.items() if isinstance(v, str)}
        result = subprocess.run(
            [sys.executable, "-c", "import wsgi"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 3
    assert "the database schema is behind the code" in result.stderr
    assert "flask --app telnyx_flask db upgrade" in result.stderr
    env["DATABASE_URL"] = database_url  # fully migrated
    assert (
        subprocess.run(
            [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, timeout=60
        ).returncode
        == 0
    )
