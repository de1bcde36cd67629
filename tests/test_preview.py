"""The rule preview: send policy replay, backtest counts, time ranges, and queries on a real Prometheus."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from behavemail_core.accounts import AccountDirectory
from behavemail_core.audience import AudienceFilter
from behavemail_core.conditions import condition_from_dict
from behavemail_core.errors import PromQLError
from behavemail_core.policy import in_holdout
from behavemail_core.preview import (MAX_RANGE_POINTS, TimeRange, backtest, compile_rule, count_matching,
                                     current_matches, hit_counts, matched_times_by_user, simulate_backtest,
                                     simulate_policy, time_range, uses_raw_promql, verify_query)
from behavemail_core.prometheus import PrometheusClient, RangeSeries
from behavemail_core.rules import COOLDOWN, ONCE_EVER, ONCE_PER_EPISODE, RuleSpec
from behavemail_core.settings import DEMO_ACCOUNTS_QUERY
from tests.support.app_data import ADA, GRACE, NOBODY

STEP = 300
FOUR_XX = {"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">", "threshold": 10,
           "matchers": [{"label": "status", "op": "=~", "value": "4.."}]}
FREE_PLAN = (AudienceFilter("plan", "=", "free"),)


def every_step(start: int, stop: int) -> list[float]:
    return [float(t) for t in range(start, stop, STEP)]


POLICY_CASES = [
    # once ever: only the first match
    (ONCE_EVER, None, every_step(0, 1500) + every_step(3000, 3600), [0.0]),
    # once per episode: a missing step ends the episode, the next match starts one
    (ONCE_PER_EPISODE, None, every_step(0, 1500) + every_step(3000, 3600), [0.0, 3000.0]),
    # once per episode: consecutive steps stay one episode
    (ONCE_PER_EPISODE, None, every_step(0, 3000), [0.0]),
    # cooldown: every 900 s while matching all the time
    (COOLDOWN, 900, every_step(0, 2400), [0.0, 900.0, 1800.0]),
    # cooldown: the first match after the cooldown, even after a gap
    (COOLDOWN, 1000, [0.0, 300.0, 5000.0, 5300.0], [0.0, 5000.0]),
    # no match, no trigger
    (ONCE_PER_EPISODE, None, [], []),
]


@pytest.mark.parametrize("policy, cooldown, times, expected", POLICY_CASES)
def test_simulate_policy(policy: str, cooldown: int | None, times: list[float], expected: list[float]) -> None:
    assert simulate_policy(times, policy=policy, cooldown_seconds=cooldown, step_seconds=STEP) == expected


def test_simulate_policy_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown send policy 'weekly'"):
        simulate_policy([0.0], policy="weekly", cooldown_seconds=None, step_seconds=STEP)


def spec(policy: str = ONCE_PER_EPISODE, audience: tuple[AudienceFilter, ...] = (), holdout: float = 0.0,
         cooldown: int | None = None) -> RuleSpec:
    return RuleSpec(name="r", condition=condition_from_dict(FOUR_XX), template=None, audience=audience,
                    send_policy=policy, cooldown_seconds=cooldown, holdout_percent=holdout)


WINDOW = TimeRange(start=datetime.fromtimestamp(0, timezone.utc),
                   end=datetime.fromtimestamp(10 * STEP, timezone.utc), step_seconds=STEP)
TWO_EPISODES = every_step(0, 900) + every_step(1800, 2400)


def test_backtest_counts_emails_and_customers() -> None:
    result = simulate_backtest({"a": TWO_EPISODES, "b": every_step(0, 300)},
                               {"a": {"plan": "free"}, "b": {"plan": "free"}}, spec(), WINDOW, rule_id=1)
    assert result.emails == 3
    assert result.customers == 2
    assert result.matched_users == 2


def test_backtest_skips_outside_audience_and_no_account() -> None:
    result = simulate_backtest({"a": TWO_EPISODES, "b": TWO_EPISODES, "c": TWO_EPISODES},
                               {"a": {"plan": "free"}, "b": {"plan": "pro"}}, spec(audience=FREE_PLAN),
                               WINDOW, rule_id=1)
    assert result.emails == 2
    assert result.outside_audience == 1
    assert result.no_account == 1


def test_backtest_judges_time_dependent_audience_per_step() -> None:
    # Signed up on day 0: "more than 10 days ago" is true from day 11 on.
    day = 86400
    window = TimeRange(start=datetime.fromtimestamp(0, timezone.utc),
                       end=datetime.fromtimestamp(20 * day, timezone.utc), step_seconds=day)
    signup = datetime.fromtimestamp(0, timezone.utc).date().isoformat()
    audience = (AudienceFilter("signup_date", "older_than_days", 10),)
    result = simulate_backtest({"a": [float(t * day) for t in range(20)]}, {"a": {"signup_date": signup}},
                               spec(policy=COOLDOWN, cooldown=day, audience=audience), window, rule_id=1)
    assert result.emails == 9  # days 11 to 19


def test_backtest_counts_control_group_separately() -> None:
    users = [f"user-{n}" for n in range(40)]
    control_group = [user for user in users if in_holdout(7, user, 50)]
    result = simulate_backtest({user: [0.0] for user in users}, {user: {} for user in users},
                               spec(policy=ONCE_EVER, holdout=50), WINDOW, rule_id=7)
    assert result.held_out == len(control_group)
    assert result.emails == len(users) - len(control_group)
    assert 0 < len(control_group) < len(users)


RANGE_CASES = [
    # seven days at a 5-minute check interval: the check interval is the step
    (7 * 86400, 300, 300),
    # thirty days at one minute would exceed Prometheus's points per series: widened
    (30 * 86400, 60, 260),
]


@pytest.mark.parametrize("range_seconds, interval, step", RANGE_CASES)
def test_time_range_step(range_seconds: int, interval: int, step: int) -> None:
    window = time_range(datetime(2025, 3, 1, 12, 7, 31, tzinfo=timezone.utc), range_seconds, interval)
    points = (window.end - window.start).total_seconds() / window.step_seconds + 1
    assert window.step_seconds == step
    assert points <= MAX_RANGE_POINTS + 1
    assert int(window.end.timestamp()) % step == 0


def test_matched_times_reject_duplicate_users() -> None:
    series = [RangeSeries({"user_id": "a", "status": "200"}, ((0.0, 1.0),)),
              RangeSeries({"user_id": "a", "status": "404"}, ((0.0, 1.0),))]
    with pytest.raises(PromQLError, match="more than one series for user_id='a'"):
        matched_times_by_user(series, user_label="user_id", query="q")


def test_uses_raw_promql() -> None:
    raw = condition_from_dict({"kind": "combine", "op": "and", "left": FOUR_XX,
                               "right": {"kind": "promql", "query": "up"}})
    assert uses_raw_promql(raw)
    assert not uses_raw_promql(condition_from_dict(FOUR_XX))


# Against the session's Prometheus and accounts database (tests/support/app_data.py).


@pytest.fixture(scope="module")
def prometheus(operator_world) -> PrometheusClient:
    with PrometheusClient(operator_world.prometheus.url) as client:
        yield client


@pytest.fixture(scope="module")
def accounts(operator_world) -> AccountDirectory:
    directory = AccountDirectory(operator_world.accounts_url, DEMO_ACCOUNTS_QUERY)
    yield directory
    directory.close()


def free_plan_rule() -> RuleSpec:
    return spec(audience=FREE_PLAN)


def test_compile_rule_sentence_and_promql() -> None:
    compiled = compile_rule(free_plan_rule(), user_label="user_id", scrape_interval_seconds=60)
    assert compiled.promql == 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
    assert compiled.sentence == ("Customers on the free plan who got more than 10 API requests with status 4xx "
                                 "in the last 24 hours, once each time they start matching.")


def test_current_matches_join_accounts(prometheus, accounts) -> None:
    promql = compile_rule(free_plan_rule(), user_label="user_id", scrape_interval_seconds=60).promql
    matches = current_matches(prometheus, accounts, promql, user_label="user_id", audience=FREE_PLAN,
                              now=datetime.now(timezone.utc))
    by_user = {row.user_id: row for row in matches.rows}
    assert set(by_user) == {ADA, GRACE, NOBODY}
    assert by_user[ADA].email == "ada@example.com"
    assert by_user[ADA].outside_audience is None
    assert "plan='pro'" in by_user[GRACE].outside_audience
    assert by_user[NOBODY].outside_audience == "no account in the accounts database"
    assert 30 < by_user[ADA].value < 50


def test_hit_counts_and_backtest(prometheus, accounts) -> None:
    rule = free_plan_rule()
    promql = compile_rule(rule, user_label="user_id", scrape_interval_seconds=60).promql
    window = time_range(datetime.now(timezone.utc), 7 * 86400, 300)
    counts = [count for _, count in hit_counts(prometheus, promql, window)]
    assert len(counts) == 7 * 86400 // 300 + 1
    assert counts[-1] == 3
    assert max(counts[: len(counts) // 2]) == 1  # ADA's burst five days ago
    result = backtest(prometheus, accounts, rule, promql, user_label="user_id", window=window)
    assert (result.emails, result.customers) == (2, 1)
    assert (result.outside_audience, result.no_account) == (1, 1)


def test_count_and_verify_query(prometheus) -> None:
    # ADA, GRACE and NOBODY; ALAN's few 4xx stay below the threshold.
    promql = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
    assert count_matching(prometheus, promql) == 3
    assert verify_query(prometheus, promql, user_label="user_id") == 3
    with pytest.raises(PromQLError, match="more than one series"):
        verify_query(prometheus, "increase(api_requests_total[1h])", user_label="user_id")
