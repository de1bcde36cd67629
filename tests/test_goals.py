"""Goal measurement against a real Prometheus: who reached the goal, one query per rule batch.

Two rules with a 24 h goal window. Rule DEFAULT has no goal ("made at least one API
request"); rule SEARCH's goal is "called /v2/search". Sends go out at SEND_A,
SEND_A2 (two minutes later, same due bucket) and SEND_B (two hours later, another
bucket). USERS describes each user's traffic relative to those times.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from behavemail_core.goals import (DueSend, GoalBatch, bucket_end, group_batches, measure_due_goals)
from behavemail_core.models import FAILED, HELD_OUT, SENT, Rule, Send
from behavemail_core.prometheus import InstantVector, PrometheusClient
from tests.support.appdb import make_settings, migrated_sessions
from tests.support.prometheus import Series, free_port, render_openmetrics

STEP = 60
HOUR = 3600
WINDOW = 24 * HOUR
NOW = int(datetime.now(timezone.utc).timestamp()) // HOUR * HOUR - HOUR
START = NOW - 3 * 86400
SEND_A = NOW - 30 * HOUR + 60          # due 6 h before NOW plus 1 min: bucket ends at +5 min
SEND_A2 = SEND_A + 120                 # due 2 min later, same bucket
SEND_B = NOW - 28 * HOUR               # due exactly on a bucket boundary, 4 h before NOW
NOT_DUE = NOW - HOUR                   # due 23 h after NOW


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def counter(user: str, spans: list[tuple[int, int]], endpoint: str = "/v1/messages") -> Series:
    """A counter that rises by 2 a minute inside each [begin, end) span and is flat elsewhere."""
    value, samples = 0.0, []
    for t in range(START, NOW + 1, STEP):
        if any(begin <= t < end for begin, end in spans):
            value += 2
        samples.append((t, value))
    return Series("api_requests_total", {"user_id": user, "endpoint": endpoint, "status": "200"},
                  "counter", samples)


def history() -> list[Series]:
    return [
        # active-after: traffic from 2 h to 4 h after SEND_A
        counter("active-after", [(SEND_A + 2 * HOUR, SEND_A + 4 * HOUR)]),
        # idle: traffic that stopped 6 h before SEND_A
        counter("idle", [(START, SEND_A - 6 * HOUR)]),
        # late: traffic only after its window closed (from 1 h after SEND_A2's due time)
        counter("late", [(SEND_A2 + WINDOW + HOUR, SEND_A2 + WINDOW + 2 * HOUR)]),
        # before-send: traffic ending 10 minutes before SEND_A2, outside the batch's range
        counter("before-send", [(SEND_A2 - 40 * 60, SEND_A2 - 10 * 60)]),
        # held-active: control group, traffic 1 h after SEND_A
        counter("held-active", [(SEND_A + HOUR, SEND_A + 2 * HOUR)]),
        # active-b: traffic 5 h after SEND_B
        counter("active-b", [(SEND_B + 5 * HOUR, SEND_B + 6 * HOUR)]),
        # held-b: control group, traffic only long before SEND_B
        counter("held-b", [(START, START + HOUR)]),
        # searcher: calls /v2/search 3 h after SEND_A
        counter("searcher", [(SEND_A + 3 * HOUR, SEND_A + 4 * HOUR)], endpoint="/v2/search"),
        # not-due: traffic right after NOT_DUE, but its window is still open
        counter("not-due", [(NOT_DUE + 60, NOT_DUE + 30 * 60)]),
    ]


class CountingPrometheus(PrometheusClient):
    """A real client that records every instant query it runs."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, timeout=5)
        self.queries: list[tuple[str, datetime]] = []

    def instant_query(self, promql: str, at: datetime | float | None = None) -> InstantVector:
        self.queries.append((promql, at))
        return super().instant_query(promql, at=at)


@pytest.fixture(scope="module")
def prometheus_url(prometheus_factory) -> str:
    return prometheus_factory(openmetrics=render_openmetrics(history())).url


