"""Playwright helpers for the operator app: waiting for reruns, Streamlit widgets, Ace editors."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import FrameLocator, Locator, Page, expect

RERUN_TIMEOUT_MS = 60_000
POLL_MS = 100
QUIET_MS = 500
ACE_FRAME = 'iframe[title="streamlit_ace.streamlit_ace"]'
# streamlit-ace sends the text 200 ms after the last keystroke; wait a bit longer.
ACE_DEBOUNCE_MS = 600


def settle(page: Page, quiet_ms: int = QUIET_MS) -> None:
    """Wait until the app has finished the rerun that the last action started.

    Streamlit shows its status widget while a script runs. A rerun can start a moment
    after the action, and one run can lead to the next, so the app counts as settled
    once the widget has stayed away for ``quiet_ms``.
    """
    deadline = time.monotonic() + RERUN_TIMEOUT_MS / 1000
    quiet_since: float | None = None
    page.wait_for_timeout(POLL_MS)
    while time.monotonic() < deadline:
        if page.get_by_test_id("stStatusWidget").count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_ms / 1000:
            return
        page.wait_for_timeout(POLL_MS)
    raise AssertionError(f"the app was still running after {RERUN_TIMEOUT_MS / 1000:.0f} s")


def open_screen(page: Page, base_url: str, title: str) -> None:
    """Open a screen from the sidebar menu and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=RERUN_TIMEOUT_MS)
    settle(page)


def pick(page: Page, label: str, option: str, nth: int = 0) -> None:
    """Choose ``option`` in the ``nth`` select box labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).nth(nth).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def type_text(page: Page, label: str, text: str, nth: int = 0, *, role: str = "textbox") -> None:
    """Replace the text of a text (or, with role="spinbutton", number) input and press Enter."""
    box = page.get_by_role(role, name=label, exact=True).nth(nth)  # type: ignore[arg-type]
    box.fill(text)
    box.press("Enter")
    settle(page)


def ace_frame(page: Page, nth: int = 0) -> FrameLocator:
    return page.frame_locator(ACE_FRAME).nth(nth)


def ace_editor(page: Page, nth: int = 0) -> Locator:
    return ace_frame(page, nth).locator(".ace_editor:not(.ace_autocomplete)")


def replace_ace_text(page: Page, text: str, nth: int = 0, *, wait: bool = True) -> None:
    """Select everything in an Ace editor and type ``text`` instead.

    With ``wait`` the helper waits for the debounced update and the rerun it starts;
    without, it returns right after the last keystroke.
    """
    ace_editor(page, nth).click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    # insert_text types the whole text at once, so Ace adds no closing brackets or tags.
    page.keyboard.insert_text(text)
    if wait:
        page.wait_for_timeout(ACE_DEBOUNCE_MS)
        settle(page)


def screenshot_whole_page(page: Page, viewport: dict[str, int], path: Path) -> None:
    """Save the whole screen, however long.

    Streamlit scrolls inside its main area, so a full-page screenshot stops at the
    window's height. The window is made as tall as the content first, then restored.
    """
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], height)})
    settle(page)
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(viewport)
    settle(page)
