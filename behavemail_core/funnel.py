"""The funnel of the dashboard: from triggered users to the goal, per rule and overall.

Every figure is aggregated in SQL (COUNT and SUM(CASE ...) with GROUP BY) and works
on SQLite and PostgreSQL. A period selects the sends created (triggered) in it, and
the funnel follows what happened to those sends afterwards, even after the period's
end. Days are UTC days.

Steps: triggered (every send row) -> sent -> delivered -> opened -> clicked -> goal
reached. A send counts as delivered when a delivery event arrived, or when an open or
a click proves it reached the mailbox, because SMTP and the outbox report no delivery
events. Opened counts human opens and clicks. Machine opens (mail privacy proxies,
prefetching scanners) are counted apart and open nothing in the funnel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Date, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from .models import FAILED, HELD_OUT, PENDING, SENT, SUPPRESSED, Evaluation, Rule, Send

# Two-sided 95 % quantile of the standard normal distribution.
Z_95 = 1.959963984540054
# The normal approximation of the z-test and the interval needs about this many
# reached and this many not-reached users in each group (a common rule of thumb).
MIN_OUTCOMES_PER_GROUP = 5


@dataclass(frozen=True)
class Period:
    """A half-open time range [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Period needs timezone-aware datetimes: attach tzinfo=timezone.utc")
        if self.end <= self.start:
            raise ValueError(f"Period end {self.end.isoformat()} is not after its start {self.start.isoformat()}")

    @classmethod
    def for_days(cls, first_day: date, last_day: date) -> Period:
        """Return the period from the start of ``first_day`` to the end of ``last_day``, both UTC days."""
        start = datetime.combine(first_day, datetime.min.time(), timezone.utc)
        end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), timezone.utc)
        return cls(start, end)

    @classmethod
    def last_days(cls, now: datetime, days: int) -> Period:
        """Return the last ``days`` UTC days up to and including the day of ``now``."""
        today = now.astimezone(timezone.utc).date()
        return cls.for_days(today - timedelta(days=days - 1), today)

    def days(self) -> list[date]:
        """Return every UTC day the period touches, in order."""
        first = self.start.astimezone(timezone.utc).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(timezone.utc).date()
        return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


@dataclass(frozen=True)
class SendCounts:
    """Counts of one rule's (or all rules') sends created in a period."""

    triggered: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    machine_opened_only: int = 0
    clicked: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    spam_reported: int = 0
    failed: int = 0
    suppressed: int = 0
    held_out: int = 0
    pending: int = 0
    sent_goal_measured: int = 0
    sent_goal_reached: int = 0
    held_out_goal_measured: int = 0
    held_out_goal_reached: int = 0

    def __add__(self, other: SendCounts) -> SendCounts:
        return SendCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class FunnelStep:
    """One step of the funnel, with the step its conversion is computed against."""

    name: str
    count: int
    base_name: str | None = None
    base_count: int | None = None

    @property
    def conversion_percent(self) -> float | None:
        """The share of the base step that reached this step, or None without a base."""
        if not self.base_count:
            return None
        return 100.0 * self.count / self.base_count


