"""After the call: the agent who had it leaves a note and a disposition (PUT replaces them), every
page hears call.noted, the history shows and filters them; bad input is a 4xx naming the fault."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from .helpers import answered_call_events, load_fixture

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def logged_call(db_rows):
    """Insert an ended call's log row, answered by `agent_id`; return its call_sid."""
    counter = iter(range(1, 10_000))

    def add(agent_id: str | None, **fields) -> str:
        n = next(counter)
        values = {
            "call_sid": f"v3:noted-call-{n}",
            "direction": "inbound",
            "from_number": "+13125550147",
            "phone_number": "+13125550147",
            "to_number": "+14155550123",
            "outcome": "answered" if agent_id else "missed",
            "started_at": T0 + timedelta(minutes=n),
            "ended_at": T0 + timedelta(minutes=n, seconds=90),
            "answered_by": agent_id,
            **fields,
        }
        columns = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        db_rows(
            f"INSERT INTO call_logs ({columns}) VALUES ({placeholders}) RETURNING id",
            tuple(values.values()),
        )
        return values["call_sid"]

    return add


def put_notes(client, agent, call_sid, body, **kwargs):
    payload = {"data": body} if isinstance(body, bytes | str) else {"json": body}
    return client.put(
        f"/api/calls/{call_sid}/notes", headers=agent.headers if agent else {}, **payload, **kwargs
    )


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]


def noted_events(redis_client, redis_prefix) -> list[dict]:
    return [
        json.loads(fields["data"])
        for _, fields in redis_client.xrange(f"{redis_prefix}events")
        if fields["event"] == "call.noted"
    ]


def test_the_agent_who_had_the_call_leaves_a_note_and_disposition_and_pages_hear_of_it(
    client, agent, logged_call, db_rows, redis_client, redis_prefix
):
    call_sid = logged_call(agent.id)
    response = put_notes(
        client, agent, call_sid, {"note": " Wants a quote. ", "disposition": "sale"}
    )
    assert response.status_code == 200, response.get_json()
    call = response.get_json()["call"]
    assert call["call_control_id"] == call_sid
    assert call["note"] == "Wants a quote."
    assert call["disposition"] == "sale"
    assert call["noted_by"] == {"id": agent.id, "name": "Alice"}
    row = db_rows("SELECT notes, disposition, noted_by::text, noted_at FROM call_logs")[0]
    assert (row["notes"], row["disposition"], row["noted_by"]) == (
        "Wants a quote.",
        "sale",
        agent.id,
    )
    assert call["noted_at"] == row["noted_at"].isoformat()
    assert noted_events(redis_client, redis_prefix) == [
        {"call_control_id": call_sid, "disposition": "sale"}
    ]


def test_a_second_save_replaces_the_first_note_and_disposition(client, agent, logged_call, db_rows):
    call_sid = logged_call(agent.id)
    assert (
        put_notes(client, agent, call_sid, {"note": "first", "disposition": "sale"}).status_code
        == 200
    )
    first_at = db_rows("SELECT noted_at FROM call_logs")[0]["noted_at"]
    response = put_notes(client, agent, call_sid, {"disposition": "follow-up"})
    assert response.status_code == 200
    row = db_rows("SELECT notes, disposition, noted_at FROM call_logs")[0]
    assert (row["notes"], row["disposition"]) == (None, "follow-up")
    assert row["noted_at"] >= first_at


def test_a_note_alone_or_a_disposition_alone_is_enough(client, agent, logged_call, db_rows):
    only_note, only_disposition = logged_call(agent.id), logged_call(agent.id)
    assert put_notes(client, agent, only_note, {"note": "call back Friday"}).status_code == 200
    assert put_notes(client, agent, only_disposition, {"disposition": "spam"}).status_code == 200
    rows = db_rows("SELECT call_sid, notes, disposition FROM call_logs ORDER BY started_at")
    assert [(r["notes"], r["disposition"]) for r in rows] == [
        ("call back Friday", None),
        (None, "spam"),
    ]


def test_the_agent_a_call_was_transferred_from_may_note_it(
    client, agent, make_agent, logged_call, db_rows
):
    bob = make_agent("Bob")
    call_sid = logged_call(bob.id, transferred_from=agent.id)
    assert put_notes(client, agent, call_sid, {"disposition": "resolved"}).status_code == 200
    assert put_notes(client, bob, call_sid, {"disposition": "sale"}).status_code == 200
    assert db_rows("SELECT disposition FROM call_logs") == [{"disposition": "sale"}]


def test_another_agent_may_not_note_the_call(client, agent, make_agent, logged_call, db_rows):
    bob = make_agent("Bob")
    call_sid = logged_call(agent.id)
    error = error_of(put_notes(client, bob, call_sid, {"note": "mine now"}), 403)
    assert error["code"] == "not_your_call"
    missed = logged_call(None)
    assert error_of(put_notes(client, bob, missed, {"note": "x"}), 403)["code"] == "not_your_call"
    assert db_rows("SELECT notes FROM call_logs WHERE notes IS NOT NULL") == []


def test_a_call_that_has_not_ended_cannot_be_noted_yet(client, agent, post_webhook, db_rows):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    error = error_of(put_notes(client, agent, CALLER, {"note": "too early"}), 409)
    assert error["code"] == "call_not_ended"


