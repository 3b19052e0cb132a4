"""Caller context and after-call notes in real headless Chromium, with two agents, against
gunicorn, real PostgreSQL and Redis, and the Telnyx simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from playwright.sync_api import expect

from .browser import save_screenshot, signed_in
from .servers import running_stack

NUMBER = "+13125550147"


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


def run_sql(database_url: str, sql: str, params: tuple = ()) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


def earlier_calls(database_url: str, noted_by: str) -> None:
    """Two calls from NUMBER last week, the newer one answered and noted by `noted_by`."""
    week_ago = datetime.now(UTC) - timedelta(days=7)
    for n, (outcome, answered_by, note, disposition) in enumerate(
        [
            ("missed", None, None, None),
            ("answered", noted_by, "Asked for a quote on 40 pallets.", "follow-up"),
        ]
    ):
        at = week_ago + timedelta(hours=n)
        run_sql(
            database_url,
            "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, to_number,"
            " prospect_name, outcome, started_at, ended_at, duration, answered_by, notes,"
            " disposition, noted_by, noted_at) VALUES (%s, 'inbound', %s, %s, '+14155550123',"
            " 'Dana Whitfield', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                f"v3:earlier-{n}",
                NUMBER,
                NUMBER,
                outcome,
                at,
                at + timedelta(minutes=2),
                184 if answered_by else 0,
                answered_by,
                note,
                disposition,
                noted_by if note else None,
                at + timedelta(minutes=3) if note else None,
            ),
        )


def test_a_prospects_call_rings_with_context_and_the_note_reaches_history_and_the_next_call(
    sim, pages, make_agent, database_url
):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    run_sql(
        database_url,
        "INSERT INTO prospects (name, phone_number, company, notes) VALUES (%s, %s, %s, %s)",
        ("Dana Whitfield", NUMBER, "Whitfield Freight", "Renewal due in January."),
    )
    earlier_calls(database_url, noted_by=bob.id)
    page_a, page_b = signed_in(pages, alice), signed_in(pages, bob)

    call = sim.call(from_=NUMBER, to="+14155550123")
    for page in (page_a, page_b):
        context = page.card(call).locator(".caller-context")
        expect(context.locator(".context-company")).to_have_text("Whitfield Freight")
        expect(context.locator(".context-prospect-notes")).to_have_text("Renewal due in January.")
        expect(context.locator(".context-history")).to_contain_text("2 calls before · last ")
        expect(context.locator(".context-history")).to_contain_text("Answered by Bob")
        expect(context.locator(".context-last-note")).to_have_text(
            "Last note (follow-up, Bob): Asked for a quote on 40 pallets."
        )
    save_screenshot(page_a.page, "docs/screenshots/context-card.png")

    page_a.card(call).get_by_role("button", name="Answer call from Dana Whitfield").click()
    active = page_a.page.locator("#active")
    expect(active.locator(".timer")).to_contain_text("On call")
    active.get_by_role("button", name="Hang up").click()

    form = page_a.page.get_by_role("form", name="Note for the call with Dana Whitfield")
    expect(form).to_be_visible()
    expect(page_b.page.locator("#after-call")).to_be_hidden()
    form.get_by_label("Disposition").select_option("sale")
    form.get_by_label("Note").fill("Ordered 40 pallets, invoice to accounts.")
    expect(form.locator(".note-count")).to_have_text("40 / 2000 characters")
    save_screenshot(page_a.page, "docs/screenshots/after-call-form.png")
    form.get_by_role("button", name="Save").click()
    expect(page_a.page.locator("#after-call")).to_be_hidden()

    for page in (page_a, page_b):
        note = page.history_row(call).locator(".call-note")
        expect(note.locator(".disposition")).to_have_text("sale")
        expect(note.locator(".note-text")).to_have_text("Ordered 40 pallets, invoice to accounts.")
        expect(note).to_contain_text("Alice")

    # Only the agent who had the call may change it: her row offers it, his does not.
    expect(page_b.history_row(call).locator(".edit-note")).to_have_count(0)
    page_a.history_row(call).get_by_role(
        "button", name="Edit note for the call with Dana Whitfield"
    ).click()
    expect(form.get_by_label("Disposition")).to_have_value("sale")
    expect(form.get_by_label("Note")).to_have_value("Ordered 40 pallets, invoice to accounts.")
    form.get_by_role("button", name="Not now").click()
    expect(page_a.page.locator("#after-call")).to_be_hidden()

    page_b.page.get_by_label("Disposition").select_option("sale")
    expect(page_b.page.locator("#history li")).to_have_count(1)
    expect(page_b.history_row(call)).to_be_visible()
    page_b.page.get_by_label("Disposition").select_option("")
    expect(page_b.page.locator("#history li")).to_have_count(3)

    next_call = sim.call(from_=NUMBER, to="+14155550123")
    context = page_b.card(next_call).locator(".caller-context")
    expect(context.locator(".context-history")).to_contain_text("3 calls before · last ")
    expect(context.locator(".context-history")).to_contain_text("Answered by Alice")
    expect(context.locator(".context-last-note")).to_have_text(
        "Last note (sale, Alice): Ordered 40 pallets, invoice to accounts."
    )
    sim.caller_hangs_up(next_call)
    expect(page_b.card(next_call)).to_have_count(0)
