"""The rule builder in Chromium: build, preview, save and reload a rule; the PromQL editor.

The app runs as a real Streamlit server over the session's Prometheus (see
tests/support/app_data.py for who matches what). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlalchemy import select

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.models import Rule
from tests.support.app_browser import (RERUN_TIMEOUT_MS, ace_frame, open_screen, pick, replace_ace_text,
                                       screenshot_whole_page, settle, type_text)
from tests.support.app_data import app_environment
from tests.support.app_server import screenshot_path, start_app_server

VIEWPORT = {"width": 1500, "height": 2200}
RULE_NAME = "4xx on the free plan"
EXPECTED_PROMQL = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
RAW_QUERY = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
CHANGED_QUERY = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 20'


@dataclass
class RunningApp:
    url: str
    database_url: str


@pytest.fixture
def app_server(operator_world, tmp_path: Path) -> Iterator[RunningApp]:
    environment = app_environment(tmp_path, operator_world.prometheus.url, operator_world.accounts_url)
    upgrade(environment["BEHAVEMAIL_DATABASE_URL"])
    server = start_app_server(environment, tmp_path / "server")
    yield RunningApp(url=server.url, database_url=environment["BEHAVEMAIL_DATABASE_URL"])
    server.stop()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(RERUN_TIMEOUT_MS)
    yield opened
    context.close()


def saved_rules(app: RunningApp) -> list[Rule]:
    engine = create_app_engine(app.database_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(Rule)))
    finally:
        engine.dispose()


def paragraph(page: Page, start: str) -> Locator:
    """Return the paragraph that starts with a bold ``start``, such as "Backtest:"."""
    return page.locator("p", has=page.locator("strong", has_text=start))


def chart_counts(page: Page) -> list[int]:
    """Read the y values of the preview chart from Plotly's own data."""
    return page.evaluate("() => Array.from(document.querySelector('.js-plotly-plot').data[0].y)")


def build_free_plan_rule(page: Page) -> None:
    """Build "more than 10 responses with status 4xx in 24 hours, free plan only" with the builder."""
    type_text(page, "Rule name", RULE_NAME)
    pick(page, "Condition", "A count over a window crosses a threshold")
    pick(page, "Metric", "api_requests_total (counter)")
    page.get_by_role("button", name="Add a filter").first.click()
    settle(page)
    pick(page, "Label", "status")
    pick(page, "Operator", "matches regex")
    type_text(page, "Regular expression", "4..")
    pick(page, "In the last", "24 hours")
    pick(page, "Is", "more than")
    type_text(page, "Number", "10", role="spinbutton")
    page.get_by_role("button", name="Add an audience filter").click()
    settle(page)
    pick(page, "Attribute", "plan")
    pick(page, "Operator", "is", nth=1)
    type_text(page, "Value", "free")


def test_builder_rule_saves_and_reloads(app_server: RunningApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Rules")
    build_free_plan_rule(page)

    expect(page.get_by_test_id("stCode").first).to_contain_text(EXPECTED_PROMQL)
    sentence = paragraph(page, "Reads as:")
    expect(sentence).to_contain_text("Customers on the free plan who got more than 10")
    expect(sentence).to_contain_text("with status 4xx in the last 24 hours")
    expect(page.locator(".js-plotly-plot")).to_be_visible()
    counts = chart_counts(page)
    # ADA, GRACE and NOBODY match now, and before ADA's old burst no user did.
    assert counts[-1] == 3
    assert counts[0] == 0
    assert max(counts[: len(counts) // 2]) == 1
    backtest = paragraph(page, "Backtest:")
    expect(backtest).to_contain_text("would have sent 2 emails to 1 customer")
    expect(paragraph(page, "Matching now:")).to_contain_text("1 customer")
    screenshot_whole_page(page, VIEWPORT, screenshot_path("rules-builder"))

    page.get_by_role("button", name="Save rule").click()
    settle(page)
    expect(page.get_by_text(f"Saved the rule '{RULE_NAME}' (version 1).")).to_be_visible()
    rules = saved_rules(app_server)
    assert [rule.name for rule in rules] == [RULE_NAME]
    assert rules[0].definition["audience"] == [{"attribute": "plan", "op": "=", "value": "free"}]

    page.reload()
    open_screen(page, app_server.url, "Rules")
    pick(page, "Open a rule", RULE_NAME)
    expect(page.get_by_role("textbox", name="Rule name", exact=True)).to_have_value(RULE_NAME)
    expect(page.get_by_test_id("stCode").first).to_contain_text(EXPECTED_PROMQL)
    expect(page.get_by_text("Unsaved changes")).to_have_count(0)
    screenshot_whole_page(page, VIEWPORT, screenshot_path("rules-reloaded"))


def test_promql_editor_completes_and_rejects(app_server: RunningApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Rules")
    page.get_by_text("PromQL (advanced)").click()
    settle(page)

    frame = ace_frame(page)
    frame.locator(".ace_editor:not(.ace_autocomplete)").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" and on (user_id) api_q", delay=60)
    popup = frame.locator(".ace_autocomplete")
    expect(popup).to_contain_text("api_quota_used_ratio")
    expect(popup).to_contain_text("gauge")
    # A plain screenshot: resizing the window would close the completion popup.
    page.screenshot(path=screenshot_path("rules-promql-completion"))
    page.keyboard.press("Escape")

    replace_ace_text(page, "sum by (user_id) (rate(api_requests_total[5m])")
    expect(page.get_by_text("1:47: parse error: unclosed left parenthesis")).to_be_visible()
    expect(page.get_by_role("button", name="Save rule")).to_be_disabled()

    replace_ace_text(page, "increase(api_requests_total[1h])")
    expect(page.get_by_text("more than one series for user_id=")).to_be_visible()
    expect(page.get_by_role("button", name="Save rule")).to_be_disabled()

    replace_ace_text(page, RAW_QUERY)
    # ADA and GRACE; NOBODY matches too but has no account.
    expect(paragraph(page, "Matching now:")).to_contain_text("2 customers (1 more")
    type_text(page, "Rule name", "Raw 4xx")
    expect(page.get_by_role("button", name="Save rule")).to_be_enabled()


def test_editor_text_typed_before_save_is_kept(app_server: RunningApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Rules")
    page.get_by_text("PromQL (advanced)").click()
    settle(page)
    replace_ace_text(page, RAW_QUERY)
    type_text(page, "Rule name", "Raw 4xx")
    expect(page.get_by_role("button", name="Save rule")).to_be_enabled()

    # Type and click Save at once, inside streamlit-ace's 200 ms debounce.
    replace_ace_text(page, CHANGED_QUERY, wait=False)
    page.get_by_role("button", name="Save rule").click()
    page.wait_for_timeout(1000)
    settle(page)

    expect(page.get_by_text("Saved the rule 'Raw 4xx' (version 1).")).to_be_visible()
    assert saved_rules(app_server)[0].definition["condition"]["query"] == CHANGED_QUERY
    expect(page.get_by_text("Unsaved changes")).to_have_count(0)

    # An edit that is not saved shows as such.
    replace_ace_text(page, RAW_QUERY)
    expect(page.get_by_text("Unsaved changes")).to_be_visible()
