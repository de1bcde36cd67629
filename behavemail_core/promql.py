"""PromQL building blocks: string literals, label matchers, durations.

Everything that turns user input into PromQL text goes through these helpers, so
label values are always escaped by PromQL's string rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RuleValidationError

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
DURATION_RE = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?")
DURATION_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

# Operators a label matcher may use, as the builder names them.
EQUALS = "="
NOT_EQUALS = "!="
ONE_OF = "in"
MATCHES_REGEX = "=~"
NOT_MATCHES_REGEX = "!~"
MATCHER_OPERATORS = (EQUALS, NOT_EQUALS, ONE_OF, MATCHES_REGEX, NOT_MATCHES_REGEX)


def quote(value: str) -> str:
    """Return ``value`` as a double-quoted PromQL string literal."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def escape_regex(value: str) -> str:
    """Escape RE2 metacharacters so ``value`` matches only itself."""
    return re.sub(r"([.^$*+?()\[\]{}|\\/-])", r"\\\1", value)


def check_label_name(name: str, field: str = "label") -> str:
    if not LABEL_NAME_RE.fullmatch(name or ""):
        raise RuleValidationError(
            f"{name!r} is not a valid label name: use letters, digits and underscores, "
            "not starting with a digit", field=field)
    return name


def check_metric_name(name: str, field: str = "metric") -> str:
    if not METRIC_NAME_RE.fullmatch(name or ""):
        raise RuleValidationError(
            f"{name!r} is not a valid metric name: pick a metric from the list, "
            "e.g. api_requests_total", field=field)
    return name


@dataclass(frozen=True)
class LabelMatcher:
    """One label filter: ``label op value``; ``values`` is used by the "in" operator."""

    label: str
    op: str = EQUALS
    value: str = ""
    values: tuple[str, ...] = ()

    def to_promql(self) -> str:
        check_label_name(self.label, "matchers")
        if self.op == ONE_OF:
            if not self.values:
                raise RuleValidationError(
                    f"The filter on {self.label!r} is 'one of' but lists no values: add at least one",
                    field="matchers")
            pattern = "|".join(escape_regex(v) for v in self.values)
            return f"{self.label}=~{quote(pattern)}"
        if self.op in (MATCHES_REGEX, NOT_MATCHES_REGEX):
            _check_regex(self.label, self.value)
            return f"{self.label}{self.op}{quote(self.value)}"
        if self.op in (EQUALS, NOT_EQUALS):
            return f"{self.label}{self.op}{quote(self.value)}"
        raise RuleValidationError(
            f"Unknown label filter operator {self.op!r} on {self.label!r}: "
            f"use one of {', '.join(MATCHER_OPERATORS)}", field="matchers")

    def to_dict(self) -> dict:
        data: dict = {"label": self.label, "op": self.op}
        if self.op == ONE_OF:
            data["values"] = list(self.values)
        else:
            data["value"] = self.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LabelMatcher":
        if not isinstance(data, dict) or "label" not in data:
            raise RuleValidationError(f"A label filter needs a 'label': got {data!r}", field="matchers")
        values = data.get("values") or ()
        if isinstance(values, str):
            values = (values,)
        return cls(label=str(data["label"]), op=str(data.get("op", EQUALS)),
                   value=str(data.get("value", "")), values=tuple(str(v) for v in values))


def _check_regex(label: str, pattern: str) -> None:
    # Python's re is close enough to RE2 to catch unbalanced brackets and the like
    # before Prometheus does; Prometheus still has the final word.
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RuleValidationError(
            f"The regular expression {pattern!r} for {label!r} is invalid ({exc}): "
            "fix it, or choose 'equals' or 'one of' to match values literally",
            field="matchers") from None


def selector(metric: str, matchers: tuple[LabelMatcher, ...] | list[LabelMatcher]) -> str:
    """Return an instant vector selector such as ``m{a="x",b!="y"}``."""
    check_metric_name(metric)
    inner = ",".join(m.to_promql() for m in matchers)
    return f"{metric}{{{inner}}}" if inner else metric


def parse_duration(text: str, field: str = "window") -> int:
    """Parse a PromQL duration like ``24h``, ``7d`` or ``1h30m`` into seconds."""
    raw = (text or "").strip()
    match = DURATION_RE.fullmatch(raw)
    if not raw or not match or not any(match.groups()):
        raise RuleValidationError(
            f"{text!r} is not a duration: write a number and a unit, e.g. 30m, 24h or 7d",
            field=field)
    seconds = sum(int(g) * unit for g, (_, unit) in zip(match.groups(), DURATION_UNITS) if g)
    if seconds <= 0:
        raise RuleValidationError(f"The duration {text!r} must be longer than zero", field=field)
    return seconds


def format_duration(seconds: int) -> str:
    """Format seconds as the shortest PromQL duration, e.g. 90000 -> ``1d1h``."""
    parts = []
    remaining = int(seconds)
    for unit, size in DURATION_UNITS[2:]:  # days read better than years and weeks
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def humanize_duration(seconds: int) -> str:
    """Format seconds for people: ``24 hours``, ``7 days``, ``90 minutes``."""
    # Up to two days read better in hours ("24 hours"), up to three weeks in days.
    for unit, size, floor in (("week", 7 * 86400, 21 * 86400), ("day", 86400, 3 * 86400),
                              ("hour", 3600, 3600), ("minute", 60, 60)):
        if seconds % size == 0 and seconds >= floor:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    return f"{seconds} seconds"
