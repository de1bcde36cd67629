"""The template editor in Chromium: Ace edits change the preview; checks, test send and save."""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FrameLocator, Page, expect

from behavemail_core.conditions import condition_from_dict
from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.rule_store import save_rule
from behavemail_core.rules import RuleSpec
from behavemail_core.template_preview import starter_templates
from behavemail_core.template_store import find_template, save_template
from tests.support.app_browser import (RERUN_TIMEOUT_MS, open_screen, pick, replace_ace_text,
                                       screenshot_whole_page, settle, type_text)
from tests.support.app_data import app_environment
from tests.support.app_server import screenshot_path, start_app_server

VIEWPORT = {"width": 1500, "height": 2000}
TEMPLATE = "4xx spike"
RULE = "4xx errors"
EDITED_HTML = "<p>Hello {{ first_name }} from {{ company }}: {{ value | round | int }} errors.</p>"


@dataclass
class TemplateApp:
    url: str
    database_url: str
    outbox: Path


@pytest.fixture
def app_server(operator_world, tmp_path: Path) -> Iterator[TemplateApp]:
    environment = app_environment(tmp_path, operator_world.prometheus.url, operator_world.accounts_url)
    database_url = environment["BEHAVEMAIL_DATABASE_URL"]
    upgrade(database_url)
    seed_template_and_rule(database_url)
    server = start_app_server(environment, tmp_path / "server")
    yield TemplateApp(url=server.url, database_url=database_url, outbox=Path(environment["BEHAVEMAIL_OUTBOX_DIR"]))
    server.stop()


def seed_template_and_rule(database_url: str) -> None:
    """Save the starter "4xx spike" template and a rule that uses it and matches ADA now."""
    engine = create_app_engine(database_url)
    starter = next(spec for spec in starter_templates() if spec.name == TEMPLATE)
    condition = condition_from_dict({"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">",
                                     "threshold": 10, "matchers": [{"label": "status", "op": "=~", "value": "4.."}]})
    with session_factory(engine)() as session:
        save_template(session, starter, actor="test")
        save_rule(session, RuleSpec(name=RULE, condition=condition, template=TEMPLATE), actor="test")
    engine.dispose()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(RERUN_TIMEOUT_MS)
    yield opened
    context.close()


def email_frame(page: Page, tab: int = 0) -> FrameLocator:
    """Return the sandboxed iframe that contains the rendered email, in the ``tab``-th preview tab."""
    return page.frame_locator('iframe[title="Email preview"]').nth(tab).frame_locator("iframe#email")


def saved_html(app: TemplateApp) -> str:
    engine = create_app_engine(app.database_url)
    try:
        with session_factory(engine)() as session:
            template = find_template(session, TEMPLATE)
            assert template is not None
            return template.html
    finally:
        engine.dispose()


def test_template_edit_changes_preview(app_server: TemplateApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Templates")
    pick(page, "Open a template", TEMPLATE)
    pick(page, "Customers matching rule", RULE)
    pick(page, "Customer", "u001 · ada@example.com")
    expect(email_frame(page).get_by_text("Hi Ada,")).to_be_visible()
    expect(page.get_by_text("Subject: Ada, your requests are failing with client errors")).to_be_visible()
    screenshot_whole_page(page, VIEWPORT, screenshot_path("templates-starter"))

    replace_ace_text(page, EDITED_HTML)
    expect(email_frame(page).get_by_text("Hello Ada from Analytical Engines: 40 errors.")).to_be_visible()
    expect(page.get_by_text("Unsaved changes")).to_be_visible()

    page.get_by_role("tab", name="Mobile").click()
    mobile = page.frame_locator('iframe[title="Email preview"]').nth(1).locator("iframe#email")
    expect(mobile).to_have_attribute("style", "display:block;margin:0 auto;width:375px;height:616px;border:1px solid #d1d5db;background:#fff;")
    expect(email_frame(page, 1).get_by_text("Hello Ada from Analytical Engines")).to_be_visible()
    screenshot_whole_page(page, VIEWPORT, screenshot_path("templates-edited"))

    page.get_by_role("button", name="Save template").click()
    settle(page)
    expect(page.get_by_text(f"Saved the template '{TEMPLATE}' (version 2).")).to_be_visible()
    assert saved_html(app_server) == EDITED_HTML


def test_template_problems_block_save(app_server: TemplateApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Templates")
    pick(page, "Open a template", TEMPLATE)
    replace_ace_text(page, "<p>Hi {{ first_name }}</p>\n<p>{{ shoe_size }}</p>")
    expect(page.get_by_text("html, line 2:")).to_be_visible()
    expect(page.get_by_text("'shoe_size' is not a column of the accounts query")).to_be_visible()
    expect(page.get_by_role("button", name="Save template")).to_be_disabled()

    replace_ace_text(page, "<p>{% if plan %}Hi{% endfor %}</p>")
    expect(page.get_by_text("html, line 1: Syntax error:")).to_be_visible()
    expect(page.get_by_text("Fix the problems listed under the editor")).to_be_visible()
    expect(page.get_by_role("button", name="Save template")).to_be_disabled()


def test_test_email_reaches_outbox(app_server: TemplateApp, page: Page) -> None:
    page.goto(app_server.url)
    open_screen(page, app_server.url, "Templates")
    pick(page, "Open a template", TEMPLATE)
    type_text(page, "Or type a user id", "u003")
    expect(email_frame(page).get_by_text("Hi Alan,")).to_be_visible()
    type_text(page, "Send a test email to", "pm@example.com")
    page.get_by_role("button", name="Send test email").click()
    settle(page)
    expect(page.get_by_text("Sent a test email to pm@example.com through the outbox backend.")).to_be_visible()

    files = sorted(app_server.outbox.glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert message["To"] == "pm@example.com"
    assert message["Subject"] == "[Test] Alan, your requests are failing with client errors"
