"""Sign-in in Chromium: a direct link to a screen shows the password form first, then the screen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.app_browser import RERUN_TIMEOUT_MS, screenshot_whole_page, settle
from tests.support.app_data import app_environment
from tests.support.app_server import screenshot_path, start_app_server

EDITOR_PASSWORD = "editor-password-1234"
VIEWPORT = {"width": 1500, "height": 2000}


@pytest.fixture
def app_url(operator_world, tmp_path: Path) -> Iterator[str]:
    environment = app_environment(tmp_path, operator_world.prometheus.url, operator_world.accounts_url,
                                  BEHAVEMAIL_APP_PASSWORD=EDITOR_PASSWORD)
    server = start_app_server(environment, tmp_path / "server")
    yield server.url
    server.stop()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(RERUN_TIMEOUT_MS)
    yield opened
    context.close()


def sign_in(page: Page, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    settle(page)


def test_direct_link_signs_in_first(app_url: str, page: Page) -> None:
    # The server is fresh, so no session has run app.py yet (see ui/entry.py).
    page.goto(f"{app_url}/settings")
    expect(page.get_by_role("heading", name="Sign in to Behavemail")).to_be_visible()
    expect(page.get_by_role("heading", name="Settings")).to_have_count(0)
    screenshot_whole_page(page, VIEWPORT, screenshot_path("sign-in"))

    sign_in(page, "wrong-password")
    expect(page.get_by_text("Wrong password")).to_be_visible()

    sign_in(page, EDITOR_PASSWORD)
    expect(page.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    expect(page.get_by_text("Prometheus: Connected to Prometheus")).to_be_visible()
    expect(page.get_by_text("Accounts database: The accounts query works")).to_be_visible()
    expect(page.get_by_text("BEHAVEMAIL_DATABASE_URL")).to_be_visible()
    expect(page.get_by_text("BEHAVEMAIL_VIEWER_PASSWORD", exact=True)).to_be_visible()
    screenshot_whole_page(page, VIEWPORT, screenshot_path("settings"))

    page.get_by_role("button", name="Sign out").click()
    settle(page)
    expect(page.get_by_role("heading", name="Sign in to Behavemail")).to_be_visible()
