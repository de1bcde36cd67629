"""Behavior conditions: the structured form the rule builder edits and the compiler reads.

Each condition kind is a frozen dataclass with ``to_dict``/``from_dict``, so a rule
definition round-trips through the database's JSON column and YAML files alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .errors import RuleValidationError
from .promql import LabelMatcher, check_metric_name, parse_duration

COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
GAUGE_AGGREGATIONS = ("max", "min", "avg", "sum")
COMBINE_OPERATORS = ("and", "unless")


def _matchers(data: Any, field_name: str) -> tuple[LabelMatcher, ...]:
    if data in (None, ""):
        return ()
    if not isinstance(data, list):
        raise RuleValidationError(f"'{field_name}' must be a list of label filters", field=field_name)
    return tuple(LabelMatcher.from_dict(item) for item in data)


def _comparison(op: str) -> str:
    if op not in COMPARISONS:
        raise RuleValidationError(
            f"Unknown comparison {op!r}: use one of {' '.join(COMPARISONS)}", field="op")
    return op


def _number(value: Any, field_name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RuleValidationError(f"{field_name} must be a number, got {value!r}", field=field_name) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise RuleValidationError(f"{field_name} must be a finite number, got {value!r}", field=field_name)
    return number


@dataclass(frozen=True)
class CountCondition:
    """The increase of a counter over a window compared with a threshold."""

    metric: str
    window: str
    op: str
    threshold: float
    matchers: tuple[LabelMatcher, ...] = ()
    kind: str = field(default="count", init=False)

    def validate(self) -> None:
        check_metric_name(self.metric)
        parse_duration(self.window)
        _comparison(self.op)


@dataclass(frozen=True)
class RatioCondition:
    """The share of a counter's increase (in percent) matching extra filters."""

    metric: str
    window: str
    op: str
    threshold_percent: float
    numerator_matchers: tuple[LabelMatcher, ...]
    matchers: tuple[LabelMatcher, ...] = ()
    kind: str = field(default="ratio", init=False)

    def validate(self) -> None:
        check_metric_name(self.metric)
        parse_duration(self.window)
        _comparison(self.op)
        if not self.numerator_matchers:
            raise RuleValidationError(
                "A ratio needs at least one filter that picks the counted part, "
                "e.g. status matches regex 5..", field="numerator_matchers")


@dataclass(frozen=True)
class InactiveCondition:
    """Activity in ``active_window`` but none in the most recent ``quiet_window``."""

    metric: str
    active_window: str
    quiet_window: str
    matchers: tuple[LabelMatcher, ...] = ()
    kind: str = field(default="inactive", init=False)

    def validate(self) -> None:
        check_metric_name(self.metric)
        active = parse_duration(self.active_window, "active_window")
        quiet = parse_duration(self.quiet_window, "quiet_window")
        if quiet >= active:
            raise RuleValidationError(
                f"The quiet window ({self.quiet_window}) must be shorter than the active window "
                f"({self.active_window}): e.g. active in 30d, quiet for 7d", field="quiet_window")


@dataclass(frozen=True)
class NeverUsedCondition:
    """Active in the window, but no call matching ``feature_matchers`` in it."""

    metric: str
    window: str
    feature_matchers: tuple[LabelMatcher, ...]
    matchers: tuple[LabelMatcher, ...] = ()
    kind: str = field(default="never_used", init=False)

    def validate(self) -> None:
        check_metric_name(self.metric)
        parse_duration(self.window)
        if not self.feature_matchers:
            raise RuleValidationError(
                "Pick the feature: add a filter such as endpoint equals /v2/search",
                field="feature_matchers")


@dataclass(frozen=True)
class GaugeCondition:
    """A gauge's current value, aggregated per user, compared with a threshold."""

    metric: str
    op: str
    threshold: float
    aggregation: str = "max"
    matchers: tuple[LabelMatcher, ...] = ()
    kind: str = field(default="gauge", init=False)

    def validate(self) -> None:
        check_metric_name(self.metric)
        _comparison(self.op)
        if self.aggregation not in GAUGE_AGGREGATIONS:
            raise RuleValidationError(
                f"Unknown aggregation {self.aggregation!r}: use one of {', '.join(GAUGE_AGGREGATIONS)}",
                field="aggregation")


