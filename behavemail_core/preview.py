"""Rule preview for the rule builder: PromQL, sentence, current matches, hit counts and a backtest.

Everything the builder shows next to a rule comes from here, so the Rules screen
never builds PromQL itself:

- :func:`compile_rule` turns a RuleSpec into its PromQL and its plain sentence;
- :func:`current_matches` runs the query now and joins the accounts (with emails);
- :func:`hit_counts` counts the matching users at each step of a range query;
- :func:`backtest` replays the send policy over the per-user range query, to tell
  how many emails the rule would have sent over that range.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from .accounts import AccountDirectory
from .audience import AudienceFilter, audience_mismatch
from .compiler import compile_condition
from .conditions import CombinedCondition, Condition, PromQLCondition
from .describe import describe_policy, describe_rule
from .errors import PromQLError
from .policy import in_holdout
from .prometheus import PrometheusClient, RangeSeries
from .rules import COOLDOWN, ONCE_EVER, ONCE_PER_EPISODE, RuleSpec

log = logging.getLogger(__name__)

# Prometheus rejects range queries with more than 11,000 points per series.
MAX_RANGE_POINTS = 10_000
# The matches table looks up accounts for at most this many users, highest values first.
MAX_PREVIEW_USERS = 5_000
# Audience operators whose result depends on the evaluation time.
TIME_DEPENDENT_OPERATORS = ("within_days", "older_than_days")


@dataclass(frozen=True)
class CompiledRule:
    """A rule's PromQL query, the compiler's notes and the rule read as a sentence."""

    promql: str
    notes: tuple[str, ...]
    sentence: str


def compile_rule(spec: RuleSpec, *, user_label: str, scrape_interval_seconds: int) -> CompiledRule:
    """Compile and describe a rule; raise RuleValidationError when it is invalid."""
    compiled = compile_condition(spec.condition, user_label=user_label,
                                 scrape_interval_seconds=scrape_interval_seconds)
    policy_text = describe_policy(spec.send_policy, spec.cooldown_seconds)
    sentence = describe_rule(spec.condition, spec.audience, policy_text)
    return CompiledRule(promql=compiled.promql, notes=compiled.notes, sentence=sentence)


def uses_raw_promql(condition: Condition) -> bool:
    """Return whether any part of the condition is PromQL written by hand."""
    if isinstance(condition, PromQLCondition):
        return True
    if isinstance(condition, CombinedCondition):
        return uses_raw_promql(condition.left) or uses_raw_promql(condition.right)
    return False


def query_values(prometheus: PrometheusClient, promql: str, *, user_label: str,
                 at: datetime | None = None) -> dict[str, float]:
    """Run a rule's query and map each user to its value.

    Raises PromQLError with Prometheus's message (a parse error names its position,
    e.g. "1:15: parse error") or with the reason why the result is not one series
    per user.
    """
    vector = prometheus.instant_query(promql, at=at)
    return vector.values_by_label(user_label, query=promql)


def verify_query(prometheus: PrometheusClient, promql: str, *, user_label: str) -> int:
    """Check that a query runs now and returns one series per user; return the number of users."""
    values = query_values(prometheus, promql, user_label=user_label)
    log.info("query verified users=%d query=%r", len(values), promql)
    return len(values)


def count_matching(prometheus: PrometheusClient, promql: str, *, at: datetime | None = None) -> int:
    """Return how many series (users) a rule's query matches at ``at`` (default: now)."""
    vector = prometheus.instant_query(_count_query(promql), at=at)
    return int(vector.samples[0].value) if vector.samples else 0


@dataclass(frozen=True)
class Match:
    """One user the rule's query matches now, with the account row when one exists.

    ``outside_audience`` is the reason the audience filter excludes the user, or None.
    """

    user_id: str
    value: float
    account: Mapping[str, Any] | None
    outside_audience: str | None = None

    @property
    def email(self) -> str | None:
        return None if self.account is None else self.account.get("email")


@dataclass(frozen=True)
class CurrentMatches:
    """The users the query matches now; ``rows`` contains at most MAX_PREVIEW_USERS of ``total``."""

    total: int
    rows: tuple[Match, ...]

    @property
    def truncated(self) -> bool:
        return len(self.rows) < self.total

    @property
    def in_audience(self) -> tuple[Match, ...]:
        return tuple(row for row in self.rows if row.outside_audience is None)


