"""Many tabs of the page in one browser share one event stream (static/js/shared_stream.js):
real headless Chromium against gunicorn, real PostgreSQL and Redis, and the Telnyx simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import BrowserContext, expect

from telnyx_flask.redis_store import RedisKeys

from .browser import (
    TRACK_EVENT_SOURCES,
    AgentPage,
)
from .helpers import wait_until
from .servers import running_stack

# Notes, in each tab, when each call's card first appeared (ms since the epoch, sub-ms precise).
RECORD_CARDS = """() => {
  window.__cardSeenAt = {};
  const note = () => {
    for (const card of document.querySelectorAll("#ringing li")) {
      const id = card.dataset.callControlId;
      if (!(id in window.__cardSeenAt)) {
        window.__cardSeenAt[id] = performance.timeOrigin + performance.now();
      }
    }
  };
  note();
  new MutationObserver(note).observe(document.getElementById("ringing"), { childList: true });
}"""
# EventSource.CLOSED is 2.
OPEN_EVENT_SOURCES = "() => window.__eventSources.filter((source) => source.readyState < 2).length"


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    # A closed tab's stream is noticed at the server's next write: a heartbeat every second.
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        RING_TIMEOUT_SECONDS="300",
        SSE_RETRY_MS="300",
        SSE_HEARTBEAT_SECONDS="1",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


@pytest.fixture
def one_browser(browser, stack) -> Iterator[tuple[BrowserContext, list[AgentPage]]]:
    """One browser context (one cookie jar, one set of tabs); every tab must end the test
    without a JavaScript error."""
    context = browser.new_context(base_url=stack[1].url, viewport={"width": 900, "height": 700})
    context.add_init_script(TRACK_EVENT_SOURCES)
    tabs: list[AgentPage] = []
    yield context, tabs
    context.close()
    for tab in tabs:
        assert tab.errors == [], tab.errors


def open_tab(context: BrowserContext, tabs: list[AgentPage]) -> AgentPage:
    """A new tab of the page in this browser, kept in `tabs` (to check its script errors)."""
    tab = AgentPage.open_tab(context)
    tabs.append(tab)
    return tab


def roles(tabs: list[AgentPage]) -> list[str]:
    return [tab.page.locator("#connection").get_attribute("data-role") or "" for tab in tabs]


def open_streams(tabs: list[AgentPage]) -> int:
    """EventSources open in these tabs, together."""
    return sum(tab.page.evaluate(OPEN_EVENT_SOURCES) for tab in tabs)


def test_eight_tabs_ring_within_a_second_on_one_stream_and_stay_in_step(
    sim, one_browser, make_agent, redis_client, redis_prefix
):
    """Tab 5 answers, tab 2 hangs up, tab 3 signs out, tab 7 signs in: every tab follows."""
    context, tabs = one_browser
    alice = make_agent("Alice", sip_username="alice")
    first = open_tab(context, tabs)
    first.sign_in(alice.email, alice.password)
    first.signed_in_as("Alice")
    for _ in range(7):  # signed in already: the cookie is the browser's
        open_tab(context, tabs).signed_in_as("Alice")
    assert roles(tabs) == ["leader"] + ["follower"] * 7
    # The server's count of Alice's open event streams, and the browser's: one each.
    streams = RedisKeys(redis_prefix).agent_streams(alice.id)
    assert redis_client.zcard(streams) == 1
    assert open_streams(tabs) == 1
    for tab in tabs:
        tab.page.evaluate(RECORD_CARDS)

    call = sim.call(from_="+13125550147")

    for tab in tabs:
        expect(tab.card(call)).to_be_visible()
        expect(tab.page).to_have_title("📞 Incoming call")
    seen = [tab.page.evaluate("(id) => window.__cardSeenAt[id]", call) for tab in tabs]
    spread_ms = max(seen) - min(seen)
    print(f"the call showed in 8 tabs within {spread_ms:.1f} ms of the first")
    assert spread_ms <= 1000
    # One tab plays the sound: the one signed in with a click (the others never had one).
    ringtones = [tab.page.evaluate("document.body.dataset.ringtone") for tab in tabs]
    assert ringtones == ["playing"] + ["off"] * 7

    tabs[4].card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    for tab in tabs:
        expect(tab.card(call)).to_have_count(0)
        expect(tab.page.locator("#active .who")).to_have_text("+1 (312) 555-0147")
        expect(tab.page).to_have_title("Softphone")
    assert sim.commands("answer", call, wait_for=1)
    tabs[1].page.get_by_role("button", name="Hang up").click()
    for tab in tabs:
        expect(tab.page.locator("#active")).to_be_hidden()
        expect(tab.history_row(call).locator(".outcome")).to_have_text("Answered")
    assert redis_client.zcard(streams) == 1

    tabs[2].page.get_by_role("button", name="Sign out").click()
    expect(tabs[2].page.locator("#sign-in-reason")).to_have_text("You have signed out.")
    for tab in tabs[:2] + tabs[3:]:
        expect(tab.page.locator("#sign-in-reason")).to_have_text("You signed out in another tab.")
        expect(tab.page.locator("#workspace")).to_be_hidden()
    wait_until(lambda: redis_client.zcard(streams) == 0, timeout=10, what="no stream for Alice")
    assert open_streams(tabs) == 0

    tabs[6].sign_in(alice.email, alice.password)
    for tab in tabs:
        tab.signed_in_as("Alice")
    assert sorted(roles(tabs)) == ["follower"] * 7 + ["leader"]
    assert open_streams(tabs) == 1
    wait_until(lambda: redis_client.zcard(streams) == 1, timeout=10, what="one stream for Alice")


def test_closing_the_leader_tab_loses_no_event_and_a_refused_stream_reaches_every_tab(
    sim, one_browser, make_agent, redis_client, redis_prefix, base_url
):
    """The leader's last events never reach the other tabs (its BroadcastChannel is silenced
    before they come, as when a tab closes with messages in flight); the tab that takes over
    must fetch them from the stream, resuming from the last event it saw. Then the agent is
    signed out everywhere: the new leader's stream is refused, and every tab asks to sign in."""
    context, tabs = one_browser
    alice = make_agent("Alice", sip_username="alice")
    leader = open_tab(context, tabs)
    leader.sign_in(alice.email, alice.password)
    leader.signed_in_as("Alice")
    earlier = sim.call(from_="+13125550101")
    expect(leader.card(earlier)).to_be_visible()
    followers = [open_tab(context, tabs) for _ in range(3)]
    for tab in followers:
        tab.signed_in_as("Alice")
        expect(tab.card(earlier)).to_be_visible()  # a tab that joins is replayed the truth
        tab.page.evaluate(RECORD_CARDS)
    assert roles(tabs) == ["leader"] + ["follower"] * 3
    # Muted in the tab that rings (signed in with a click): every tab follows, the one that will
    # take the ringtone over too.
    leader.page.get_by_role("button", name="Ringtone on").click()
    for tab in followers:
        expect(tab.page.locator("#mute")).to_have_text("Ringtone off")
        expect(tab.page.locator("#mute")).to_have_attribute("aria-pressed", "true")

    leader.page.evaluate("() => { BroadcastChannel.prototype.postMessage = () => {}; }")
    unheard = sim.call(from_="+13125550102")
    sim.caller_hangs_up(earlier)
    expect(leader.card(unheard)).to_be_visible()
    expect(leader.card(earlier)).to_have_count(0)
    for tab in followers:
        expect(tab.card(earlier)).to_be_visible()  # not told yet
    leader.page.close()
    after = sim.call(from_="+13125550103")

    for tab in followers:
        expect(tab.card(unheard)).to_be_visible()
        expect(tab.card(after)).to_be_visible()
        expect(tab.card(earlier)).to_have_count(0)
        expect(tab.history_row(earlier).locator(".outcome")).to_have_text("Caller hung up")
    assert sorted(roles(followers)) == ["follower", "follower", "leader"]
    # The ringtone went with the closed tab to another, muted as the agent left it there.
    ringtones = [tab.page.evaluate("document.body.dataset.ringtone") for tab in followers]
    assert sorted(ringtones) == ["muted", "off", "off"]
    assert open_streams(followers) == 1
    # The closed tab's stream ends at the server's next write to it; one stream is left.
    streams = RedisKeys(redis_prefix).agent_streams(alice.id)
    wait_until(lambda: redis_client.zcard(streams) == 1, timeout=10, what="one stream for Alice")
    sim.caller_hangs_up(unheard)
    for tab in followers:
        expect(tab.card(unheard)).to_have_count(0)
        seen = tab.page.evaluate("() => Object.keys(window.__cardSeenAt)")
        assert sorted(seen) == sorted([earlier, unheard, after])

    ended = requests.post(
        f"{base_url}/api/auth/logout?everywhere=true", headers=alice.headers, timeout=10
    )
    assert ended.status_code == 200
    for tab in followers:
        expect(tab.page.locator("#sign-in-reason")).to_contain_text("Your session has expired")
    wait_until(lambda: redis_client.zcard(streams) == 0, timeout=10, what="no stream for Alice")
    assert open_streams(followers) == 0