@pytest.fixture
def database(tmp_path: Path):
    settings = make_settings(tmp_path)
    sessions = migrated_sessions(settings.database_url)
    with sessions.begin() as session:
        default = Rule(name="Default goal", definition={"condition": {}}, goal=None, goal_window_seconds=WINDOW)
        search = Rule(name="Search goal", definition={"condition": {}}, goal_window_seconds=WINDOW,
                      goal={"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">",
                            "threshold": 0, "matchers": [{"label": "endpoint", "op": "=", "value": "/v2/search"}]})
        session.add_all([default, search])
        session.flush()
        ids = {"default": default.id, "search": search.id}
        for rule, user, status, sent in SENDS:
            session.add(make_send(ids[rule], user, status, sent))
        # Already measured earlier: must keep its stored result.
        measured = make_send(ids["default"], "measured-before", SENT, SEND_A)
        measured.goal_reached, measured.goal_measured_at = True, at(SEND_A)
        session.add(measured)
        # A failed send is never measured, even with a due time set.
        session.add(make_send(ids["default"], "failed", FAILED, SEND_A))
    return settings, sessions, ids


def make_send(rule_id: int, user: str, status: str, sent: int) -> Send:
    created = at(sent)
    return Send(rule_id=rule_id, user_id=user, dedupe_key=f"test:{user}", email=f"{user}@example.com",
                status=status, created_at=created, sent_at=created if status == SENT else None,
                goal_due_at=created + timedelta(seconds=WINDOW))


SENDS = [
    ("default", "active-after", SENT, SEND_A),
    ("default", "idle", SENT, SEND_A),
    ("default", "late", SENT, SEND_A2),
    ("default", "before-send", SENT, SEND_A2),
    ("default", "held-active", HELD_OUT, SEND_A),
    ("default", "held-none", HELD_OUT, SEND_A2),  # no series at all
    ("default", "active-b", SENT, SEND_B),
    ("default", "held-b", HELD_OUT, SEND_B),
    ("default", "not-due", SENT, NOT_DUE),
    ("search", "searcher", SENT, SEND_A),
    ("search", "active-after", SENT, SEND_A),
    ("search", "held-search", HELD_OUT, SEND_A),
]


def goal_results(sessions) -> dict[tuple[int, str], tuple[bool | None, bool]]:
    with sessions() as session:
        rows = session.execute(select(Send.rule_id, Send.user_id, Send.goal_reached, Send.goal_measured_at))
        return {(rule_id, user): (reached, measured is not None) for rule_id, user, reached, measured in rows}


def test_goal_reached_exact_users(database, prometheus_url: str) -> None:
    settings, sessions, ids = database
    default, search = ids["default"], ids["search"]

    with CountingPrometheus(prometheus_url) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))
    results = goal_results(sessions)

    assert results == {
        (default, "active-after"): (True, True),
        (default, "idle"): (False, True),
        (default, "late"): (False, True),
        (default, "before-send"): (False, True),
        (default, "held-active"): (True, True),
        (default, "held-none"): (False, True),
        (default, "active-b"): (True, True),
        (default, "held-b"): (False, True),
        (default, "not-due"): (None, False),
        (default, "measured-before"): (True, True),
        (default, "failed"): (None, False),
        (search, "searcher"): (True, True),
        (search, "active-after"): (False, True),
        (search, "held-search"): (False, True),
    }
    assert report.failed_batches == 0


def test_one_query_per_rule_batch(database, prometheus_url: str) -> None:
    settings, sessions, ids = database

    with CountingPrometheus(prometheus_url) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))

    bucket_a = at(SEND_A + WINDOW + 240)  # the 5-minute bucket end after SEND_A2's due time
    assert [query_time for _, query_time in prometheus.queries] == [bucket_a, at(SEND_B + WINDOW), bucket_a]
    assert [(b.rule_id, b.sends) for b in report.batches] == [(ids["default"], 6), (ids["default"], 2),
                                                              (ids["search"], 3)]