def current_matches(prometheus: PrometheusClient, accounts: AccountDirectory, promql: str, *,
                    user_label: str, audience: Sequence[AudienceFilter], now: datetime,
                    limit: int = MAX_PREVIEW_USERS) -> CurrentMatches:
    """Run the query at ``now``, look up the accounts and apply the audience filter.

    Users are ordered by value, highest first. Accounts are looked up for the first
    ``limit`` users only, so a rule that matches millions stays quick to preview.
    """
    values = query_values(prometheus, promql, user_label=user_label, at=now)
    ordered = sorted(values.items(), key=lambda item: (-item[1], item[0]))[:limit]
    found = accounts.lookup(user for user, _ in ordered) if ordered else {}
    rows = []
    for user_id, value in ordered:
        account = found.get(user_id)
        if account is None:
            reason = "no account in the accounts database"
        else:
            reason = audience_mismatch(audience, account, now)
        rows.append(Match(user_id=user_id, value=value, account=account, outside_audience=reason))
    return CurrentMatches(total=len(values), rows=tuple(rows))


@dataclass(frozen=True)
class TimeRange:
    """The evaluation times of a range query: ``start`` to ``end`` every ``step_seconds``."""

    start: datetime
    end: datetime
    step_seconds: int


def time_range(now: datetime, range_seconds: int, check_interval_seconds: int) -> TimeRange:
    """Choose the range that ends at ``now``, stepping by the rule's check interval.

    The step is the check interval, so the chart and the backtest evaluate the rule
    as often as the scheduler would. A range that would need more than
    MAX_RANGE_POINTS points gets a wider step. Both ends fall on whole steps, so repeated previews within
    one step ask Prometheus the same query.
    """
    step = max(check_interval_seconds, math.ceil(range_seconds / MAX_RANGE_POINTS), 1)
    end = int(now.timestamp()) // step * step
    start = end - range_seconds // step * step
    return TimeRange(start=datetime.fromtimestamp(start, timezone.utc),
                     end=datetime.fromtimestamp(end, timezone.utc), step_seconds=step)


def hit_counts(prometheus: PrometheusClient, promql: str, window: TimeRange) -> list[tuple[datetime, int]]:
    """Count the users the query matches at every step of ``window`` (0 where none match)."""
    series = prometheus.range_query(_count_query(promql), window.start, window.end, window.step_seconds)
    counts: dict[int, int] = {}
    for item in series:
        for timestamp, value in item.points:
            counts[round(timestamp)] = int(value)
    return [(datetime.fromtimestamp(t, timezone.utc), counts.get(t, 0)) for t in _steps(window)]


def _steps(window: TimeRange) -> range:
    return range(int(window.start.timestamp()), int(window.end.timestamp()) + 1, window.step_seconds)


def _count_query(promql: str) -> str:
    # Newlines keep the closing bracket out of a trailing "# comment" in hand-written PromQL.
    return f"count(\n{promql}\n)"


@dataclass(frozen=True)
class Backtest:
    """The replay of a rule over a past range, as if it had been enabled throughout.

    ``emails`` is the number of emails sent and ``customers`` the number of users who
    got at least one. ``held_out`` counts triggers that went to the control group
    instead. ``outside_audience`` counts users the condition matched who never passed
    the audience filter, and ``no_account`` users with no row in the accounts database.
    """

    window: TimeRange
    emails: int
    customers: int
    held_out: int
    matched_users: int
    outside_audience: int
    no_account: int


def simulate_policy(times: Sequence[float], *, policy: str, cooldown_seconds: int | None,
                    step_seconds: int) -> list[float]:
    """Return the evaluation times at which the send policy triggers for one user.

    ``times`` are the sorted evaluation times at which the user matched. Once ever
    triggers at the first match. Once per episode triggers at the start of every run
    of consecutive matches. A missing step ends the episode, because the scheduler
    closes an episode when an evaluation no longer finds the user. A cooldown triggers at the first match and
    then at the first match at least ``cooldown_seconds`` after the previous trigger.
    """
    if not times:
        return []
    if policy == ONCE_EVER:
        return [times[0]]
    if policy == ONCE_PER_EPISODE:
        # Half a step of slack absorbs float timestamps such as 1700000000.001.
        gap = step_seconds * 1.5
        return [times[0]] + [current for previous, current in zip(times, times[1:])
                             if current - previous > gap]
    if policy == COOLDOWN:
        if not cooldown_seconds:
            raise ValueError("the cooldown policy needs cooldown_seconds")
        triggers: list[float] = []
        for moment in times:
            if not triggers or moment - triggers[-1] >= cooldown_seconds:
                triggers.append(moment)
        return triggers
    raise ValueError(f"unknown send policy {policy!r}")


