"""The outbox backend and the backend factory."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from behavemail_core.delivery import create_backend
from behavemail_core.delivery.message import OutgoingEmail, Sender
from behavemail_core.delivery.outbox import OutboxBackend, eml_filename
from behavemail_core.delivery.sendgrid import SendGridBackend
from behavemail_core.delivery.smtp import SMTPBackend
from behavemail_core.settings import load_settings

SENDER = Sender(address="hello@example.com", name="Behavemail Demo")


def outgoing(send_id: int, address: str | None = None) -> OutgoingEmail:
    return OutgoingEmail(
        send_id=send_id, to_address=address or f"user{send_id}@example.com",
        to_name=f"User {send_id}", subject=f"Hello {send_id}", html=f"<p>Hello {send_id}</p>",
        text=f"Hello {send_id}\n", unsubscribe_url=f"https://mail.example.com/u/{send_id}",
    )


def test_outbox_writes_one_file_per_email(tmp_path):
    results = OutboxBackend(tmp_path / "outbox", SENDER).deliver([outgoing(1), outgoing(2)])

    files = sorted((tmp_path / "outbox").iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    assert [result.accepted for result in results] == [True, True]


def test_outbox_file_is_the_message(tmp_path):
    [result] = OutboxBackend(tmp_path, SENDER).deliver([outgoing(3)])

    [path] = tmp_path.glob("*.eml")
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "User 3 <user3@example.com>"
    assert message["X-Behavemail-Send-Id"] == "3"
    assert message["Message-ID"] == result.provider_message_id
    assert path.name == eml_filename(3, result.provider_message_id)


def test_outbox_leaves_no_temporary_files(tmp_path):
    OutboxBackend(tmp_path, SENDER).deliver([outgoing(send_id) for send_id in range(5)])

    assert sorted(path.name.startswith(".") for path in tmp_path.iterdir()) == [False] * 5


def test_outbox_rejects_invalid_address(tmp_path):
    [result] = OutboxBackend(tmp_path, SENDER).deliver([outgoing(1, "nobody")])

    assert result.accepted is False
    assert result.retryable is False
    assert list(tmp_path.iterdir()) == []


def test_outbox_unwritable_folder_fails_retryable(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")

    [result] = OutboxBackend(blocker, SENDER).deliver([outgoing(1)])

    assert result.accepted is False
    assert result.retryable is True
    assert "BEHAVEMAIL_OUTBOX_DIR" in result.error


@pytest.mark.parametrize("message_id, expected", [
    # The usual shape of make_msgid().
    ("<1712.99.123@example.com>", "00000007-1712.99.123.eml"),
    # Characters that are unsafe in file names become underscores.
    ("<a/b\\c d@example.com>", "00000007-a_b_c_d.eml"),
])
def test_eml_filename_cases(message_id, expected):
    assert eml_filename(7, message_id) == expected


@pytest.mark.parametrize("environ, backend_type", [
    # The default backend writes files.
    ({}, OutboxBackend),
    # SMTP needs a host.
    ({"BEHAVEMAIL_EMAIL_BACKEND": "smtp", "BEHAVEMAIL_SMTP_HOST": "smtp.example.com"}, SMTPBackend),
    # SendGrid needs an API key.
    ({"BEHAVEMAIL_EMAIL_BACKEND": "sendgrid", "BEHAVEMAIL_SENDGRID_API_KEY": "SG.key"},
     SendGridBackend),
])
def test_create_backend_cases(tmp_path, environ, backend_type):
    settings = load_settings({"BEHAVEMAIL_SECRET_KEY": "test-secret",
                              "BEHAVEMAIL_OUTBOX_DIR": str(tmp_path / "outbox"), **environ},
                             config_dir=tmp_path)

    backend = create_backend(settings)

    assert isinstance(backend, backend_type)
    assert backend.name == settings.email_backend
