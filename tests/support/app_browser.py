"""Playwright helpers for the operator app: waiting for reruns, Streamlit widgets, Ace editors."""

from __future__ import annotations

from playwright.sync_api import FrameLocator, Locator, Page, expect

RERUN_TIMEOUT_MS = 60_000
ACE_FRAME = 'iframe[title="streamlit_ace.streamlit_ace"]'
# streamlit-ace sends the text 200 ms after the last keystroke; wait a bit longer.
ACE_DEBOUNCE_MS = 600


def settle(page: Page) -> None:
    """Wait until the app has finished the rerun that the last action started."""
    page.wait_for_timeout(300)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=RERUN_TIMEOUT_MS)


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
