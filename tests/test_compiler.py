"""The compiler against a real Prometheus: every rule kind, exactly which users match.

The backfill below holds one minute-resolution history per user; each user is
built so that it sits clearly on one side of each threshold (increase() and
rate() extrapolate to the window's edges, so no value is near a threshold).
Several user ids and label values carry characters that need escaping.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from behavemail_core.compiler import compile_condition
from behavemail_core.conditions import condition_from_dict
from behavemail_core.errors import PromQLError, RuleValidationError
from behavemail_core.prometheus import PrometheusClient
from tests.support.prometheus import Series

STEP = 60
NOW = int(datetime.now(timezone.utc).timestamp()) // STEP * STEP - 600
START = NOW - 3 * 86400
HOUR = 3600

# Awkward ids: each must come back from Prometheus and match exactly.
QUOTE = 'u"quote'
BACKSLASH = "u\\back"
APOSTROPHE = "u'apos"
NON_ASCII = "uJörg"
REGEX_CHARS = "u.a(b)+c|d"
PLAIN = "plain"
QUIET = "quiet"
SEARCHER = "searcher"
LOW_ERRORS = "low-errors"
GAUGE_NAN, GAUGE_INF, GAUGE_NEG_INF, GAUGE_LOW = "g-nan", "g-inf", "g-neg-inf", "g-low"

ODD_ENDPOINT = '/v1/it\'s "q"\\path'
REGEX_ENDPOINT = "/v1/a.b(c)+|d"
DECOY_ENDPOINT = "/v1/aXbc"  # what REGEX_ENDPOINT would match if left unescaped


def counter(user: str, segments: list[tuple[int, int, float]], **labels: str) -> Series:
    """A counter rising by ``per_minute`` in each (from, to) span, offsets in seconds before NOW."""
    value, samples = 0.0, []
    for t in range(START, NOW + 1, STEP):
        for begin, end, per_minute in segments:
            if NOW - begin < t <= NOW - end:
                value += per_minute
        samples.append((t, value))
    merged = {"user_id": user, "endpoint": "/v1/messages", "status": "200", **labels}
    return Series("api_requests_total", merged, "counter", samples)


def gauge(user: str, value: float) -> Series:
    return Series("api_quota_used_ratio", {"user_id": user}, "gauge",
                  [(t, value) for t in range(NOW - 2 * HOUR, NOW + 1, STEP)])


ALWAYS = (3 * 86400 + STEP, 0)  # the whole history


def history() -> list[Series]:
    return [
        # QUOTE: steady 200s, and 40 4xx in the last day (count rule), plus calls to an odd endpoint.
        counter(QUOTE, [(*ALWAYS, 2)]),
        counter(QUOTE, [(20 * HOUR, 0, 2 / 60)], status="404"),
        counter(QUOTE, [(*ALWAYS, 1)], endpoint=ODD_ENDPOINT),
        # LOW_ERRORS: steady, only about 3 4xx in the last day.
        counter(LOW_ERRORS, [(*ALWAYS, 2)]),
        counter(LOW_ERRORS, [(20 * HOUR, 0, 0.15 / 60)], status="400"),
        # BACKSLASH: 10 % of requests are 5xx over the last hour (ratio rule).
        counter(BACKSLASH, [(*ALWAYS, 9)]),
        counter(BACKSLASH, [(*ALWAYS, 1)], status="503"),
        # APOSTROPHE: traffic until 12 hours ago, then nothing (inactive rule).
        counter(APOSTROPHE, [(3 * 86400 + STEP, 12 * HOUR, 3)]),
        # NON_ASCII: steady, never calls /v2/search (never-used rule).
        counter(NON_ASCII, [(*ALWAYS, 1)]),
        # SEARCHER: steady and calls /v2/search.
        counter(SEARCHER, [(*ALWAYS, 1)]),
        counter(SEARCHER, [(*ALWAYS, 0.5)], endpoint="/v2/search"),
        # REGEX_CHARS: calls the endpoint with regex metacharacters; PLAIN calls the decoy.
        counter(REGEX_CHARS, [(*ALWAYS, 1)], endpoint=REGEX_ENDPOINT),
        counter(PLAIN, [(*ALWAYS, 1)], endpoint=DECOY_ENDPOINT),
        # QUIET: a few requests two days ago only.
        counter(QUIET, [(50 * HOUR, 49 * HOUR, 1)]),
        gauge(QUOTE, 0.93),
        gauge(GAUGE_LOW, 0.42),
        gauge(GAUGE_NAN, float("nan")),
        gauge(GAUGE_INF, float("inf")),
        gauge(GAUGE_NEG_INF, float("-inf")),
    ]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory) -> PrometheusClient:
    from tests.support.prometheus import render_openmetrics
    server = prometheus_factory(openmetrics=render_openmetrics(history()))
    with PrometheusClient(server.url) as client:
        yield client


def matching_users(client: PrometheusClient, definition: dict, scrape_interval: int = STEP) -> set[str]:
    compiled = compile_condition(condition_from_dict(definition), scrape_interval_seconds=scrape_interval)
    return set(client.instant_query(compiled.promql, at=NOW).values_by_label("user_id", compiled.promql))


def status_4xx() -> list[dict]:
    return [{"label": "status", "op": "=~", "value": "4.."}]


CASES = [
    # count: more than 10 4xx in 24 h; 40 for QUOTE, about 3 for LOW_ERRORS
    ({"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">", "threshold": 10,
      "matchers": status_4xx()}, {QUOTE}),
    # count with a label value holding a quote, an apostrophe and a backslash
    ({"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold": 30,
      "matchers": [{"label": "endpoint", "op": "=", "value": ODD_ENDPOINT}]}, {QUOTE}),
    # "one of" escapes regex metacharacters: the decoy endpoint must not match
    ({"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold": 30,
      "matchers": [{"label": "endpoint", "op": "in", "values": [REGEX_ENDPOINT]}]}, {REGEX_CHARS}),
    # "matches regex" keeps the operator's pattern as a pattern, so both endpoints match
    ({"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold": 30,
      "matchers": [{"label": "endpoint", "op": "=~", "value": "/v1/a.b.*"}]}, {REGEX_CHARS, PLAIN}),
    # not equals: everyone with traffic off /v1/messages in the last hour
    ({"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold": 20,
      "matchers": [{"label": "endpoint", "op": "!=", "value": "/v1/messages"}]},
     {QUOTE, SEARCHER, REGEX_CHARS, PLAIN}),
    # ratio: 5xx share above 5 % over 1 h; BACKSLASH has 10 %
    ({"kind": "ratio", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold_percent": 5,
      "numerator_matchers": [{"label": "status", "op": "=~", "value": "5.."}]}, {BACKSLASH}),
    # ratio below a threshold also matches users with no matching part at all (0 %)
    ({"kind": "ratio", "metric": "api_requests_total", "window": "1h", "op": "<", "threshold_percent": 1,
      "numerator_matchers": [{"label": "status", "op": "=~", "value": "5.."}]},
     {QUOTE, LOW_ERRORS, NON_ASCII, SEARCHER, REGEX_CHARS, PLAIN}),
    # activity stopped: requests in the last 2 days, none in the last 6 hours
    ({"kind": "inactive", "metric": "api_requests_total", "active_window": "2d", "quiet_window": "6h"},
     {APOSTROPHE}),
    # activity stopped, longer window: QUIET's burst 2 days ago counts too
    ({"kind": "inactive", "metric": "api_requests_total", "active_window": "3d", "quiet_window": "6h"},
     {APOSTROPHE, QUIET}),
    # feature never used by a user active in the last 24 h (APOSTROPHE stopped only 12 h ago)
    ({"kind": "never_used", "metric": "api_requests_total", "window": "24h",
      "feature_matchers": [{"label": "endpoint", "op": "=", "value": "/v2/search"}]},
     {QUOTE, LOW_ERRORS, BACKSLASH, APOSTROPHE, NON_ASCII, REGEX_CHARS, PLAIN}),
    # gauge: NaN, +Inf and -Inf never match, even though +Inf > 0.8 in PromQL
    ({"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8}, {QUOTE}),
    # gauge below: -Inf and NaN still never match
    ({"kind": "gauge", "metric": "api_quota_used_ratio", "op": "<", "threshold": 0.5}, {GAUGE_LOW}),
    # AND: many 4xx and a high quota
    ({"kind": "combine", "op": "and",
      "left": {"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">", "threshold": 10,
               "matchers": status_4xx()},
      "right": {"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8}}, {QUOTE}),
    # UNLESS: never used search, unless they have many 4xx
    ({"kind": "combine", "op": "unless",
      "left": {"kind": "never_used", "metric": "api_requests_total", "window": "24h",
               "feature_matchers": [{"label": "endpoint", "op": "=", "value": "/v2/search"}]},
      "right": {"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">", "threshold": 10,
                "matchers": status_4xx()}},
     {LOW_ERRORS, BACKSLASH, APOSTROPHE, NON_ASCII, REGEX_CHARS, PLAIN}),
]


@pytest.mark.parametrize(("definition", "expected"), CASES,
                         ids=[f"{i}-{c[0]['kind']}" for i, c in enumerate(CASES)])
def test_rule_kind_matches_exact_users(prometheus: PrometheusClient, definition: dict,
                                       expected: set[str]) -> None:
    assert matching_users(prometheus, definition) == expected


def test_non_finite_values_dropped(prometheus: PrometheusClient) -> None:
    vector = prometheus.instant_query('api_quota_used_ratio{user_id=~"g-.*"}', at=NOW)

    assert {s.labels["user_id"] for s in vector.samples} == {GAUGE_LOW}
    assert vector.dropped_non_finite == 3


def test_short_window_widened_with_note(prometheus: PrometheusClient) -> None:
    definition = {"kind": "count", "metric": "api_requests_total", "window": "1m", "op": ">", "threshold": 0,
                  "matchers": [{"label": "endpoint", "op": "=", "value": "/v2/search"}]}
    compiled = compile_condition(condition_from_dict(definition), scrape_interval_seconds=STEP)

    assert "[2m]" in compiled.promql
    assert compiled.notes and "widened to 2m" in compiled.notes[0]
    # Left at 1m, the range would hold one sample and increase() would return nothing.
    assert set(prometheus.instant_query(compiled.promql, at=NOW).values_by_label("user_id")) == {SEARCHER}


def test_escaped_label_value_in_query_text() -> None:
    compiled = compile_condition(condition_from_dict(
        {"kind": "count", "metric": "api_requests_total", "window": "1h", "op": ">", "threshold": 1,
         "matchers": [{"label": "endpoint", "op": "=", "value": ODD_ENDPOINT}]}))

    assert 'endpoint="/v1/it\'s \\"q\\"\\\\path"' in compiled.promql


def test_raw_promql_must_be_per_user(prometheus: PrometheusClient) -> None:
    query = 'sum by (endpoint) (increase(api_requests_total[1h]))'
    vector = prometheus.instant_query(query, at=NOW)

    with pytest.raises(PromQLError, match="without the 'user_id' label"):
        vector.values_by_label("user_id", query)


def test_raw_promql_duplicate_series_rejected(prometheus: PrometheusClient) -> None:
    query = 'increase(api_requests_total{user_id="searcher"}[1h])'
    vector = prometheus.instant_query(query, at=NOW)

    with pytest.raises(PromQLError, match="more than one series for user_id='searcher'"):
        vector.values_by_label("user_id", query)


def test_invalid_promql_error_has_position(prometheus: PrometheusClient) -> None:
    with pytest.raises(PromQLError) as caught:
        prometheus.instant_query("sum by (user_id) (rate(api_requests_total[5m])", at=NOW)

    assert caught.value.error_type == "bad_data"
    assert "1:" in str(caught.value)
    assert caught.value.query.startswith("sum by")


@pytest.mark.parametrize(("definition", "message"), [
    # an invalid regular expression is reported before Prometheus sees it
    ({"kind": "count", "metric": "m_total", "window": "1h", "op": ">", "threshold": 1,
      "matchers": [{"label": "status", "op": "=~", "value": "4(("}]}, "regular expression '4(('"),
    # a duration without a unit
    ({"kind": "count", "metric": "m_total", "window": "24", "op": ">", "threshold": 1}, "'24' is not a duration"),
    # the quiet window must be shorter than the active one
    ({"kind": "inactive", "metric": "m_total", "active_window": "1d", "quiet_window": "7d"}, "must be shorter"),
    # a label name with a dash
    ({"kind": "count", "metric": "m_total", "window": "1h", "op": ">", "threshold": 1,
      "matchers": [{"label": "user-id", "op": "=", "value": "x"}]}, "not a valid label name"),
    # an unknown kind
    ({"kind": "median", "metric": "m_total"}, "Unknown condition kind 'median'"),
])
def test_invalid_condition_rejected(definition: dict, message: str) -> None:
    with pytest.raises(RuleValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_condition(condition_from_dict(definition))


def test_down_prometheus_error_names_url() -> None:
    from tests.support.prometheus import free_port
    url = f"http://127.0.0.1:{free_port()}"
    from behavemail_core.errors import PrometheusUnavailableError
    with PrometheusClient(url, timeout=2) as client:
        with pytest.raises(PrometheusUnavailableError, match="Cannot connect to Prometheus at http://127.0.0.1"):
            client.instant_query("up")
