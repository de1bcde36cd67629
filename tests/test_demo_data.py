"""The demo data: accounts, the seven-day history in a real Prometheus, and live traffic.

The history is generated with a fixed clock and queried at its end with the rule
shapes of the starter rules, so every persona must come back as exactly its users.
"""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import bindparam, create_engine, text

from behavemail_core.demo.accounts import (
    COLUMNS,
    SEED,
    build_accounts_db,
    generate_accounts,
    read_accounts_csv,
    shift_signup_dates,
    write_accounts_csv,
)
from behavemail_core.demo.history import Timeline, history_end, write_history
from behavemail_core.demo.personas import Persona, assign_personas, users_by_persona
from behavemail_core.settings import DEMO_ACCOUNTS_QUERY
from tests.support.prometheus import PrometheusServer, free_port

REPO = Path(__file__).resolve().parent.parent
COMMITTED_CSV = REPO / "data" / "accounts.csv"
# A fixed clock in the past, so the history is the same on every run.
FIXED_NOW = datetime(2025, 3, 10, 12, 2, tzinfo=timezone.utc)

ACTIVE_7D = "sum by (user_id) (increase(api_requests_total[7d])) > 0"
STALLED = f"({ACTIVE_7D}) unless sum by (user_id) (increase(api_requests_total[48h])) > 0"
GONE_QUIET = f"({ACTIVE_7D}) unless sum by (user_id) (increase(api_requests_total[72h])) > 0"
ERRORS_4XX_24H = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h]))'
REQUESTS_24H = "sum by (user_id) (increase(api_requests_total[24h]))"
ERROR_SPIKE = f"({ERRORS_4XX_24H} > 50) and ({ERRORS_4XX_24H} / {REQUESTS_24H} > 0.05)"
QUOTA_HIGH = "max by (user_id) (api_quota_used_ratio) > 0.8"
SEARCH_7D = 'sum by (user_id) (increase(api_requests_total{endpoint="/v2/search"}[7d])) > 0'
SEARCH_NEVER_TRIED = f"({ACTIVE_7D}) unless {SEARCH_7D}"


class DemoHistory:
    """The generated demo data of one test module and the Prometheus that contains it."""

    def __init__(self, directory: Path, server: PrometheusServer, timeline: Timeline) -> None:
        self.directory = directory
        self.server = server
        self.timeline = timeline
        self.end_date = datetime.fromtimestamp(timeline.end, timezone.utc).date()
        self.accounts = shift_signup_dates(read_accounts_csv(COMMITTED_CSV), self.end_date)
        self.personas = assign_personas([account.user_id for account in self.accounts], SEED)
        self.groups = {persona: set(members) for persona, members in users_by_persona(self.personas).items()}
        self.signups = {account.user_id: account.signup_date for account in self.accounts}

    def users(self, expr: str) -> set[str]:
        """Return the user ids in the result of ``expr`` at the end of the history."""
        return {item["metric"]["user_id"] for item in self.server.query(expr, at=self.timeline.end)}

    def values(self, expr: str) -> dict[str, float]:
        """Return each user's value in the result of ``expr`` at the end of the history."""
        result = self.server.query(expr, at=self.timeline.end)
        return {item["metric"]["user_id"]: float(item["value"][1]) for item in result}

    def on_plans(self, *plans: str) -> set[str]:
        return {account.user_id for account in self.accounts if account.plan in plans}

    def signed_up_within(self, days: int) -> set[str]:
        return {user for user, signup in self.signups.items() if signup >= self.end_date - timedelta(days=days)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prometheus_factory) -> DemoHistory:
    directory = tmp_path_factory.mktemp("demo")
    end = history_end(FIXED_NOW)
    timeline = Timeline.ending_at(end)
    accounts = shift_signup_dates(read_accounts_csv(COMMITTED_CSV), end.date())
    personas = assign_personas([account.user_id for account in accounts], SEED)
    history_path = directory / "history.om"
    write_history(history_path, accounts, personas, timeline, SEED)
    build_accounts_db(accounts, directory / "accounts.db")

    server = prometheus_factory(history_path)
    history_path.unlink()
    return DemoHistory(directory, server, timeline)


# --- accounts -----------------------------------------------------------------


def test_committed_csv_matches_generator(tmp_path: Path) -> None:
    regenerated = tmp_path / "accounts.csv"

    write_accounts_csv(generate_accounts(), regenerated)

    assert regenerated.read_text(encoding="utf-8") == COMMITTED_CSV.read_text(encoding="utf-8")


