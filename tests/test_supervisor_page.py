"""The supervisor's live view (/supervisor) in real headless Chromium, against gunicorn (2 gevent
workers), real PostgreSQL and Redis, and the Telnyx simulator: its tiles, agents and chart follow
calls as they ring, are answered and end, and an agent is told the view is not theirs."""

from __future__ import annotations

import re

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


def watching(pages, supervisor) -> AgentPage:
    """The supervisor's view, 1280 px wide, signed in there (not on the softphone page)."""
    view = pages(width=1280, height=1000)
    view.page.goto("/supervisor")
    view.sign_in(supervisor.email, supervisor.password)
    view.signed_in_as(supervisor.name)
    return view


def agent_row(view: AgentPage, agent_id: str):
    return view.page.locator(f'#agent-rows tr[data-agent-id="{agent_id}"]')


def tile(view: AgentPage, element_id: str):
    return view.page.locator(f"#{element_id}")


def test_the_tiles_agents_and_chart_follow_calls_as_they_ring_are_answered_and_end(
    sim, pages, make_agent
):
    sam = make_agent("Sam", sip_username=None, role="supervisor")
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    page_a, page_b = signed_in(pages, alice), signed_in(pages, bob)
    view = watching(pages, sam)
    for agent in (alice, bob):
        expect(agent_row(view, agent.id)).to_have_attribute("data-presence", "available")
    expect(tile(view, "on-call-now")).to_have_text("0")
    expect(agent_row(view, sam.id).locator(".role-badge")).to_have_text("Supervisor")
    expect(agent_row(view, alice.id).locator(".role-badge")).to_have_text("Agent")
    expect(tile(view, "waiting-now")).to_have_text("0")
    expect(tile(view, "longest-wait")).to_have_text("Nobody waiting")

    first = sim.call(from_="+13125550147")
    expect(tile(view, "waiting-now")).to_have_text("1")
    expect(tile(view, "longest-wait")).to_contain_text("Longest wait 0:0")

    page_a.card(first).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(page_a.page.locator("#active")).to_be_visible()
    expect(tile(view, "waiting-now")).to_have_text("0")
    expect(tile(view, "in-progress-now")).to_have_text("1")
    expect(tile(view, "on-call-now")).to_have_text("1")
    alice_row = agent_row(view, alice.id)
    expect(alice_row).to_have_attribute("data-presence", "on_call")
    expect(alice_row.locator(".presence-label")).to_have_text("On a call")
    expect(alice_row.locator(".current-call")).to_contain_text("+1 (312) 555-0147 · 0:0")

    # A caller who gives up while Alice talks: abandoned today, and a bar in the chart.
    second = sim.call(from_="+13125550188")
    expect(tile(view, "waiting-now")).to_have_text("1")
    sim.caller_hangs_up(second)
    expect(tile(view, "abandoned-today")).to_have_text("1")
    expect(tile(view, "waiting-now")).to_have_text("0")
    chart = view.page.locator("#hour-chart")
    expect(chart.locator('rect[data-outcome="abandoned"]')).to_have_attribute("data-count", "1")

    third = sim.call(from_="+13125550199")
    expect(tile(view, "waiting-now")).to_have_text("1")
    expect(page_b.card(third)).to_be_visible()
    # The wait ticks on its own, from when the call started ringing.
    expect(tile(view, "longest-wait")).to_have_text(re.compile(r"^Longest wait 0:0[1-9]$"))

    page_a.page.locator("#active").get_by_role("button", name="Hang up").click()
    expect(tile(view, "answered-today")).to_have_text("1")
    expect(tile(view, "offered-today")).to_have_text("2")
    expect(tile(view, "in-progress-now")).to_have_text("0")
    expect(alice_row.locator(".handled")).to_have_text("1")
    expect(alice_row.locator(".current-call")).to_have_text("—")
    expect(alice_row).to_have_attribute("data-presence", "available")
    expect(agent_row(view, bob.id).locator(".handled")).to_have_text("0")
    expect(chart.locator('rect[data-outcome="answered"]')).to_have_attribute("data-count", "1")
    expect(chart.locator("svg")).to_have_attribute("role", "img")
    expect(chart.locator("svg > title")).to_contain_text("Calls per hour today: 2 calls;")
    expect(chart.locator("table tbody tr")).to_have_count(1)
    expect(tile(view, "service-level")).to_have_text("50%")
    expect(tile(view, "service-level-detail")).to_have_text("1 of 2 answered within 20 s")

    page_b.card(third).get_by_role("button", name="Decline call from +1 (312) 555-0199").click()
    expect(tile(view, "declined-today")).to_have_text("1")
    expect(tile(view, "waiting-now")).to_have_text("0")
    expect(view.page.locator("#connection")).to_have_attribute("data-state", "live")


