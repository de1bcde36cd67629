"""One scheduler cycle: recover interrupted sends, then evaluate every due, enabled rule."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from . import heartbeat
from .evaluation import RuleReport, Services, evaluate_rule
from .goals import measure_due_goals
from .models import Rule

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    started_at: datetime
    rules: list[RuleReport] = field(default_factory=list)
    recovered: int = 0
    deferred: int = 0
    duration_ms: int = 0


# Cycles start a few milliseconds earlier or later than the previous claim's
# "now + interval". Without this slack, a rule due at 12:05:00.004 would wait for
# the cycle after the one that started at 12:05:00.000.
DUE_SLACK = timedelta(seconds=2)


def due_rule_ids(services: Services, now: datetime, *, all_enabled: bool = False) -> list[int]:
    """Return the enabled rules whose check interval has passed (or all enabled ones)."""
    query = select(Rule.id).where(Rule.enabled.is_(True), Rule.deleted_at.is_(None)).order_by(Rule.id)
    if not all_enabled:
        query = query.where(or_(Rule.next_due_at.is_(None), Rule.next_due_at <= now + DUE_SLACK))
    with services.sessions() as session:
        return list(session.scalars(query))


def claim_rule(services: Services, rule_id: int, now: datetime) -> bool:
    """Move the rule's next due time forward; only one of several schedulers wins.

    A Core UPDATE, not the ORM, so the rule's edit version stays untouched and an
    operator's save is never refused because the scheduler ran.
    """
    with services.sessions() as session, session.begin():
        interval = session.scalar(select(Rule.check_interval_seconds).where(Rule.id == rule_id)) or 300
        result = session.execute(
            update(Rule).where(Rule.id == rule_id, Rule.enabled.is_(True),
                               or_(Rule.next_due_at.is_(None), Rule.next_due_at <= now + DUE_SLACK))
            .values(next_due_at=now + timedelta(seconds=interval), last_evaluated_at=now)
            .execution_options(synchronize_session=False))
        return result.rowcount == 1


def run_cycle(services: Services, now: datetime, *, dry_run: bool = False,
              stale_after: timedelta = timedelta(minutes=10),
              deadline: float | None = None) -> CycleReport:
    """Evaluate every due rule once; a failing rule is logged and the others still run.

    A dry run evaluates every enabled rule, due or not, since it answers "who would
    get what now" and records nothing.

    ``deadline`` is a time.monotonic() value: rules not started by then stay due
    and run in the next cycle, so one slow cycle cannot delay the ones after it.
    """
    started = time.monotonic()
    report = CycleReport(started_at=now)
    if not dry_run:
        with services.sessions() as session:
            report.recovered = heartbeat.recover_interrupted_sends(session, services.scheduler_id, now,
                                                                   stale_after)
    due = due_rule_ids(services, now, all_enabled=dry_run)
    for position, rule_id in enumerate(due):
        if services.should_stop():
            break
        if deadline is not None and time.monotonic() > deadline:
            report.deferred = len(due) - position
            log.warning("cycle deadline passed: %d due rules left for the next cycle", report.deferred)
            break
        if not dry_run and not claim_rule(services, rule_id, now):
            log.info("rule claimed by another scheduler rule_id=%s", rule_id)
            continue
        try:
            report.rules.append(evaluate_rule(services, rule_id, now, dry_run=dry_run))
        except Exception:  # noqa: BLE001 - one broken rule must not stop the others
            log.exception("rule evaluation crashed rule_id=%s", rule_id)
    if not dry_run and not services.should_stop():
        _measure_goals(services, now)
    report.duration_ms = int((time.monotonic() - started) * 1000)
    log.info("cycle finished rules=%d recovered=%d duration_ms=%d%s", len(report.rules), report.recovered,
             report.duration_ms, " dry_run=true" if dry_run else "")
    return report


def _measure_goals(services: Services, now: datetime) -> None:
    """Measure the goals whose window closed; a failure here never stops the sending."""
    try:
        measure_due_goals(services.sessions, services.prometheus, services.settings, now)
    except Exception:  # noqa: BLE001 - goal measurement is retried next cycle
        log.exception("goal measurement failed; it is retried next cycle")