def test_accounts_csv_contents() -> None:
    with COMMITTED_CSV.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    names = " ".join(row["first_name"] + " " + row["last_name"] for row in rows)

    assert 190 <= len(rows) <= 210
    assert tuple(rows[0]) == COLUMNS
    assert len({row["user_id"] for row in rows}) == len(rows)
    assert len({row["email"] for row in rows}) == len(rows)
    assert {row["email"].rsplit("@", 1)[1] for row in rows} <= {"example.com", "example.org", "example.net"}
    assert not names.isascii()
    assert {"Müller", "Zoë", "Łukasz", "田中"} & set(names.split())
    assert {row["plan"] for row in rows} == {"free", "starter", "pro", "enterprise"}
    assert len({row["timezone"] for row in rows}) >= 5


def test_signup_dates_relative_to_today() -> None:
    today = date(2030, 6, 1)
    accounts = shift_signup_dates(read_accounts_csv(COMMITTED_CSV), today)
    ages = [(today - account.signup_date).days for account in accounts]

    assert max(ages) > 30
    assert min(ages) >= 1
    assert sum(1 for age in ages if age <= 7) >= 10
    assert sum(1 for age in ages if age > 30) > len(ages) / 2


def test_accounts_db_runs_demo_query(demo: DemoHistory) -> None:
    engine = create_engine(f"sqlite:///{demo.directory / 'accounts.db'}")
    query = text(DEMO_ACCOUNTS_QUERY).bindparams(bindparam("user_ids", expanding=True))
    with engine.connect() as connection:
        rows = connection.execute(query, {"user_ids": ["u0001", "u0002", "nobody"]}).mappings().all()
    engine.dispose()

    assert sorted(row["user_id"] for row in rows) == ["u0001", "u0002"]
    assert tuple(rows[0]) == COLUMNS


def test_accounts_db_keys_on_user_id(demo: DemoHistory) -> None:
    with sqlite3.connect(demo.directory / "accounts.db") as connection:
        columns = connection.execute("PRAGMA table_info(accounts)").fetchall()

    assert tuple(column[1] for column in columns) == COLUMNS
    assert [column[1] for column in columns if column[5]] == ["user_id"]


# --- personas in Prometheus ---------------------------------------------------


def test_persona_sizes(demo: DemoHistory) -> None:
    rule_personas = [
        Persona.STALLED_AFTER_SIGNUP, Persona.ERROR_SPIKE, Persona.GONE_QUIET,
        Persona.QUOTA_HIGH, Persona.SEARCH_NEVER_TRIED,
    ]
    for persona in rule_personas:
        assert 5 <= len(demo.groups[persona]) <= 30, persona
    assert len(demo.groups[Persona.HEALTHY]) > len(demo.accounts) / 2


def test_stalled_after_signup(demo: DemoHistory) -> None:
    silent_48h = demo.users(STALLED)

    assert silent_48h & demo.signed_up_within(7) == demo.groups[Persona.STALLED_AFTER_SIGNUP]
    # Without the signup filter, keys that went quiet are silent for 48 hours as well.
    assert silent_48h == demo.groups[Persona.STALLED_AFTER_SIGNUP] | demo.groups[Persona.GONE_QUIET]


def test_error_spike(demo: DemoHistory) -> None:
    assert demo.users(ERROR_SPIKE) == demo.groups[Persona.ERROR_SPIKE]


def test_error_counts_far_from_threshold(demo: DemoHistory) -> None:
    errors = demo.values(ERRORS_4XX_24H)
    spiking = [errors[user] for user in demo.groups[Persona.ERROR_SPIKE]]
    others = [value for user, value in errors.items() if user not in demo.groups[Persona.ERROR_SPIKE]]

    assert min(spiking) > 100
    assert max(others) < 30


def test_error_share_far_from_threshold(demo: DemoHistory) -> None:
    shares = demo.values(f"{ERRORS_4XX_24H} / ({REQUESTS_24H} > 0)")
    spiking = [shares[user] for user in demo.groups[Persona.ERROR_SPIKE]]
    others = [value for user, value in shares.items() if user not in demo.groups[Persona.ERROR_SPIKE]]

    assert min(spiking) > 0.15
    assert max(others) < 0.02


def test_gone_quiet(demo: DemoHistory) -> None:
    quiet_72h = demo.users(GONE_QUIET)
    established = set(demo.signups) - demo.signed_up_within(30)

    assert quiet_72h & established == demo.groups[Persona.GONE_QUIET]
    # Users who stalled after signup made their last request less than 72 hours ago.
    assert quiet_72h == demo.groups[Persona.GONE_QUIET]


def test_quota_high(demo: DemoHistory) -> None:
    assert demo.users(QUOTA_HIGH) == demo.groups[Persona.QUOTA_HIGH]


