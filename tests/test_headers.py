"""Headers built from untrusted account data: no injected header, no extra recipient."""

from __future__ import annotations

from email.headerregistry import Address

import pytest

from behavemail_core.delivery.message import OutgoingEmail, Sender
from behavemail_core.delivery.mime import build_mime_message, header_text
from behavemail_core.delivery.smtp import SMTPBackend
from behavemail_core.errors import DeliveryError
from tests.support.smtp import SMTPTestServer, smtp_server  # noqa: F401  (fixture)

SENDER = Sender(address="hello@example.com", name="Behavemail Demo")
UNSUBSCRIBE_URL = "https://mail.example.com/u/tok3n"
# The headers every message carries, and nothing else at the top level.
EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "list-unsubscribe",
    "list-unsubscribe-post", "x-behavemail-send-id", "mime-version", "content-type",
}


def outgoing(send_id: int = 1, *, to_name: str = "Ada Lovelace",
             to_address: str = "ada@example.com", subject: str = "Your API usage",
             extra_headers: dict[str, str] | None = None,
             unsubscribe_url: str = UNSUBSCRIBE_URL) -> OutgoingEmail:
    return OutgoingEmail(
        send_id=send_id, to_address=to_address, to_name=to_name, subject=subject,
        html="<p>Hello</p>", text="Hello\n", unsubscribe_url=unsubscribe_url,
        extra_headers=extra_headers or {},
    )


def smtp_backend(server: SMTPTestServer) -> SMTPBackend:
    return SMTPBackend(server.host, server.port, "", "", "none", SENDER, timeout=5,
                       local_hostname="localhost")


@pytest.mark.parametrize("to_name, shown_name", [
    # CRLF followed by a Bcc header in a first name.
    ("Ada\r\nBcc: someone@example.com", "Ada Bcc: someone@example.com"),
    # A comma would split the To header into two addresses if it were not quoted.
    ("Müller, Jörg", "Müller, Jörg"),
    # A bare LF followed by a To header.
    ("Ada\nTo: other@example.com", "Ada To: other@example.com"),
    # A bare CR followed by a Cc header.
    ("Ada\rCc: copy@example.com", "Ada Cc: copy@example.com"),
    # A Unicode line separator, which str.splitlines() treats as a line break.
    ("Ada\u2028Bcc: someone@example.com", "Ada Bcc: someone@example.com"),
    # An address written into the name itself.
    ("Eve <eve@example.com>, Ada", "Eve <eve@example.com>, Ada"),
    # An encoded word passes through, and a reader decodes it, but only as a name.
    ("=?utf-8?q?eve=40example.com?=", "eve@example.com"),
])
def test_display_name_gives_one_recipient(smtp_server, to_name, shown_name):
    email = outgoing(to_name=to_name)

    [result] = smtp_backend(smtp_server).deliver([email])

    assert result.accepted
    [envelope] = smtp_server.envelopes
    assert envelope.rcpt_tos == ("ada@example.com",)
    message = envelope.message()
    assert {name.lower() for name in message.keys()} == EXPECTED_HEADERS
    assert len(message.get_all("To")) == 1
    [address] = message["To"].addresses
    assert address.addr_spec == "ada@example.com"
    assert address.display_name == shown_name


def test_subject_injection_adds_no_header(smtp_server):
    email = outgoing(subject="Hello\r\nBcc: someone@example.com\r\n\r\nbody")

    smtp_backend(smtp_server).deliver([email])

    [envelope] = smtp_server.envelopes
    message = envelope.message()
    assert envelope.rcpt_tos == ("ada@example.com",)
    assert {name.lower() for name in message.keys()} == EXPECTED_HEADERS
    assert message["Subject"] == "Hello Bcc: someone@example.com body"


def test_mime_message_has_both_parts_in_order():
    message = build_mime_message(outgoing(), SENDER, message_id_domain="example.com")

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_mime_message_has_one_click_unsubscribe():
    message = build_mime_message(outgoing(), SENDER, message_id_domain="example.com")

    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_mime_message_identifies_send():
    message = build_mime_message(outgoing(send_id=42), SENDER, message_id_domain="mail.example.com")

    assert message["X-Behavemail-Send-Id"] == "42"
    assert message["Message-ID"].endswith("@mail.example.com>")
    assert message["Date"].datetime.tzinfo is not None


