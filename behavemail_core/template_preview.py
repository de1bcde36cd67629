"""Template previews and test emails for the template editor, and the starter templates.

A preview renders a template for one real account exactly as the scheduler would,
footer and inlined CSS included. A test email goes only to the address the operator
types, through the configured backend, with "[Test]" before the subject.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy.orm import Session

from . import links
from .delivery.message import DeliveryBackend, DeliveryResult, OutgoingEmail
from .errors import DeliveryError
from .models import Template
from .policy import normalize_address
from .portability import parse_document
from .rendering import RenderedEmail, TemplateSource, render_email
from .settings import DATA_DIR, Settings
from .template_store import TemplateSpec

log = logging.getLogger(__name__)

STARTER_FILE = DATA_DIR / "starter_rules.yaml"
# Previews and test emails belong to no send. Send ids start at 1, so the unsubscribe
# endpoint rejects this one instead of unsubscribing anybody.
PREVIEW_SEND_ID = 0
TEST_SUBJECT_PREFIX = "[Test] "


def preview_unsubscribe_url(settings: Settings) -> str:
    """Return the unsubscribe URL shown in previews and test emails (it unsubscribes nobody)."""
    return links.unsubscribe_url(settings.public_url, settings.secret_key, PREVIEW_SEND_ID)


def render_preview(template: TemplateSource, account: Mapping[str, Any], *, value: float,
                   rule_name: str, settings: Settings) -> RenderedEmail:
    """Render ``template`` for one account; raise TemplateRenderError naming the part and line."""
    context = {**account, "value": value, "rule_name": rule_name}
    return render_email(template, context, unsubscribe_url=preview_unsubscribe_url(settings),
                        postal_address=settings.postal_address)


def send_test_email(backend: DeliveryBackend, rendered: RenderedEmail, *, to_address: str,
                    settings: Settings) -> DeliveryResult:
    """Deliver one rendered email to ``to_address`` only; raise DeliveryError when it fails."""
    address = normalize_address(to_address)
    if address is None:
        raise DeliveryError(
            f"{to_address!r} is not a valid email address: type one address, e.g. you@example.com",
            retryable=False)
    email = OutgoingEmail(send_id=PREVIEW_SEND_ID, to_address=to_address.strip(), to_name="",
                          subject=TEST_SUBJECT_PREFIX + rendered.subject, html=rendered.html,
                          text=rendered.text, unsubscribe_url=preview_unsubscribe_url(settings))
    results = backend.deliver([email])
    if not results:
        raise DeliveryError(f"The {backend.name} backend returned no result for the test email", retryable=True)
    result = results[0]
    if not result.accepted:
        log.warning("test email failed backend=%s error=%s", backend.name, result.error)
        raise DeliveryError(f"The test email to {address} failed: {result.error}", retryable=result.retryable)
    log.info("test email sent backend=%s provider_message_id=%s", backend.name, result.provider_message_id)
    return result


def get_template(session: Session, template_id: int) -> Template | None:
    """Return the template with this id, or None."""
    return session.get(Template, template_id)


def starter_templates(path: Path = STARTER_FILE) -> list[TemplateSpec]:
    """Return the templates of the starter rules file, to copy from in the editor."""
    templates, _rules = parse_document(path.read_text(encoding="utf-8"), source=str(path))
    return templates
