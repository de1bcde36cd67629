"""The rules list of the operator app: each rule's state, last evaluation and recent sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import RuleValidationError
from .models import SENT, Evaluation, Send
from .rule_store import list_rules, spec_from_row
from .rules import RuleSpec

RECENT_SENDS_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class RuleSummary:
    """One row of the rules list.

    ``last_matched`` is the number of users the last evaluation matched, and
    ``last_error`` its error, if it failed. ``sent_recently`` counts emails sent in
    the last RECENT_SENDS_WINDOW. ``spec`` is None when the stored definition no
    longer validates, and ``problem`` then contains the reason.
    """

    rule_id: int
    name: str
    enabled: bool
    template: str | None
    version: int
    last_evaluated_at: datetime | None
    last_matched: int | None
    last_error: str | None
    sent_recently: int
    spec: RuleSpec | None = None
    problem: str | None = None


def summarize_rules(session: Session, now: datetime) -> list[RuleSummary]:
    """List every rule that is not deleted, by name, with its last evaluation and recent sends."""
    rules = list_rules(session)
    last = _last_evaluations(session)
    sent = _recent_sent_counts(session, now - RECENT_SENDS_WINDOW)
    summaries = []
    for rule in rules:
        evaluation = last.get(rule.id)
        try:
            spec, problem = spec_from_row(rule), None
        except RuleValidationError as exc:
            spec, problem = None, str(exc)
        summaries.append(RuleSummary(
            rule_id=rule.id, name=rule.name, enabled=rule.enabled,
            template=rule.template.name if rule.template else None, version=rule.version,
            last_evaluated_at=evaluation.evaluated_at if evaluation else None,
            last_matched=evaluation.matched if evaluation and not evaluation.error else None,
            last_error=evaluation.error if evaluation else None,
            sent_recently=sent.get(rule.id, 0), spec=spec, problem=problem))
    return summaries


def _last_evaluations(session: Session) -> dict[int, Evaluation]:
    newest = (select(Evaluation.rule_id, func.max(Evaluation.id).label("evaluation_id"))
              .group_by(Evaluation.rule_id).subquery())
    rows = session.scalars(select(Evaluation).join(newest, Evaluation.id == newest.c.evaluation_id))
    return {evaluation.rule_id: evaluation for evaluation in rows}


def _recent_sent_counts(session: Session, since: datetime) -> dict[int, int]:
    rows = session.execute(select(Send.rule_id, func.count(Send.id))
                           .where(Send.status == SENT, Send.sent_at >= since)
                           .group_by(Send.rule_id))
    return {rule_id: count for rule_id, count in rows}
