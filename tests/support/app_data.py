"""Data behind the operator app's tests: a metric history, live metadata, accounts, settings.

The history covers eight days up to two minutes ago, in five-minute steps, so the
preview's seven-day chart and backtest have data from their first step on. Each
user sits clearly on one side of every threshold the tests use:

- ADA (free plan): 60 responses with status 404 five days ago, and 40 in the last
  20 hours, so "more than 10 4xx in 24 hours" matches now and had two episodes;
- GRACE (pro plan): the same 40 recent 4xx, so she matches outside a free-plan audience;
- ALAN (free plan): about 3 4xx in the last day, below the threshold;
- KATHERINE (free plan): traffic that stopped three days ago;
- BARBARA (enterprise): 10 % of her requests answered 503;
- NOBODY: 40 recent 4xx but no row in the accounts database.

A small exporter, scraped by the test Prometheus, gives the metrics their type and
help text (Prometheus has metadata only for scraped metrics) and a live quota gauge.
Instant selectors look back only 5 minutes, and the history stops at the start of
the session, so tests query counters through range functions such as increase().
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from behavemail_core.settings import DEMO_ACCOUNTS_QUERY
from tests.support.prometheus import PrometheusServer, Series, free_port, render_openmetrics

STEP = 300
HOUR = 3600
DAY = 86400
HISTORY_SECONDS = 8 * DAY
METADATA_TIMEOUT_SECONDS = 60.0
SECRET_KEY = "app-test-secret-key-0123456789abcdef"

ADA, GRACE, ALAN, KATHERINE, BARBARA, NOBODY = "u001", "u002", "u003", "u004", "u005", "u999"
REQUESTS_HELP = "API requests answered, by user, endpoint and status."
QUOTA_HELP = "Share of the plan's monthly quota used, 0 to 1."

ACCOUNTS = (
    # user_id, email, first_name, last_name, company, plan, country, timezone, signup_date offset in days
    (ADA, "ada@example.com", "Ada", "Lovelace", "Analytical Engines", "free", "GB", "Europe/London", 400),
    (GRACE, "grace@example.org", "Grace", "Hopper", "Cobol Systems", "pro", "US", "America/New_York", 900),
    (ALAN, "alan@example.net", "Alan", "Turing", "Bletchley Labs", "free", "GB", "Europe/London", 120),
    (KATHERINE, "katherine@example.com", "Katherine", "Johnson", "Orbit Analytics", "free", "US",
     "America/Chicago", 60),
    (BARBARA, "barbara@example.org", "Barbara", "Liskov", "Substitution Inc.", "enterprise", "US",
     "America/New_York", 700),
)


def history_end() -> int:
    """Return the last sample time: two minutes ago, on a whole step."""
    return int(time.time()) // STEP * STEP - 120


def _counter(end: int, user: str, segments: list[tuple[int, int, float]], **labels: str) -> Series:
    """A counter rising by ``per_step`` in each (from, to) span, offsets in seconds before ``end``."""
    value, samples = 0.0, []
    for t in range(end - HISTORY_SECONDS, end + 1, STEP):
        for begin, finish, per_step in segments:
            if end - begin < t <= end - finish:
                value += per_step
        samples.append((t, value))
    merged = {"user_id": user, "endpoint": "/v1/messages", "status": "200", **labels}
    return Series("api_requests_total", merged, "counter", samples)


def _gauge(end: int, user: str, value: float) -> Series:
    return Series("api_quota_used_ratio", {"user_id": user}, "gauge",
                  [(t, value) for t in range(end - 2 * DAY, end + 1, STEP)])


def history(end: int) -> list[Series]:
    """Build every series of the history that ends at ``end``."""
    always = (HISTORY_SECONDS + STEP, 0)
    per_hour = STEP / HOUR
    recent_burst = (20 * HOUR, 0, 2 * per_hour)          # 40 responses over 20 hours
    old_burst = (5 * DAY, 5 * DAY - 6 * HOUR, 10 * per_hour)  # 60 responses over 6 hours
    return [
        _counter(end, ADA, [(*always, 2)]),
        _counter(end, ADA, [old_burst, recent_burst], status="404"),
        _counter(end, GRACE, [(*always, 2)]),
        _counter(end, GRACE, [recent_burst], status="401"),
        _counter(end, ALAN, [(*always, 2)]),
        _counter(end, ALAN, [(20 * HOUR, 0, 0.15 * per_hour)], status="400"),
        _counter(end, KATHERINE, [(HISTORY_SECONDS + STEP, 3 * DAY, 3)]),
        _counter(end, BARBARA, [(*always, 9)]),
        _counter(end, BARBARA, [(*always, 1)], status="503"),
        _counter(end, BARBARA, [(*always, 1)], endpoint="/v2/search"),
        _counter(end, NOBODY, [(*always, 1)]),
        _counter(end, NOBODY, [recent_burst], status="429"),
        _gauge(end, ADA, 0.93),
        _gauge(end, ALAN, 0.42),
    ]


@dataclass
class MetricsExporter:
    """A prometheus_client HTTP server on 127.0.0.1 that the test Prometheus scrapes."""

    port: int
    shutdown: Callable[[], None]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_exporter() -> MetricsExporter:
    """Expose the two metric families with help text, and ADA's quota gauge live.

    The counter child is a user without traffic (its value never changes), so it adds
    metadata but changes no count.
    """
    registry = CollectorRegistry()
    requests = Counter("api_requests", REQUESTS_HELP, ["user_id", "endpoint", "status"], registry=registry)
    requests.labels("u-idle", "/v1/messages", "200")
    quota = Gauge("api_quota_used_ratio", QUOTA_HELP, ["user_id"], registry=registry)
    quota.labels(ADA).set(0.93)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def shutdown() -> None:
        server.shutdown()
        thread.join(timeout=10)

    return MetricsExporter(port=port, shutdown=shutdown)


def wait_for_metadata(server: PrometheusServer, timeout: float = METADATA_TIMEOUT_SECONDS) -> None:
    """Wait until Prometheus has scraped the exporter and reports the metrics' metadata."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = httpx.get(f"{server.url}/api/v1/metadata", timeout=5).json().get("data", {})
        if "api_requests" in data and "api_quota_used_ratio" in data:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus on {server.url} reported no metadata after {timeout:.0f} s; "
                       f"last lines of its log:\n{server.log_tail()}")