@dataclass(frozen=True)
class HoldoutComparison:
    """Goal rates of sent users and of the control group, the lift and a two-proportion z-test."""

    sent_measured: int
    sent_reached: int
    held_out_measured: int
    held_out_reached: int

    @property
    def sent_rate(self) -> float | None:
        return _rate(self.sent_reached, self.sent_measured)

    @property
    def held_out_rate(self) -> float | None:
        return _rate(self.held_out_reached, self.held_out_measured)

    @property
    def lift_points(self) -> float | None:
        """Sent rate minus control rate, in percentage points."""
        if self.sent_rate is None or self.held_out_rate is None:
            return None
        return 100.0 * (self.sent_rate - self.held_out_rate)

    @property
    def lift_relative_percent(self) -> float | None:
        """The lift relative to the control rate, in percent; None when the control rate is 0."""
        if self.lift_points is None or not self.held_out_rate:
            return None
        return self.lift_points / self.held_out_rate

    @property
    def z_score(self) -> float | None:
        """The pooled two-proportion z statistic; None without both groups or without variance."""
        if not self.sent_measured or not self.held_out_measured:
            return None
        pooled = (self.sent_reached + self.held_out_reached) / (self.sent_measured + self.held_out_measured)
        variance = pooled * (1 - pooled) * (1 / self.sent_measured + 1 / self.held_out_measured)
        if variance <= 0:
            return None
        return (self.sent_rate - self.held_out_rate) / math.sqrt(variance)

    @property
    def p_value(self) -> float | None:
        """The two-sided p-value of the z-test (normal approximation)."""
        if self.z_score is None:
            return None
        return math.erfc(abs(self.z_score) / math.sqrt(2))

    @property
    def confidence_interval_points(self) -> tuple[float, float] | None:
        """The 95 % Wald interval of the lift, in percentage points."""
        if self.lift_points is None:
            return None
        p1, p2 = self.sent_rate, self.held_out_rate
        error = math.sqrt(p1 * (1 - p1) / self.sent_measured + p2 * (1 - p2) / self.held_out_measured)
        margin = 100.0 * Z_95 * error
        return (self.lift_points - margin, self.lift_points + margin)

    @property
    def enough_data(self) -> bool:
        """Whether each group has enough reached and not-reached users for the normal approximation."""
        outcomes = (self.sent_reached, self.sent_measured - self.sent_reached,
                    self.held_out_reached, self.held_out_measured - self.held_out_reached)
        return min(outcomes) >= MIN_OUTCOMES_PER_GROUP


@dataclass(frozen=True)
class RuleFunnel:
    """The counts and the holdout comparison of one rule."""

    rule_id: int
    rule_name: str
    deleted: bool
    holdout_percent: float
    counts: SendCounts

    @property
    def comparison(self) -> HoldoutComparison:
        return comparison_of(self.counts)


@dataclass(frozen=True)
class Funnel:
    """The funnel of a period, overall or for one rule."""

    counts: SendCounts
    # The comparison covers only rules with a measured control group in the period,
    # so rules without one do not weigh on the sent users' rate.
    comparison: HoldoutComparison

    @property
    def steps(self) -> list[FunnelStep]:
        counts = self.counts
        return [
            FunnelStep("Triggered", counts.triggered),
            FunnelStep("Sent", counts.sent, "Triggered", counts.triggered),
            FunnelStep("Delivered", counts.delivered, "Sent", counts.sent),
            FunnelStep("Opened", counts.opened, "Delivered", counts.delivered),
            FunnelStep("Clicked", counts.clicked, "Opened", counts.opened),
            # Reaching the goal does not need a click, so its base is every measured sent email.
            FunnelStep("Goal reached", counts.sent_goal_reached, "Sent, goal measured", counts.sent_goal_measured),
        ]


@dataclass(frozen=True)
class DailyActivity:
    """Counts of one UTC day, each by the day the thing happened."""

    day: date
    triggered: int = 0
    sent: int = 0
    opened: int = 0
    machine_opened: int = 0
    clicked: int = 0


@dataclass(frozen=True)
class EvaluationSummary:
    """One evaluation of one rule that triggered users or failed."""

    evaluation_id: int
    evaluated_at: datetime
    rule_id: int
    rule_name: str
    matched: int
    triggered: int
    sent: int
    held_out: int
    suppressed: int
    failed: int
    error: str | None


def day_bucket(column: Any, dialect_name: str) -> ColumnElement[Any]:
    """Return a SQL expression for the UTC day of a UTC timestamp column.

    SQLite stores these columns as UTC text, PostgreSQL as timestamptz, which is
    converted to UTC before it is truncated. Other databases get CAST(... AS DATE).
    """
    if dialect_name == "sqlite":
        return func.strftime("%Y-%m-%d", column)
    if dialect_name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return cast(column, Date)


