"""Presence on the page, in real headless Chromium against gunicorn (2 gevent workers), real
PostgreSQL and Redis, and the Telnyx simulator: only available agents' pages ring."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .browser import AgentPage, save_screenshot, signed_in
from .servers import running_stack


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        RING_TIMEOUT_SECONDS="300",
        SSE_RETRY_MS="300",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


def team_member(page: AgentPage, agent_id: str):
    return page.page.locator(f'#team-list li[data-agent-id="{agent_id}"]')


def ringtone(page: AgentPage) -> str:
    return page.page.evaluate("document.body.dataset.ringtone")


def test_only_available_agents_pages_ring_and_on_a_call_shows_on_every_page(sim, pages, make_agent):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    carol = make_agent("Carol", sip_username="carol")
    page_a, page_b, page_c = (signed_in(pages, agent) for agent in (alice, bob, carol))
    expect(team_member(page_a, carol.id)).to_have_attribute("data-presence", "available")

    page_b.page.get_by_label("Status").select_option("away")
    expect(page_b.page.locator("#presence")).to_have_attribute("data-presence", "away")
    for page in (page_a, page_c):
        expect(team_member(page, bob.id).locator(".presence-label")).to_have_text("Away")

    call = sim.call(from_="+13125550147")
    for page in (page_a, page_b, page_c):
        expect(page.card(call)).to_be_visible()
    # Alice's and Carol's pages ring (the ringtone is wanted: playing, or waiting for the
    # browser to allow sound); Bob's shows the call quietly and says why.
    for page in (page_a, page_c):
        expect(page.page).to_have_title("📞 Incoming call")
        assert ringtone(page) != "off"
        expect(page.page.locator("#quiet-hint")).to_be_hidden()
    expect(page_b.page.locator("#quiet-hint")).to_have_text("Not ringing: you are Away.")
    assert ringtone(page_b) == "off"
    expect(page_b.page).to_have_title("Softphone")
    save_screenshot(page_b.page, "docs/screenshots/presence.png")

    page_a.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(page_a.page.locator("#active")).to_be_visible()
    expect(page_a.page.locator("#presence-on-call")).to_be_visible()
    expect(page_a.page.locator("#presence")).to_have_attribute("data-presence", "on_call")
    for page in (page_b, page_c):
        expect(team_member(page, alice.id).locator(".presence-label")).to_have_text("On a call")
    # Bob chose Away; answering does not change what he chose.
    expect(team_member(page_a, bob.id)).to_have_attribute("data-presence", "away")

    page_a.page.locator("#active").get_by_role("button", name="Hang up").click()
    expect(page_a.page.locator("#active")).to_be_hidden()
    expect(page_a.page.locator("#presence")).to_have_attribute("data-presence", "available")
    expect(page_a.page.locator("#presence-on-call")).to_be_hidden()
    for page in (page_b, page_c):
        expect(team_member(page, alice.id).locator(".presence-label")).to_have_text("Available")

    # Bob comes back: the next call rings on his page too.
    page_b.page.get_by_label("Status").select_option("available")
    expect(team_member(page_a, bob.id)).to_have_attribute("data-presence", "available")
    second = sim.call(from_="+13125550188")
    expect(page_b.card(second)).to_be_visible()
    expect(page_b.page).to_have_title("📞 Incoming call")
    assert ringtone(page_b) != "off"
    sim.caller_hangs_up(second)
    expect(page_b.card(second)).to_have_count(0)
