"""Transfer to a colleague in real headless Chromium: three agents' pages, gunicorn, real
PostgreSQL and Redis, and the Telnyx simulator (whose agent phones pick up by themselves)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .browser import save_screenshot, signed_in
from .servers import running_stack

RING_SECONDS = 5


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        RING_TIMEOUT_SECONDS="300",
        TRANSFER_RING_SECONDS=str(RING_SECONDS),
        SSE_RETRY_MS="300",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


def answered_by(page, sim, call: str) -> None:
    """The agent of `page` answers the ringing `call`; back once Telnyx says it is answered."""
    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(page.page.locator("#active .timer")).to_contain_text("On call")
    expect(page.page.locator("#transfer-control")).to_be_visible()


def test_a_call_transferred_to_a_colleague_rings_only_their_page_and_moves_there(
    sim, pages, make_agent
):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    carol = make_agent("Carol", sip_username="carol")
    page_a, page_b, page_c = (signed_in(pages, agent) for agent in (alice, bob, carol))
    call = sim.call(from_="+13125550147")
    expect(page_a.card(call)).to_be_visible()
    answered_by(page_a, sim, call)
    expect(page_b.card(call)).to_have_count(0)

    page_a.page.get_by_label("Transfer to").select_option(label="Bob")
    page_a.page.get_by_role("button", name="Transfer", exact=True).click()

    expect(page_a.page.locator(".transfer-status")).to_contain_text("Offered to Bob…")
    offer = page_b.page.locator(f'#transfer-offers li[data-call-control-id="{call}"]')
    expect(offer).to_be_visible()
    expect(offer.locator(".state")).to_have_text("Transferred from Alice")
    expect(page_b.page.locator("#announcer")).to_contain_text("Alice is transferring the call")
    assert page_b.page.evaluate("document.body.dataset.ringtone") != "off"
    expect(page_c.page.locator("#transfer-offers")).to_be_hidden()
    expect(page_a.page.locator("#transfer-offers")).to_be_hidden()
    save_screenshot(page_b.page, "docs/screenshots/transfer.png")
    save_screenshot(page_a.page, "docs/screenshots/transfer-offered.png")

    offer.get_by_role(
        "button", name="Answer call from +1 (312) 555-0147, transferred from Alice"
    ).click()

    active_b = page_b.page.locator("#active")
    expect(active_b).to_be_visible()
    expect(active_b.locator(".who")).to_have_text("+1 (312) 555-0147")
    expect(page_a.page.locator("#active")).to_be_hidden()
    expect(page_b.page.locator("#transfer-offers")).to_be_hidden()
    assert page_b.page.evaluate("document.body.dataset.ringtone") == "off"
    [_, to_bob] = [c for c in sim.commands("transfer", call, wait_for=2) if c["status"] == 200]
    assert to_bob["body"]["to"] == "sip:bob@sip.telnyx.com"
    assert to_bob["body"]["custom_headers"] == [{"name": "X-Call-Control-Id", "value": call}]
    sim.wait_delivered()
    legs = {
        leg["to"]: leg["state"]
        for leg in sim.http.get(f"{sim.url}/sim/calls/{call}").json()["legs"]
    }
    assert (legs["sip:alice@sip.telnyx.com"], legs["sip:bob@sip.telnyx.com"]) == (
        "ended",
        "bridged",
    )

    active_b.get_by_role("button", name="Hang up").click()

    expect(active_b).to_be_hidden()
    for page in (page_a, page_b, page_c):
        row = page.history_row(call)
        expect(row.locator(".outcome")).to_have_text("Answered")
        expect(row.locator(".details")).to_contain_text("Bob · transferred from Alice")


def test_a_declined_or_unanswered_transfer_leaves_the_call_with_the_first_agent(
    sim, pages, make_agent
):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    page_a, page_b = signed_in(pages, alice), signed_in(pages, bob)
    call = sim.call(from_="+13125550147")
    expect(page_a.card(call)).to_be_visible()
    answered_by(page_a, sim, call)
    page_a.page.get_by_label("Transfer to").select_option(label="Bob")
    page_a.page.get_by_role("button", name="Transfer", exact=True).click()
    offer = page_b.page.locator(f'#transfer-offers li[data-call-control-id="{call}"]')

    offer.get_by_role("button", name="Decline transfer of call from +1 (312) 555-0147").click()

    expect(offer).to_have_count(0)
    expect(page_a.page.locator(".transfer-note")).to_have_text(
        "Bob declined the transfer. The call is still yours."
    )
    expect(page_a.page.locator("#active .who")).to_have_text("+1 (312) 555-0147")
    expect(page_b.page.locator("#active")).to_be_hidden()
    # The caller never left Alice: only the answer's transfer was sent.
    assert len(sim.commands("transfer", call)) == 1

    # Offered again, and nobody answers: the offer expires (the servers' sweep) and says so.
    page_a.page.get_by_role("button", name="Transfer", exact=True).click()
    expect(offer).to_be_visible()
    expect(page_a.page.locator(".transfer-note")).to_have_text(
        "Bob did not answer the transfer. The call is still yours.",
        timeout=(RING_SECONDS + 5) * 1000,
    )
    expect(offer).to_have_count(0)
    assert len(sim.commands("transfer", call)) == 1
    page_a.page.locator("#active").get_by_role("button", name="Hang up").click()
    expect(page_a.history_row(call).locator(".details")).not_to_contain_text("transferred")
