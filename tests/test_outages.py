"""A dependency down for one attempt: 503, and Telnyx's retry finishes the job exactly once."""

from __future__ import annotations

import json

from .helpers import answered_call_events, encode, signed_headers


def post(client, body):
    raw = encode(body)
    return client.post("/api/telnyx/webhook", data=raw, headers=signed_headers(raw))


def announced(redis_client, redis_prefix):
    return [fields["event"] for _, fields in redis_client.xrange(f"{redis_prefix}events")]


def test_postgresql_down_is_503_and_the_retry_applies_once(
    proxied, db_rows, redis_client, redis_prefix
):
    app, proxies = proxied
    client = app.test_client()
    initiated, _leg_b, answered, *_ = answered_call_events()
    assert post(client, initiated).status_code == 200

    proxies["postgresql"].cut()
    response = post(client, answered)
    assert response.status_code == 503
    assert response.get_json()["error"] == {
        "code": "storage_unavailable",
        "message": "postgresql is unavailable",
    }
    assert response.headers["Retry-After"] == "1"
    # Nothing was announced that is not durable.
    assert announced(redis_client, redis_prefix) == ["call.ringing"]

    proxies["postgresql"].restore()
    assert post(client, answered).get_json()["result"] == "applied"
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "answered"}]
    assert announced(redis_client, redis_prefix) == ["call.ringing", "call.answered"]


def test_redis_down_after_postgresql_committed_is_finished_by_the_retry(
    proxied, db_rows, redis_client, redis_prefix, fake_telnyx
):
    app, proxies = proxied
    client = app.test_client()
    initiated, _leg_b, answered, *_ = answered_call_events()
    assert post(client, initiated).status_code == 200

    proxies["redis"].cut()
    response = post(client, answered)
    assert response.status_code == 503
    assert response.get_json()["error"]["message"] == "redis is unavailable"
    # PostgreSQL took it; Redis did not.
    assert db_rows("SELECT status FROM inbound_calls") == [{"status": "answered"}]
    caller = answered["data"]["payload"]["call_control_id"]
    assert redis_client.hget(f"{redis_prefix}call:{caller}", "status") == "ringing"

    proxies["redis"].restore()
    answered["meta"]["attempt"] = 2
    retry = post(client, answered)
    assert retry.status_code == 200
    assert retry.get_json()["result"] == "duplicate"
    assert redis_client.hget(f"{redis_prefix}call:{caller}", "status") == "answered"
    assert redis_client.zcard(f"{redis_prefix}calls:ringing") == 0
    assert announced(redis_client, redis_prefix) == ["call.ringing", "call.answered"]
    # The retry also issues what the first attempt never reached: recording, once.
    # The first attempt owed recording in the same transaction that stored the event; the retry
    # owes nothing new, and it is sent once.
    assert app.extensions["outbox"].deliver_due() == ["sent"]
    assert len(fake_telnyx.received("record_start")) == 1

    # A third delivery is a true duplicate everywhere.
    assert post(client, answered).get_json()["result"] == "duplicate"
    assert announced(redis_client, redis_prefix) == ["call.ringing", "call.answered"]
    assert db_rows("SELECT count(*) AS n FROM webhook_events") == [{"n": 2}]


def test_pending_calls_is_503_when_redis_is_down(proxied, agent):
    app, proxies = proxied
    proxies["redis"].cut()
    response = app.test_client().get("/api/telnyx/calls/pending", headers=agent.headers)
    assert response.status_code == 503
    assert json.loads(response.data)["error"]["code"] == "storage_unavailable"


def test_readyz_names_the_dependency_that_is_down(proxied):
    app, proxies = proxied
    client = app.test_client()
    ready = client.get("/readyz").get_json()
    assert (ready["status"], ready["checks"]) == ("ready", {"postgresql": "ok", "redis": "ok"})
    proxies["redis"].cut()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"postgresql": "ok", "redis": "unavailable"}
    proxies["redis"].restore()
    proxies["postgresql"].cut()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"postgresql": "unavailable", "redis": "ok"}


def test_healthz_needs_no_dependency(proxied):
    app, proxies = proxied
    for proxy in proxies.values():
        proxy.cut()
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
