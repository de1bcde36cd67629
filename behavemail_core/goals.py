"""Goal measurement: whether each customer reached the rule's goal in the goal window.

A rule's goal is a behavior condition (``rules.goal``), or by default "made at least
one API request": the increase of :data:`DEFAULT_GOAL_METRIC` over the window is
above zero. Held-out users (the control group) are measured the same way, from the
moment they were held out, so both groups are compared over windows of equal length.

Sends are measured in batches: the sends of one rule whose goal windows close in the
same :data:`BATCH_SECONDS` bucket share one instant query. The query is evaluated at
the bucket's end, or at ``now`` when the bucket has not ended yet. Its range reaches
back to the earliest send of the batch, so it covers the window of every send in the
batch, and a later send of the batch also sees at most one bucket of activity from
before it was sent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .compiler import compile_condition
from .conditions import (CombinedCondition, Condition, CountCondition, NeverUsedCondition,
                         RatioCondition, condition_from_dict)
from .errors import BehavemailError
from .models import HELD_OUT, SENT, Rule, Send
from .prometheus import PrometheusClient
from .promql import format_duration
from .settings import Settings

log = logging.getLogger(__name__)

# The counter of the default goal "made at least one API request". It is the request
# counter of the demo metrics. A rule whose API counts requests under another name
# needs an explicit goal.
DEFAULT_GOAL_METRIC = "api_requests_total"
DEFAULT_GOAL_WINDOW_SECONDS = 72 * 3600
# Sends whose goal windows close within the same bucket of this many seconds share one query.
BATCH_SECONDS = 300
# Due sends read per call. A larger backlog is measured over the following cycles.
MAX_SENDS_PER_RUN = 20_000
# Send ids per UPDATE ... WHERE id IN (...) statement.
_ID_CHUNK = 500


def default_goal() -> CountCondition:
    """Return the goal of a rule without one: at least one request counted by DEFAULT_GOAL_METRIC."""
    return CountCondition(metric=DEFAULT_GOAL_METRIC, window=format_duration(DEFAULT_GOAL_WINDOW_SECONDS),
                          op=">", threshold=0)


def goal_condition(goal: dict[str, Any] | None) -> Condition:
    """Build the goal condition from ``rules.goal``, or raise RuleValidationError when it is invalid."""
    return default_goal() if goal is None else condition_from_dict(goal)


def goal_over_range(condition: Condition, range_text: str) -> Condition:
    """Return ``condition`` with the window of every counter condition set to ``range_text``.

    Count, ratio and never-used conditions then measure the activity since the send.
    Gauge conditions are read at the end of the window. Activity-stopped conditions and
    raw PromQL keep the windows they were written with.
    """
    if isinstance(condition, (CountCondition, RatioCondition, NeverUsedCondition)):
        return replace(condition, window=range_text)
    if isinstance(condition, CombinedCondition):
        return replace(condition, left=goal_over_range(condition.left, range_text),
                       right=goal_over_range(condition.right, range_text))
    return condition


@dataclass(frozen=True)
class DueSend:
    """A sent or held-out row whose goal window has closed and that is not measured yet."""

    send_id: int
    rule_id: int
    user_id: str
    status: str
    # sent_at for a sent row, created_at (the hold-out decision) for a held-out row.
    started_at: datetime
    due_at: datetime


@dataclass(frozen=True)
class GoalBatch:
    """The due sends of one rule measured by one instant query at ``evaluated_at``."""

    rule_id: int
    evaluated_at: datetime
    sends: tuple[DueSend, ...]

    @property
    def range_seconds(self) -> int:
        """Seconds from the batch's earliest send to the evaluation time, at least one."""
        earliest = min(send.started_at for send in self.sends)
        return max(1, math.ceil((self.evaluated_at - earliest).total_seconds()))


@dataclass
class BatchResult:
    """The outcome of one goal batch: counts per group, or the error that left it unmeasured."""

    rule_id: int
    evaluated_at: datetime
    sends: int
    query: str = ""
    sent: int = 0
    sent_reached: int = 0
    held_out: int = 0
    held_out_reached: int = 0
    error: str | None = None


@dataclass
class GoalReport:
    """Every batch measured (or attempted) by one call of :func:`measure_due_goals`."""

    measured_at: datetime
    batches: list[BatchResult] = field(default_factory=list)
    duration_ms: int = 0

    @property
    def measured(self) -> int:
        return sum(batch.sends for batch in self.batches if batch.error is None)

    @property
    def reached(self) -> int:
        return sum(batch.sent_reached + batch.held_out_reached for batch in self.batches)

    @property
    def failed_batches(self) -> int:
        return sum(1 for batch in self.batches if batch.error is not None)


def measure_due_goals(sessions: sessionmaker[Session], prometheus: PrometheusClient, settings: Settings,
                      now: datetime, *, bucket_seconds: int = BATCH_SECONDS,
                      max_sends: int = MAX_SENDS_PER_RUN) -> GoalReport:
    """Measure the goal of every due, unmeasured sent or held-out row, one query per rule batch.

    A batch whose query fails (Prometheus down, an invalid goal) is logged with its
    rule id and left unmeasured, so the next call tries it again. Database errors
    propagate to the caller.
    """
    started = time.monotonic()
    report = GoalReport(measured_at=now)
    with sessions() as session:
        due = due_sends(session, now, limit=max_sends)
        goals = _rule_goals(session, {send.rule_id for send in due})

    for batch in group_batches(due, now, bucket_seconds):
        result = _measure_batch(sessions, prometheus, settings, batch, goals.get(batch.rule_id), now)
        report.batches.append(result)

    report.duration_ms = int((time.monotonic() - started) * 1000)
    if report.batches:
        log.info("goals measured batches=%d sends=%d reached=%d failed_batches=%d duration_ms=%d",
                 len(report.batches), report.measured, report.reached, report.failed_batches,
                 report.duration_ms)
    return report


