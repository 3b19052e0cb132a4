"""Group commit of webhooks against real PostgreSQL and Redis: a batch is applied in one
statement and one script call, yet each request gets its own answer, exactly as if alone."""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from telnyx_flask import create_app
from telnyx_flask.group_commit import GroupCommit
from telnyx_flask.webhook_intake import apply_batch

from .helpers import (
    abandoned_call_events,
    close_app,
    encode,
    renamed,
    signed_headers,
    wait_until,
)

counter = itertools.count()


class HeldBatches:
    """The app's group commit, with a long window, whose first batch stays in flight (already
    applied) until `send_together` has gathered the next one: so that batch is exactly the
    bodies given. Batches are recorded by size."""

    def __init__(self, app):
        self.app = app
        self.sizes: list[int] = []
        self.first_applied = threading.Event()
        self.release = threading.Event()
        self.commit = GroupCommit(self._apply, window=60.0, max_items=64)
        app.extensions["webhook_batches"] = self.commit

    def _apply(self, items):
        self.sizes.append(len(items))
        outcomes = apply_batch(items)
        if len(self.sizes) == 1:
            self.first_applied.set()
            assert self.release.wait(30), "the test never released the first batch"
        return outcomes

    def post(self, body):
        raw = encode(body)
        return self.app.test_client().post(
            "/api/telnyx/webhook", data=raw, headers=signed_headers(raw)
        )

    def send_together(self, bodies: list, before_release: Callable[[], None] = lambda: None):
        """Send `bodies` as one batch, behind a held opener; the responses, in order."""
        opener = renamed(abandoned_call_events()[:1], f"-opener{next(counter)}")[0]
        with ThreadPoolExecutor(max_workers=len(bodies) + 1) as pool:
            first = pool.submit(self.post, opener)
            assert self.first_applied.wait(30)
            futures = [pool.submit(self.post, body) for body in bodies]
            wait_until(lambda: self.commit.gathering() == len(bodies), interval=0.005)
            before_release()
            self.release.set()
            assert first.result(30).status_code == 200
            responses = [future.result(30) for future in futures]
        assert self.sizes == [1, len(bodies)]
        return responses


def a_call(name: str) -> tuple[dict, dict]:
    """A fresh call's call.initiated and call.hangup (the abandoned-call fixtures, renamed)."""
    initiated, hangup = renamed(abandoned_call_events(), f"-{name}{next(counter)}")
    return initiated, hangup


def caller_of(body: dict) -> str:
    return body["data"]["payload"]["call_control_id"]


def session_of(body: dict) -> str:
    return body["data"]["payload"]["call_session_id"]


def announced_for(redis_client, redis_prefix, call_control_id: str) -> list[str]:
    return [
        fields["event"]
        for _, fields in redis_client.xrange(f"{redis_prefix}events")
        if json.loads(fields["data"])["call_control_id"] == call_control_id
    ]


def results(responses) -> list:
    return [
        (r.status_code, (r.get_json().get("result") or r.get_json()["error"]["code"]))
        for r in responses
    ]


def test_duplicates_and_two_events_of_one_call_in_one_batch_are_applied_as_if_alone(
    app, db_rows, redis_client, redis_prefix
):
    held = HeldBatches(app)
    a_initiated, a_hangup = a_call("a")
    b_initiated, _ = a_call("b")
    responses = held.send_together([a_initiated, copy.deepcopy(a_initiated), a_hangup, b_initiated])

    answers = results(responses)
    # The same event twice in one batch: applied once, the other is a duplicate.
    assert sorted(answers[:2]) == [(200, "applied"), (200, "duplicate")]
    assert answers[2:] == [(200, "applied"), (200, "applied")]
    rows = db_rows(
        "SELECT call_session_id, status FROM inbound_calls WHERE call_session_id IN (%s, %s)"
        " ORDER BY call_session_id",
        (session_of(a_initiated), session_of(b_initiated)),
    )
    assert rows == [
        {"call_session_id": session_of(a_initiated), "status": "ended"},
        {"call_session_id": session_of(b_initiated), "status": "ringing"},
    ]
    assert db_rows(
        "SELECT count(*) AS n FROM webhook_events WHERE call_session_id = %s",
        (session_of(a_initiated),),
    ) == [{"n": 2}]
    assert db_rows(
        "SELECT outcome FROM call_logs WHERE call_session_id = %s", (session_of(a_initiated),)
    ) == [{"outcome": "abandoned"}]
    # Live: the pair went in call order, so the ring (if announced) comes before the end.
    names = announced_for(redis_client, redis_prefix, caller_of(a_initiated))
    assert names in (["call.ringing", "call.ended"], ["call.ended"])
    assert redis_client.hget(f"{redis_prefix}call:{caller_of(a_initiated)}", "status") == "ended"
    assert announced_for(redis_client, redis_prefix, caller_of(b_initiated)) == ["call.ringing"]
    assert redis_client.zscore(f"{redis_prefix}calls:ringing", caller_of(b_initiated))


