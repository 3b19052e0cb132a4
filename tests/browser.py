"""Driving the softphone page in Debian's Chromium with Playwright."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
# As root, without a network: no sandbox, and nothing that phones home at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=user-gesture-required",
]
# Lets a test close the page's EventSource, to see what the page does without live events.
TRACK_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  window.__eventSources = [];
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__eventSources.push(this); }
  };
})();
"""


def chromium_missing_message() -> str:
    return (
        f"Chromium is not at {CHROMIUM}: install Debian's chromium package "
        "(apt-get install chromium) or set CHROMIUM_PATH; .ci/run installs it"
    )


@dataclass
class AgentPage:
    """One agent's browser context and page, with the errors the page raised."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls, browser: Browser, base_url: str, width: int = 1100, height: int = 900
    ) -> AgentPage:
        context = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}
        )
        context.add_init_script(TRACK_EVENT_SOURCES)
        return cls.open_tab(context)

    @classmethod
    def open_tab(cls, context: BrowserContext) -> AgentPage:
        """A new tab of the page in this browser context, collecting its script errors."""
        page = context.new_page()
        opened = cls(context, page)
        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        # Chromium logs every non-2xx answer as a console error; those are the server's
        # answers the page handles (a 401 before sign-in, a 409), not script errors.
        page.on(
            "console",
            lambda message: (
                opened.errors.append(message.text)
                if message.type == "error"
                and not message.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.goto("/")
        return opened

    def sign_in(self, email: str, password: str) -> None:
        dialog = self.page.locator("#sign-in")
        expect(dialog).to_be_visible()
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def signed_in_as(self, name: str) -> None:
        expect(self.page.locator("#agent-name")).to_have_text(name)
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "live")

    def card(self, call_control_id: str) -> Locator:
        return self.page.locator(f'#ringing li[data-call-control-id="{call_control_id}"]')

    def history_row(self, call_control_id: str) -> Locator:
        return self.page.locator(f'#history li[data-call-control-id="{call_control_id}"]')

    def close(self) -> None:
        self.context.close()


def save_screenshot(page: Page, name: str) -> Path | None:
    """Save a screenshot under SCREENSHOT_DIR (make screenshots sets it to docs/), if set."""
    folder = os.environ.get("SCREENSHOT_DIR")
    if not folder:
        return None
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def signed_in(pages, agent, url: str | None = None) -> AgentPage:
    """A new page (conftest's `pages`) signed in as `agent` (made by make_agent)."""
    page = pages(url)
    page.sign_in(agent.email, agent.password)
    page.signed_in_as(agent.name)
    return page
