"""Transfer to a colleague, through the API: the offer, the race that settles it (accept,
decline, cancel, expiry, the call ending: one winner), Telnyx's transfer of the caller's leg,
and the record naming both agents. Against the fake Telnyx, real PostgreSQL and Redis."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from telnyx_flask.live_rebuild import ensure_live_state
from telnyx_flask.transfers import expire_offers

from .fake_telnyx import error_body
from .helpers import empty_redis, load_fixture, renamed

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"
FIRST_LEG = "v3:Bk7d2RrT0wq4Ye6Ui8Op1As3Df5Gh7Jk9Lz1Xc3Vb5Nm7Qw9Er1Ty3Ui5Op7As9"
SESSION = "5f0c1f3a-6b1d-11f1-b2a7-02420aef00c3"


def stream(redis_client, redis_prefix, event=None):
    entries = [
        (f["event"], json.loads(f["data"])) for _, f in redis_client.xrange(f"{redis_prefix}events")
    ]
    return [data for name, data in entries if name == event] if event else entries


def leg_event(fixture: str, event_id: str, **payload) -> dict:
    """A fixture's webhook with a fresh id and some payload fields replaced."""
    body = load_fixture(fixture)
    body["data"]["id"] = event_id
    body["data"]["payload"].update(payload)
    return body


def hang_up(post_webhook, call=CALLER, suffix=""):
    [hangup] = renamed([load_fixture("05_call.hangup.json")], suffix)
    assert post_webhook(hangup).status_code == 200


@pytest.fixture
def alice(make_agent):
    return make_agent("Alice", sip_username="agentalice")


@pytest.fixture
def bob(make_agent):
    return make_agent("Bob", sip_username="agentbob")


@pytest.fixture
def answered(client, post_webhook, alice, fake_telnyx):
    """Make a call, with `suffix` on its ids, that Alice answered and Telnyx connected."""

    def make(suffix: str = "") -> str:
        initiated, answered_event = renamed(
            [load_fixture("01_call.initiated.json"), load_fixture("03_call.answered.json")], suffix
        )
        call = initiated["data"]["payload"]["call_control_id"]
        assert post_webhook(initiated).status_code == 200
        response = client.post(f"/api/telnyx/calls/{call}/answer", headers=alice.headers)
        assert response.status_code == 200, response.get_json()
        assert post_webhook(answered_event).status_code == 200
        return call

    return make


def offer(client, agent, to_id, call=CALLER, **kwargs):
    body = kwargs.pop("json", {"agent_id": to_id})
    return client.post(
        f"/api/telnyx/calls/{call}/transfer", headers=agent.headers, json=body, **kwargs
    )


def act(client, agent, action, call=CALLER):
    if action == "cancel":
        return client.delete(f"/api/telnyx/calls/{call}/transfer", headers=agent.headers)
    return client.post(f"/api/telnyx/calls/{call}/transfer/{action}", headers=agent.headers)


def live_call(app, call=CALLER):
    with app.app_context():
        return app.extensions["live"].call(call)


def test_an_offer_rings_the_colleague_with_who_offered_it_and_shows_in_the_snapshot(
    app, client, alice, bob, answered, redis_client, redis_prefix
):
    answered()

    response = offer(client, alice, bob.id)

    assert response.status_code == 200, response.get_json()
    transfer = response.get_json()["transfer"]
    assert transfer["from_agent"] == {"id": alice.id, "name": "Alice"}
    assert transfer["to_agent"] == {"id": bob.id, "name": "Bob"}
    [offered] = stream(redis_client, redis_prefix, "call.transfer_offered")
    assert offered["call_control_id"] == CALLER
    assert offered["from_agent"] == {"id": alice.id, "name": "Alice"}
    assert offered["to_agent"] == {"id": bob.id, "name": "Bob"}
    assert offered["from"] == "+13125550147"
    assert offered["expires_at"] == transfer["expires_at"]
    with app.app_context():
        _, calls = app.extensions["live"].stream.snapshot()
    assert [call["transfer"] for call in calls] == [transfer]
    # The call is still Alice's until Bob accepts.
    assert live_call(app)["claimed_by"] == {"id": alice.id, "name": "Alice"}


