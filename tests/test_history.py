"""Call history: newest first, cursor pages that never repeat or skip, filters, and 400s that
name the parameter."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from .helpers import abandoned_call_events, answered_call_events

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def add_call(db_rows):
    """Insert a call_logs row (a missed call at T0 unless told otherwise); return its id."""
    counter = iter(range(1, 10_000))

    def add(**fields) -> str:
        n = next(counter)
        started_at = fields.get("started_at", T0)
        values = {
            "call_sid": f"v3:test-call-{n}",
            "direction": "inbound",
            "from_number": "+13125550147",
            "phone_number": fields.get("from_number", "+13125550147"),
            "to_number": "+14155550123",
            "outcome": "missed",
            "started_at": started_at,
            "ended_at": (started_at or T0) + timedelta(seconds=30),
            **fields,
        }
        columns = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        rows = db_rows(
            f"INSERT INTO call_logs ({columns}) VALUES ({placeholders}) RETURNING id::text",
            tuple(values.values()),
        )
        return rows[0]["id"]

    return add


def list_calls(client, agent, /, **params):
    return client.get("/api/calls", query_string=params, headers=agent.headers)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [call["id"] for call in response.get_json()["calls"]]


def walk(client, agent, /, **params) -> tuple[list[str], int]:
    """Follow next_cursor from the first page to the last: every id seen, and the page count."""
    seen, cursor, pages = [], None, 0
    while True:
        query = {**params, **({"before": cursor} if cursor else {})}
        response = list_calls(client, agent, **query)
        seen += ids(response)
        pages += 1
        cursor = response.get_json()["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 100, "the cursor does not advance"


def newest_first(rows: list[tuple[datetime, str]]) -> list[str]:
    """Ids in the history's order: sort time, then id (uuids compare as PostgreSQL does)."""
    return [i for _, i in sorted(rows, key=lambda r: (r[0], uuid.UUID(r[1])), reverse=True)]


def test_calls_are_listed_newest_first(client, agent, add_call):
    middle = add_call(started_at=T0 + timedelta(minutes=5))
    oldest = add_call(started_at=T0)
    newest = add_call(started_at=T0 + timedelta(minutes=10))
    response = list_calls(client, agent)
    assert ids(response) == [newest, middle, oldest]
    assert response.get_json()["success"] is True
    assert response.get_json()["next_cursor"] is None


def test_a_call_is_shown_with_its_agent_prospect_and_whether_it_has_a_recording(
    client, agent, db_rows, add_call
):
    prospect = db_rows(
        "INSERT INTO prospects (name, phone_number) VALUES ('Ada Lovelace', '+13125550147')"
        " RETURNING id::text"
    )[0]["id"]
    call_id = add_call(
        call_sid="v3:answered-call",
        outcome="answered",
        duration=155,
        started_at=T0,
        ended_at=T0 + timedelta(minutes=3, microseconds=500),
        end_reason="normal_clearing",
        recording_url="https://recordings.example.test/a1b2c3.mp3",
        answered_by=agent.id,
        prospect_id=prospect,
        prospect_name="Ada Lovelace",
    )
    assert list_calls(client, agent).get_json()["calls"] == [
        {
            "id": call_id,
            "call_control_id": "v3:answered-call",
            "direction": "inbound",
            "from": "+13125550147",
            "to": "+14155550123",
            "caller_name": "Ada Lovelace",
            "prospect_id": prospect,
            "outcome": "answered",
            "duration": 155,
            "started_at": "2026-11-20T15:00:00+00:00",
            "ended_at": "2026-11-20T15:03:00.000500+00:00",
            "end_reason": "normal_clearing",
            "has_recording": True,
            "agent": {"id": agent.id, "name": "Alice"},
            "note": None,
            "disposition": None,
            "noted_by": None,
            "noted_at": None,
            "transferred_from": None,
        }
    ]


def test_a_call_nobody_answered_has_no_agent_or_recording(client, agent, add_call):
    add_call(outcome="missed")
    call = list_calls(client, agent).get_json()["calls"][0]
    assert call["agent"] is None
    assert call["has_recording"] is False
    assert call["caller_name"] is None