# Sixty calls earlier today, spread from midnight (UTC, the stack's TEAM_TIMEZONE) to now: half
# answered by Alice or Bob after 5 to 41 s, the rest abandoned, missed, voicemail or declined.
EARLIER_TODAY_SQL = """
WITH span AS (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start),
     calls AS (
         SELECT i, span.start + (now() - span.start) * (i / 61.0) AS started,
                CASE WHEN i %% 20 < 10 THEN 'answered' WHEN i %% 20 < 13 THEN 'abandoned'
                     WHEN i %% 20 < 15 THEN 'missed' WHEN i %% 20 < 18 THEN 'voicemail'
                     ELSE 'declined' END AS outcome
           FROM span, generate_series(1, 60) AS i)
INSERT INTO call_logs (call_sid, direction, from_number, phone_number, to_number, started_at,
                       answered_at, ended_at, duration, outcome, answered_by)
SELECT 'v3:earlier-' || i, 'inbound', '+1312555' || (1000 + i), '+1312555' || (1000 + i),
       '+14155550123', started,
       CASE outcome WHEN 'answered' THEN started + make_interval(secs => 5 + (i %% 7) * 6)
                    WHEN 'voicemail' THEN started + interval '30 seconds' END,
       started + interval '10 minutes',
       CASE outcome WHEN 'answered' THEN 60 + (i * 37) %% 540 WHEN 'voicemail' THEN 20 ELSE 0 END,
       outcome,
       CASE WHEN outcome = 'answered' THEN (CASE WHEN i %% 2 = 0 THEN %s ELSE %s END)::uuid END
  FROM calls
RETURNING id
"""


def test_a_busy_day_shows_the_databases_counts_in_every_tile_and_bar(
    sim, pages, make_agent, db_rows
):
    sam = make_agent("Sam", sip_username=None, role="supervisor")
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    assert len(db_rows(EARLIER_TODAY_SQL, (alice.id, bob.id))) == 60
    page_a, _ = signed_in(pages, alice), signed_in(pages, bob)
    view = watching(pages, sam)
    # Sam's page only watches (?watch=true): it does not make him available for calls.
    expect(agent_row(view, sam.id)).to_have_attribute("data-presence", "away")
    expect(agent_row(view, bob.id)).to_have_attribute("data-presence", "available")

    [today] = db_rows(
        "SELECT count(*) AS offered,"
        " count(*) FILTER (WHERE outcome = 'answered') AS answered,"
        " count(*) FILTER (WHERE outcome = 'missed') AS missed,"
        " count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned,"
        " count(*) FILTER (WHERE outcome = 'voicemail') AS voicemail,"
        " count(*) FILTER (WHERE outcome = 'declined') AS declined,"
        " count(*) FILTER (WHERE outcome = 'answered'"
        "  AND answered_at - started_at <= interval '20 seconds') AS within"
        " FROM call_logs"
    )
    for outcome in ("answered", "missed", "abandoned", "voicemail", "declined", "offered"):
        expect(tile(view, f"{outcome}-today")).to_have_text(str(today[outcome]))
    percent = int(100 * today["within"] / today["offered"] + 0.5)
    expect(tile(view, "service-level")).to_have_text(f"{percent}%")
    expect(tile(view, "service-level-detail")).to_have_text(
        f"{today['within']} of {today['offered']} answered within 20 s"
    )
    handled = db_rows(
        "SELECT answered_by::text AS agent, count(*) AS n FROM call_logs"
        " WHERE outcome = 'answered' GROUP BY 1"
    )
    for row in handled:
        expect(agent_row(view, row["agent"]).locator(".handled")).to_have_text(str(row["n"]))
    bars = db_rows(
        "SELECT EXTRACT(HOUR FROM started_at AT TIME ZONE 'UTC')::int AS hour, outcome,"
        " count(*) AS n FROM call_logs GROUP BY 1, 2"
    )
    chart = view.page.locator("#hour-chart")
    expect(chart.locator("rect[data-outcome]")).to_have_count(len(bars))
    for bar in bars:
        rect = chart.locator(f'rect[data-hour="{bar["hour"]}"][data-outcome="{bar["outcome"]}"]')
        expect(rect).to_have_attribute("data-count", str(bar["n"]))

    # And the floor right now, for the README: Alice on a call, a caller waiting.
    first = sim.call(from_="+13125550147")
    page_a.card(first).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(tile(view, "in-progress-now")).to_have_text("1")
    sim.call(from_="+13125550199", caller_name="Dana Whitfield")
    expect(tile(view, "longest-wait")).to_have_text(re.compile(r"^Longest wait 0:0[1-9]$"))
    expect(agent_row(view, alice.id).locator(".current-call")).to_contain_text("0:0")
    save_screenshot(view.page, "docs/screenshots/supervisor.png")


def test_an_agent_is_told_the_view_is_for_supervisors_and_only_a_supervisor_gets_the_link(
    sim, pages, make_agent
):
    sam = make_agent("Sam", sip_username=None, role="supervisor")
    alice = make_agent("Alice", sip_username="alice")

    page_a = signed_in(pages, alice)
    expect(page_a.page.locator("#supervisor-link")).to_be_hidden()
    page_a.page.goto("/supervisor")
    forbidden = page_a.page.locator("#forbidden")
    expect(forbidden).to_be_visible()
    expect(forbidden.get_by_role("heading")).to_have_text("This view is for supervisors")
    expect(page_a.page.locator("#floor")).to_be_hidden()
    expect(page_a.page.locator("#connection")).to_have_attribute("data-state", "offline")
    forbidden.get_by_role("link", name="Back to the softphone").click()
    page_a.signed_in_as(alice.name)

    page_s = signed_in(pages, sam)
    page_s.page.get_by_role("link", name="Supervisor view").click()
    expect(page_s.page).to_have_url(re.compile(r"/supervisor$"))
    page_s.signed_in_as(sam.name)
    expect(agent_row(page_s, alice.id).locator(".name")).to_have_text("Alice")
    # A narrow window: one column, and nothing wider than the window (the table scrolls).
    page_s.page.set_viewport_size({"width": 390, "height": 844})
    expect(page_s.page.locator("#hour-chart svg")).to_be_visible()
    assert page_s.page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