def build_accounts_db(path: Path, today: date | None = None) -> str:
    """Write the accounts table of the tests into a SQLite file and return its URL."""
    today = today or datetime.now(timezone.utc).date()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute(
            "CREATE TABLE accounts (user_id TEXT PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, "
            "last_name TEXT, company TEXT, plan TEXT, country TEXT, timezone TEXT, signup_date TEXT)")
        connection.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row[:8], (today - timedelta(days=row[8])).isoformat()) for row in ACCOUNTS])
        connection.commit()
    finally:
        connection.close()
    return f"sqlite:///{path}"


def app_environment(directory: Path, prometheus_url: str, accounts_url: str, **overrides: str) -> dict[str, Any]:
    """Return the BEHAVEMAIL_* variables of an app with its own database and outbox in ``directory``."""
    environment = {
        "BEHAVEMAIL_DATABASE_URL": f"sqlite:///{directory / 'behavemail.db'}",
        "BEHAVEMAIL_PROMETHEUS_URL": prometheus_url,
        "BEHAVEMAIL_ACCOUNTS_URL": accounts_url,
        "BEHAVEMAIL_ACCOUNTS_QUERY": DEMO_ACCOUNTS_QUERY,
        "BEHAVEMAIL_EMAIL_BACKEND": "outbox",
        "BEHAVEMAIL_OUTBOX_DIR": str(directory / "outbox"),
        "BEHAVEMAIL_SECRET_KEY": SECRET_KEY,
        "BEHAVEMAIL_SCRAPE_INTERVAL": "60",
        "BEHAVEMAIL_APP_PASSWORD": "",
        "BEHAVEMAIL_VIEWER_PASSWORD": "",
    }
    environment.update(overrides)
    return environment


def start_history_prometheus(start: Callable[..., PrometheusServer]) -> tuple[PrometheusServer, MetricsExporter]:
    """Start a Prometheus (with ``prometheus_factory``) holding the history and scraping the exporter."""
    exporter = start_exporter()
    try:
        server = start(openmetrics=render_openmetrics(history(history_end())),
                       scrape_targets=[exporter.target], scrape_interval="1s")
        wait_for_metadata(server)
    except BaseException:
        exporter.shutdown()
        raise
    return server, exporter
