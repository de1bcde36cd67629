"""Rules: a behavior condition, an audience, a template and a send policy.

``RuleSpec`` is the validated, storage-independent form of a rule. The database row
(models.Rule), the YAML files and the rule builder all convert to and from it, so
they share one validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .audience import AudienceFilter
from .conditions import Condition, condition_from_dict, condition_to_dict
from .errors import RuleValidationError
from .promql import format_duration, parse_duration

ONCE_EVER = "once_ever"
ONCE_PER_EPISODE = "once_per_episode"
COOLDOWN = "cooldown"
SEND_POLICIES = (ONCE_EVER, ONCE_PER_EPISODE, COOLDOWN)

MIN_CHECK_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class RuleSpec:
    name: str
    condition: Condition
    template: str | None
    audience: tuple[AudienceFilter, ...] = ()
    description: str = ""
    enabled: bool = True
    send_policy: str = ONCE_PER_EPISODE
    cooldown_seconds: int | None = None
    check_interval_seconds: int = 300
    holdout_percent: float = 0.0
    goal: Condition | None = None
    goal_window_seconds: int = 72 * 3600

    def validate(self) -> None:
        if not self.name.strip():
            raise RuleValidationError("The rule needs a name", field="name")
        if len(self.name) > 200:
            raise RuleValidationError("The rule name is longer than 200 characters", field="name")
        self.condition.validate()
        for item in self.audience:
            item.validate()
        if self.send_policy not in SEND_POLICIES:
            raise RuleValidationError(
                f"Unknown send policy {self.send_policy!r}: use one of {', '.join(SEND_POLICIES)}",
                field="send_policy")
        if self.send_policy == COOLDOWN and not self.cooldown_seconds:
            raise RuleValidationError(
                "The send policy 'at most once every N' needs N, e.g. cooldown: 7d", field="cooldown")
        if self.check_interval_seconds < MIN_CHECK_INTERVAL_SECONDS:
            raise RuleValidationError(
                f"The check interval must be at least {MIN_CHECK_INTERVAL_SECONDS} s, "
                f"got {self.check_interval_seconds} s", field="check_interval")
        if not 0 <= self.holdout_percent <= 50:
            raise RuleValidationError(
                f"The control group share must be between 0 and 50 %, got {self.holdout_percent}",
                field="holdout_percent")
        if self.goal is not None:
            self.goal.validate()

    def definition(self) -> dict[str, Any]:
        """Return the JSON stored in rules.definition."""
        return {"condition": condition_to_dict(self.condition),
                "audience": [item.to_dict() for item in self.audience]}

    def to_dict(self) -> dict[str, Any]:
        """Return the export form used by YAML files (durations as text)."""
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "template": self.template,
            "condition": condition_to_dict(self.condition),
            "audience": [item.to_dict() for item in self.audience],
            "send_policy": self.send_policy,
            "check_interval": format_duration(self.check_interval_seconds),
        }
        if self.cooldown_seconds:
            data["cooldown"] = format_duration(self.cooldown_seconds)
        if self.holdout_percent:
            data["holdout_percent"] = self.holdout_percent
        if self.goal is not None:
            data["goal"] = condition_to_dict(self.goal)
        data["goal_window"] = format_duration(self.goal_window_seconds)
        return data


def rule_spec_from_dict(data: Any) -> RuleSpec:
    """Build and validate a RuleSpec from its export form; raise RuleValidationError."""
    if not isinstance(data, dict):
        raise RuleValidationError(f"A rule must be a mapping, got {type(data).__name__}")
    name = str(data.get("name", "")).strip()
    try:
        spec = _spec_from_dict(name, data)
        spec.validate()
    except RuleValidationError as exc:
        prefix = f"Rule {name!r}: " if name else ""
        raise RuleValidationError(f"{prefix}{exc}", field=exc.field) from None
    return spec


def _spec_from_dict(name: str, data: dict) -> RuleSpec:
    if "condition" not in data:
        raise RuleValidationError("missing 'condition'", field="condition")
    audience = data.get("audience") or []
    if not isinstance(audience, list):
        raise RuleValidationError("'audience' must be a list of filters", field="audience")
    cooldown = data.get("cooldown")
    goal = data.get("goal")
    return RuleSpec(
        name=name,
        description=str(data.get("description") or ""),
        enabled=bool(data.get("enabled", True)),
        template=data.get("template"),
        condition=condition_from_dict(data["condition"]),
        audience=tuple(AudienceFilter.from_dict(item) for item in audience),
        send_policy=str(data.get("send_policy", ONCE_PER_EPISODE)),
        cooldown_seconds=parse_duration(str(cooldown), "cooldown") if cooldown else None,
        check_interval_seconds=parse_duration(str(data.get("check_interval", "5m")), "check_interval"),
        holdout_percent=float(data.get("holdout_percent", 0) or 0),
        goal=condition_from_dict(goal) if goal else None,
        goal_window_seconds=parse_duration(str(data.get("goal_window", "72h")), "goal_window"),
    )
