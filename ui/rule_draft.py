"""The rule builder's form model: every field of the form, to and from a rule's export form.

A RuleDraft contains what the operator typed, valid or not, so it survives reruns and
switches between condition kinds. ``to_dict`` gives the export form that
``rule_spec_from_dict`` validates, and ``draft_from_spec`` fills the form from a
saved rule. This module has no Streamlit import, so it is tested on its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from behavemail_core.audience import AudienceFilter
from behavemail_core.conditions import (CombinedCondition, Condition, CountCondition, GaugeCondition,
                                        InactiveCondition, NeverUsedCondition, PromQLCondition,
                                        RatioCondition, condition_to_dict)
from behavemail_core.promql import EQUALS, ONE_OF, LabelMatcher, format_duration
from behavemail_core.rules import COOLDOWN, ONCE_PER_EPISODE, RuleSpec

BUILDER = "builder"
PROMQL = "promql"
# Goal modes: the default goal, a condition built here, or a goal the builder cannot
# show (combined or PromQL), which is kept as it is.
DEFAULT_GOAL = "default"
CONDITION_GOAL = "condition"
KEPT_GOAL = "kept"
BUILDER_KINDS = ("count", "ratio", "inactive", "never_used", "gauge")
COOLDOWN_UNITS = {"hours": 3600, "days": 86400}
LIST_AUDIENCE_OPERATORS = ("in", "not in")
DAYS_AUDIENCE_OPERATORS = ("within_days", "older_than_days")

_row_ids = itertools.count(1)


def new_row_id() -> int:
    """Return an id for a new filter row, unique in this process, so widget keys never collide."""
    return next(_row_ids)


@dataclass
class FilterRow:
    """One label filter of a condition: ``label op value``, or ``label in values``."""

    label: str = ""
    op: str = EQUALS
    value: str = ""
    values: list[str] = field(default_factory=list)
    row_id: int = field(default_factory=new_row_id)

    def to_dict(self) -> dict[str, Any]:
        if self.op == ONE_OF:
            return {"label": self.label, "op": self.op, "values": list(self.values)}
        return {"label": self.label, "op": self.op, "value": self.value}

    @classmethod
    def from_matcher(cls, matcher: LabelMatcher) -> "FilterRow":
        return cls(label=matcher.label, op=matcher.op, value=matcher.value, values=list(matcher.values))


@dataclass
class ConditionDraft:
    """The fields of one builder condition; each kind reads the fields it needs."""

    kind: str = "count"
    metric: str = ""
    window: str = "24h"
    op: str = ">"
    threshold: float = 10.0
    threshold_percent: float = 5.0
    active_window: str = "7d"
    quiet_window: str = "48h"
    aggregation: str = "max"
    matchers: list[FilterRow] = field(default_factory=list)
    numerator: list[FilterRow] = field(default_factory=list)
    feature: list[FilterRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the condition's dict form for condition_from_dict (which validates it)."""
        matchers = _rows(self.matchers)
        if self.kind == "count":
            return {"kind": "count", "metric": self.metric, "window": self.window, "op": self.op,
                    "threshold": self.threshold, "matchers": matchers}
        if self.kind == "ratio":
            return {"kind": "ratio", "metric": self.metric, "window": self.window, "op": self.op,
                    "threshold_percent": self.threshold_percent, "matchers": matchers,
                    "numerator_matchers": _rows(self.numerator)}
        if self.kind == "inactive":
            return {"kind": "inactive", "metric": self.metric, "active_window": self.active_window,
                    "quiet_window": self.quiet_window, "matchers": matchers}
        if self.kind == "never_used":
            return {"kind": "never_used", "metric": self.metric, "window": self.window,
                    "matchers": matchers, "feature_matchers": _rows(self.feature)}
        if self.kind == "gauge":
            return {"kind": "gauge", "metric": self.metric, "op": self.op, "threshold": self.threshold,
                    "aggregation": self.aggregation, "matchers": matchers}
        raise ValueError(f"the builder has no condition kind {self.kind!r}")


def _rows(rows: list[FilterRow]) -> list[dict[str, Any]]:
    return [row.to_dict() for row in rows]


@dataclass
class AudienceRow:
    """One audience filter: an account attribute, an operator and a value (text, list or days)."""

    attribute: str = ""
    op: str = "="
    value: str = ""
    values: list[str] = field(default_factory=list)
    days: float = 30.0
    row_id: int = field(default_factory=new_row_id)

    def to_dict(self) -> dict[str, Any]:
        if self.op in LIST_AUDIENCE_OPERATORS:
            value: Any = list(self.values)
        elif self.op in DAYS_AUDIENCE_OPERATORS:
            value = self.days
        else:
            value = self.value
        return {"attribute": self.attribute, "op": self.op, "value": value}

    @classmethod
    def from_filter(cls, item: AudienceFilter) -> "AudienceRow":
        row = cls(attribute=item.attribute, op=item.op)
        if isinstance(item.value, (list, tuple)):
            row.values = [str(v) for v in item.value]
        elif item.op in DAYS_AUDIENCE_OPERATORS:
            row.days = float(item.value)
        else:
            row.value = "" if item.value is None else str(item.value)
        return row