def test_mime_message_encodes_non_ascii_name():
    message = build_mime_message(outgoing(to_name="Müller, Jörg"), SENDER,
                                 message_id_domain="example.com")

    raw_to = [line for line in message.as_bytes().split(b"\r\n") if line.startswith(b"To:")]
    assert raw_to == [b"To: =?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <ada@example.com>"]


def test_mime_message_from_uses_sender():
    message = build_mime_message(outgoing(), SENDER, message_id_domain="example.com")

    assert message["From"].addresses == (Address("Behavemail Demo", addr_spec="hello@example.com"),)


@pytest.mark.parametrize("to_address", [
    # A second address smuggled in with CRLF.
    "ada@example.com\r\nBcc: someone@example.com",
    # Two addresses separated by a comma.
    "ada@example.com, eve@example.com",
    # No domain.
    "ada",
    # Ends with @.
    "ada@",
    # Starts with @.
    "@example.com",
    # A space inside the domain.
    "ada@exa mple.com",
    # Non-ASCII before the @, which needs SMTPUTF8 and is not supported.
    "jörg@example.com",
])
def test_invalid_recipient_address_is_rejected(to_address):
    with pytest.raises(DeliveryError) as caught:
        build_mime_message(outgoing(to_address=to_address), SENDER, message_id_domain="example.com")

    assert caught.value.retryable is False
    assert repr(to_address) in str(caught.value)


@pytest.mark.parametrize("unsubscribe_url", [
    # A header line break inside the URL.
    "https://mail.example.com/u/x\r\nBcc: someone@example.com",
    # A closing angle bracket would end the List-Unsubscribe value early.
    "https://mail.example.com/u/x>, <mailto:someone@example.com",
    # A relative URL cannot be reached from a mail client.
    "/u/x",
    # Only http and https are allowed.
    "javascript:alert(1)",
])
def test_invalid_unsubscribe_url_is_rejected(unsubscribe_url):
    with pytest.raises(DeliveryError) as caught:
        build_mime_message(outgoing(unsubscribe_url=unsubscribe_url), SENDER,
                           message_id_domain="example.com")

    assert caught.value.retryable is False


def test_extra_header_value_is_one_line():
    email = outgoing(extra_headers={"X-Campaign": "spring\r\nBcc: someone@example.com"})

    message = build_mime_message(email, SENDER, message_id_domain="example.com")

    assert message["X-Campaign"] == "spring Bcc: someone@example.com"
    assert message["Bcc"] is None


@pytest.mark.parametrize("name", [
    # A reserved header would replace one the message builds itself.
    "Bcc",
    # The same, in other letter case.
    "list-unsubscribe",
    # A colon would end the field name.
    "X-Bad:Name",
    # Whitespace is not allowed in a field name.
    "X Bad",
])
def test_extra_header_name_is_checked(name):
    with pytest.raises(ValueError):
        build_mime_message(outgoing(extra_headers={name: "x"}), SENDER, message_id_domain="example.com")


@pytest.mark.parametrize("value, expected", [
    # CR, LF and tabs become single spaces.
    ("a\r\n\tb", "a b"),
    # NUL and other C0 controls become spaces.
    ("a\x00b\x1fc", "a b c"),
    # Unicode line and paragraph separators and NEL.
    ("a\u2028b\u2029c\x85d", "a b c d"),
    # Leading and trailing whitespace goes.
    ("  a  ", "a"),
])
def test_header_text_cases(value, expected):
    assert header_text(value) == expected


def test_mime_version_only_at_top() -> None:
    from behavemail_core.delivery.message import OutgoingEmail, Sender
    from behavemail_core.delivery.mime import build_mime_message

    email = OutgoingEmail(send_id=1, to_address="ana@example.com", to_name="Ana", subject="Hi",
                          html="<p>Hi</p>", text="Hi", unsubscribe_url="http://127.0.0.1:8502/u/t")
    message = build_mime_message(email, Sender("hello@example.com", "Example"), message_id_domain="example.com")

    assert message["MIME-Version"] == "1.0"
    assert [part["MIME-Version"] for part in message.iter_parts()] == [None, None]
