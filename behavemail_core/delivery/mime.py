"""MIME messages and header values built safely from untrusted user data.

Display names, subjects and header values come from the accounts database. Every
line break and control character in them is replaced by a space, and they reach
headers only through the email package's header classes. So no value can end a
header line, start another header (a Bcc, say) or add a recipient.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from ..errors import DeliveryError
from .message import OutgoingEmail, Sender

SEND_ID_HEADER = "X-Behavemail-Send-Id"
# RFC 8058 one-click unsubscribe: mail clients POST this body to the
# List-Unsubscribe URL.
ONE_CLICK_UNSUBSCRIBE = "List-Unsubscribe=One-Click"

# C0 controls, DEL, and the Unicode line separators that str.splitlines() honours.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# RFC 5322 field names: printable US-ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# Headers that the message builds itself, which extra headers must not replace.
_RESERVED_HEADERS = frozenset(name.lower() for name in (
    "Bcc", "Cc", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
    "List-Unsubscribe", "List-Unsubscribe-Post", "Message-ID", "MIME-Version",
    "Reply-To", "Sender", "Subject", "To", SEND_ID_HEADER,
))


def header_text(value: str) -> str:
    """Return ``value`` as one header line: control characters become spaces, runs collapse."""
    without_controls = _CONTROL_CHARACTERS.sub(" ", value)
    return re.sub(r"\s+", " ", without_controls).strip()


def recipient_address(email: OutgoingEmail) -> Address:
    """Build the To address of ``email``.

    Raises DeliveryError (not retryable) when the address is invalid, because
    sending it again cannot help.
    """
    return _address(email.to_name, email.to_address, role="recipient")


def sender_address(sender: Sender) -> Address:
    return _address(sender.name, sender.address, role="sender")


def _address(name: str, address: str, *, role: str) -> Address:
    where_to_fix = "BEHAVEMAIL_FROM" if role == "sender" else "the accounts database"
    if _CONTROL_CHARACTERS.search(address) or "@" not in address:
        raise DeliveryError(
            f"Invalid {role} address {address!r}: expected user@example.com. "
            f"Correct it in {where_to_fix}.",
            retryable=False,
        )
    try:
        return Address(display_name=header_text(name), addr_spec=address.strip())
    # Address raises parse defects (ValueError subclasses), HeaderParseError, and
    # IndexError for an address that ends with "@".
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise DeliveryError(
            f"Invalid {role} address {address!r}: {exc}. Correct it in {where_to_fix} "
            "(addresses with non-ASCII characters before the @ are not supported).",
            retryable=False,
        ) from exc


def list_unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    """Build the RFC 8058 one-click unsubscribe headers for ``unsubscribe_url``.

    Raises DeliveryError (not retryable) unless the URL is an absolute http(s) URL
    without whitespace or angle brackets.
    """
    parts = urlsplit(unsubscribe_url)
    if (parts.scheme not in ("http", "https") or not parts.netloc
            or re.search(r"[\s<>]", unsubscribe_url)):
        raise DeliveryError(
            f"Invalid unsubscribe URL {unsubscribe_url!r}: expected an absolute https:// URL. "
            "Check BEHAVEMAIL_PUBLIC_URL.",
            retryable=False,
        )
    return {
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        "List-Unsubscribe-Post": ONE_CLICK_UNSUBSCRIBE,
    }


def extra_header_items(email: OutgoingEmail) -> dict[str, str]:
    """Return the email's extra headers with values on one line.

    Raises ValueError for a malformed or reserved header name, because extra
    headers come from code, not from user data.
    """
    headers = {}
    for name, value in email.extra_headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"Extra header name {name!r} is malformed or reserved: use an X- header name"
            )
        headers[name] = header_text(value)
    return headers


def build_mime_message(email: OutgoingEmail, sender: Sender, *,
                       message_id_domain: str) -> EmailMessage:
    """Build the multipart/alternative message (text, then HTML) for one email.

    Sets From, To, Subject, Date, Message-ID, the RFC 8058 List-Unsubscribe pair
    and X-Behavemail-Send-Id. Raises DeliveryError (not retryable) for an invalid
    recipient address or unsubscribe URL.
    """
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender_address(sender)
    message["To"] = recipient_address(email)
    message["Subject"] = header_text(email.subject)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=message_id_domain)
    for name, value in list_unsubscribe_headers(email.unsubscribe_url).items():
        message[name] = value
    message[SEND_ID_HEADER] = str(email.send_id)
    for name, value in extra_header_items(email).items():
        message[name] = value

    message.set_content(email.text, subtype="plain", charset="utf-8")
    message.add_alternative(email.html, subtype="html", charset="utf-8")
    # The email package gives the part made by add_alternative a MIME-Version
    # header of its own; only the top level needs one (RFC 2045, section 4).
    for part in message.iter_parts():
        del part["MIME-Version"]
    return message


def message_id_domain_of(sender: Sender) -> str:
    """Return the domain of the sender's address, used on the right of Message-IDs."""
    return sender.address.rpartition("@")[2] or "localhost"
