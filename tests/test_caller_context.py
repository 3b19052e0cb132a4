"""The caller context on the ringing card: the prospect (name, company, import notes) and the
number's history (calls before, the last one, the last note), from the live call or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telnyx_flask.caller_context import CALLS_BEFORE_CAP

from .helpers import abandoned_call_events, empty_redis, load_fixture

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
NUMBER = "+13125550147"  # fixture 01's caller


@pytest.fixture
def ringing(post_webhook):
    """Fixture 01's call, ringing now."""
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


@pytest.fixture
def past_call(db_rows):
    """Insert an earlier call's log row from `number`, `minutes` after T0."""
    counter = iter(range(1, 10_000))

    def add(minutes: int, number: str = NUMBER, **fields) -> str:
        values = {
            "call_sid": f"v3:past-call-{next(counter)}",
            "direction": "inbound",
            "from_number": number,
            "phone_number": number,
            "to_number": "+14155550123",
            "outcome": "missed",
            "started_at": T0 + timedelta(minutes=minutes),
            "ended_at": T0 + timedelta(minutes=minutes, seconds=40),
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


def context_of(client, agent, call_control_id=CALLER):
    return client.get(f"/api/telnyx/calls/{call_control_id}/context", headers=agent.headers)


def context(client, agent, call_control_id=CALLER) -> dict:
    response = context_of(client, agent, call_control_id)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["success"] is True
    return response.get_json()["context"]


def test_a_ringing_prospect_comes_with_company_and_import_notes(client, agent, db_rows, ringing):
    prospect_id = db_rows(
        "INSERT INTO prospects (name, phone_number, company, notes)"
        " VALUES ('Ada Lovelace', %s, 'Analytical Engines', 'Wants a demo') RETURNING id::text",
        (NUMBER,),
    )[0]["id"]
    assert context(client, agent)["prospect"] == {
        "id": prospect_id,
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "notes": "Wants a demo",
    }


def test_a_number_never_heard_from_has_no_prospect_and_no_history(client, agent, ringing):
    assert context(client, agent) == {
        "number": NUMBER,
        "prospect": None,
        "history": {
            "calls_before": 0,
            "calls_before_capped": False,
            "last_call": None,
            "last_note": None,
        },
    }


def test_history_counts_the_numbers_calls_and_names_the_last_one(
    client, agent, make_agent, ringing, past_call
):
    bob = make_agent("Bob")
    past_call(0)
    past_call(10, outcome="answered", answered_by=agent.id)
    newest = past_call(20, outcome="answered", answered_by=bob.id)
    past_call(30, number="+12025550188")  # another number's call is not this one's history
    history = context(client, agent)["history"]
    assert (history["calls_before"], history["calls_before_capped"]) == (3, False)
    assert history["last_call"] == {
        "call_control_id": newest,
        "started_at": "2026-11-20T15:20:00+00:00",
        "outcome": "answered",
        "agent": {"id": bob.id, "name": "Bob"},
    }
    assert history["last_note"] is None


def test_the_last_note_is_from_the_newest_call_that_has_one(
    client, agent, make_agent, ringing, past_call
):
    bob = make_agent("Bob")
    noted_at = T0 + timedelta(hours=1)
    past_call(0, notes="old note", disposition="follow-up", noted_by=agent.id, noted_at=T0)
    past_call(10, disposition="sale", notes="bought two", noted_by=bob.id, noted_at=noted_at)
    past_call(20)  # newer, but nobody left a note on it
    history = context(client, agent)["history"]
    assert history["last_call"]["started_at"] == "2026-11-20T15:20:00+00:00"
    assert history["last_note"] == {
        "note": "bought two",
        "disposition": "sale",
        "at": "2026-11-20T16:00:00+00:00",
        "by": {"id": bob.id, "name": "Bob"},
    }


def test_an_ended_calls_own_log_row_is_not_its_history(client, agent, post_webhook, db_rows):
    for event in abandoned_call_events():
        assert post_webhook(event).status_code == 200
    [row] = db_rows("SELECT call_sid, phone_number FROM call_logs")
    result = context(client, agent, row["call_sid"])
    assert result["number"] == row["phone_number"]
    assert result["history"] == {
        "calls_before": 0,
        "calls_before_capped": False,
        "last_call": None,
        "last_note": None,
    }


def test_a_call_redis_has_forgotten_is_read_from_postgresql(
    client, agent, ringing, past_call, redis_client, redis_prefix
):
    past_call(0)
    empty_redis(redis_client, redis_prefix)
    result = context(client, agent)
    assert result["number"] == NUMBER
    assert result["history"]["calls_before"] == 1


def test_an_unknown_call_is_404(client, agent):
    response = context_of(client, agent, "v3:never-seen")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "call_not_found"


def test_a_malformed_call_control_id_is_400(client, agent):
    response = context_of(client, agent, "v3:" + "x" * 300)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_call_control_id"


def test_the_context_needs_a_signed_in_agent(client, ringing):
    response = client.get(f"/api/telnyx/calls/{CALLER}/context")
    assert response.status_code == 401
    assert "context" not in response.get_json()


def test_a_number_has_the_same_context_without_a_call(client, agent, db_rows, past_call):
    db_rows(
        "INSERT INTO prospects (name, phone_number, company) VALUES ('Ada', %s, 'Engines')"
        " RETURNING id",
        (NUMBER,),
    )
    past_call(0)
    newest = past_call(5, notes="call back", disposition="follow-up")
    for spelled in (NUMBER, "13125550147", "(312) 555-0147"):
        response = client.get(f"/api/callers/{spelled}/context", headers=agent.headers)
        assert response.status_code == 200, response.get_json()
        result = response.get_json()["context"]
        assert result["number"] == NUMBER
        assert result["prospect"]["company"] == "Engines"
        assert result["history"]["calls_before"] == 2
        assert result["history"]["last_call"]["call_control_id"] == newest
        assert result["history"]["last_note"]["note"] == "call back"


@pytest.mark.parametrize("number", ["call-me", "12345", "+" + "9" * 20])
def test_a_number_that_is_not_one_is_400(client, agent, number):
    response = client.get(f"/api/callers/{number}/context", headers=agent.headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_number"


def test_a_numbers_context_needs_a_signed_in_agent(client):
    assert client.get(f"/api/callers/{NUMBER}/context").status_code == 401


def test_a_caller_with_more_than_a_thousand_calls_is_counted_as_1000_plus(
    client, agent, ringing, db_rows
):
    db_rows(
        "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, outcome,"
        " started_at) SELECT 'v3:dialler-' || i, 'inbound', %s, %s, 'missed',"
        " %s + i * interval '1 minute' FROM generate_series(1, %s) AS i RETURNING id",
        (NUMBER, NUMBER, T0, CALLS_BEFORE_CAP),
    )
    history = context(client, agent)["history"]
    assert (history["calls_before"], history["calls_before_capped"]) == (CALLS_BEFORE_CAP, False)
    assert history["last_call"]["call_control_id"] == f"v3:dialler-{CALLS_BEFORE_CAP}"
    db_rows(
        "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, outcome)"
        " VALUES ('v3:dialler-more', 'inbound', %s, %s, 'missed') RETURNING id",
        (NUMBER, NUMBER),
    )
    history = context(client, agent)["history"]
    assert (history["calls_before"], history["calls_before_capped"]) == (CALLS_BEFORE_CAP, True)
