"""Rules in the app database: list, save with optimistic locking, enable, delete."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from .audience import AudienceFilter
from .conditions import condition_from_dict, condition_to_dict
from .errors import ConcurrentEditError, RuleValidationError
from .models import AuditEntry, Rule, Template, utcnow
from .rules import RuleSpec

log = logging.getLogger(__name__)


def spec_from_row(rule: Rule) -> RuleSpec:
    definition = rule.definition or {}
    return RuleSpec(
        name=rule.name,
        description=rule.description or "",
        enabled=rule.enabled,
        template=rule.template.name if rule.template else None,
        condition=condition_from_dict(definition.get("condition")),
        audience=tuple(AudienceFilter.from_dict(a) for a in definition.get("audience", [])),
        send_policy=rule.send_policy,
        cooldown_seconds=rule.cooldown_seconds,
        check_interval_seconds=rule.check_interval_seconds,
        holdout_percent=rule.holdout_percent or 0.0,
        goal=condition_from_dict(rule.goal) if rule.goal else None,
        goal_window_seconds=rule.goal_window_seconds,
    )


def list_rules(session: Session, *, include_deleted: bool = False) -> list[Rule]:
    query = select(Rule).order_by(Rule.name)
    if not include_deleted:
        query = query.where(Rule.deleted_at.is_(None))
    return list(session.scalars(query))


def get_rule(session: Session, rule_id: int) -> Rule | None:
    return session.get(Rule, rule_id)


def find_rule(session: Session, name: str) -> Rule | None:
    return session.scalar(select(Rule).where(Rule.name == name, Rule.deleted_at.is_(None)))


def save_rule(session: Session, spec: RuleSpec, *, actor: str, rule_id: int | None = None,
              expected_version: int | None = None) -> Rule:
    """Create or update a rule from a validated spec and commit.

    ``expected_version`` is the version the editor loaded; when someone saved the
    rule since, ConcurrentEditError is raised and nothing is written.
    """
    spec.validate()
    template = _template_for(session, spec)
    _check_unique_name(session, spec.name, rule_id)

    if rule_id is None:
        rule = Rule(name=spec.name, definition=spec.definition())
        session.add(rule)
        action = "create"
    else:
        rule = session.get(Rule, rule_id)
        if rule is None or rule.deleted_at is not None:
            raise RuleValidationError(f"Rule {rule_id} does not exist (it may have been deleted)")
        if expected_version is not None and rule.version != expected_version:
            raise ConcurrentEditError(_concurrent_message(rule, expected_version))
        action = "update"

    _apply(rule, spec, template)
    try:
        session.flush()
    except StaleDataError as exc:
        session.rollback()
        raise ConcurrentEditError(_concurrent_message(rule, expected_version)) from exc
    session.add(AuditEntry(actor=actor, action=f"rule.{action}", entity="rule", entity_id=rule.id,
                           detail=spec.to_dict()))
    session.commit()
    log.info("rule saved rule_id=%s name=%r action=%s actor=%s version=%s",
             rule.id, rule.name, action, actor, rule.version)
    return rule


def _concurrent_message(rule: Rule, expected_version: int | None) -> str:
    return (f"Rule {rule.name!r} was changed by someone else since you opened it "
            f"(your version {expected_version}, now {rule.version}): reload the rule, "
            "reapply your changes and save again")


def _apply(rule: Rule, spec: RuleSpec, template: Template | None) -> None:
    rule.name = spec.name
    rule.description = spec.description
    rule.enabled = spec.enabled
    rule.definition = spec.definition()
    rule.template = template
    rule.send_policy = spec.send_policy
    rule.cooldown_seconds = spec.cooldown_seconds
    rule.check_interval_seconds = spec.check_interval_seconds
    rule.holdout_percent = spec.holdout_percent
    rule.goal = None if spec.goal is None else condition_to_dict(spec.goal)
    rule.goal_window_seconds = spec.goal_window_seconds


def _template_for(session: Session, spec: RuleSpec) -> Template | None:
    if not spec.template:
        return None
    template = session.scalar(select(Template).where(Template.name == spec.template))
    if template is None:
        raise RuleValidationError(
            f"Rule {spec.name!r} uses the template {spec.template!r}, which does not exist: "
            "create it first or pick an existing one", field="template")
    return template


def _check_unique_name(session: Session, name: str, rule_id: int | None) -> None:
    other = session.scalar(select(Rule).where(Rule.name == name))
    if other is not None and other.id != rule_id:
        if other.deleted_at is not None:
            # A deleted rule keeps its history under a renamed name, so the name is free again.
            other.name = f"{other.name} (deleted {other.deleted_at:%Y-%m-%d %H:%M} #{other.id})"
            session.flush()
            return
        raise RuleValidationError(f"A rule named {name!r} already exists: choose another name", field="name")


def set_enabled(session: Session, rule_id: int, enabled: bool, *, actor: str) -> Rule:
    rule = _existing(session, rule_id)
    if enabled and rule.template_id is None:
        raise RuleValidationError(
            f"Rule {rule.name!r} has no email template: open it, pick a template and save, then enable it",
            field="template")
    rule.enabled = enabled
    session.add(AuditEntry(actor=actor, action="rule.enable" if enabled else "rule.disable",
                           entity="rule", entity_id=rule_id, detail={"name": rule.name}))
    session.commit()
    log.info("rule %s rule_id=%s actor=%s", "enabled" if enabled else "disabled", rule_id, actor)
    return rule


def delete_rule(session: Session, rule_id: int, *, actor: str, now: datetime | None = None) -> None:
    """Hide a rule and stop evaluating it; its sends and evaluations stay."""
    rule = _existing(session, rule_id)
    rule.deleted_at = now or utcnow()
    rule.enabled = False
    session.add(AuditEntry(actor=actor, action="rule.delete", entity="rule", entity_id=rule_id,
                           detail={"name": rule.name}))
    session.commit()
    log.info("rule deleted rule_id=%s name=%r actor=%s", rule_id, rule.name, actor)


def duplicate_rule(session: Session, rule_id: int, *, actor: str) -> Rule:
    """Copy a rule under a free name ('X (copy)', 'X (copy 2)', ...), disabled."""
    source = _existing(session, rule_id)
    spec = spec_from_row(source)
    names = set(session.scalars(select(Rule.name)))
    candidate, n = f"{spec.name} (copy)", 2
    while candidate in names:
        candidate, n = f"{spec.name} (copy {n})", n + 1
    return save_rule(session, replace(spec, name=candidate, enabled=False), actor=actor)


def _existing(session: Session, rule_id: int) -> Rule:
    rule = session.get(Rule, rule_id)
    if rule is None or rule.deleted_at is not None:
        raise RuleValidationError(f"Rule {rule_id} does not exist (it may have been deleted)")
    return rule
