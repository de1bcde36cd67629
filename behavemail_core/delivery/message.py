"""The input and output types shared by every delivery backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Protocol, Sequence

from ..errors import ConfigurationError


@dataclass(frozen=True)
class Sender:
    address: str
    name: str = ""


def parse_sender(raw: str) -> Sender:
    """Parse BEHAVEMAIL_FROM ('Name <address>' or a bare address)."""
    name, address = parseaddr(raw)
    if "@" not in address or any(c in raw for c in "\r\n"):
        raise ConfigurationError(
            f"BEHAVEMAIL_FROM={raw!r} is not a valid sender: expected 'Name <address@example.com>'"
        )
    try:
        Address(display_name=name, addr_spec=address)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ConfigurationError(f"BEHAVEMAIL_FROM={raw!r} is not a valid sender: {exc}") from exc
    return Sender(address=address, name=name)


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered email for one recipient, ready for a backend.

    ``to_name`` and ``subject`` come from user data and are untrusted: backends
    must put them in headers only through the email package's header classes
    (or the provider's JSON fields), never by string concatenation.
    """

    send_id: int
    to_address: str
    to_name: str
    subject: str
    html: str
    text: str
    # Where the RFC 8058 one-click unsubscribe POST goes; also the mailto-free
    # List-Unsubscribe target.
    unsubscribe_url: str
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one email: accepted by the provider, or failed with an error."""

    send_id: int
    accepted: bool
    provider_message_id: str | None = None
    error: str | None = None
    retryable: bool = False


class DeliveryBackend(Protocol):
    """A way out for email: outbox files, SMTP or SendGrid.

    ``deliver`` takes one batch and returns one result per email, in any order;
    it raises only for a programming error. A backend may be used for several
    batches and is closed by ``close``.
    """

    name: str

    def deliver(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]: ...

    def close(self) -> None: ...
