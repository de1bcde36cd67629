"""Fixtures shared by the whole test suite, one section per component."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.prometheus import PrometheusServer, start_prometheus

# --- Prometheus ---------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Start private Prometheus servers on 127.0.0.1, each in its own temporary directory.

    Call it as ``prometheus_factory(openmetrics=None, scrape_targets=(), scrape_interval="15s")``.
    Every server it started is stopped when the session ends, and ``server.stop()``
    stops one earlier.
    """
    servers: list[PrometheusServer] = []

    def start(
        openmetrics: str | Path | None = None,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "15s",
        **options: object,
    ) -> PrometheusServer:
        server = start_prometheus(
            tmp_path_factory.mktemp("prometheus"),
            openmetrics,
            scrape_targets,
            scrape_interval,
            **options,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# --- Event endpoints (webhook, tracking, unsubscribe) -------------------------

from datetime import datetime  # noqa: E402

from behavemail_core.events import EventServer, start_event_server  # noqa: E402
from tests.support.events import AppDatabase, StepClock, make_app_database, make_settings  # noqa: E402


@pytest.fixture
def event_database(tmp_path: Path) -> Iterator[AppDatabase]:
    """A freshly migrated SQLite app database for the event endpoint tests."""
    database = make_app_database(tmp_path)
    yield database
    database.engine.dispose()


@pytest.fixture
def event_server_factory(
    tmp_path: Path, event_database: AppDatabase
) -> Iterator[Callable[..., EventServer]]:
    """Start event servers on 127.0.0.1 and a free port over ``event_database``.

    Call it as ``event_server_factory(webhook_public_key="", clock=None)``; the
    default clock is a StepClock. Every server it started is shut down after the test.
    """
    servers: list[EventServer] = []

    def start(webhook_public_key: str = "", clock: Callable[[], datetime] | None = None) -> EventServer:
        settings = make_settings(tmp_path, webhook_public_key=webhook_public_key)
        server = start_event_server(settings, event_database.sessions, clock=clock or StepClock(),
                                    address=("127.0.0.1", 0))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


# --- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator["PostgresCluster"]:
    """A throwaway PostgreSQL cluster for the session; ``new_database()`` gives a fresh URL."""
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


# --- Operator app: Streamlit screens (AppTest) and Chromium --------------------

from dataclasses import dataclass  # noqa: E402


@dataclass
class OperatorWorld:
    """What the operator app's tests share: a Prometheus with history and an accounts database."""

    prometheus: "PrometheusServer"
    accounts_url: str


@pytest.fixture(scope="session")
def operator_world(prometheus_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorWorld]:
    """Start the Prometheus of tests/support/app_data.py and write its accounts database."""
    from tests.support.app_data import build_accounts_db, start_history_prometheus

    server, exporter = start_history_prometheus(prometheus_factory)
    accounts_url = build_accounts_db(tmp_path_factory.mktemp("operator-accounts") / "accounts.db")
    yield OperatorWorld(prometheus=server, accounts_url=accounts_url)
    exporter.shutdown()


@pytest.fixture
def app_env(operator_world: OperatorWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the BEHAVEMAIL_* variables at a fresh, migrated app database and the shared world.

    The working directory moves to ``tmp_path``, so no .env or behavemail.toml of the
    checkout is read. Tests change a variable with monkeypatch.setenv after this.
    """
    from behavemail_core.database import upgrade
    from tests.support.app_data import app_environment

    environment = app_environment(tmp_path, operator_world.prometheus.url, operator_world.accounts_url)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    upgrade(environment["BEHAVEMAIL_DATABASE_URL"])
    return environment


@pytest.fixture(scope="module")
def chromium() -> Iterator["Browser"]:
    """Debian's Chromium, driven by Playwright, for one test module.

    One thread runs one Playwright at a time, so this ends with its module, and other
    modules may start their own.
    """
    from playwright.sync_api import sync_playwright

    from tests.support.app_server import CHROMIUM_ARGS, CHROMIUM_PATH

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
