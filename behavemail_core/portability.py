"""Export rules and templates to YAML and import them back, with the usual validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from .errors import RuleValidationError
from .rule_store import find_rule, list_rules, save_rule, spec_from_row
from .rules import rule_spec_from_dict
from .template_store import (TemplateSpec, find_template, list_templates, save_template,
                             template_spec_from_dict)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImportSummary:
    templates_created: int
    templates_updated: int
    templates_unchanged: int
    rules_created: int
    rules_updated: int
    rules_unchanged: int


class _LiteralDumper(yaml.SafeDumper):
    """Write multi-line strings (template HTML) as readable | blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def export_document(session: Session) -> str:
    templates = [TemplateSpec(t.name, t.subject, t.html, t.text).to_dict() for t in list_templates(session)]
    rules = [spec_from_row(rule).to_dict() for rule in list_rules(session)]
    document = {"version": FORMAT_VERSION, "templates": templates, "rules": rules}
    return yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=100)


def export_file(session: Session, path: Path) -> None:
    path.write_text(export_document(session), encoding="utf-8")


def parse_document(text: str, source: str = "the file") -> tuple[list[TemplateSpec], list]:
    """Parse and validate a whole document before anything is written."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleValidationError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise RuleValidationError(f"{source} must be a mapping with 'templates' and 'rules' lists")
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise RuleValidationError(f"{source} has format version {version!r}; this Behavemail reads {FORMAT_VERSION}")
    templates = [template_spec_from_dict(item) for item in document.get("templates") or []]
    rules = [rule_spec_from_dict(item) for item in document.get("rules") or []]
    return templates, rules


def import_document(session: Session, text: str, *, actor: str, source: str = "the file") -> ImportSummary:
    """Create or update (by name) every template and rule of the document."""
    templates, rules = parse_document(text, source)
    counts = dict.fromkeys(("tc", "tu", "tn", "rc", "ru", "rn"), 0)
    for spec in templates:
        existing = find_template(session, spec.name)
        if existing is not None and TemplateSpec(existing.name, existing.subject, existing.html,
                                                 existing.text) == spec:
            counts["tn"] += 1
            continue
        save_template(session, spec, actor=actor, template_id=existing.id if existing else None)
        counts["tu" if existing else "tc"] += 1
    for rule in rules:
        existing_rule = find_rule(session, rule.name)
        if existing_rule is not None and spec_from_row(existing_rule) == rule:
            counts["rn"] += 1
            continue
        save_rule(session, rule, actor=actor, rule_id=existing_rule.id if existing_rule else None)
        counts["ru" if existing_rule else "rc"] += 1
    summary = ImportSummary(counts["tc"], counts["tu"], counts["tn"], counts["rc"], counts["ru"], counts["rn"])
    log.info("imported %s: %s", source, summary)
    return summary
