"""Shared state of the event endpoints: the database, the signing key, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.orm import Session, sessionmaker


@dataclass(frozen=True)
class EventContext:
    """Shared state of the event endpoints, built once by the event server.

    ``webhook_verifier`` is None when no Event Webhook verification key is set,
    and then SendGrid batches are accepted unsigned.
    """

    sessions: sessionmaker[Session]
    secret_key: str
    public_url: str
    clock: Callable[[], datetime]
    webhook_verifier: EventWebhook | None