def test_an_unknown_call_is_404(client, agent):
    error = error_of(put_notes(client, agent, "v3:nobody-ever", {"note": "hello"}), 404)
    assert error["code"] == "call_not_found"


def test_notes_need_a_signed_in_agent(client, agent, logged_call, db_rows):
    call_sid = logged_call(agent.id)
    assert put_notes(client, None, call_sid, {"note": "anonymous"}).status_code == 401
    assert db_rows("SELECT notes FROM call_logs") == [{"notes": None}]


def test_a_note_over_the_limit_is_refused(client, agent, logged_call, settings):
    call_sid = logged_call(agent.id)
    error = error_of(put_notes(client, agent, call_sid, {"note": "x" * 2001}), 400)
    assert error["code"] == "note_too_long"
    assert error["max_chars"] == 2000
    assert put_notes(client, agent, call_sid, {"note": "x" * 2000}).status_code == 200


def test_an_unknown_disposition_is_refused_with_the_list(client, agent, logged_call):
    call_sid = logged_call(agent.id)
    for disposition in ("Sale", "maybe", 7, ["sale"]):
        error = error_of(put_notes(client, agent, call_sid, {"disposition": disposition}), 400)
        assert error["code"] == "invalid_disposition"
        assert error["dispositions"] == ["resolved", "follow-up", "sale", "wrong number", "spam"]


@pytest.mark.parametrize(
    "body",
    [
        {"note": 42},
        {"note": ["a", "b"]},
        {"note": {"text": "hi"}},
        {"note": "nul \u0000 inside"},
        {"note": "lone \udc80 surrogate"},
        {},
        {"note": None, "disposition": None},
        {"note": "   "},
        {"note": "fine", "colour": "red"},
    ],
)
def test_a_malformed_note_is_400_invalid_note(client, agent, logged_call, body):
    call_sid = logged_call(agent.id)
    assert error_of(put_notes(client, agent, call_sid, body), 400)["code"] == "invalid_note"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"a note"'])
def test_a_body_that_is_not_a_json_object_is_400(client, agent, logged_call, raw):
    call_sid = logged_call(agent.id)
    response = put_notes(client, agent, call_sid, raw, content_type="application/json")
    assert error_of(response, 400)["code"] == "invalid_body"


def test_a_call_taken_and_ended_through_webhooks_is_noted_by_its_agent_and_a_late_webhook_keeps_it(
    client, agent, make_agent, post_webhook, fake_telnyx, db_rows
):
    *until_hangup, recording_saved = answered_call_events()
    assert recording_saved["data"]["event_type"] == "call.recording.saved"
    assert post_webhook(until_hangup[0]).status_code == 200
    answered = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert answered.status_code == 200
    for event in until_hangup[1:]:
        assert post_webhook(event).status_code == 200
    assert db_rows("SELECT answered_by::text FROM call_logs") == [{"answered_by": agent.id}]
    bob = make_agent("Bob")
    assert put_notes(client, bob, CALLER, {"disposition": "sale"}).status_code == 403
    assert (
        put_notes(client, agent, CALLER, {"note": "ok", "disposition": "sale"}).status_code == 200
    )
    # The recording arrives after the note: the log row is rewritten, the note stays.
    assert post_webhook(recording_saved).status_code == 200
    row = db_rows("SELECT notes, disposition, recording_url FROM call_logs")[0]
    assert (row["notes"], row["disposition"]) == ("ok", "sale")
    assert row["recording_url"] is not None


def history(client, agent, **params):
    return client.get("/api/calls", query_string=params, headers=agent.headers)


def test_history_shows_notes_and_filters_by_disposition(client, agent, logged_call):
    sale, spam, plain = logged_call(agent.id), logged_call(agent.id), logged_call(agent.id)
    put_notes(client, agent, sale, {"note": "bought two", "disposition": "sale"})
    put_notes(client, agent, spam, {"disposition": "spam"})
    calls = {c["call_control_id"]: c for c in history(client, agent).get_json()["calls"]}
    assert calls[sale]["note"] == "bought two"
    assert calls[sale]["noted_by"] == {"id": agent.id, "name": "Alice"}
    assert (calls[plain]["note"], calls[plain]["disposition"], calls[plain]["noted_at"]) == (
        None,
        None,
        None,
    )
    filtered = history(client, agent, disposition="sale").get_json()["calls"]
    assert [c["call_control_id"] for c in filtered] == [sale]
    assert history(client, agent, disposition="wrong number").get_json()["calls"] == []
    one = client.get(f"/api/calls/{spam}", headers=agent.headers).get_json()["call"]
    assert one["disposition"] == "spam"


@pytest.mark.parametrize("value", ["maybe", "SALE", ""])
def test_history_refuses_a_disposition_filter_not_in_the_list(client, agent, value):
    error = error_of(history(client, agent, disposition=value), 400)
    assert error["code"] == "invalid_parameter"
    assert error["parameter"] == "disposition"
    assert "resolved" in error["message"]


def test_the_page_config_carries_the_dispositions_and_the_note_limit(client, agent):
    config = client.get("/api/softphone/config", headers=agent.headers).get_json()
    assert config["dispositions"] == ["resolved", "follow-up", "sale", "wrong number", "spam"]
    assert config["note_max_chars"] == 2000
