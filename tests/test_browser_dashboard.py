"""The Dashboard and Activity screens in Chromium, over 30 days of seeded demo history.

The expected figures come from the core's funnel queries on the same database, so
these tests check that the screens show what the core computes. Screenshots go to
tests/artifacts/ (dashboard.png is the one copied to docs/screenshots/).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.demo.send_history import seed_history
from behavemail_core.funnel import Funnel, Period, funnel, rule_funnels
from behavemail_core.models import SENT, Send
from behavemail_core.portability import import_document
from tests.support.app_server import CHROMIUM_ARGS, CHROMIUM_PATH, screenshot_path, start_app_server

STARTER_RULES = Path(__file__).resolve().parent.parent / "data" / "starter_rules.yaml"
NOW = datetime.now(timezone.utc)
PERIOD = Period.last_days(NOW, 30)
VIEWPORT = {"width": 1500, "height": 3400}
RENDER_TIMEOUT_MS = 60_000


@dataclass
class DashboardApp:
    url: str
    database_url: str
    sessions: sessionmaker[Session]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, prometheus_factory) -> Iterator[DashboardApp]:
    workdir = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{workdir / 'app.db'}"
    upgrade(database_url)
    engine = create_app_engine(database_url)
    sessions = session_factory(engine)
    with sessions() as session:
        import_document(session, STARTER_RULES.read_text(encoding="utf-8"), actor="test", source=str(STARTER_RULES))
    # No accounts CSV here: the history uses the generated demo accounts.
    seed_history(sessions, NOW, accounts_csv=workdir / "missing.csv")

    prometheus = prometheus_factory()
    server = start_app_server({
        "BEHAVEMAIL_DATABASE_URL": database_url,
        "BEHAVEMAIL_PROMETHEUS_URL": prometheus.url,
        "BEHAVEMAIL_ACCOUNTS_URL": f"sqlite:///{workdir / 'accounts.db'}",
        "BEHAVEMAIL_SECRET_KEY": "browser-test-secret-key-0123456789",
    }, workdir / "server")
    yield DashboardApp(url=server.url, database_url=database_url, sessions=sessions)
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(RENDER_TIMEOUT_MS)
    yield opened
    context.close()


def overall(app: DashboardApp) -> Funnel:
    with app.sessions() as session:
        return funnel(session, PERIOD)


def open_dashboard(page: Page, app: DashboardApp) -> None:
    # The Dashboard is the app's default screen, at the root URL.
    page.goto(app.url)
    expect(page.get_by_role("heading", name="Per rule")).to_be_visible()
    # Every chart of the screen has drawn its SVG.
    expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4")


def metric_value(page: Page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label))
    return metric.get_by_test_id("stMetricValue").inner_text()


def save_screenshot(page: Page, name: str) -> None:
    """Save the screen down to the end of its content, under tests/artifacts/NAME.png."""
    bottom = page.get_by_test_id("stMainBlockContainer").bounding_box()
    height = min(VIEWPORT["height"], int(bottom["y"] + bottom["height"]) + 24)
    page.screenshot(path=screenshot_path(name), clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})


def chart_text(page: Page) -> str:
    return "\n".join(page.locator(".js-plotly-plot").all_inner_texts())


def test_dashboard_headline_figures(page: Page, app: DashboardApp) -> None:
    expected = overall(app)
    open_dashboard(page, app)

    save_screenshot(page, "dashboard")
    assert metric_value(page, "Triggered") == f"{expected.counts.triggered:,}"
    assert metric_value(page, "Sent") == f"{expected.counts.sent:,}"
    assert metric_value(page, "Lift in goal rate") == f"{expected.comparison.lift_points:+.1f} pts"


def test_dashboard_funnel_steps_and_conversions(page: Page, app: DashboardApp) -> None:
    expected = overall(app)
    open_dashboard(page, app)

    text = chart_text(page)
    for step in expected.steps[1:]:
        assert f"{step.count:,} · {step.conversion_percent:.1f} % of {step.base_name.lower()}" in text, step.name


def test_dashboard_holdout_comparison(page: Page, app: DashboardApp) -> None:
    comparison = overall(app).comparison
    open_dashboard(page, app)

    body = page.locator("body").inner_text()
    assert f"Lift: {comparison.lift_points:+.1f} percentage points" in body
    assert (f"Emailed: {comparison.sent_reached:,} of {comparison.sent_measured:,} reached the goal. "
            f"Control group: {comparison.held_out_reached:,} of {comparison.held_out_measured:,}.") in body
    assert f"of n = {comparison.held_out_measured:,}" in chart_text(page)


def test_dashboard_csv_matches_rules(page: Page, app: DashboardApp) -> None:
    with app.sessions() as session:
        rules = rule_funnels(session, PERIOD)
    open_dashboard(page, app)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text(encoding="utf-8"))))

    assert [row["Rule"] for row in rows] == [rule.rule_name for rule in rules]
    assert [int(row["Triggered"]) for row in rows] == [rule.counts.triggered for rule in rules]
    assert [int(row["Opened"]) for row in rows] == [rule.counts.opened for rule in rules]
    assert [int(row["Goal reached"]) for row in rows] == [rule.counts.sent_goal_reached for rule in rules]


def test_dashboard_one_rule(page: Page, app: DashboardApp) -> None:
    with app.sessions() as session:
        quiet = next(rule for rule in rule_funnels(session, PERIOD) if rule.rule_name == "Key gone quiet")
    open_dashboard(page, app)

    page.get_by_test_id("stSelectbox").filter(has_text="Rule").click()
    page.get_by_role("option", name="Key gone quiet").click()
    expect(page.get_by_test_id("stMetric").first).to_contain_text(f"{quiet.counts.triggered:,}")

    save_screenshot(page, "dashboard-key-gone-quiet")
    assert metric_value(page, "Triggered") == f"{quiet.counts.triggered:,}"
    assert metric_value(page, "Lift in goal rate") == f"{quiet.comparison.lift_points:+.1f} pts"


def test_dashboard_funnel_per_rule(page: Page, app: DashboardApp) -> None:
    open_dashboard(page, app)

    page.get_by_text("Funnel per rule").click()
    chart = page.get_by_test_id("stExpander").locator(".js-plotly-plot")
    expect(chart.locator(".legend")).to_be_attached()
    # The expander opens with an animation: wait until it shows the whole chart.
    page.wait_for_function("""() => {
        const chart = document.querySelector('[data-testid="stExpander"] .js-plotly-plot');
        const expander = document.querySelector('[data-testid="stExpander"]');
        return chart !== null && expander.getBoundingClientRect().height > chart.getBoundingClientRect().height;
    }""")

    save_screenshot(page, "dashboard-funnel-per-rule")
    legend = page.locator(".js-plotly-plot .legend").all_text_contents()
    assert any("Spike of 4xx errors" in text and "Quota above 80 %" in text for text in legend)


def test_activity_shows_email_and_timeline(page: Page, app: DashboardApp) -> None:
    with app.sessions() as session:
        send = session.scalars(select(Send).where(Send.status == SENT, Send.clicked_at.is_not(None))
                               .order_by(Send.id.desc())).first()
    page.goto(app.url)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.goto(f"{app.url}/activity?send={send.id}")

    expect(page.get_by_role("heading", name=f"Send {send.id}: {send.subject}")).to_be_visible()
    preview = page.frame_locator("iframe").last.locator("iframe[title='Email preview']")
    expect(preview).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe").last.frame_locator("iframe[title='Email preview']")
           .get_by_text("Unsubscribe")).to_be_visible()
    save_screenshot(page, "activity-email")

    page.get_by_role("tab", name="Timeline").click()
    expect(page.get_by_text("the rule matched with value")).to_be_visible()
    save_screenshot(page, "activity-timeline")


def test_link_on_fresh_server_needs_sign_in(tmp_path: Path, app: DashboardApp, page: Page) -> None:
    # A server of its own with a password, whose first request is a link to one send.
    server = start_app_server({
        "BEHAVEMAIL_DATABASE_URL": app.database_url,
        "BEHAVEMAIL_APP_PASSWORD": "editor-password-0123",
        "BEHAVEMAIL_SECRET_KEY": "browser-test-secret-key-0123456789",
    }, tmp_path / "server")
    try:
        page.goto(f"{server.url}/activity?send=1")
        expect(page.get_by_role("heading", name="Sign in to Behavemail")).to_be_visible()
        save_screenshot(page, "activity-link-needs-sign-in")
        assert page.get_by_role("heading", name="Send 1").count() == 0
        assert page.get_by_text("Page 1 of").count() == 0
    finally:
        server.stop()