def test_batch_counts_per_group(database, prometheus_url: str) -> None:
    settings, sessions, _ = database

    with CountingPrometheus(prometheus_url) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))

    first = report.batches[0]
    assert (first.sent, first.sent_reached) == (4, 1)
    assert (first.held_out, first.held_out_reached) == (2, 1)
    assert report.measured == 11
    assert report.reached == 4


def test_default_goal_query_covers_batch(database, prometheus_url: str) -> None:
    settings, sessions, _ = database

    with CountingPrometheus(prometheus_url) as prometheus:
        measure_due_goals(sessions, prometheus, settings, at(NOW))

    # From SEND_A to the bucket end: 24 h plus the 4 minutes to the end of the bucket.
    assert prometheus.queries[0][0] == "sum by (user_id) (increase(api_requests_total[1d4m])) > 0"
    assert 'endpoint="/v2/search"' in prometheus.queries[2][0]
    assert "[1d4m]" in prometheus.queries[2][0]


def test_second_run_queries_nothing(database, prometheus_url: str) -> None:
    settings, sessions, _ = database

    with CountingPrometheus(prometheus_url) as prometheus:
        measure_due_goals(sessions, prometheus, settings, at(NOW))
        again = measure_due_goals(sessions, prometheus, settings, at(NOW))

    assert again.batches == []
    assert len(prometheus.queries) == 3


def test_down_prometheus_leaves_rows_unmeasured(database, caplog: pytest.LogCaptureFixture) -> None:
    settings, sessions, ids = database
    caplog.set_level(logging.ERROR, logger="behavemail_core.goals")

    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))
    results = goal_results(sessions)

    assert report.failed_batches == 3
    assert sum(measured for _, measured in results.values()) == 1  # only the row measured before
    assert f"rule_id={ids['search']}" in caplog.text
    assert "Cannot connect to Prometheus" in caplog.text


def test_rows_measured_after_prometheus_returns(database, prometheus_url: str) -> None:
    settings, sessions, ids = database

    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2) as down:
        measure_due_goals(sessions, down, settings, at(NOW))
    with PrometheusClient(prometheus_url) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))

    assert report.measured == 11
    assert goal_results(sessions)[(ids["search"], "searcher")] == (True, True)


def test_invalid_goal_fails_only_its_rule(database, prometheus_url: str) -> None:
    settings, sessions, ids = database
    with sessions.begin() as session:
        session.get(Rule, ids["search"]).goal = {"kind": "count", "metric": "api_requests_total"}

    with PrometheusClient(prometheus_url) as prometheus:
        report = measure_due_goals(sessions, prometheus, settings, at(NOW))

    assert [(b.rule_id, b.error is None) for b in report.batches] == [
        (ids["default"], True), (ids["default"], True), (ids["search"], False)]
    assert "missing the field 'window'" in report.batches[2].error


BUCKET_CASES = [
    # inside a bucket: its end
    (at(NOW + 61), at(NOW + 300)),
    # exactly on a boundary: that boundary
    (at(NOW + 300), at(NOW + 300)),
    # one second after a boundary: the next boundary
    (at(NOW + 301), at(NOW + 600)),
]


@pytest.mark.parametrize(("due", "expected"), BUCKET_CASES)
def test_bucket_end(due: datetime, expected: datetime) -> None:
    assert bucket_end(due, 300) == expected


def test_batch_time_never_after_now() -> None:
    due = DueSend(send_id=1, rule_id=1, user_id="u", status=SENT, started_at=at(NOW - WINDOW + 60),
                  due_at=at(NOW + 60))

    batches = group_batches([due], now=at(NOW + 120))

    assert batches == [GoalBatch(rule_id=1, evaluated_at=at(NOW + 120), sends=(due,))]
    assert batches[0].range_seconds == WINDOW + 60
