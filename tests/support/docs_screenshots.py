"""Take the screenshots of docs/operators.md from the demo data: ``python -m tests.support.docs_screenshots``.

Builds the demo accounts and seven days of demo metrics in a temporary folder. Then
starts a private Prometheus and the app on 127.0.0.1 with the starter rules and 30
days of demo sends, and saves one PNG per screen into docs/screenshots/. Every
process it starts is stopped by its PID at the end.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.demo.accounts import SEED, build_accounts_db, read_accounts_csv, shift_signup_dates
from behavemail_core.demo.history import Timeline, history_end, write_history
from behavemail_core.demo.personas import assign_personas
from behavemail_core.demo.send_history import seed_history
from behavemail_core.portability import import_document
from behavemail_core.settings import DATA_DIR
from tests.support.app_browser import RERUN_TIMEOUT_MS, open_screen, pick, screenshot_whole_page, settle
from tests.support.app_data import QUOTA_HELP, REQUESTS_HELP, app_environment, wait_for_metadata
from tests.support.app_server import CHROMIUM_ARGS, CHROMIUM_PATH, REPOSITORY, start_app_server
from tests.support.prometheus import free_port, start_prometheus

SCREENSHOTS = REPOSITORY / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 1800}


def build_demo(workdir: Path, now: datetime) -> tuple[str, Path]:
    """Write the demo accounts database and metric history; return the accounts URL and history path."""
    # A short lag keeps the last gauge samples inside Prometheus's 5-minute lookback while
    # the screenshots are taken. In `make demo` the traffic generator keeps them fresh.
    end = history_end(now, lag=timedelta(seconds=30))
    accounts = shift_signup_dates(read_accounts_csv(DATA_DIR / "accounts.csv"), end.date())
    personas = assign_personas([account.user_id for account in accounts], SEED)
    build_accounts_db(accounts, workdir / "accounts.db")
    history = workdir / "history.om"
    write_history(history, accounts, personas, Timeline.ending_at(end, 300), SEED)
    return f"sqlite:///{workdir / 'accounts.db'}", history


def start_help_exporter() -> tuple[str, object]:
    """Expose the demo metrics' help text for Prometheus to scrape, with one idle series each."""
    registry = CollectorRegistry()
    Counter("api_requests", REQUESTS_HELP, ["user_id", "endpoint", "status"],
            registry=registry).labels("docs-idle", "/v1/messages", "200")
    Gauge("api_quota_used_ratio", QUOTA_HELP, ["user_id"], registry=registry).labels("docs-idle").set(0)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"127.0.0.1:{port}", server


def prepare_app_database(url: str, now: datetime) -> None:
    upgrade(url)
    engine = create_app_engine(url)
    sessions = session_factory(engine)
    starter = DATA_DIR / "starter_rules.yaml"
    with sessions() as session:
        import_document(session, starter.read_text(encoding="utf-8"), actor="docs", source=str(starter))
    seed_history(sessions, now)
    engine.dispose()


def wait_for_rule_name(page: Page, name: str) -> None:
    """Wait until the rerun that opened a rule has replaced the old form."""
    field = page.get_by_role("textbox", name="Rule name", exact=True)
    expect(field).to_have_count(1)
    expect(field).to_have_value(name)


def capture(page: Page, url: str) -> None:
    expect.set_options(timeout=RERUN_TIMEOUT_MS)
    page.goto(url)
    open_screen(page, url, "Rules")
    pick(page, "Open a rule", "Spike of 4xx errors")
    wait_for_rule_name(page, "Spike of 4xx errors")
    expect(page.get_by_text("Backtest:")).to_be_visible()
    settle(page)
    page.wait_for_timeout(1500)
    screenshot_whole_page(page, VIEWPORT, SCREENSHOTS / "rules.png")

    pick(page, "Open a rule", "New rule")
    wait_for_rule_name(page, "")
    settle(page)
    page.get_by_text("PromQL (advanced)", exact=True).click()
    settle(page)
    expect(page.get_by_text("Replaying the send policy")).to_have_count(0)
    page.wait_for_timeout(1500)
    page.screenshot(path=SCREENSHOTS / "rules-promql.png", full_page=False)

    open_screen(page, url, "Templates")
    pick(page, "Open a template", "4xx spike")
    pick(page, "Customers matching rule", "Spike of 4xx errors")
    expect(page.get_by_text("Subject:")).to_be_visible()
    settle(page)
    page.wait_for_timeout(2000)
    screenshot_whole_page(page, VIEWPORT, SCREENSHOTS / "templates.png")

    open_screen(page, url, "Settings")
    expect(page.get_by_text("BEHAVEMAIL_DATABASE_URL")).to_be_visible()
    screenshot_whole_page(page, VIEWPORT, SCREENSHOTS / "settings.png")


def main() -> int:
    now = datetime.now(timezone.utc)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="behavemail-docs-") as temporary:
        workdir = Path(temporary)
        accounts_url, history = build_demo(workdir, now)
        target, exporter = start_help_exporter()
        prometheus = start_prometheus(workdir / "prometheus", history, [target], "1s")
        server = None
        try:
            wait_for_metadata(prometheus)
            (workdir / "app").mkdir()
            environment = app_environment(workdir / "app", prometheus.url, accounts_url)
            prepare_app_database(environment["BEHAVEMAIL_DATABASE_URL"], now)
            server = start_app_server(environment, workdir / "app")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(RERUN_TIMEOUT_MS)
                try:
                    capture(page, server.url)
                finally:
                    browser.close()
        except BaseException:
            if server is not None:
                print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            if server is not None:
                server.stop()
            prometheus.stop()
            exporter.shutdown()  # type: ignore[attr-defined]
    print(f"Wrote the screenshots to {SCREENSHOTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
