"""Where the parts of the agents' floor meet: presence follows a transfer, a call goes to
voicemail at once while nobody is available, and the agent who handed a call over may note it.
Against the fake Telnyx, real PostgreSQL and Redis."""

from __future__ import annotations

import json

import pytest

from telnyx_flask import presence

from .helpers import load_fixture, renamed

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def settings(settings):
    """Voicemail on (the test helpers turn it off for everyone else)."""
    settings.update(VOICEMAIL="true")
    return settings


@pytest.fixture
def alice(make_agent):
    return make_agent("Alice", sip_username="agentalice")


@pytest.fixture
def bob(make_agent):
    return make_agent("Bob", sip_username="agentbob")


def choose(client, agent, choice: str) -> None:
    """The agent picks a presence (which also makes them known to presence)."""
    response = client.put(
        "/api/agents/me/presence", headers=agent.headers, json={"presence": choice}
    )
    assert response.status_code == 200, response.get_json()


def presences(app, *agents) -> list[str | None]:
    with app.app_context():
        return [presence.presence_of(agent.id) for agent in agents]


def announced(redis_client, redis_prefix) -> list[tuple[str, str]]:
    """(agent name, presence) of each agent.presence event, in order."""
    events = []
    for _, fields in redis_client.xrange(f"{redis_prefix}events"):
        if fields["event"] == "agent.presence":
            data = json.loads(fields["data"])
            events.append((data["agent"]["name"], data["presence"]))
    return events


def answered_by(client, post_webhook, agent) -> None:
    initiated, answered = renamed(
        [load_fixture("01_call.initiated.json"), load_fixture("03_call.answered.json")], ""
    )
    assert post_webhook(initiated).status_code == 200
    response = client.post(f"/api/telnyx/calls/{CALLER}/answer", headers=agent.headers)
    assert response.status_code == 200, response.get_json()
    assert post_webhook(answered).status_code == 200


def hand_over(client, from_agent, to_agent) -> None:
    response = client.post(
        f"/api/telnyx/calls/{CALLER}/transfer",
        headers=from_agent.headers,
        json={"agent_id": to_agent.id},
    )
    assert response.status_code == 200, response.get_json()
    response = client.post(f"/api/telnyx/calls/{CALLER}/transfer/accept", headers=to_agent.headers)
    assert response.status_code == 200, response.get_json()


def test_a_transfer_puts_the_colleague_on_the_call_and_the_first_agent_back_to_available(
    app, client, alice, bob, post_webhook, redis_client, redis_prefix
):
    choose(client, alice, "available")
    choose(client, bob, "available")
    answered_by(client, post_webhook, alice)
    assert presences(app, alice, bob) == ["on_call", "available"]

    hand_over(client, alice, bob)

    assert presences(app, alice, bob) == ["available", "on_call"]
    assert announced(redis_client, redis_prefix)[-2:] in (
        [("Alice", "available"), ("Bob", "on_call")],
        [("Bob", "on_call"), ("Alice", "available")],
    )
    [hangup] = renamed([load_fixture("05_call.hangup.json")], "")
    assert post_webhook(hangup).status_code == 200
    assert presences(app, alice, bob) == ["available", "available"]


def test_while_every_agent_is_away_a_new_call_goes_to_voicemail_at_once(
    app, client, alice, post_webhook, redis_client, redis_prefix, fake_telnyx, db_rows
):
    choose(client, alice, "away")
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    rang_at = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))

    # One second in, far short of RING_TIMEOUT_SECONDS: nobody would ever take it.
    assert app.extensions["ring_timeouts"].sweep(now=rang_at + 1_000) == [CALLER]

    assert [request.action for request in fake_telnyx.received()] == ["answer"]
    assert fake_telnyx.received("reject") == []
    [call] = db_rows("SELECT voicemail_at FROM inbound_calls")
    assert call["voicemail_at"] is not None


def test_both_agents_of_a_handed_over_call_may_leave_its_note(
    client, alice, bob, post_webhook, make_agent, db_rows
):
    carol = make_agent("Carol")
    answered_by(client, post_webhook, alice)
    hand_over(client, alice, bob)
    [hangup] = renamed([load_fixture("05_call.hangup.json")], "")
    assert post_webhook(hangup).status_code == 200

    def note(agent, text):
        return client.put(
            f"/api/calls/{CALLER}/notes",
            headers=agent.headers,
            json={"note": text, "disposition": "follow-up"},
        )

    assert note(alice, "Passed to Bob for pricing").status_code == 200
    assert note(bob, "Quoted 40 pallets").status_code == 200
    assert note(carol, "Not mine").status_code == 403
    [row] = db_rows(
        "SELECT l.notes, l.disposition, a.name AS answered, t.name AS transferred"
        " FROM call_logs l JOIN users a ON a.id = l.answered_by"
        " JOIN users t ON t.id = l.transferred_from"
    )
    assert row == {
        "notes": "Quoted 40 pallets",
        "disposition": "follow-up",
        "answered": "Bob",
        "transferred": "Alice",
    }