def test_quota_of_others_below_threshold(demo: DemoHistory) -> None:
    ratios = demo.values("max by (user_id) (api_quota_used_ratio)")
    others = [value for user, value in ratios.items() if user not in demo.groups[Persona.QUOTA_HIGH]]

    assert len(ratios) == len(demo.accounts)
    assert max(others) < 0.75


def test_search_never_tried(demo: DemoHistory) -> None:
    never_tried = demo.users(SEARCH_NEVER_TRIED)

    assert never_tried & demo.on_plans("pro", "enterprise") == demo.groups[Persona.SEARCH_NEVER_TRIED]


def test_search_tried_by_a_third(demo: DemoHistory) -> None:
    active = demo.users(ACTIVE_7D)
    tried = demo.users(SEARCH_7D)

    assert tried <= active
    assert 0.25 <= len(tried) / len(active) <= 0.45


def test_dormant_users_have_no_requests(demo: DemoHistory) -> None:
    active = demo.users(ACTIVE_7D)

    assert active.isdisjoint(demo.groups[Persona.DORMANT])
    assert active == set(demo.signups) - demo.groups[Persona.DORMANT]


def test_history_ends_before_now(demo: DemoHistory) -> None:
    result = demo.server.query("max(timestamp(api_quota_used_ratio))", at=demo.timeline.end)

    assert float(result[0]["value"][1]) == demo.timeline.end
    assert demo.timeline.end < FIXED_NOW.timestamp()
    assert demo.timeline.end - demo.timeline.start == 7 * 86400


# --- live traffic -------------------------------------------------------------


def metric_value(exposition: str, sample: str) -> float | None:
    """Return the value of one sample line, e.g. ``api_quota_used_ratio{user_id="u0003"}``."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def fetch_metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def wait_for_sample(port: int, sample: str, process: subprocess.Popen, timeout: float = 20.0) -> str:
    """Poll /metrics until ``sample`` appears, returning the exposition text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the traffic generator exited early"
        try:
            exposition = fetch_metrics(port)
        except httpx.TransportError:
            exposition = ""
        if metric_value(exposition, sample) is not None:
            return exposition
        time.sleep(0.2)
    raise AssertionError(f"{sample} did not appear within {timeout} s")


@pytest.fixture
def traffic(tmp_path: Path):
    port = free_port()
    log = (tmp_path / "traffic.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "behavemail_core.demo.traffic", "--port", str(port),
         "--accounts", str(COMMITTED_CSV), "--speed", "200"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    yield port, process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    log.close()


def test_traffic_runs_script(traffic) -> None:
    port, process = traffic
    groups = users_by_persona(assign_personas([a.user_id for a in read_accounts_csv(COMMITTED_CSV)], SEED))
    searcher = groups[Persona.SEARCH_NEVER_TRIED][0]
    burst_user = groups[Persona.HEALTHY][0]
    quota_dropper = groups[Persona.QUOTA_HIGH][0]
    climber = groups[Persona.HEALTHY][1]

    # At 200 times real speed the whole script has run within about five seconds.
    search_sample = f'api_requests_total{{endpoint="/v2/search",method="GET",status="200",user_id="{searcher}"}}'
    wait_for_sample(port, search_sample, process)
    time.sleep(4)
    exposition = fetch_metrics(port)
    burst_sample = f'api_requests_total{{endpoint="/v1/messages",method="POST",status="401",user_id="{burst_user}"}}'

    assert metric_value(exposition, burst_sample) > 50
    assert metric_value(exposition, f'api_quota_used_ratio{{user_id="{quota_dropper}"}}') == 0.35
    assert metric_value(exposition, f'api_quota_used_ratio{{user_id="{climber}"}}') == 0.95
    assert exposition.count("api_quota_used_ratio{") == 200
    assert "_created" not in exposition


def test_traffic_stops_on_sigterm(traffic) -> None:
    port, process = traffic
    wait_for_sample(port, 'api_quota_used_ratio{user_id="u0001"}', process)

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=10) == 0


def test_traffic_scraped_by_prometheus(traffic, prometheus_factory) -> None:
    port, process = traffic
    wait_for_sample(port, 'api_quota_used_ratio{user_id="u0001"}', process)
    server = prometheus_factory(scrape_targets=[f"127.0.0.1:{port}"], scrape_interval="1s", job_name="demo_traffic")

    deadline = time.monotonic() + 20
    result: list = []
    while not result and time.monotonic() < deadline:
        time.sleep(0.5)
        result = server.query('count(api_quota_used_ratio{job="demo_traffic"})', at=time.time())
    server.stop()

    assert result, "Prometheus scraped nothing within 20 s"
    assert float(result[0]["value"][1]) == 200