def simulate_backtest(times_by_user: Mapping[str, Sequence[float]], accounts: Mapping[str, Mapping[str, Any]],
                      spec: RuleSpec, window: TimeRange, *, rule_id: int | None) -> Backtest:
    """Replay the audience filter, the send policy and the control group over matched times.

    The replay starts with no send history, as if the rule had been created at the
    start of the range. A user without an account gets no email (the scheduler
    records a failed send for them). An unsaved rule has no id yet, so its control
    group is drawn as for rule id 0: the same share, not the same users.
    NOTE: suppressions (unsubscribes, bounces) are not replayed, so the count is an
    upper bound for users who opted out.
    """
    emails = customers = held_out = outside = no_account = 0
    for user_id in sorted(times_by_user):
        times = sorted(times_by_user[user_id])
        account = accounts.get(user_id)
        if account is None:
            no_account += 1
            continue
        eligible = _times_in_audience(times, spec.audience, account)
        if not eligible:
            outside += 1
            continue
        triggers = simulate_policy(eligible, policy=spec.send_policy, cooldown_seconds=spec.cooldown_seconds,
                                   step_seconds=window.step_seconds)
        if in_holdout(rule_id or 0, user_id, spec.holdout_percent):
            held_out += len(triggers)
        else:
            emails += len(triggers)
            customers += 1
    return Backtest(window=window, emails=emails, customers=customers, held_out=held_out,
                    matched_users=len(times_by_user), outside_audience=outside, no_account=no_account)


def _times_in_audience(times: list[float], audience: Sequence[AudienceFilter],
                       account: Mapping[str, Any]) -> list[float]:
    if not audience:
        return times
    if not any(item.op in TIME_DEPENDENT_OPERATORS for item in audience):
        # The verdict is the same at every step, so judge once.
        passes = audience_mismatch(audience, account, datetime.fromtimestamp(times[0], timezone.utc)) is None
        return times if passes else []
    return [t for t in times
            if audience_mismatch(audience, account, datetime.fromtimestamp(t, timezone.utc)) is None]


def backtest(prometheus: PrometheusClient, accounts: AccountDirectory, spec: RuleSpec, promql: str, *,
             user_label: str, window: TimeRange, rule_id: int | None = None) -> Backtest:
    """Run the per-user range query over ``window`` and replay the rule on it."""
    series = prometheus.range_query(promql, window.start, window.end, window.step_seconds)
    times_by_user = matched_times_by_user(series, user_label=user_label, query=promql)
    found = accounts.lookup(times_by_user) if times_by_user else {}
    result = simulate_backtest(times_by_user, found, spec, window, rule_id=rule_id)
    log.info("backtest rule=%r start=%s end=%s step=%d matched_users=%d emails=%d held_out=%d",
             spec.name, window.start.isoformat(), window.end.isoformat(), window.step_seconds,
             result.matched_users, result.emails, result.held_out)
    return result


def matched_times_by_user(series: Iterable[RangeSeries], *, user_label: str,
                          query: str) -> dict[str, list[float]]:
    """Map each user to the evaluation times at which the query returned a value for them."""
    times_by_user: dict[str, list[float]] = {}
    for item in series:
        user_id = item.labels.get(user_label)
        if user_id is None:
            raise PromQLError(
                f"The query returns a series without the {user_label!r} label ({dict(item.labels)}): "
                f"aggregate it with sum by ({user_label}) (...)", query=query)
        if user_id in times_by_user:
            raise PromQLError(
                f"The query returns more than one series for {user_label}={user_id!r}: "
                f"aggregate it with sum by ({user_label}) (...) or max by ({user_label}) (...)", query=query)
        times_by_user[user_id] = [timestamp for timestamp, _ in item.points]
    return times_by_user