def test_one_bad_event_in_a_batch_fails_alone(app, post_webhook, db_rows):
    taken, _ = a_call("taken")
    assert post_webhook(taken).status_code == 200
    # Another session claiming a call_control_id that is already taken: PostgreSQL refuses it.
    impostor, _ = a_call("impostor")
    impostor["data"]["payload"]["call_control_id"] = caller_of(taken)
    good_one, _ = a_call("good1")
    good_two, _ = a_call("good2")

    held = HeldBatches(app)
    responses = held.send_together([good_one, impostor, good_two])

    assert results(responses) == [
        (200, "applied"),
        (400, "malformed_webhook"),
        (200, "applied"),
    ]
    assert (
        "already belongs to another call_session_id"
        in (responses[1].get_json()["error"]["message"])
    )
    sessions = {
        row["call_session_id"] for row in db_rows("SELECT call_session_id FROM inbound_calls")
    }
    assert {session_of(good_one), session_of(good_two)} <= sessions
    assert session_of(impostor) not in sessions
    assert db_rows(
        "SELECT count(*) AS n FROM webhook_events WHERE call_session_id = %s",
        (session_of(impostor),),
    ) == [{"n": 0}]


@pytest.mark.parametrize("store", ["postgresql", "redis"])
def test_a_store_failing_under_a_batch_gives_every_request_503_and_the_retry_applies_once(
    proxied, db_rows, redis_client, redis_prefix, store
):
    app, proxies = proxied
    held = HeldBatches(app)
    calls = [a_call(f"cut{n}") for n in range(3)]
    bodies = [initiated for initiated, _ in calls] + [calls[0][1]]

    responses = held.send_together(bodies, before_release=proxies[store].cut)

    assert results(responses) == [(503, "storage_unavailable")] * len(bodies)
    assert {r.get_json()["error"]["message"] for r in responses} == {f"{store} is unavailable"}
    durable = db_rows(
        "SELECT count(*) AS n FROM inbound_calls WHERE call_session_id LIKE %s", ("%-cut%",)
    )
    # PostgreSQL first: with it down nothing was written; with Redis down it all was.
    assert durable == [{"n": 0 if store == "postgresql" else 3}]

    proxies[store].restore()
    retried = [held.post(body) for body in bodies]
    expected = "applied" if store == "postgresql" else "duplicate"
    assert results(retried) == [(200, expected)] * len(bodies)

    assert db_rows(
        "SELECT count(*) AS n FROM webhook_events WHERE call_session_id LIKE %s", ("%-cut%",)
    ) == [{"n": 4}]
    statuses = db_rows(
        "SELECT status FROM inbound_calls WHERE call_session_id LIKE %s ORDER BY status",
        ("%-cut%",),
    )
    assert statuses == [{"status": "ended"}, {"status": "ringing"}, {"status": "ringing"}]
    # Each step was announced exactly once. With Redis down, PostgreSQL already knew the first
    # call had ended by the time Redis heard of it: it never rings, it only ends.
    first = caller_of(calls[0][0])
    ended_first = ["call.ringing", "call.ended"] if store == "postgresql" else ["call.ended"]
    assert announced_for(redis_client, redis_prefix, first) == ended_first
    assert redis_client.zscore(f"{redis_prefix}calls:ringing", first) is None
    for initiated, _ in calls[1:]:
        assert announced_for(redis_client, redis_prefix, caller_of(initiated)) == ["call.ringing"]


def test_by_default_a_lone_webhook_goes_through_the_group_commit_as_a_batch_of_one(
    app, post_webhook
):
    commit = app.extensions["webhook_batches"]
    assert (commit.window, commit.max_items) == (0.002, 64)
    initiated, hangup = a_call("lone")
    assert post_webhook(initiated).get_json()["result"] == "applied"
    assert post_webhook(hangup).get_json()["result"] == "applied"
    assert (commit.batches, commit.items) == (2, 2)


def test_a_window_of_zero_applies_each_webhook_alone(settings, db_rows):
    settings["WEBHOOK_BATCH_WINDOW_MS"] = "0"
    app = create_app(settings)
    try:
        assert app.extensions["webhook_batches"] is None
        client = app.test_client()
        initiated, _ = a_call("unbatched")
        raw = encode(initiated)
        sent = [
            client.post("/api/telnyx/webhook", data=raw, headers=signed_headers(raw)) for _ in "ab"
        ]
        assert results(sent) == [
            (200, "applied"),
            (200, "duplicate"),
        ]
        assert db_rows(
            "SELECT status FROM inbound_calls WHERE call_session_id = %s",
            (session_of(initiated),),
        ) == [{"status": "ringing"}]
    finally:
        close_app(app)
