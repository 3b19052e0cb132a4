"""The softphone page in real headless Chromium, against gunicorn (2 gevent workers), real
PostgreSQL and Redis, and the Telnyx simulator."""

from __future__ import annotations

import base64
import json
import time

import psycopg2
import pytest
import requests
from playwright.sync_api import expect

from telnyx_flask.softphone import SIMULATED_MESSAGE_SECONDS

from .browser import AgentPage, save_screenshot, signed_in
from .servers import Gunicorn, ready_simulator, running_stack


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix):
    # Closed pages' streams are noticed only at the next write; don't wait 20 s for them at exit.
    with running_stack(
        database_url,
        redis_prefix,
        workers=2,
        RING_TIMEOUT_SECONDS="300",
        SSE_RETRY_MS="300",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    ) as stack:
        yield stack


def add_prospect(database_url: str, name: str, phone_number: str) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO prospects (name, phone_number) VALUES (%s, %s)", (name, phone_number)
        )
    conn.close()


def test_a_call_rings_on_both_pages_one_agent_answers_and_both_see_it_in_history(
    sim, pages, make_agent, database_url
):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    add_prospect(database_url, "Dana Whitfield", "+13125550147")
    page_a, page_b = signed_in(pages, alice), signed_in(pages, bob)
    earlier = sim.call(from_="+13125550188")  # a call nobody took, for the history
    expect(page_a.card(earlier)).to_be_visible()
    sim.caller_hangs_up(earlier)
    expect(page_a.history_row(earlier).locator(".outcome")).to_have_text("Caller hung up")

    started = time.monotonic()
    call = sim.call(from_="+13125550147", to="+14155550123")
    card_a, card_b = page_a.card(call), page_b.card(call)
    expect(card_a).to_be_visible()
    expect(card_b).to_be_visible()
    print(f"ringing on both pages {time.monotonic() - started:.3f} s after the call started")
    expect(card_a.locator(".who")).to_have_text("Dana Whitfield")
    expect(card_a.locator(".meta")).to_have_text("+1 (312) 555-0147 · called +1 (415) 555-0123")
    expect(card_a.locator(".state")).to_contain_text("Ringing 0:0")
    expect(page_a.page.locator("#announcer")).to_have_text("Incoming call from Dana Whitfield")
    save_screenshot(page_a.page, "docs/screenshots/ringing.png")

    card_a.get_by_role("button", name="Answer call from Dana Whitfield").click()

    expect(card_b.locator(".state")).to_have_text("Answered by Alice")
    # While it lingers, saying who took it, the taken card offers nothing to press.
    expect(card_b.locator(".actions")).to_have_css("display", "none")
    expect(card_b).to_have_count(0)
    active = page_a.page.locator("#active")
    expect(active).to_be_visible()
    expect(active.locator(".who")).to_have_text("Dana Whitfield")
    expect(active.locator(".where")).to_have_text("Audio: sip:alice@sip.telnyx.com")
    expect(active.locator(".timer")).to_contain_text("On call 0:0")
    expect(card_a).to_have_count(0)
    # record_start is owed by the call.answered webhook and may go before the transfer.
    actions = [c["action"] for c in sim.commands(call_control_id=call)]
    assert [a for a in actions if a != "record_start"][:2] == ["answer", "transfer"]
    save_screenshot(page_a.page, "docs/screenshots/in-call.png")

    active.get_by_role("button", name="Hang up").click()
    expect(active).to_be_hidden()
    sim.wait_delivered()
    for page in (page_a, page_b):
        row = page.history_row(call)
        expect(row).to_have_attribute("data-outcome", "answered")
        expect(row.locator(".outcome")).to_have_text("Answered")
        expect(row.locator(".details")).to_contain_text("Alice")
        player = row.locator("audio")
        expect(player).to_have_count(1)
        expect(page.page.locator("#history li").first).to_have_attribute(
            "data-call-control-id", call
        )
    source = page_b.page.locator(f'#history li[data-call-control-id="{call}"] audio')
    src = source.get_attribute("src")
    fetched = page_b.page.request.get(src)
    assert fetched.status == 200
    assert fetched.headers["content-type"].startswith("audio/")
    assert len(fetched.body()) > 1000