def test_pages_walk_every_call_once_even_when_start_times_tie(client, agent, add_call):
    rows = []
    for minute in range(12):
        started = T0 + timedelta(minutes=minute)
        rows.append((started, add_call(started_at=started)))
    # Nine calls in the same microsecond: only the id tells them apart, and pages split them.
    for _ in range(9):
        rows.append((T0 + timedelta(minutes=5), add_call(started_at=T0 + timedelta(minutes=5))))
    expected = newest_first(rows)
    for limit in (1, 4, 7, 21, 50):
        seen, pages = walk(client, agent, limit=limit)
        assert seen == expected, f"limit {limit}"
        assert pages == -(-len(expected) // limit), f"limit {limit}: an empty last page"


def test_a_call_without_started_at_sorts_by_when_it_was_logged(client, agent, add_call):
    older = add_call(started_at=T0)
    newer = add_call(started_at=T0 + timedelta(hours=2))
    unknown_start = add_call(started_at=None, created_at=T0 + timedelta(hours=1))
    assert walk(client, agent, limit=1)[0] == [newer, unknown_start, older]
    assert list_calls(client, agent).get_json()["calls"][1]["started_at"] is None


def test_limit_defaults_to_50_and_goes_up_to_200(client, agent, db_rows):
    db_rows(
        "INSERT INTO call_logs (call_sid, outcome, started_at, ended_at)"
        " SELECT 'v3:bulk-' || i, 'missed', %s + i * interval '1 second', %s"
        " FROM generate_series(1, 201) AS i RETURNING id",
        (T0, T0 + timedelta(hours=1)),
    )
    first = list_calls(client, agent)
    assert len(ids(first)) == 50
    assert first.get_json()["next_cursor"] is not None
    biggest = list_calls(client, agent, limit=200)
    assert len(ids(biggest)) == 200
    rest = list_calls(client, agent, limit=200, before=biggest.get_json()["next_cursor"])
    assert len(ids(rest)) == 1
    assert rest.get_json()["next_cursor"] is None


def test_outcome_filter(client, agent, add_call):
    answered = add_call(outcome="answered", started_at=T0 + timedelta(minutes=1))
    add_call(outcome="missed")
    add_call(outcome="abandoned")
    declined = add_call(outcome="declined")
    assert ids(list_calls(client, agent, outcome="answered")) == [answered]
    assert ids(list_calls(client, agent, outcome="declined")) == [declined]


def test_a_filtered_walk_sees_every_matching_call_once(client, agent, add_call):
    missed = []
    for minute in range(10):
        started = T0 + timedelta(minutes=minute)
        outcome = "missed" if minute % 3 else "answered"
        call_id = add_call(outcome=outcome, started_at=started)
        if outcome == "missed":
            missed.append((started, call_id))
    assert walk(client, agent, outcome="missed", limit=2)[0] == newest_first(missed)


def test_direction_filter(client, agent, add_call):
    inbound = add_call(direction="inbound")
    outbound = add_call(direction="outbound", started_at=T0 - timedelta(minutes=1))
    assert ids(list_calls(client, agent, direction="inbound")) == [inbound]
    assert ids(list_calls(client, agent, direction="outbound")) == [outbound]


def test_agent_filter_matches_who_answered(client, agent, make_agent, add_call):
    bob = make_agent("Bob")
    alices = add_call(outcome="answered", answered_by=agent.id, started_at=T0)
    bobs = add_call(outcome="answered", answered_by=bob.id, started_at=T0 + timedelta(minutes=1))
    add_call(outcome="missed")
    assert ids(list_calls(client, agent, agent=agent.id)) == [alices]
    bob_calls = list_calls(client, agent, agent=bob.id).get_json()["calls"]
    assert [(c["id"], c["agent"]) for c in bob_calls] == [(bobs, {"id": bob.id, "name": "Bob"})]
    assert ids(list_calls(client, agent, agent=str(uuid.uuid4()))) == []


def test_agent_and_outcome_together(client, agent, add_call):
    answered = add_call(outcome="answered", answered_by=agent.id)
    add_call(outcome="answered")
    add_call(outcome="missed")
    assert ids(list_calls(client, agent, agent=agent.id, outcome="answered")) == [answered]
    assert ids(list_calls(client, agent, agent=agent.id, outcome="missed")) == []


@pytest.mark.parametrize(
    "phone",
    ["+12025550188", "12025550188", "2025550188", "(202) 555-0188", "+1 202-555-0188"],
)
def test_phone_filter_takes_e164_or_digits(client, agent, add_call, phone):
    washington = add_call(from_number="+12025550188")
    add_call(from_number="+13125550147")
    assert ids(list_calls(client, agent, phone=phone)) == [washington]


@pytest.mark.parametrize("phone", ["+442079460958", "442079460958", "0044 20 7946 0958"])
def test_phone_filter_finds_numbers_outside_north_america(client, agent, add_call, phone):
    london = add_call(from_number="+442079460958")
    add_call(from_number="+12025550188")
    assert ids(list_calls(client, agent, phone=phone)) == [london]


def test_phone_with_an_unencoded_plus_still_matches(client, agent, add_call):
    london = add_call(from_number="+442079460958")
    # A client that forgets to encode + sends a space: " 442079460958".
    response = client.get("/api/calls?phone=+442079460958", headers=agent.headers)
    assert ids(response) == [london]


def test_since_is_inclusive_and_until_exclusive(client, agent, add_call):
    at = {minute: add_call(started_at=T0 + timedelta(minutes=minute)) for minute in range(4)}
    window = list_calls(
        client, agent, since="2026-11-20T15:01:00Z", until="2026-11-20T15:03:00+00:00"
    )
    assert ids(window) == [at[2], at[1]]
    assert ids(list_calls(client, agent, since="2026-11-20T15:02:00Z")) == [at[3], at[2]]
    assert ids(list_calls(client, agent, until="2026-11-20T15:01:00Z")) == [at[0]]


def test_since_and_until_respect_the_time_zone_given(client, agent, add_call):
    call_id = add_call(started_at=T0)
    # 15:00 UTC is 16:00 in Paris and 10:00 in New York (both in standard time then).
    assert ids(list_calls(client, agent, since="2026-11-20T16:00:00+01:00")) == [call_id]
    assert ids(list_calls(client, agent, since="2026-11-20T16:00:00.000001+01:00")) == []
    assert ids(list_calls(client, agent, until="2026-11-20T10:00:00.000001-05:00")) == [call_id]


def test_since_and_until_leave_out_calls_whose_start_is_unknown(client, agent, add_call):
    add_call(started_at=None, created_at=T0)
    known = add_call(started_at=T0)
    assert ids(list_calls(client, agent, since="2026-11-20T14:00:00Z")) == [known]
    assert ids(list_calls(client, agent, until="2026-11-20T16:00:00Z")) == [known]
    assert len(ids(list_calls(client, agent))) == 2


def test_a_call_from_webhooks_is_in_the_history(client, agent, post_webhook):
    for body in abandoned_call_events():
        assert post_webhook(body).status_code == 200
    [call] = list_calls(client, agent).get_json()["calls"]
    assert (
        call["call_control_id"] == abandoned_call_events()[0]["data"]["payload"]["call_control_id"]
    )
    assert call["from"] == "+12025550188"
    assert call["outcome"] == "abandoned"
    assert call["started_at"] == "2026-11-20T16:10:00.000001+00:00"
    assert call["agent"] is None


def test_a_call_an_agent_took_shows_the_agent_and_that_it_was_recorded(client, agent, post_webhook):
    initiated, *rest = answered_call_events()
    assert post_webhook(initiated).status_code == 200
    assert (
        client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers).status_code == 200
    )
    for body in rest:
        assert post_webhook(body).status_code == 200
    [call] = list_calls(client, agent, agent=agent.id, outcome="answered").get_json()["calls"]
    assert call["call_control_id"] == CALLER
    assert call["agent"] == {"id": agent.id, "name": "Alice"}
    assert call["duration"] == 155
    assert call["has_recording"] is True
    assert "recording_url" not in call


