"""Requests that each cost a Telnyx API call are limited per agent: answer, decline and end
share AGENT_ACTIONS_PER_MINUTE, counted in Redis across workers (WebRTC tokens: test_softphone)."""

from __future__ import annotations

import pytest

from .helpers import load_fixture

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def settings(settings):
    return {**settings, "AGENT_ACTIONS_PER_MINUTE": "3"}


def act(client, agent, action):
    return client.post(f"/api/telnyx/calls/{CALLER}/{action}", headers=agent.headers)


def test_an_agent_over_the_action_limit_gets_429_with_retry_after_and_telnyx_is_not_called(
    client, agent, post_webhook, fake_telnyx, redis_client, redis_prefix
):
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    assert act(client, agent, "answer").status_code == 200
    assert act(client, agent, "answer").status_code == 200  # a retry counts too
    assert act(client, agent, "end").status_code == 200
    sent = len(fake_telnyx.received())

    refused = act(client, agent, "end")

    assert refused.status_code == 429
    error = refused.json["error"]
    assert error["code"] == "rate_limited"
    assert error["message"].startswith(
        "too many call actions (answer, decline, end): at most 3 per minute; try again in "
    )
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert error["retry_after"] == int(refused.headers["Retry-After"])
    assert len(fake_telnyx.received()) == sent
    key = f"{redis_prefix}limits:actions:{agent.id}"
    assert redis_client.get(key) == "4"
    assert 0 < redis_client.ttl(key) <= 60


def test_the_action_limit_is_per_agent(client, agent, make_agent, post_webhook):
    bob = make_agent("Bob")
    for _ in range(3):
        act(client, agent, "decline")
    assert act(client, agent, "decline").status_code == 429

    assert act(client, bob, "decline").status_code != 429


def test_a_new_window_lets_the_agent_act_again(client, agent, redis_client, redis_prefix):
    for _ in range(4):
        act(client, agent, "end")
    assert act(client, agent, "end").status_code == 429
    # What the window's end does: the counter expires.
    redis_client.delete(f"{redis_prefix}limits:actions:{agent.id}")

    assert act(client, agent, "end").status_code == 404  # limited no more: the call is unknown