def test_declining_a_call_takes_it_off_every_page_and_logs_it_declined(sim, pages, make_agent):
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    page_a, page_b = signed_in(pages, alice), signed_in(pages, bob)
    call = sim.call()
    expect(page_a.card(call)).to_be_visible()

    page_b.card(call).get_by_role("button", name="Decline call from +1 (312) 555-0147").click()

    expect(page_a.card(call).locator(".state")).to_have_text("Declined by Bob")
    expect(page_a.card(call)).to_have_count(0)
    expect(page_b.card(call)).to_have_count(0)
    assert sim.commands("reject", call, wait_for=1)[0]["body"]["cause"] == "CALL_REJECTED"
    for page in (page_a, page_b):
        expect(page.history_row(call).locator(".outcome")).to_have_text("Declined")
        expect(page.history_row(call).locator("audio")).to_have_count(0)


def test_a_caller_who_gives_up_stops_the_ringing_and_is_logged(sim, pages, make_agent):
    page = signed_in(pages, make_agent("Alice", sip_username="alice"))
    first, second = sim.call(from_="+13125550101"), sim.call(from_="+13125550102")
    expect(page.page.locator("#ringing li")).to_have_count(2)
    # Oldest first, and the tab title and ringtone say a call is waiting.
    expect(page.page.locator("#ringing li").first).to_have_attribute("data-call-control-id", first)
    expect(page.page.locator("#ringing-count")).to_have_text("(2)")
    expect(page.page).to_have_title("📞 2 incoming calls")

    sim.caller_hangs_up(first)

    expect(page.card(first)).to_have_count(0)
    expect(page.card(second)).to_be_visible()
    expect(page.history_row(first).locator(".outcome")).to_have_text("Caller hung up")
    sim.caller_hangs_up(second)
    expect(page.page.locator("#no-calls")).to_be_visible()
    expect(page.page).to_have_title("Softphone")
    assert page.page.evaluate("document.body.dataset.ringtone") == "off"


@pytest.fixture
def page_servers(stack):
    """A second gunicorn on the same stores, serving the page, that a test stops and restarts
    (the last in the list is the one running); webhooks keep going to the first."""
    servers = [Gunicorn(stack[1].settings, workers=2)]
    servers[0].wait_ready()
    yield servers
    servers[-1].stop()