@dataclass(frozen=True)
class PromQLCondition:
    """Raw PromQL written in advanced mode; it must return one series per user."""

    query: str
    kind: str = field(default="promql", init=False)

    def validate(self) -> None:
        if not self.query.strip():
            raise RuleValidationError("The PromQL query is empty", field="query")


@dataclass(frozen=True)
class CombinedCondition:
    """Two conditions joined by AND or UNLESS on the user label."""

    op: str
    left: "Condition"
    right: "Condition"
    kind: str = field(default="combine", init=False)

    def validate(self) -> None:
        if self.op not in COMBINE_OPERATORS:
            raise RuleValidationError(f"Unknown combination {self.op!r}: use 'and' or 'unless'", field="op")
        self.left.validate()
        self.right.validate()


Condition = Union[CountCondition, RatioCondition, InactiveCondition, NeverUsedCondition,
                  GaugeCondition, PromQLCondition, CombinedCondition]

CONDITION_KINDS = ("count", "ratio", "inactive", "never_used", "gauge", "promql", "combine")


def condition_from_dict(data: Any) -> Condition:
    """Build and validate a condition from its dict form; raise RuleValidationError."""
    if not isinstance(data, dict):
        raise RuleValidationError(f"A condition must be a mapping, got {type(data).__name__}")
    kind = data.get("kind")
    try:
        condition = _build(kind, data)
    except KeyError as exc:
        raise RuleValidationError(
            f"The {kind!r} condition is missing the field {exc.args[0]!r}", field=str(exc.args[0])) from None
    condition.validate()
    return condition


def _build(kind: Any, data: dict) -> Condition:
    if kind == "count":
        return CountCondition(metric=data["metric"], window=str(data["window"]), op=data.get("op", ">"),
                              threshold=_number(data["threshold"], "threshold"),
                              matchers=_matchers(data.get("matchers"), "matchers"))
    if kind == "ratio":
        return RatioCondition(metric=data["metric"], window=str(data["window"]), op=data.get("op", ">"),
                              threshold_percent=_number(data["threshold_percent"], "threshold_percent"),
                              numerator_matchers=_matchers(data.get("numerator_matchers"), "numerator_matchers"),
                              matchers=_matchers(data.get("matchers"), "matchers"))
    if kind == "inactive":
        return InactiveCondition(metric=data["metric"], active_window=str(data["active_window"]),
                                 quiet_window=str(data["quiet_window"]),
                                 matchers=_matchers(data.get("matchers"), "matchers"))
    if kind == "never_used":
        return NeverUsedCondition(metric=data["metric"], window=str(data["window"]),
                                  feature_matchers=_matchers(data.get("feature_matchers"), "feature_matchers"),
                                  matchers=_matchers(data.get("matchers"), "matchers"))
    if kind == "gauge":
        return GaugeCondition(metric=data["metric"], op=data.get("op", ">"),
                              threshold=_number(data["threshold"], "threshold"),
                              aggregation=data.get("aggregation", "max"),
                              matchers=_matchers(data.get("matchers"), "matchers"))
    if kind == "promql":
        return PromQLCondition(query=str(data["query"]))
    if kind == "combine":
        return CombinedCondition(op=data["op"], left=condition_from_dict(data["left"]),
                                 right=condition_from_dict(data["right"]))
    raise RuleValidationError(
        f"Unknown condition kind {kind!r}: use one of {', '.join(CONDITION_KINDS)}", field="kind")


def condition_to_dict(condition: Condition) -> dict:
    """Return the plain dict form of a condition (the inverse of condition_from_dict)."""
    if isinstance(condition, CombinedCondition):
        return {"kind": "combine", "op": condition.op,
                "left": condition_to_dict(condition.left), "right": condition_to_dict(condition.right)}
    data: dict[str, Any] = {"kind": condition.kind}
    for name, value in vars(condition).items():
        if name == "kind":
            continue
        if isinstance(value, tuple):
            data[name] = [m.to_dict() for m in value]
        else:
            data[name] = value
    return data