def test_history_never_carries_the_pre_signed_recording_link(client, agent, add_call):
    link = "https://s3.amazonaws.com/telephony-recorder-prod/a1b2c3.mp3?X-Amz-Signature=abc"
    call_id = add_call(outcome="answered", recording_url=link)
    listed = client.get("/api/calls", headers=agent.headers)
    one = client.get(f"/api/calls/{call_id}", headers=agent.headers)
    assert listed.status_code == one.status_code == 200
    for body in (listed.get_data(as_text=True), one.get_data(as_text=True)):
        assert "X-Amz-Signature" not in body
        assert "recording_url" not in body
    assert one.get_json()["call"]["has_recording"] is True


def forged_cursor(body) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("limit", "0"),
        ("limit", "201"),
        ("limit", "abc"),
        ("limit", "-1"),
        ("limit", "2.5"),
        ("limit", ""),
        ("outcome", "busy"),
        ("outcome", "ANSWERED"),
        ("direction", "sideways"),
        ("agent", "alice"),
        ("agent", "123"),
        ("phone", "call me"),
        ("phone", "123"),
        ("phone", ""),
        ("since", "yesterday"),
        ("since", "2026-11-20T15:00:00"),
        ("since", "2026-11-20"),
        ("until", "2026-13-01T00:00:00Z"),
        ("before", "not a cursor"),
        ("before", ""),
        ("before", "e30"),
        ("before", forged_cursor({"at": "2026-11-20T15:00:00Z", "id": "nope"})),
        (
            "before",
            forged_cursor(
                {"at": "2026-11-20T15:00:00", "id": "8f9a3f5e-0d7b-4a55-9d0e-2b8c4f1e7a10"}
            ),
        ),
        ("before", forged_cursor(["2026-11-20T15:00:00Z", "8f9a3f5e-0d7b-4a55-9d0e-2b8c4f1e7a10"])),
        ("before", "A" * 1000),
    ],
)
def test_a_bad_value_is_a_400_naming_the_parameter(client, agent, parameter, value):
    response = list_calls(client, agent, **{parameter: value})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["parameter"] == parameter
    assert parameter in error["message"]