def test_the_page_resumes_after_a_server_restart_without_losing_events(
    sim, pages, make_agent, page_servers
):
    """Calls that start while the page's server is down ring once it is back."""
    page = signed_in(pages, make_agent("Alice", sip_username="alice"), page_servers[0].url)
    before = sim.call(from_="+13125550101")
    expect(page.card(before)).to_be_visible()

    page_servers[0].stop()
    expect(page.page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    expect(page.page.locator("#connection-text")).to_have_text("Reconnecting…")
    # Webhooks still reach the other server, and land in the shared Redis stream.
    during = [sim.call(from_="+13125550102"), sim.call(from_="+13125550103")]
    sim.caller_hangs_up(before)
    sim.wait_delivered()

    page_servers.append(page_servers[0].restarted())
    expect(page.page.locator("#connection")).to_have_attribute("data-state", "live")
    for call in during:
        expect(page.card(call)).to_be_visible()
    expect(page.card(before)).to_have_count(0)
    expect(page.page.locator("#ringing li")).to_have_count(2)


def test_a_page_whose_resume_point_is_gone_rebuilds_from_the_snapshot(
    sim, pages, make_agent, page_servers, redis_client, redis_prefix
):
    page = signed_in(pages, make_agent("Alice", sip_username="alice"), page_servers[0].url)
    before = sim.call(from_="+13125550101")
    expect(page.card(before)).to_be_visible()

    page_servers[0].stop()
    sim.caller_hangs_up(before)
    sim.wait_delivered()
    during = sim.call(from_="+13125550102")
    sim.wait_delivered()
    # Trim the stream past the page's resume point: before's call.ended is gone for good.
    redis_client.xtrim(f"{redis_prefix}events", maxlen=1)

    page_servers.append(page_servers[0].restarted())
    expect(page.page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.card(during)).to_be_visible()
    expect(page.card(before)).to_have_count(0)  # the snapshot, not a stale card


def test_a_wrong_password_says_so_and_keeps_the_form(pages, make_agent, sim):
    alice = make_agent("Alice", sip_username="alice")
    page = pages()
    page.sign_in(alice.email, "not the password")
    expect(page.page.get_by_role("alert")).to_have_text("Email or password is wrong.")
    expect(page.page.locator("#sign-in")).to_be_visible()
    expect(page.page.get_by_label("Password")).to_be_focused()
    expect(page.page.locator("#workspace")).to_be_hidden()


def test_an_expired_session_brings_back_the_form_without_losing_the_page(sim, pages, make_agent):
    alice = make_agent("Alice", sip_username="alice")
    page = signed_in(pages, alice)
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    page.context.clear_cookies()  # the session cookie expires

    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    expect(page.page.locator("#sign-in")).to_be_visible()
    expect(page.page.locator("#sign-in-reason")).to_contain_text("Your session has expired")
    expect(page.card(call)).to_be_visible()  # the page kept its place
    assert sim.commands("answer", call) == []
    page.sign_in(alice.email, alice.password)
    page.signed_in_as("Alice")
    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(page.page.locator("#active .who")).to_have_text("+1 (312) 555-0147")


def test_losing_the_race_shows_who_won_not_an_error(sim, pages, make_agent, base_url):
    """A 409 on Answer (the winner's claim not yet seen) reads like the claim event would."""
    alice = make_agent("Alice", sip_username="alice")
    bob = make_agent("Bob", sip_username="bob")
    page = signed_in(pages, bob)
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    page.page.evaluate("window.__eventSources.forEach((source) => source.close())")
    won = requests.post(
        f"{base_url}/api/telnyx/calls/{call}/answer", headers=alice.headers, timeout=10
    )
    assert won.status_code == 200

    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    expect(page.card(call).locator(".state")).to_have_text("Answered by Alice")
    expect(page.card(call).get_by_role("alert")).to_be_hidden()
    expect(page.card(call)).to_have_count(0)


def test_telnyx_refusing_shows_its_reason_and_keeps_the_card(sim, pages, make_agent):
    page = signed_in(pages, make_agent("Alice", sip_username="alice"))
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    sim.refuse("answer", 403, "the connection is suspended")

    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    alert = page.card(call).get_by_role("alert")
    expect(alert).to_have_text("Telnyx refused answer: the connection is suspended")
    expect(page.card(call).locator(".state")).to_contain_text("Ringing")
    expect(
        page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147")
    ).to_be_enabled()
    expect(page.page.locator("#active")).to_be_hidden()


def test_keyboard_only_at_360_px_wide(sim, pages, make_agent):
    """Sign in, answer and hang up with the keyboard alone, on a phone-sized screen."""
    alice = make_agent("Alice", sip_username="alice")
    page = pages(width=360, height=740)
    keyboard = page.page.keyboard
    expect(page.page.get_by_label("Email")).to_be_focused()
    keyboard.type(alice.email)
    keyboard.press("Tab")
    keyboard.type(alice.password)
    keyboard.press("Enter")
    page.signed_in_as("Alice")
    call = sim.call(from_="+13125550147")
    expect(page.card(call)).to_be_visible()
    answer = page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147")
    for _ in range(20):  # Tab from the top of the page until Answer has the focus
        keyboard.press("Tab")
        if answer.evaluate("(button) => button === document.activeElement"):
            break
    expect(answer).to_be_focused()
    keyboard.press("Enter")

    hang_up = page.page.get_by_role("button", name="Hang up")
    expect(hang_up).to_be_focused()  # focus moves to the call just taken
    width = page.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
    keyboard.press("Enter")
    expect(page.page.locator("#active")).to_be_hidden()
    expect(page.history_row(call).locator(".outcome")).to_have_text("Answered")


def test_ringtone_follows_the_calls_and_mute_is_remembered(sim, pages, make_agent):
    alice = make_agent("Alice", sip_username="alice")
    page = signed_in(pages, alice)  # the sign-in click allowed sound
    ringtone = "document.body.dataset.ringtone"
    assert page.page.evaluate(ringtone) == "off"
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    assert page.page.evaluate(ringtone) == "playing"

    page.page.get_by_role("button", name="Ringtone on").click()
    expect(page.page.get_by_role("button", name="Ringtone off")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert page.page.evaluate(ringtone) == "muted"
    page.page.reload()
    page.signed_in_as("Alice")  # the cookie keeps the session across a reload
    expect(page.card(call)).to_be_visible()
    expect(page.page.get_by_role("button", name="Ringtone off")).to_be_visible()
    assert page.page.evaluate(ringtone) == "muted"

    page.page.get_by_role("button", name="Ringtone off").click()
    assert page.page.evaluate(ringtone) == "playing"
    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(page.page.locator("#active")).to_be_visible()
    assert page.page.evaluate(ringtone) == "off"


def test_a_hidden_tab_gets_a_desktop_notification(sim, pages, make_agent, base_url):
    alice = make_agent("Alice", sip_username="alice")
    page = pages()
    page.context.grant_permissions(["notifications"], origin=base_url)
    # Headless Chromium never hides a tab; make this one say it is hidden, and keep what the
    # page asks the Notification API to show.
    page.page.add_init_script(
        """
        Object.defineProperty(document, "hidden", { get: () => true });
        window.__shown = [];
        const Native = window.Notification;
        window.Notification = class extends Native {
          constructor(title, options) {
            super(title, options);
            window.__shown.push({ title, body: options.body, tag: options.tag });
          }
          static get permission() { return Native.permission; }
          static requestPermission() { return Native.requestPermission(); }
        };
        """
    )
    page.page.reload()
    page.sign_in(alice.email, alice.password)
    page.signed_in_as("Alice")
    call = sim.call(from_="+13125550147")
    expect(page.card(call)).to_be_visible()
    page.page.wait_for_function("() => window.__shown.length > 0")
    shown = page.page.evaluate("window.__shown")
    assert shown == [
        {"title": "Incoming call", "body": "+1 (312) 555-0147 is calling", "tag": call}
    ]


@pytest.fixture(scope="module")
def development_stack(database_url, redis_prefix):
    """The service as `make run` serves it: development mode, where the simulator's button is."""
    with running_stack(
        database_url, redis_prefix, workers=1, APP_ENV="development", SSE_RETRY_MS="300"
    ) as stack:
        yield stack


def test_the_simulator_button_makes_a_call_ring(
    development_stack, clean_storage, pages, make_agent
):
    sim = ready_simulator(development_stack)
    page = signed_in(pages, make_agent("Alice", sip_username="alice"), development_stack[1].url)
    page.page.get_by_role("button", name="Simulate inbound call").click()
    expect(page.page.locator("#simulate-result")).to_have_text("Calling from +1 (312) 555-0147…")
    expect(page.page.locator("#ringing li")).to_have_count(1)
    assert len(sim.commands()) == 0  # nothing was answered: the call just rings
    # Should nobody take it, the simulated caller leaves a short voicemail and hangs up.
    [call] = sim.http.get(f"{sim.url}/sim/calls", timeout=5).json()["data"]
    [caller_leg] = call["legs"]
    assert caller_leg["message_seconds"] == SIMULATED_MESSAGE_SECONDS


def test_load_more_pages_through_the_history(sim, pages, make_agent, db_rows):
    page = signed_in(pages, make_agent("Alice", sip_username="alice"))
    calls = [sim.call(from_=f"+1312555{n:04d}") for n in range(23)]
    for call in calls:
        sim.caller_hangs_up(call)
    sim.wait_delivered()
    page.page.reload()
    page.signed_in_as("Alice")
    expect(page.page.locator("#history li")).to_have_count(20)
    page.page.get_by_role("button", name="Load more").click()
    expect(page.page.locator("#history li")).to_have_count(23)
    expect(page.page.get_by_role("button", name="Load more")).to_be_hidden()


# The real SDK cannot reach Telnyx from here (no network), so this stand-in implements the part
# of @telnyx/webrtc's interface the page uses, and lets the test ring the browser.
FAKE_WEBRTC_SDK = """
export class TelnyxRTC {
  constructor(options) { this.options = options; this.handlers = {}; window.__rtc = this; }
  on(name, handler) { this.handlers[name] = handler; return this; }
  connect() { setTimeout(() => this.handlers["telnyx.ready"](), 0); }
  disconnect() { this.disconnected = true; }
  ring(customHeaders) {
    const rtc = this;
    const call = {
      state: "ringing", answered: false, hungUp: false,
      // Where the SDK puts the SIP X- headers of an incoming INVITE (Telnyx's custom_headers).
      options: customHeaders ? { customHeaders } : {},
      answer() { this.answered = true; this.state = "active"; rtc.update(this); },
      hangup() { this.hungUp = true; this.state = "hangup"; rtc.update(this); },
    };
    window.__rtcCall = call;
    this.update(call);
  }
  update(call) { this.handlers["telnyx.notification"]({ type: "callUpdate", call }); }
}
"""


def browser_phone_page(pages, make_agent, app, name="Alice", credential="cred-alice"):
    """An agent with a telephony credential, signed in on a page whose WebRTC SDK is the
    stand-in."""
    from telnyx_flask.users import set_phone

    agent = make_agent(name, sip_username=f"gencred{name.lower()}")
    with app.app_context():
        set_phone(agent.email, None, credential)
    page = pages()
    # For every tab of this browser.
    page.context.route(
        "**/vendor/telnyx-webrtc.mjs",
        lambda route: route.fulfill(body=FAKE_WEBRTC_SDK, content_type="text/javascript"),
    )
    page.sign_in(agent.email, agent.password)
    page.signed_in_as(name)
    return page


# Whether a tab runs the in-browser phone: the stand-in SDK's client exists, not disconnected.
PHONE_RUNNING = "() => Boolean(window.__rtc) && !window.__rtc.disconnected"


def ring_browser(page: AgentPage, custom_headers: list[dict] | None) -> bool:
    """Telnyx rings the page's WebRTC client with a leg carrying these SIP headers; whether the
    page answered it."""
    page.page.evaluate("(headers) => window.__rtc.ring(headers)", custom_headers)
    return page.page.evaluate("window.__rtcCall.answered")


def transfer_headers(sim, call: str) -> list[dict]:
    """The custom SIP headers the service sent with the transfer of `call` to its agent."""
    [transfer] = sim.commands("transfer", call, wait_for=1)
    return transfer["body"]["custom_headers"]


def test_in_browser_audio_answers_the_transferred_leg_and_hangs_up(sim, pages, make_agent, app):
    """One tab of a browser runs the phone: the one holding the shared event stream."""
    page = browser_phone_page(pages, make_agent, app)
    ready = "Calls you answer play in this browser. In-browser phone: ready."
    expect(page.page.locator("#routing")).to_have_text(ready)
    token = page.page.evaluate("window.__rtc.options.login_token")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "cred-alice"  # minted by the simulator for Alice's credential
    second = AgentPage.open_tab(page.context)  # another tab, signed in by the cookie
    second.signed_in_as("Alice")
    elsewhere = "Calls you answer play in this browser, through another of its tabs"
    expect(second.page.locator("#routing")).to_contain_text(elsewhere)
    second.page.locator("#routing").click()  # the agent working in it does not move the phone
    assert second.page.evaluate(PHONE_RUNNING) is False
    assert page.page.evaluate(PHONE_RUNNING) is True

    page.page.close()  # the tab with the stream and the phone goes: the second takes both over

    expect(second.page.locator("#routing")).to_have_text(ready)
    third = AgentPage.open_tab(second.context)
    third.signed_in_as("Alice")
    expect(third.page.locator("#routing")).to_contain_text(elsewhere)
    call = sim.call()
    third.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()
    expect(third.page.locator("#active .where")).to_have_text("Audio: another tab of this browser")
    expect(second.page.locator("#active .where")).to_have_text("Audio: this browser")
    # Telnyx rings the browser with the transfer, and its headers.
    assert ring_browser(second, transfer_headers(sim, call)) is True
    expect(second.page.locator("#routing")).to_contain_text("In-browser phone: on a call")

    third.page.get_by_role("button", name="Hang up").click()
    for tab in (second, third):
        expect(tab.page.locator("#active")).to_be_hidden()
    assert second.page.evaluate("window.__rtcCall.hungUp") is True
    assert third.page.evaluate(PHONE_RUNNING) is False
    assert sim.commands("hangup", call, wait_for=1)
    assert second.errors == [] and third.errors == []


def test_an_incoming_browser_leg_without_a_taken_call_is_left_alone(sim, pages, make_agent, app):
    page = browser_phone_page(pages, make_agent, app)
    expect(page.page.locator("#routing")).to_contain_text("In-browser phone: ready")
    page.page.evaluate("window.__rtc.ring()")
    assert page.page.evaluate("window.__rtcCall.answered") is False


def test_pages_sharing_a_webrtc_credential_answer_only_the_leg_of_their_own_agents_call(
    sim, pages, make_agent, app
):
    page_a = browser_phone_page(pages, make_agent, app, "Alice", credential="cred-shared")
    page_b = browser_phone_page(pages, make_agent, app, "Bob", credential="cred-shared")
    for page in (page_a, page_b):
        expect(page.page.locator("#routing")).to_contain_text("In-browser phone: ready")
    alices, bobs = sim.call(from_="+13125550101"), sim.call(from_="+13125550102")
    page_a.card(alices).get_by_role("button", name="Answer call from +1 (312) 555-0101").click()
    expect(page_a.page.locator("#active .who")).to_have_text("+1 (312) 555-0101")
    # Bob is on a call too: a page that answered any leg while its agent has a call would
    # take Alice's caller.
    page_b.card(bobs).get_by_role("button", name="Answer call from +1 (312) 555-0102").click()
    expect(page_b.page.locator("#active .who")).to_have_text("+1 (312) 555-0102")
    alices_leg = transfer_headers(sim, alices)
    assert alices_leg == [{"name": "X-Call-Control-Id", "value": alices}]

    # The shared credential is signed in on both pages: Telnyx rings both with Alice's leg.
    assert ring_browser(page_b, alices_leg) is False
    assert ring_browser(page_a, alices_leg) is True
    assert ring_browser(page_b, transfer_headers(sim, bobs)) is True
    assert ring_browser(page_b, None) is False  # a leg naming no call is never taken


def test_a_leg_that_rings_before_the_page_knows_its_call_is_answered_once_it_does(
    sim, pages, make_agent, app
):
    page = browser_phone_page(pages, make_agent, app)
    expect(page.page.locator("#routing")).to_contain_text("In-browser phone: ready")
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    leg = [{"name": "x-call-control-id", "value": call}]  # SIP header names ignore case
    assert ring_browser(page, leg) is False  # not taken yet (as far as this page knows)

    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    # A function, not an expression: the page's CSP forbids the eval an expression needs.
    page.page.wait_for_function("() => window.__rtcCall.answered === true")
    expect(page.page.locator("#routing")).to_contain_text("In-browser phone: on a call")


def test_the_pinned_webrtc_sdk_loads_in_the_page(pages, make_agent, sim):
    """The real @telnyx/webrtc bundle, served by the app, imports under the page's CSP."""
    page = pages()
    kind = page.page.evaluate(
        """import("/vendor/telnyx-webrtc.mjs").then((sdk) => {
             const client = new sdk.TelnyxRTC({ login_token: "not-a-real-token" });
             return [typeof sdk.TelnyxRTC, typeof client.connect, typeof client.on];
           })"""
    )
    assert kind == ["function", "function", "function"]


def test_a_refused_transfer_keeps_the_answered_caller_with_the_agent_to_retry(
    sim, pages, make_agent
):
    page = signed_in(pages, make_agent("Alice", sip_username="alice"))
    call = sim.call()
    expect(page.card(call)).to_be_visible()
    sim.refuse("transfer", 422, "SIP URI calling is disabled")

    page.card(call).get_by_role("button", name="Answer call from +1 (312) 555-0147").click()

    active = page.page.locator("#active")
    expect(active.get_by_role("alert")).to_have_text(
        "Telnyx refused transfer: SIP URI calling is disabled "
        "(the caller is answered and waiting: try again, or hang up)"
    )
    expect(page.card(call)).to_have_count(0)
    active.get_by_role("button", name="Try again").click()
    expect(active.get_by_role("alert")).to_be_hidden()
    expect(active.get_by_role("button", name="Try again")).to_be_hidden()
    transfers = sim.commands("transfer", call, wait_for=2)
    assert [t["status"] for t in transfers] == [422, 200]
    active.get_by_role("button", name="Hang up").click()
    expect(page.history_row(call).locator(".outcome")).to_have_text("Answered")