def test_accepting_moves_the_call_to_the_colleague_and_transfers_the_caller_to_their_phone(
    app, client, alice, bob, answered, fake_telnyx, redis_client, redis_prefix, db_rows
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200

    response = act(client, bob, "accept")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["transferred_to"] == "sip:agentbob@sip.telnyx.com"
    first, second = fake_telnyx.received("transfer")
    assert second.call_control_id == CALLER
    assert second.body["to"] == "sip:agentbob@sip.telnyx.com"
    assert second.body["custom_headers"] == [{"name": "X-Call-Control-Id", "value": CALLER}]
    # A new command, not a repeat of the answer's transfer that Telnyx would ignore.
    assert second.body["command_id"] != first.body["command_id"]
    assert live_call(app)["claimed_by"] == {"id": bob.id, "name": "Bob"}
    assert live_call(app)["transfer"] is None
    [ended] = stream(redis_client, redis_prefix, "call.transfer_ended")
    assert ended == {
        "call_control_id": CALLER,
        "result": "accepted",
        "from_agent": {"id": alice.id, "name": "Alice"},
        "to_agent": {"id": bob.id, "name": "Bob"},
    }
    assert db_rows(
        "SELECT answered_by::text, transferred_from::text, transferred_at IS NOT NULL AS at"
        " FROM inbound_calls"
    ) == [{"answered_by": bob.id, "transferred_from": alice.id, "at": True}]


def test_the_log_row_and_the_history_name_both_agents_once_the_call_ends(
    client, alice, bob, answered, post_webhook, db_rows
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    assert act(client, bob, "accept").status_code == 200

    hang_up(post_webhook)

    assert db_rows("SELECT answered_by::text, transferred_from::text, outcome FROM call_logs") == [
        {"answered_by": bob.id, "transferred_from": alice.id, "outcome": "answered"}
    ]
    [call] = client.get("/api/calls", headers=alice.headers).get_json()["calls"]
    assert call["agent"] == {"id": bob.id, "name": "Bob"}
    assert call["transferred_from"] == {"id": alice.id, "name": "Alice"}


def test_a_call_nobody_transferred_has_no_transferred_from_in_the_history(
    client, alice, answered, post_webhook
):
    answered()
    hang_up(post_webhook)
    [call] = client.get("/api/calls", headers=alice.headers).get_json()["calls"]
    assert call["transferred_from"] is None


def test_the_new_legs_events_and_the_first_agents_hangup_leave_the_call_answered(
    client, alice, bob, answered, post_webhook, db_rows, app
):
    """Telnyx dials the colleague (a new leg, same session), and hangs up the first agent's leg
    once the colleague answers: neither ends the call, nor rings as a new one."""
    answered()
    first_leg = load_fixture("02_call.initiated.leg_b_bridging.json")
    assert post_webhook(first_leg).status_code == 200
    assert offer(client, alice, bob.id).status_code == 200
    assert act(client, bob, "accept").status_code == 200
    colleague = {
        "call_control_id": "v3:colleague-leg",
        "call_leg_id": str(uuid.uuid4()),
        "call_session_id": SESSION,
    }
    events = [
        leg_event(
            "02_call.initiated.leg_b_bridging.json",
            str(uuid.uuid4()),
            to="sip:agentbob@sip.telnyx.com",
            **colleague,
        ),
        leg_event("03_call.answered.json", str(uuid.uuid4()), **colleague),
        leg_event(
            "05_call.hangup.json",
            str(uuid.uuid4()),
            call_control_id=FIRST_LEG,
            call_leg_id=first_leg["data"]["payload"]["call_leg_id"],
        ),
        leg_event("04_call.bridged.json", str(uuid.uuid4())),
        leg_event("04_call.bridged.json", str(uuid.uuid4()), **colleague),
    ]
    for event in events:
        assert post_webhook(event).status_code == 200

    assert db_rows("SELECT status, ended_at, transfer_call_control_id FROM inbound_calls") == [
        {"status": "answered", "ended_at": None, "transfer_call_control_id": FIRST_LEG}
    ]
    assert live_call(app)["status"] == "answered"
    assert live_call(app)["claimed_by"]["id"] == bob.id
    assert client.get("/api/telnyx/calls/pending", headers=bob.headers).get_json()["calls"] == []


def test_after_redis_lost_everything_the_agent_on_the_call_may_still_offer_it(
    app, client, alice, bob, answered, redis_client, redis_prefix
):
    answered()
    empty_redis(redis_client, redis_prefix)
    redis_client.delete(f"{redis_prefix}live:generation")  # Redis lost everything
    with app.app_context():
        ensure_live_state(app.extensions["database"], app.extensions["live"])
    assert live_call(app)["claimed_by"]["id"] == alice.id

    response = offer(client, alice, bob.id)

    assert response.status_code == 200, response.get_json()


def test_accepting_while_telnyx_is_known_down_wins_nothing(
    app, client, alice, bob, answered, fake_telnyx
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    breaker = app.extensions["telnyx"].breaker
    for _ in range(breaker.settings.failure_threshold):
        breaker.record_failure()

    response = act(client, bob, "accept")

    assert response.status_code == 503
    assert live_call(app)["claimed_by"]["id"] == alice.id
    assert live_call(app)["transfer"]["to_agent"]["id"] == bob.id
    assert len(fake_telnyx.received("transfer")) == 1


def test_declining_leaves_the_call_with_the_first_agent_who_may_offer_it_again(
    app, client, alice, bob, make_agent, answered, fake_telnyx, redis_client, redis_prefix
):
    carol = make_agent("Carol")
    answered()
    assert offer(client, alice, bob.id).status_code == 200

    response = act(client, bob, "decline")

    assert response.status_code == 200
    assert response.get_json()["result"] == "declined"
    [ended] = stream(redis_client, redis_prefix, "call.transfer_ended")
    assert (ended["result"], ended["to_agent"]["name"]) == ("declined", "Bob")
    assert live_call(app)["claimed_by"]["id"] == alice.id
    assert live_call(app)["transfer"] is None
    assert len(fake_telnyx.received("transfer")) == 1  # only the answer's
    assert offer(client, alice, carol.id).status_code == 200


def test_the_offering_agent_may_cancel_and_nobody_else_may(
    app, client, alice, bob, answered, redis_client, redis_prefix
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200

    by_bob = act(client, bob, "cancel")
    assert by_bob.status_code == 403
    assert by_bob.get_json()["error"]["code"] == "not_your_call"

    response = act(client, alice, "cancel")
    assert response.status_code == 200
    assert response.get_json()["result"] == "cancelled"
    assert [e["result"] for e in stream(redis_client, redis_prefix, "call.transfer_ended")] == [
        "cancelled"
    ]
    late = act(client, bob, "accept")
    assert late.status_code == 409
    assert late.get_json()["error"]["code"] == "transfer_not_open"


def test_an_offer_nobody_answers_expires_and_the_call_stays_with_the_first_agent(
    app, client, alice, bob, answered, redis_client, redis_prefix, fake_telnyx
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    offers = app.extensions["transfer_offers"]
    expires_ms = int(redis_client.zscore(f"{redis_prefix}calls:transfer-offers", CALLER))

    assert expire_offers(offers, now=expires_ms - 1) == []
    assert expire_offers(offers, now=expires_ms) == [CALLER]

    [ended] = stream(redis_client, redis_prefix, "call.transfer_ended")
    assert ended["result"] == "expired"
    assert live_call(app)["claimed_by"]["id"] == alice.id
    assert redis_client.zcard(f"{redis_prefix}calls:transfer-offers") == 0
    assert act(client, bob, "accept").status_code == 409
    assert len(fake_telnyx.received("transfer")) == 1


@pytest.fixture
def ring_12_seconds(settings):
    settings["TRANSFER_RING_SECONDS"] = "12"


def test_an_offer_lasts_transfer_ring_seconds(ring_12_seconds, client, alice, bob, answered):
    answered()
    response = offer(client, alice, bob.id)
    expires_at = datetime.fromisoformat(response.get_json()["transfer"]["expires_at"])
    assert timedelta(seconds=10) < expires_at - datetime.now(UTC) <= timedelta(seconds=12)


def race(app, call: str, alice, bob) -> tuple[dict[str, int], list[str]]:
    """Bob accepts and declines, Alice cancels and the expiry sweep runs, all at once."""
    barrier = threading.Barrier(4)
    statuses: dict[str, int] = {}
    swept: list[str] = []

    def press(action: str, agent) -> None:
        barrier.wait()
        statuses[action] = act(app.test_client(), agent, action, call).status_code

    def sweep() -> None:
        barrier.wait()
        swept.extend(expire_offers(app.extensions["transfer_offers"], now=2**50))

    threads = [
        threading.Thread(target=press, args=("accept", bob)),
        threading.Thread(target=press, args=("decline", bob)),
        threading.Thread(target=press, args=("cancel", alice)),
        threading.Thread(target=sweep),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, swept


def test_accept_decline_cancel_and_expiry_at_once_have_exactly_one_winner(
    app, alice, bob, answered, redis_client, redis_prefix
):
    for n in range(6):
        call = answered(f"-race{n}")
        assert offer(app.test_client(), alice, bob.id, call=call).status_code == 200

        statuses, swept = race(app, call, alice, bob)

        winners = [action for action, status in statuses.items() if status == 200] + swept
        assert len(winners) == 1, (statuses, swept)
        assert all(status in (200, 409) for status in statuses.values()), statuses
        results = [
            e["result"]
            for e in stream(redis_client, redis_prefix, "call.transfer_ended")
            if e["call_control_id"] == call
        ]
        assert len(results) == 1
        holder = live_call(app, call)["claimed_by"]["id"]
        assert holder == (bob.id if results == ["accepted"] else alice.id)


def test_a_colleague_accepting_after_the_caller_hung_up_gets_404_and_nothing_is_sent(
    app, client, alice, bob, answered, post_webhook, fake_telnyx, db_rows
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    hang_up(post_webhook)

    response = act(client, bob, "accept")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "call_not_found"
    assert len(fake_telnyx.received("transfer")) == 1  # only the answer's
    assert db_rows("SELECT answered_by::text, transferred_from FROM call_logs") == [
        {"answered_by": alice.id, "transferred_from": None}
    ]
    assert act(client, bob, "decline").status_code == 404


def test_telnyx_refusing_the_transfer_gives_the_call_back_to_the_first_agent(
    app, client, alice, bob, answered, fake_telnyx, redis_client, redis_prefix, db_rows
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    fake_telnyx.script("transfer", 403, error_body("10010", "Authorization failed", "no SIP URIs"))

    response = act(client, bob, "accept")

    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "telnyx_refused"
    assert "no SIP URIs" in response.get_json()["error"]["message"]
    assert live_call(app)["claimed_by"] == {"id": alice.id, "name": "Alice"}
    results = [e["result"] for e in stream(redis_client, redis_prefix, "call.transfer_ended")]
    assert results == ["accepted", "failed"]
    assert db_rows("SELECT answered_by::text, transferred_from FROM inbound_calls") == [
        {"answered_by": alice.id, "transferred_from": None}
    ]
    # Alice still has the call: she may hang up, or offer it again.
    assert offer(client, alice, bob.id).status_code == 200


def test_telnyx_saying_the_call_is_over_ends_it_and_answers_404(
    app, client, alice, bob, answered, fake_telnyx
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    fake_telnyx.script("transfer", 422, error_body("90018", "Call has already ended"))

    response = act(client, bob, "accept")

    assert response.status_code == 404
    assert live_call(app)["status"] == "ended"


def test_accepting_again_after_a_lost_answer_resends_the_same_command(
    client, alice, bob, answered, fake_telnyx
):
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    assert act(client, bob, "accept").status_code == 200

    assert act(client, bob, "accept").status_code == 200

    _, first, again = fake_telnyx.received("transfer")
    assert again.body["command_id"] == first.body["command_id"]


def test_only_the_colleague_named_may_accept_or_decline(client, alice, bob, make_agent, answered):
    carol = make_agent("Carol")
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    for action in ("accept", "decline"):
        response = act(client, carol, action)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "not_your_transfer"
    assert act(client, alice, "accept").status_code == 403


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_agent_id"),
        ({"agent_id": 7}, "invalid_agent_id"),
        ({"agent_id": "bob"}, "invalid_agent_id"),
        ({"agent_id": "x" * 10_000}, "invalid_agent_id"),
        ([1, 2], "invalid_body"),
    ],
)
def test_a_malformed_transfer_request_is_400(client, alice, answered, body, code):
    answered()
    response = offer(client, alice, None, json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_a_body_that_is_not_json_is_400(client, alice, answered):
    answered()
    response = client.post(
        f"/api/telnyx/calls/{CALLER}/transfer",
        headers={**alice.headers, "Content-Type": "application/json"},
        data=b"{agent",
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_body"


def test_transfer_to_an_agent_who_does_not_exist_is_404(client, alice, answered):
    answered()
    response = offer(client, alice, str(uuid.uuid4()))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_agent"


def test_transfer_to_a_deactivated_agent_is_404(client, alice, bob, answered, db_rows):
    answered()
    db_rows("UPDATE users SET active = false WHERE id = %s RETURNING id", (bob.id,))
    response = offer(client, alice, bob.id)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_agent"


def test_transfer_to_an_away_agent_is_409(client, alice, bob, answered, db_rows):
    answered()
    db_rows("UPDATE users SET presence = 'away' WHERE id = %s RETURNING id", (bob.id,))
    response = offer(client, alice, bob.id)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert (error["code"], error["presence"]) == ("agent_not_available", "away")
    assert "Bob" in error["message"]


def test_transfer_to_a_colleague_without_a_phone_is_409(client, alice, make_agent, answered):
    dave = make_agent("Dave", sip_username=None)
    answered()
    response = offer(client, alice, dave.id)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "no_sip_username"


def test_transfer_to_yourself_is_409(client, alice, answered):
    answered()
    response = offer(client, alice, alice.id)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "transfer_to_self"


def test_only_the_agent_on_the_call_may_offer_it(client, alice, bob, make_agent, answered):
    carol = make_agent("Carol")
    answered()
    response = offer(client, bob, carol.id)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "not_your_call"


def test_a_call_still_ringing_or_being_answered_cannot_be_offered(client, alice, bob, post_webhook):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    ringing = offer(client, alice, bob.id)
    assert ringing.status_code == 409
    assert ringing.get_json()["error"]["code"] == "call_not_answered"
    # Claimed, but Telnyx has not said the caller is answered yet.
    assert (
        client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=alice.headers).status_code == 200
    )
    answering = offer(client, alice, bob.id)
    assert answering.status_code == 409
    assert answering.get_json()["error"]["code"] == "call_not_answered"


def test_unknown_and_ended_calls_are_404(client, alice, bob, answered, post_webhook):
    assert offer(client, alice, bob.id, call="v3:nobody").status_code == 404
    answered()
    hang_up(post_webhook)
    assert offer(client, alice, bob.id).status_code == 404


def test_a_second_offer_while_one_is_open_is_409_naming_the_colleague(
    client, alice, bob, make_agent, answered
):
    carol = make_agent("Carol")
    answered()
    assert offer(client, alice, bob.id).status_code == 200
    response = offer(client, alice, carol.id)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "transfer_already_offered"
    assert error["offered_to"] == {"id": bob.id, "name": "Bob"}


def test_accepting_or_declining_without_an_offer_is_409(client, alice, bob, answered):
    answered()
    for action in ("accept", "decline"):
        response = act(client, bob, action)
        assert response.status_code == 409
        assert response.get_json()["error"]["code"] == "transfer_not_open"


def test_the_transfer_endpoints_need_a_signed_in_agent(client, answered):
    answered()
    assert client.post(f"/api/telnyx/calls/{CALLER}/transfer", json={}).status_code == 401
    assert client.post(f"/api/telnyx/calls/{CALLER}/transfer/accept").status_code == 401
    assert client.post(f"/api/telnyx/calls/{CALLER}/transfer/decline").status_code == 401
    assert client.delete(f"/api/telnyx/calls/{CALLER}/transfer").status_code == 401
    assert client.get("/api/agents").status_code == 401


def test_agents_lists_every_active_agent_with_their_presence(client, alice, bob, db_rows):
    db_rows("UPDATE users SET presence = 'away' WHERE id = %s RETURNING id", (bob.id,))
    response = client.get("/api/agents", headers=alice.headers)
    assert response.status_code == 200
    assert response.get_json() == {
        "success": True,
        "agents": [
            {"id": alice.id, "name": "Alice", "presence": "available"},
            {"id": bob.id, "name": "Bob", "presence": "away"},
        ],
    }