def test_an_unknown_parameter_is_a_400_naming_it(client, agent):
    response = list_calls(client, agent, sort="asc")
    assert response.status_code == 400
    assert response.get_json()["error"]["parameter"] == "sort"
    assert response.get_json()["error"]["code"] == "invalid_parameter"


def test_a_parameter_given_twice_is_a_400(client, agent):
    response = client.get("/api/calls?outcome=missed&outcome=answered", headers=agent.headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["parameter"] == "outcome"


def test_a_timestamp_with_an_unencoded_plus_gets_a_hint(client, agent):
    response = client.get("/api/calls?since=2026-11-20T15:00:00+01:00", headers=agent.headers)
    assert response.status_code == 400
    assert "%2B" in response.get_json()["error"]["message"]


def test_history_needs_credentials(client, add_call):
    call_id = add_call()
    for path in ("/api/calls", f"/api/calls/{call_id}", "/api/calls/v3:test-call-1"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["code"] == "unauthenticated"


def test_one_call_by_id_or_by_call_control_id(client, agent, add_call):
    call_id = add_call(call_sid="v3:Mx2c4Vb6/with-a-slash", outcome="abandoned")
    add_call()
    by_id = client.get(f"/api/calls/{call_id}", headers=agent.headers)
    assert by_id.status_code == 200
    assert by_id.get_json()["success"] is True
    assert by_id.get_json()["call"]["id"] == call_id
    assert by_id.get_json()["call"]["outcome"] == "abandoned"
    by_sid = client.get("/api/calls/v3:Mx2c4Vb6/with-a-slash", headers=agent.headers)
    assert by_sid.status_code == 200
    assert by_sid.get_json()["call"] == by_id.get_json()["call"]


def test_a_call_control_id_shaped_like_a_uuid_is_found_too(client, agent, add_call):
    sid = str(uuid.uuid4())
    call_id = add_call(call_sid=sid)
    found = client.get(f"/api/calls/{sid}", headers=agent.headers)
    assert found.status_code == 200
    assert found.get_json()["call"]["id"] == call_id


@pytest.mark.parametrize(
    "call_id", ["6c215b2d-b6d7-48dd-9e23-dfc55c2bae56", "v3:nobody", "not-a-uuid", "x" * 300, "%00"]
)
def test_an_unknown_or_malformed_call_is_404(client, agent, add_call, call_id):
    add_call()
    response = client.get(f"/api/calls/{call_id}", headers=agent.headers)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "call_not_found"
