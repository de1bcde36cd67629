"""Delivery backends: outbox files, SMTP and SendGrid, behind one ``DeliveryBackend`` protocol."""

from __future__ import annotations

from ..errors import ConfigurationError
from ..settings import Settings
from .message import DeliveryBackend, DeliveryResult, OutgoingEmail, Sender, parse_sender
from .outbox import OutboxBackend
from .sendgrid import SendGridBackend
from .smtp import SMTPBackend

__all__ = [
    "DeliveryBackend", "DeliveryResult", "OutboxBackend", "OutgoingEmail", "SMTPBackend",
    "SendGridBackend", "Sender", "create_backend", "parse_sender",
]


def create_backend(settings: Settings) -> DeliveryBackend:
    """Create the backend that BEHAVEMAIL_EMAIL_BACKEND selects, configured from ``settings``.

    Raises ConfigurationError for an unknown backend or a missing setting.
    """
    sender = parse_sender(settings.sender)
    backend = settings.email_backend
    if backend == "outbox":
        return OutboxBackend(settings.outbox_dir, sender)
    if backend == "smtp":
        return SMTPBackend(settings.smtp_host, settings.smtp_port, settings.smtp_username,
                           settings.smtp_password, settings.smtp_tls, sender)
    if backend == "sendgrid":
        return SendGridBackend(settings.sendgrid_api_key, settings.sendgrid_api_host, sender)
    raise ConfigurationError(
        f"BEHAVEMAIL_EMAIL_BACKEND={backend!r} is not supported: expected outbox, smtp or sendgrid"
    )
