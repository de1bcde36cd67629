"""The Prometheus test support: OpenMetrics rendering and a backfilled private server."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.prometheus import Series, escape_label_value, render_openmetrics

AWKWARD_VALUE = "a\"b\\c'dé.(+|)"


def test_render_groups_families_and_sorts_samples() -> None:
    text = render_openmetrics(
        [
            Series("jobs_total", {"queue": "a"}, "counter", [(20, 2), (10, 1)]),
            Series("depth", {}, "gauge", [(10, 0.5)]),
            Series("jobs_total", {"queue": "b"}, "counter", [(10, 7)]),
        ]
    )

    assert text.splitlines() == [
        "# TYPE jobs counter",
        'jobs_total{queue="a"} 1 10',
        'jobs_total{queue="a"} 2 20',
        'jobs_total{queue="b"} 7 10',
        "# TYPE depth gauge",
        "depth 0.5 10",
        "# EOF",
    ]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        # a backslash is doubled
        ("a\\b", "a\\\\b"),
        # a double quote gets a backslash
        ('a"b', 'a\\"b'),
        # a newline becomes backslash n
        ("a\nb", "a\\nb"),
        # a single quote and non-ASCII letters stay as they are
        ("o'dé", "o'dé"),
    ],
)
def test_escape_label_value(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # a counter's name must carry the _total suffix
        ({"name": "jobs", "kind": "counter"}, "must end in '_total'"),
        # only counters and gauges can be backfilled here
        ({"name": "jobs", "kind": "histogram"}, "expected one of"),
        # label names follow the Prometheus data model
        ({"name": "jobs_total", "labels": {"user-id": "1"}}, "label name 'user-id'"),
    ],
)
def test_series_rejects_invalid_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Series(**kwargs)


def test_backfilled_counter_reads_back_exactly(prometheus_factory) -> None:
    end = int(time.time()) - 600
    samples = [(end - 3600 + 60 * minute, float(minute)) for minute in range(61)]
    openmetrics = render_openmetrics(
        [Series("api_requests_total", {"user_id": AWKWARD_VALUE, "status": "200"}, "counter", samples)]
    )
    server = prometheus_factory(openmetrics)

    response = httpx.get(
        f"{server.url}/api/v1/query",
        params={"query": "api_requests_total", "time": str(end)},
        timeout=30,
    )
    result = response.json()["data"]["result"]

    assert len(result) == 1
    assert result[0]["metric"]["user_id"] == AWKWARD_VALUE
    assert result[0]["value"] == [end, "60"]


def test_increase_over_backfilled_range(prometheus_factory) -> None:
    end = int(time.time()) - 600
    samples = [(end - 3600 + 60 * minute, float(2 * minute)) for minute in range(61)]
    server = prometheus_factory(render_openmetrics([Series("jobs_total", {"user_id": "u1"}, "counter", samples)]))

    result = server.query('sum by (user_id) (increase(jobs_total{user_id="u1"}[30m]))', at=end)

    # The window contains 30 one-minute steps of +2 each. Its first and last samples sit
    # on the window's edges, so extrapolation adds nothing.
    assert float(result[0]["value"][1]) == pytest.approx(60.0)


def test_stop_ends_the_process(prometheus_factory) -> None:
    server = prometheus_factory()

    server.stop()

    assert server.process.poll() is not None
