"""Audience filters: which matched users a rule is for, judged on account attributes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from .errors import RuleValidationError

AUDIENCE_OPERATORS = {
    "=": "is",
    "!=": "is not",
    "in": "is one of",
    "not in": "is none of",
    ">": "is greater than",
    ">=": "is at least",
    "<": "is less than",
    "<=": "is at most",
    "contains": "contains",
    "within_days": "is within the last",
    "older_than_days": "is more than",
}


@dataclass(frozen=True)
class AudienceFilter:
    """One condition on an account attribute, e.g. ``plan in [free, starter]``."""

    attribute: str
    op: str
    value: Any

    def validate(self) -> None:
        if not self.attribute:
            raise RuleValidationError("An audience filter needs an attribute, e.g. plan", field="audience")
        if self.op not in AUDIENCE_OPERATORS:
            raise RuleValidationError(
                f"Unknown audience operator {self.op!r} on {self.attribute!r}: "
                f"use one of {', '.join(AUDIENCE_OPERATORS)}", field="audience")
        if self.op in ("in", "not in") and not isinstance(self.value, (list, tuple)):
            raise RuleValidationError(
                f"The audience filter '{self.attribute} {self.op}' needs a list of values", field="audience")
        if self.op in ("within_days", "older_than_days"):
            try:
                float(self.value)
            except (TypeError, ValueError):
                raise RuleValidationError(
                    f"The audience filter on {self.attribute!r} needs a number of days, got {self.value!r}",
                    field="audience") from None

    def to_dict(self) -> dict:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"attribute": self.attribute, "op": self.op, "value": value}

    @classmethod
    def from_dict(cls, data: Any) -> "AudienceFilter":
        if not isinstance(data, dict):
            raise RuleValidationError(f"An audience filter must be a mapping, got {data!r}", field="audience")
        value = data.get("value")
        item = cls(attribute=str(data.get("attribute", "")), op=str(data.get("op", "=")),
                   value=tuple(value) if isinstance(value, list) else value)
        item.validate()
        return item


def audience_mismatch(filters: Sequence[AudienceFilter], account: Mapping[str, Any],
                      now: datetime) -> str | None:
    """Return why ``account`` is outside the audience, or None when every filter passes."""
    for item in filters:
        if item.attribute not in account:
            return f"account has no attribute {item.attribute!r}"
        if not _passes(item, account[item.attribute], now):
            return f"{item.attribute}={account[item.attribute]!r} fails '{item.attribute} {item.op} {item.value!r}'"
    return None


def _passes(item: AudienceFilter, actual: Any, now: datetime) -> bool:
    op, expected = item.op, item.value
    if actual is None:
        return op in ("!=", "not in")
    if op in ("within_days", "older_than_days"):
        when = _as_datetime(actual)
        if when is None:
            return False
        age = now - when
        limit = timedelta(days=float(expected))
        return age <= limit if op == "within_days" else age > limit
    if op == "in":
        return _text(actual) in {_text(v) for v in expected}
    if op == "not in":
        return _text(actual) not in {_text(v) for v in expected}
    if op == "contains":
        return _text(expected).lower() in _text(actual).lower()
    left, right = _comparable(actual, expected)
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    try:
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
    except TypeError:
        return False


def _text(value: Any) -> str:
    return str(value).strip()


def _comparable(actual: Any, expected: Any) -> tuple[Any, Any]:
    """Compare as numbers when both sides are numbers, as dates when both are dates."""
    try:
        return float(actual), float(expected)
    except (TypeError, ValueError):
        pass
    left_date, right_date = _as_datetime(actual), _as_datetime(expected)
    if left_date is not None and right_date is not None:
        return left_date, right_date
    return _text(actual), _text(expected)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