@dataclass
class RuleDraft:
    """Every field of the rule form."""

    name: str = ""
    description: str = ""
    enabled: bool = False
    template: str | None = None
    mode: str = BUILDER
    promql: str = ""
    left: ConditionDraft = field(default_factory=ConditionDraft)
    combine: bool = False
    combine_op: str = "and"
    right: ConditionDraft = field(default_factory=ConditionDraft)
    audience: list[AudienceRow] = field(default_factory=list)
    send_policy: str = ONCE_PER_EPISODE
    cooldown_amount: int = 7
    cooldown_unit: str = "days"
    check_interval: str = "5m"
    holdout_percent: float = 0.0
    goal_mode: str = DEFAULT_GOAL
    goal: ConditionDraft = field(default_factory=ConditionDraft)
    goal_raw: dict[str, Any] | None = None
    goal_window: str = "72h"

    def condition_dict(self) -> dict[str, Any]:
        """Return the condition as the builder or the PromQL editor defines it, by ``mode``."""
        if self.mode == PROMQL:
            return {"kind": "promql", "query": self.promql}
        return self.builder_condition_dict()

    def builder_condition_dict(self) -> dict[str, Any]:
        """Return the condition the builder's fields define, whatever the mode."""
        if self.combine:
            return {"kind": "combine", "op": self.combine_op,
                    "left": self.left.to_dict(), "right": self.right.to_dict()}
        return self.left.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Return the rule's export form, as rule_spec_from_dict reads it."""
        data: dict[str, Any] = {
            "name": self.name.strip(),
            "description": self.description,
            "enabled": self.enabled,
            "template": self.template,
            "condition": self.condition_dict(),
            "audience": [row.to_dict() for row in self.audience],
            "send_policy": self.send_policy,
            "check_interval": self.check_interval,
            "holdout_percent": self.holdout_percent,
        }
        if self.send_policy == COOLDOWN:
            seconds = int(self.cooldown_amount) * COOLDOWN_UNITS[self.cooldown_unit]
            data["cooldown"] = format_duration(seconds) if seconds > 0 else "0s"
        data["goal"] = self.goal_dict()
        data["goal_window"] = self.goal_window
        return data

    def goal_dict(self) -> dict[str, Any] | None:
        """Return the goal condition, or None for the default goal "made an API request"."""
        if self.goal_mode == CONDITION_GOAL:
            return self.goal.to_dict()
        if self.goal_mode == KEPT_GOAL:
            return self.goal_raw
        return None


def new_draft(default_metric: str = "") -> RuleDraft:
    """Return the form of a new rule: a count condition on ``default_metric``, disabled."""
    draft = RuleDraft()
    for condition in (draft.left, draft.right, draft.goal):
        condition.metric = default_metric
    return draft


def draft_from_spec(spec: RuleSpec, compile_promql: Callable[[Condition], str]) -> RuleDraft:
    """Fill the form from a saved rule.

    The builder shows one condition, or two joined by AND / UNLESS. A condition it
    cannot show (hand-written PromQL, or more than two parts) opens in the PromQL
    editor, compiled by ``compile_promql``.
    """
    draft = RuleDraft(name=spec.name, description=spec.description, enabled=spec.enabled,
                      template=spec.template, send_policy=spec.send_policy,
                      check_interval=format_duration(spec.check_interval_seconds),
                      holdout_percent=float(spec.holdout_percent),
                      audience=[AudienceRow.from_filter(item) for item in spec.audience],
                      goal_window=format_duration(spec.goal_window_seconds))
    if spec.goal is not None and _fits_builder(spec.goal):
        draft.goal_mode, draft.goal = CONDITION_GOAL, _condition_draft(spec.goal)
    elif spec.goal is not None:
        draft.goal_mode, draft.goal_raw = KEPT_GOAL, condition_to_dict(spec.goal)
    if spec.cooldown_seconds:
        if spec.cooldown_seconds % COOLDOWN_UNITS["days"] == 0:
            draft.cooldown_amount, draft.cooldown_unit = spec.cooldown_seconds // 86400, "days"
        else:
            draft.cooldown_amount, draft.cooldown_unit = max(1, round(spec.cooldown_seconds / 3600)), "hours"
    condition = spec.condition
    if _fits_builder(condition):
        draft.left = _condition_draft(condition)
        draft.right.metric = draft.left.metric
        if draft.goal_mode != CONDITION_GOAL:
            draft.goal.metric = draft.left.metric
    elif (isinstance(condition, CombinedCondition) and _fits_builder(condition.left)
          and _fits_builder(condition.right)):
        draft.combine, draft.combine_op = True, condition.op
        draft.left, draft.right = _condition_draft(condition.left), _condition_draft(condition.right)
    else:
        draft.mode = PROMQL
        draft.promql = compile_promql(condition)
    return draft


def _fits_builder(condition: Condition) -> bool:
    return not isinstance(condition, (CombinedCondition, PromQLCondition))


def _condition_draft(condition: Condition) -> ConditionDraft:
    draft = ConditionDraft(kind=condition.kind, metric=getattr(condition, "metric", ""),
                           matchers=[FilterRow.from_matcher(m) for m in getattr(condition, "matchers", ())])
    if isinstance(condition, CountCondition):
        draft.window, draft.op, draft.threshold = condition.window, condition.op, condition.threshold
    elif isinstance(condition, RatioCondition):
        draft.window, draft.op = condition.window, condition.op
        draft.threshold_percent = condition.threshold_percent
        draft.numerator = [FilterRow.from_matcher(m) for m in condition.numerator_matchers]
    elif isinstance(condition, InactiveCondition):
        draft.active_window, draft.quiet_window = condition.active_window, condition.quiet_window
    elif isinstance(condition, NeverUsedCondition):
        draft.window = condition.window
        draft.feature = [FilterRow.from_matcher(m) for m in condition.feature_matchers]
    elif isinstance(condition, GaugeCondition):
        draft.op, draft.threshold, draft.aggregation = condition.op, condition.threshold, condition.aggregation
    return draft
