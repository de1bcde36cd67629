"""Read a rule back as a plain English sentence, so operators can check what it does."""

from __future__ import annotations

import re
from typing import Sequence

from .audience import AUDIENCE_OPERATORS, AudienceFilter
from .conditions import (CombinedCondition, Condition, CountCondition, GaugeCondition,
                         InactiveCondition, NeverUsedCondition, PromQLCondition, RatioCondition)
from .promql import EQUALS, MATCHES_REGEX, NOT_EQUALS, NOT_MATCHES_REGEX, ONE_OF, LabelMatcher, parse_duration, humanize_duration

COMPARISON_WORDS = {">": "more than", ">=": "at least", "<": "fewer than", "<=": "at most",
                    "==": "exactly", "!=": "other than"}
LEVEL_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below",
               "==": "equal to", "!=": "not equal to"}


def describe_rule(condition: Condition, audience: Sequence[AudienceFilter] = (),
                  policy: str | None = None) -> str:
    """Return e.g. 'Customers on the free plan who got more than 10 API requests with status
    4xx in the last 24 hours, at most once every 7 days.'"""
    subject = "Customers" + _audience_phrase(audience)
    sentence = f"{subject} {describe_condition(condition)}"
    if policy:
        sentence += f", {policy}"
    return sentence + "."


def describe_condition(condition: Condition) -> str:
    if isinstance(condition, CountCondition):
        return (f"who got {COMPARISON_WORDS[condition.op]} {_number(condition.threshold)} "
                f"{_noun(condition.metric)}{_filters(condition.matchers)} in the last {_window(condition.window)}")
    if isinstance(condition, RatioCondition):
        return (f"whose share of {_noun(condition.metric)}{_filters(condition.numerator_matchers)} "
                f"was {LEVEL_WORDS[condition.op]} {_number(condition.threshold_percent)} % of all "
                f"{_noun(condition.metric)}{_filters(condition.matchers)} in the last {_window(condition.window)}")
    if isinstance(condition, InactiveCondition):
        return (f"who made {_noun(condition.metric)}{_filters(condition.matchers)} in the last "
                f"{_window(condition.active_window)} but none in the last {_window(condition.quiet_window)}")
    if isinstance(condition, NeverUsedCondition):
        return (f"who made {_noun(condition.metric)}{_filters(condition.matchers)} in the last "
                f"{_window(condition.window)} but none{_filters(condition.feature_matchers)}")
    if isinstance(condition, GaugeCondition):
        return (f"whose {condition.metric}{_filters(condition.matchers)} ({condition.aggregation} per customer) "
                f"is {LEVEL_WORDS[condition.op]} {_gauge_threshold(condition)}")
    if isinstance(condition, PromQLCondition):
        return f"matched by the PromQL query {condition.query.strip()}"
    if isinstance(condition, CombinedCondition):
        joiner = "and" if condition.op == "and" else "unless they are also customers"
        return f"{describe_condition(condition.left)}, {joiner} {describe_condition(condition.right)}"
    raise TypeError(f"not a condition: {condition!r}")


def describe_policy(policy: str, cooldown_seconds: int | None) -> str:
    if policy == "once_ever":
        return "once per customer ever"
    if policy == "once_per_episode":
        return "once each time they start matching"
    if policy == "cooldown" and cooldown_seconds:
        return f"at most once every {humanize_duration(cooldown_seconds)}"
    return policy


def _audience_phrase(audience: Sequence[AudienceFilter]) -> str:
    parts = []
    for item in audience:
        if item.attribute == "plan" and item.op == "=":
            parts.append(f"on the {item.value} plan")
        elif item.attribute == "plan" and item.op == "in":
            parts.append(f"on the {_or_list(item.value)} plan")
        elif item.op == "within_days":
            parts.append(f"whose {_attribute(item.attribute)} is within the last {_days(item.value)}")
        elif item.op == "older_than_days":
            parts.append(f"whose {_attribute(item.attribute)} is more than {_days(item.value)} ago")
        elif item.op in ("in", "not in"):
            parts.append(f"whose {_attribute(item.attribute)} {AUDIENCE_OPERATORS[item.op]} {_or_list(item.value)}")
        else:
            parts.append(f"whose {_attribute(item.attribute)} {AUDIENCE_OPERATORS[item.op]} {item.value}")
    return "".join(f" {part}" if i == 0 else f" and {part}" for i, part in enumerate(parts))


def _filters(matchers: Sequence[LabelMatcher]) -> str:
    phrases = []
    for m in matchers:
        label = m.label.replace("_", " ")
        if m.op == EQUALS:
            phrases.append(f"with {label} {m.value}")
        elif m.op == NOT_EQUALS:
            phrases.append(f"with {label} other than {m.value}")
        elif m.op == ONE_OF:
            phrases.append(f"with {label} {_or_list(m.values)}")
        elif m.op == MATCHES_REGEX:
            phrases.append(f"with {label} {_pattern(m.value)}")
        elif m.op == NOT_MATCHES_REGEX:
            phrases.append(f"with {label} not {_pattern(m.value)}")
    return "".join(f" {p}" for p in phrases)


def _pattern(regex: str) -> str:
    # "4.." and "4\d\d" read better as HTTP status classes.
    match = re.fullmatch(r"([1-5])(?:\.\.|\\d\\d|\[0-9\]\[0-9\])", regex)
    if match:
        return f"{match.group(1)}xx"
    return f"matching /{regex}/"


def _noun(metric: str) -> str:
    """Turn api_requests_total into 'responses' style plain words: 'API requests'."""
    words = metric.removesuffix("_total").removesuffix("_count").split("_")
    return " ".join(w.upper() if w in ("api", "http", "url") else w for w in words)


def _gauge_threshold(condition: GaugeCondition) -> str:
    if condition.metric.endswith("_ratio") and 0 <= condition.threshold <= 1.5:
        return f"{_number(condition.threshold * 100)} %"
    return _number(condition.threshold)


def _window(text: str) -> str:
    return humanize_duration(parse_duration(text))


def _days(value: object) -> str:
    days = float(value)  # type: ignore[arg-type]
    return f"{_number(days)} day{'s' if days != 1 else ''}"


def _attribute(name: str) -> str:
    return name.replace("_", " ")


def _or_list(values: Sequence[str]) -> str:
    values = [str(v) for v in values]
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + f" or {values[-1]}"


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e15 else repr(value)
