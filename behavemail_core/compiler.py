"""Compile a behavior condition into one PromQL instant query aggregated by the user label.

The result of every compiled query is an instant vector with at most one series per
user, whose value is the rule's value for that user (the count, the share in
percent, the gauge value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .conditions import (CombinedCondition, Condition, CountCondition, GaugeCondition,
                         InactiveCondition, NeverUsedCondition, PromQLCondition, RatioCondition)
from .promql import LabelMatcher, format_duration, parse_duration, selector


@dataclass(frozen=True)
class CompiledQuery:
    """The PromQL text of a condition and any notes the compiler made on the way."""

    promql: str
    notes: tuple[str, ...] = field(default=())


@dataclass
class _Context:
    user_label: str
    min_window: int
    notes: list[str]

    def window(self, text: str, field_name: str = "window") -> str:
        """Return the window as PromQL, widened to two scrape intervals when shorter.

        With fewer than two samples in a range, increase() and rate() return nothing,
        so a shorter window would silently never match.
        """
        seconds = parse_duration(text, field_name)
        if seconds < self.min_window:
            widened = format_duration(self.min_window)
            note = (f"The {field_name} {text} is shorter than two scrape intervals and would never "
                    f"match: widened to {widened}.")
            if note not in self.notes:
                self.notes.append(note)
            return widened
        return text.strip()


def compile_condition(condition: Condition, *, user_label: str = "user_id",
                      scrape_interval_seconds: int = 60) -> CompiledQuery:
    """Compile ``condition``; windows shorter than two scrape intervals are widened with a note."""
    condition.validate()
    context = _Context(user_label=user_label, min_window=2 * scrape_interval_seconds, notes=[])
    promql = _compile(condition, context)
    return CompiledQuery(promql=promql, notes=tuple(context.notes))


def _compile(condition: Condition, ctx: _Context) -> str:
    if isinstance(condition, CountCondition):
        return f"{_sum_increase(condition.metric, condition.matchers, condition.window, ctx)} " \
               f"{condition.op} {_number(condition.threshold)}"
    if isinstance(condition, RatioCondition):
        return _ratio(condition, ctx)
    if isinstance(condition, InactiveCondition):
        active = _sum_increase(condition.metric, condition.matchers, condition.active_window, ctx, "active window")
        quiet = _sum_increase(condition.metric, condition.matchers, condition.quiet_window, ctx, "quiet window")
        return f"({active} > 0) unless on ({ctx.user_label}) ({quiet} > 0)"
    if isinstance(condition, NeverUsedCondition):
        active = _sum_increase(condition.metric, condition.matchers, condition.window, ctx)
        used_matchers = condition.matchers + condition.feature_matchers
        used = _sum_increase(condition.metric, used_matchers, condition.window, ctx)
        return f"({active} > 0) unless on ({ctx.user_label}) ({used} > 0)"
    if isinstance(condition, GaugeCondition):
        vector = selector(condition.metric, condition.matchers)
        return f"{condition.aggregation} by ({ctx.user_label}) ({vector}) " \
               f"{condition.op} {_number(condition.threshold)}"
    if isinstance(condition, PromQLCondition):
        return condition.query.strip()
    if isinstance(condition, CombinedCondition):
        left, right = _compile(condition.left, ctx), _compile(condition.right, ctx)
        return f"({left}) {condition.op} on ({ctx.user_label}) ({right})"
    raise TypeError(f"not a condition: {condition!r}")


def _sum_increase(metric: str, matchers: tuple[LabelMatcher, ...], window: str,
                  ctx: _Context, field_name: str = "window") -> str:
    return (f"sum by ({ctx.user_label}) "
            f"(increase({selector(metric, matchers)}[{ctx.window(window, field_name)}]))")


def _ratio(condition: RatioCondition, ctx: _Context) -> str:
    total = _sum_increase(condition.metric, condition.matchers, condition.window, ctx)
    part = _sum_increase(condition.metric, condition.matchers + condition.numerator_matchers,
                         condition.window, ctx)
    # A user with no matching part has no numerator series at all; "or total * 0"
    # gives them an explicit 0 %, so "share below 1 %" can match them too.
    return f"(({part} or ({total} * 0)) / {total}) * 100 " \
           f"{condition.op} {_number(condition.threshold_percent)}"


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