def rule_funnels(session: Session, period: Period, rule_id: int | None = None) -> list[RuleFunnel]:
    """Return the counts of every rule with sends created in the period, by rule name."""
    counts = _count_columns()
    statement = (select(Rule.id, Rule.name, Rule.deleted_at, Rule.holdout_percent, *counts)
                 .join(Rule, Rule.id == Send.rule_id)
                 .where(*_send_filters(period, rule_id))
                 .group_by(Rule.id, Rule.name, Rule.deleted_at, Rule.holdout_percent)
                 .order_by(Rule.name))
    result = []
    for row in session.execute(statement):
        values = {name: int(row._mapping[name] or 0) for name in _COUNT_NAMES}
        result.append(RuleFunnel(rule_id=row[0], rule_name=row[1], deleted=row[2] is not None,
                                 holdout_percent=row[3] or 0.0, counts=SendCounts(**values)))
    return result


def funnel(session: Session, period: Period, rule_id: int | None = None) -> Funnel:
    """Return the funnel of the period, overall or for one rule."""
    return funnel_of(rule_funnels(session, period, rule_id))


def funnel_of(rules: Sequence[RuleFunnel]) -> Funnel:
    """Sum per-rule counts into one funnel; the comparison keeps only rules with a control group."""
    total = sum((rule.counts for rule in rules), SendCounts())
    controlled = sum((rule.counts for rule in rules if rule.counts.held_out_goal_measured), SendCounts())
    return Funnel(counts=total, comparison=comparison_of(controlled))


def comparison_of(counts: SendCounts) -> HoldoutComparison:
    return HoldoutComparison(sent_measured=counts.sent_goal_measured, sent_reached=counts.sent_goal_reached,
                             held_out_measured=counts.held_out_goal_measured,
                             held_out_reached=counts.held_out_goal_reached)


def daily_activity(session: Session, period: Period, rule_id: int | None = None) -> list[DailyActivity]:
    """Return triggered users, sent emails, opens and clicks per UTC day, every day of the period."""
    per_column = {
        "triggered": _count_per_day(session, Send.created_at, period, rule_id),
        "sent": _count_per_day(session, Send.sent_at, period, rule_id, Send.status == SENT),
        "opened": _count_per_day(session, Send.opened_at, period, rule_id),
        "machine_opened": _count_per_day(session, Send.machine_opened_at, period, rule_id),
        "clicked": _count_per_day(session, Send.clicked_at, period, rule_id),
    }
    return [DailyActivity(day=day, **{name: counts.get(day, 0) for name, counts in per_column.items()})
            for day in period.days()]


def triggered_per_day(session: Session, period: Period, rule_id: int | None = None) -> list[tuple[date, str, int]]:
    """Return (UTC day, rule name, users triggered) from the evaluations of the period."""
    day = day_bucket(Evaluation.evaluated_at, _dialect(session)).label("day")
    statement = (select(day, Rule.name, func.sum(Evaluation.triggered))
                 .join(Rule, Rule.id == Evaluation.rule_id)
                 .where(*_evaluation_filters(period, rule_id), Evaluation.triggered > 0)
                 .group_by(day, Rule.name)
                 .order_by(day, Rule.name))
    return [(_as_date(row[0]), row[1], int(row[2])) for row in session.execute(statement)]


def evaluation_summaries(session: Session, period: Period, rule_id: int | None = None, *,
                         limit: int = 200) -> list[EvaluationSummary]:
    """Return the latest evaluations of the period that triggered users or failed, newest first."""
    statement = (select(Evaluation, Rule.name)
                 .join(Rule, Rule.id == Evaluation.rule_id)
                 .where(*_evaluation_filters(period, rule_id),
                        (Evaluation.triggered > 0) | Evaluation.error.is_not(None))
                 .order_by(Evaluation.evaluated_at.desc(), Rule.name)
                 .limit(limit))
    return [EvaluationSummary(evaluation_id=evaluation.id, evaluated_at=evaluation.evaluated_at,
                              rule_id=evaluation.rule_id, rule_name=name, matched=evaluation.matched,
                              triggered=evaluation.triggered, sent=evaluation.sent, held_out=evaluation.held_out,
                              suppressed=evaluation.suppressed, failed=evaluation.failed, error=evaluation.error)
            for evaluation, name in session.execute(statement)]