def due_sends(session: Session, now: datetime, *, limit: int = MAX_SENDS_PER_RUN) -> list[DueSend]:
    """Read up to ``limit`` sent or held-out rows due by ``now`` and not measured, oldest due first."""
    started_at = func.coalesce(Send.sent_at, Send.created_at)
    rows = session.execute(
        select(Send.id, Send.rule_id, Send.user_id, Send.status, started_at, Send.goal_due_at)
        .where(Send.goal_due_at <= now, Send.goal_measured_at.is_(None),
               Send.status.in_((SENT, HELD_OUT)))
        .order_by(Send.goal_due_at, Send.id)
        .limit(limit))
    return [DueSend(send_id=row[0], rule_id=row[1], user_id=row[2], status=row[3],
                    started_at=_as_utc(row[4]), due_at=row[5]) for row in rows]


def group_batches(sends: Iterable[DueSend], now: datetime, bucket_seconds: int = BATCH_SECONDS) -> list[GoalBatch]:
    """Group due sends by rule and by the bucket their windows close in, in rule and time order."""
    grouped: dict[tuple[int, datetime], list[DueSend]] = {}
    for send in sends:
        evaluated_at = min(bucket_end(send.due_at, bucket_seconds), now)
        grouped.setdefault((send.rule_id, evaluated_at), []).append(send)
    return [GoalBatch(rule_id=rule_id, evaluated_at=evaluated_at, sends=tuple(members))
            for (rule_id, evaluated_at), members in sorted(grouped.items(), key=lambda item: item[0])]


def bucket_end(at: datetime, bucket_seconds: int) -> datetime:
    """Return the end of the bucket that ``at`` falls in. A time on a bucket boundary ends its own bucket."""
    timestamp = at.timestamp()
    end = math.ceil(timestamp / bucket_seconds) * bucket_seconds
    return datetime.fromtimestamp(end, timezone.utc)


def _rule_goals(session: Session, rule_ids: set[int]) -> dict[int, dict[str, Any] | None]:
    if not rule_ids:
        return {}
    rows = session.execute(select(Rule.id, Rule.goal).where(Rule.id.in_(sorted(rule_ids))))
    return {rule_id: goal for rule_id, goal in rows}


def _measure_batch(sessions: sessionmaker[Session], prometheus: PrometheusClient, settings: Settings,
                   batch: GoalBatch, goal: dict[str, Any] | None, now: datetime) -> BatchResult:
    started = time.monotonic()
    result = BatchResult(rule_id=batch.rule_id, evaluated_at=batch.evaluated_at, sends=len(batch.sends))
    try:
        condition = goal_over_range(goal_condition(goal), format_duration(batch.range_seconds))
        compiled = compile_condition(condition, user_label=settings.user_label,
                                     scrape_interval_seconds=settings.scrape_interval)
        result.query = compiled.promql
        vector = prometheus.instant_query(compiled.promql, at=batch.evaluated_at)
        reached_users = set(vector.values_by_label(settings.user_label, query=compiled.promql))
    except BehavemailError as exc:
        result.error = str(exc)
        log.error("goal measurement failed rule_id=%s evaluated_at=%s sends=%d query=%r error=%s",
                  batch.rule_id, batch.evaluated_at.isoformat(), len(batch.sends), result.query, exc)
        return result

    reached = [send for send in batch.sends if send.user_id in reached_users]
    missed = [send for send in batch.sends if send.user_id not in reached_users]
    _record(sessions, [send.send_id for send in reached], [send.send_id for send in missed], now)
    _count_groups(result, reached, missed)
    log.info("goal batch measured rule_id=%s evaluated_at=%s range=%s sent=%d sent_reached=%d "
             "held_out=%d held_out_reached=%d duration_ms=%d", batch.rule_id,
             batch.evaluated_at.isoformat(), format_duration(batch.range_seconds), result.sent,
             result.sent_reached, result.held_out, result.held_out_reached,
             int((time.monotonic() - started) * 1000))
    return result


def _record(sessions: sessionmaker[Session], reached_ids: Sequence[int], missed_ids: Sequence[int],
            now: datetime) -> None:
    """Store the results. A row that another scheduler measured meanwhile keeps its result."""
    with sessions.begin() as session:
        for ids, reached in ((reached_ids, True), (missed_ids, False)):
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = list(ids[start:start + _ID_CHUNK])
                session.execute(update(Send)
                                .where(Send.id.in_(chunk), Send.goal_measured_at.is_(None))
                                .values(goal_reached=reached, goal_measured_at=now)
                                .execution_options(synchronize_session=False))


def _count_groups(result: BatchResult, reached: Sequence[DueSend], missed: Sequence[DueSend]) -> None:
    for send in reached:
        if send.status == HELD_OUT:
            result.held_out += 1
            result.held_out_reached += 1
        else:
            result.sent += 1
            result.sent_reached += 1
    for send in missed:
        if send.status == HELD_OUT:
            result.held_out += 1
        else:
            result.sent += 1


def _as_utc(value: datetime) -> datetime:
    # COALESCE loses the UTC column type, so SQLite returns its stored text's naive datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
