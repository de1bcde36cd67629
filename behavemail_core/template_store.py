"""Email templates in the app database: list, save with optimistic locking."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import ConcurrentEditError, RuleValidationError
from .models import AuditEntry, Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemplateSpec:
    """A template as files and editors see it."""

    name: str
    subject: str
    html: str
    text: str | None = None

    def to_dict(self) -> dict:
        data = {"name": self.name, "subject": self.subject, "html": self.html}
        if self.text:
            data["text"] = self.text
        return data


def template_spec_from_dict(data: object) -> TemplateSpec:
    if not isinstance(data, dict):
        raise RuleValidationError(f"A template must be a mapping, got {type(data).__name__}")
    missing = [key for key in ("name", "subject", "html") if not str(data.get(key) or "").strip()]
    if missing:
        name = data.get("name") or "(unnamed)"
        raise RuleValidationError(f"Template {name!r} is missing {', '.join(missing)}", field=missing[0])
    return TemplateSpec(name=str(data["name"]).strip(), subject=str(data["subject"]),
                        html=str(data["html"]), text=(str(data["text"]) if data.get("text") else None))


def list_templates(session: Session) -> list[Template]:
    return list(session.scalars(select(Template).order_by(Template.name)))


def find_template(session: Session, name: str) -> Template | None:
    return session.scalar(select(Template).where(Template.name == name))


def save_template(session: Session, spec: TemplateSpec, *, actor: str, template_id: int | None = None,
                  expected_version: int | None = None) -> Template:
    """Create or update a template; raise ConcurrentEditError if it changed since loaded."""
    other = find_template(session, spec.name)
    if other is not None and other.id != template_id:
        raise RuleValidationError(f"A template named {spec.name!r} already exists: choose another name",
                                  field="name")
    if template_id is None:
        template = Template(name=spec.name, subject=spec.subject, html=spec.html, text=spec.text)
        session.add(template)
        action = "create"
    else:
        template = session.get(Template, template_id)
        if template is None:
            raise RuleValidationError(f"Template {template_id} does not exist")
        if expected_version is not None and template.version != expected_version:
            raise ConcurrentEditError(
                f"Template {template.name!r} was changed by someone else since you opened it "
                f"(your version {expected_version}, now {template.version}): reload it, "
                "reapply your changes and save again")
        template.name, template.subject, template.html, template.text = (
            spec.name, spec.subject, spec.html, spec.text)
        action = "update"
    session.flush()
    session.add(AuditEntry(actor=actor, action=f"template.{action}", entity="template",
                           entity_id=template.id, detail={"name": spec.name}))
    session.commit()
    log.info("template saved template_id=%s name=%r action=%s actor=%s", template.id, spec.name, action, actor)
    return template