# SQL building blocks


def _count_columns() -> list[ColumnElement[Any]]:
    is_sent = Send.status == SENT
    human_open = Send.opened_at.is_not(None) | Send.clicked_at.is_not(None)
    any_open = human_open | Send.machine_opened_at.is_not(None)
    conditions = {
        "sent": is_sent,
        "delivered": is_sent & (Send.delivered_at.is_not(None) | any_open),
        "opened": is_sent & human_open,
        "machine_opened_only": is_sent & Send.machine_opened_at.is_not(None) & ~human_open,
        "clicked": is_sent & Send.clicked_at.is_not(None),
        "bounced": is_sent & Send.bounced_at.is_not(None),
        "unsubscribed": is_sent & Send.unsubscribed_at.is_not(None),
        "spam_reported": is_sent & Send.spam_reported_at.is_not(None),
        "failed": Send.status == FAILED,
        "suppressed": Send.status == SUPPRESSED,
        "held_out": Send.status == HELD_OUT,
        "pending": Send.status == PENDING,
        "sent_goal_measured": is_sent & Send.goal_measured_at.is_not(None),
        "sent_goal_reached": is_sent & Send.goal_measured_at.is_not(None) & Send.goal_reached.is_(True),
        "held_out_goal_measured": (Send.status == HELD_OUT) & Send.goal_measured_at.is_not(None),
        "held_out_goal_reached": ((Send.status == HELD_OUT) & Send.goal_measured_at.is_not(None)
                                  & Send.goal_reached.is_(True)),
    }
    sums = [func.sum(case((condition, 1), else_=0)).label(name) for name, condition in conditions.items()]
    return [func.count().label("triggered"), *sums]


_COUNT_NAMES = tuple(f.name for f in fields(SendCounts))


def _send_filters(period: Period, rule_id: int | None) -> list[ColumnElement[bool]]:
    filters = [Send.created_at >= period.start, Send.created_at < period.end]
    if rule_id is not None:
        filters.append(Send.rule_id == rule_id)
    return filters


def _evaluation_filters(period: Period, rule_id: int | None) -> list[ColumnElement[bool]]:
    filters = [Evaluation.evaluated_at >= period.start, Evaluation.evaluated_at < period.end]
    if rule_id is not None:
        filters.append(Evaluation.rule_id == rule_id)
    return filters


def _count_per_day(session: Session, column: Any, period: Period, rule_id: int | None,
                   *extra: ColumnElement[bool]) -> dict[date, int]:
    day = day_bucket(column, _dialect(session)).label("day")
    filters: list[ColumnElement[bool]] = [column >= period.start, column < period.end, *extra]
    if rule_id is not None:
        filters.append(Send.rule_id == rule_id)
    statement = select(day, func.count()).select_from(Send).where(*filters).group_by(day)
    return {_as_date(value): int(count) for value, count in session.execute(statement)}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _rate(reached: int, measured: int) -> float | None:
    return reached / measured if measured else None


def holdout_verdict(comparison: HoldoutComparison) -> str:
    """Call the lift significant only when the test, the interval and the sample size all agree.

    The z-test pools both groups while the interval does not, so near 5 % they can
    disagree; with too few users neither is reliable.
    """
    interval = comparison.confidence_interval_points
    excludes_zero = interval is not None and (interval[0] > 0 or interval[1] < 0)
    if not comparison.enough_data:
        return "too few users to judge"
    if comparison.p_value < 0.05 and excludes_zero:
        return "significant at 5 %"
    if comparison.p_value < 0.05:
        return "borderline: the interval still includes no lift"
    return "not significant at 5 %"
