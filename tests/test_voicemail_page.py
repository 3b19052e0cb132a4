"""Voicemail end to end: the simulator as Telnyx, gunicorn (2 gevent workers) with VOICEMAIL on,
real PostgreSQL and Redis, and two agents' pages in headless Chromium."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from .browser import AgentPage, save_screenshot
from .helpers import wait_until
from .servers import running_stack

MAX_SECONDS = 5  # the shortest VOICEMAIL_MAX_SECONDS allowed


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        VOICEMAIL="true",
        RING_TIMEOUT_SECONDS="5",
        VOICEMAIL_MAX_SECONDS=str(MAX_SECONDS),
        SSE_RETRY_MS="300",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


def logged_call(stack, agent, call_control_id):
    response = requests.get(
        f"{stack[1].url}/api/calls/{call_control_id}", headers=agent.headers, timeout=10
    )
    return response.json()["call"] if response.status_code == 200 else None


def test_a_caller_who_stays_on_is_recorded_until_the_limit_then_hung_up(sim, stack, agent):
    call = sim.call()
    # Ring timeout, answer, greeting, recording; record_stop and hangup at the limit.
    commands = sim.commands(call_control_id=call, wait_for=5, timeout=5 + MAX_SECONDS + 20)
    assert [c["action"] for c in commands] == [
        "answer",
        "speak",
        "record_start",
        "record_stop",
        "hangup",
    ]
    assert all(c["status"] == 200 for c in commands), commands
    speak, record = commands[1]["body"], commands[2]["body"]
    assert (speak["voice"], speak["language"], speak["payload_type"]) == ("female", "en-US", "text")
    assert (record["play_beep"], record["channels"], record["max_length"]) == (
        True,
        "single",
        MAX_SECONDS + 2,
    )
    sim.wait_delivered()
    logged = wait_until(
        lambda: (c := logged_call(stack, agent, call)) and c["has_recording"] and c,
        timeout=10,
        what="the voicemail logged with its recording",
    )
    assert (logged["outcome"], logged["agent"], logged["heard_at"]) == ("voicemail", None, None)
    # The recording plays through the service's proxy, like any call's.
    audio = requests.get(
        f"{stack[1].url}/api/calls/{logged['id']}/recording", headers=agent.headers, timeout=10
    )
    assert audio.status_code == 200 and audio.headers["Content-Type"].startswith("audio/")


def test_a_voicemail_is_unheard_on_every_page_until_one_agent_plays_it_to_the_end(
    sim, stack, browser, make_agent
):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    pages = [AgentPage.open(browser, stack[1].url) for _ in (alice, bob)]
    try:
        for page, agent in zip(pages, (alice, bob), strict=True):
            page.sign_in(agent.email, agent.password)
            page.signed_in_as(agent.name)
            expect(page.page.locator("#unheard-voicemails")).to_be_hidden()
        page_a, page_b = pages
        call = sim.call(from_="+13125550147", message_seconds=1)
        expect(page_a.card(call)).to_be_visible()
        # Nobody answers: the call goes to voicemail, and is nobody's active call.
        expect(page_b.card(call).locator(".state")).to_have_text(
            "Sent to voicemail", timeout=15_000
        )
        expect(page_b.card(call)).to_have_count(0)
        for page in pages:
            row = page.history_row(call)
            expect(row).to_have_attribute("data-outcome", "voicemail", timeout=20_000)
            expect(row.locator(".outcome")).to_have_text("Voicemail")
            expect(row.locator(".unheard-badge")).to_have_text("Unheard", timeout=10_000)
            expect(row.locator("audio")).to_have_count(1)
            expect(page.page.locator("#unheard-voicemails")).to_have_text("1 unheard voicemail")
            expect(page.page.locator("#active")).to_be_hidden()
        save_screenshot(page_a.page, "docs/screenshots/voicemail.png")

        player = page_a.history_row(call).locator("audio")
        player.focus()
        page_a.page.keyboard.press("Space")  # the agent plays it (a user gesture)
        for page in pages:
            row = page.history_row(call)
            expect(row.locator(".unheard-badge")).to_have_count(0, timeout=15_000)
            expect(row).to_have_attribute("data-heard", "true")
            expect(row.locator(".details")).to_contain_text("heard by Alice")
            expect(page.page.locator("#unheard-voicemails")).to_be_hidden()
        assert sim.commands(call_control_id=call, action="reject") == []
    finally:
        for page in pages:
            page.close()
    for page in pages:
        assert page.errors == [], page.errors
