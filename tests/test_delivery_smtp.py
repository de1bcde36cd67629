"""The SMTP backend against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import time

import logging

import pytest

from behavemail_core.delivery.message import OutgoingEmail, Sender
from behavemail_core.delivery.smtp import SMTPBackend
from behavemail_core.errors import ConfigurationError, DeliveryError
from tests.support.smtp import SMTPTestServer, free_port, self_signed_tls, smtp_server  # noqa: F401

SENDER = Sender(address="hello@example.com", name="Behavemail Demo")
PASSWORD = "s3cret-smtp-password"


def outgoing(send_id: int, address: str | None = None) -> OutgoingEmail:
    return OutgoingEmail(
        send_id=send_id, to_address=address or f"user{send_id}@example.com",
        to_name=f"User {send_id}", subject=f"Hello {send_id}", html=f"<p>Hello {send_id}</p>",
        text=f"Hello {send_id}\n", unsubscribe_url=f"https://mail.example.com/u/{send_id}",
    )


def backend_for(server: SMTPTestServer, *, tls: str = "none", username: str = "",
                password: str = "", ssl_context=None, timeout: float = 5.0) -> SMTPBackend:
    return SMTPBackend(server.host, server.port, username, password, tls, SENDER,
                       timeout=timeout, ssl_context=ssl_context, local_hostname="localhost")


def test_batch_uses_one_connection(smtp_server):
    emails = [outgoing(send_id) for send_id in range(1, 6)]

    results = backend_for(smtp_server).deliver(emails)

    assert smtp_server.connections == 1
    assert [result.accepted for result in results] == [True] * 5
    assert [envelope.rcpt_tos for envelope in smtp_server.envelopes] == [
        (email.to_address,) for email in emails]


def test_unknown_user_fails_only_that_email(smtp_server):
    smtp_server.reject_recipient("user3@example.com", "550 5.1.1 User unknown")
    emails = [outgoing(send_id) for send_id in range(1, 6)]

    results = backend_for(smtp_server).deliver(emails)

    by_id = {result.send_id: result for result in results}
    assert smtp_server.connections == 1
    assert [by_id[send_id].accepted for send_id in range(1, 6)] == [True, True, False, True, True]
    assert by_id[3].retryable is False
    assert "550 5.1.1 User unknown" in by_id[3].error
    assert sorted(envelope.rcpt_tos[0] for envelope in smtp_server.envelopes) == [
        "user1@example.com", "user2@example.com", "user4@example.com", "user5@example.com"]


@pytest.mark.parametrize("reply, retryable", [
    # Mailbox unavailable: permanent.
    ("550 5.1.1 User unknown", False),
    # Transaction failed, e.g. a policy rejection: permanent.
    ("554 5.7.1 Rejected", False),
    # Local error in processing, greylisting: try again later.
    ("451 4.7.1 Greylisted, try again", True),
    # Insufficient storage: try again later.
    ("452 4.2.2 Mailbox full", True),
])
def test_reply_code_decides_retryable(smtp_server, reply, retryable):
    smtp_server.reject_recipient("user1@example.com", reply)

    [result] = backend_for(smtp_server).deliver([outgoing(1)])

    assert result.accepted is False
    assert result.retryable is retryable
    assert reply in result.error


def test_provider_message_id_is_message_id(smtp_server):
    [result] = backend_for(smtp_server).deliver([outgoing(1)])

    [envelope] = smtp_server.envelopes
    assert result.provider_message_id == envelope.message()["Message-ID"]


def test_dropped_connection_reconnects_once(smtp_server):
    smtp_server.drop_connection_after(2)
    emails = [outgoing(send_id) for send_id in range(1, 6)]

    results = backend_for(smtp_server).deliver(emails)

    assert [result.accepted for result in results] == [True] * 5
    assert smtp_server.connections == 2
    assert sorted(envelope.rcpt_tos[0] for envelope in smtp_server.envelopes) == [
        email.to_address for email in emails]
    assert [envelope.connection for envelope in smtp_server.envelopes] == [1, 1, 2, 2, 2]


def test_second_drop_fails_rest_retryable(smtp_server):
    smtp_server.drop_connection_after(1, times=2)
    emails = [outgoing(send_id) for send_id in range(1, 6)]

    results = backend_for(smtp_server).deliver(emails)

    assert [result.accepted for result in results] == [True, True, False, False, False]
    assert [result.retryable for result in results[2:]] == [True, True, True]
    assert "twice in one batch" in results[2].error
    assert smtp_server.connections == 2


def test_unreachable_server_fails_retryable():
    backend = SMTPBackend("127.0.0.1", free_port(), "", "", "none", SENDER, timeout=2,
                          local_hostname="localhost")

    results = backend.deliver([outgoing(1), outgoing(2)])

    assert [result.accepted for result in results] == [False, False]
    assert [result.retryable for result in results] == [True, True]
    assert "Failed to connect to SMTP server 127.0.0.1" in results[0].error


def test_reply_timeout_not_resent():
    # The server may have accepted a message whose reply timed out, so resending
    # could deliver it twice: each such email fails for good, and nothing is sent twice.
    with SMTPTestServer(data_delay=3.0) as server:
        results = backend_for(server, timeout=0.5).deliver([outgoing(1), outgoing(2)])
        time.sleep(3.5)
        received = [rcpt for envelope in server.envelopes for rcpt in envelope.rcpt_tos]

    assert [result.accepted for result in results] == [False, False]
    assert [result.retryable for result in results] == [False, False]
    assert "did not answer within 0.5 s" in results[0].error
    assert len(received) == len(set(received))


def test_starttls_with_login_delivers(tmp_path):
    server_context, client_context = self_signed_tls(tmp_path)
    with SMTPTestServer(tls_context=server_context, credentials=("mailer", PASSWORD)) as server:
        backend = backend_for(server, tls="starttls", username="mailer", password=PASSWORD,
                              ssl_context=client_context)

        [result] = backend.deliver([outgoing(1)])

        assert result.accepted
        assert [envelope.rcpt_tos for envelope in server.envelopes] == [("user1@example.com",)]


def test_wrong_password_fails_not_retryable(tmp_path):
    server_context, client_context = self_signed_tls(tmp_path)
    with SMTPTestServer(tls_context=server_context, credentials=("mailer", PASSWORD)) as server:
        backend = backend_for(server, tls="starttls", username="mailer", password="wrong",
                              ssl_context=client_context)

        results = backend.deliver([outgoing(1), outgoing(2)])

        assert [result.retryable for result in results] == [False, False]
        assert "rejected the login of user 'mailer'" in results[0].error
        assert server.connections == 1
        assert server.envelopes == []


def test_untrusted_certificate_fails_not_retryable(tmp_path):
    server_context, _ = self_signed_tls(tmp_path)
    with SMTPTestServer(tls_context=server_context) as server:
        # The default context trusts only the system's CAs, not this self-signed certificate.
        results = backend_for(server, tls="starttls").deliver([outgoing(1)])

    assert results[0].retryable is False
    assert "failed verification" in results[0].error


def test_implicit_tls_delivers(tmp_path):
    server_context, client_context = self_signed_tls(tmp_path)
    with SMTPTestServer(implicit_tls_context=server_context) as server:
        [result] = backend_for(server, tls="ssl", ssl_context=client_context).deliver([outgoing(1)])

        assert result.accepted
        assert len(server.envelopes) == 1


def test_check_connection_raises_on_login_failure(tmp_path):
    server_context, client_context = self_signed_tls(tmp_path)
    with SMTPTestServer(tls_context=server_context, credentials=("mailer", PASSWORD)) as server:
        backend = backend_for(server, tls="starttls", username="mailer", password="wrong",
                              ssl_context=client_context)

        with pytest.raises(DeliveryError) as caught:
            backend.check_connection()

    assert caught.value.retryable is False


def test_batch_logs_one_info_line_without_password(tmp_path, caplog):
    server_context, client_context = self_signed_tls(tmp_path)
    caplog.set_level(logging.DEBUG, logger="behavemail_core")
    with SMTPTestServer(tls_context=server_context, credentials=("mailer", PASSWORD)) as server:
        backend = backend_for(server, tls="starttls", username="mailer", password=PASSWORD,
                              ssl_context=client_context)
        backend.deliver([outgoing(1), outgoing(2)])

    own_records = [record for record in caplog.records if record.name.startswith("behavemail_core")]
    info_lines = [record.getMessage() for record in own_records if record.levelno == logging.INFO]
    assert info_lines == [f"smtp batch sent: host=127.0.0.1:{server.port} accepted=2 failed=0 reconnects=0"]
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


def test_invalid_address_fails_without_sending(smtp_server):
    results = backend_for(smtp_server).deliver([outgoing(1, "not-an-address"), outgoing(2)])

    assert [result.accepted for result in results] == [False, True]
    assert results[0].retryable is False
    assert len(smtp_server.envelopes) == 1


def test_empty_batch_opens_no_connection(smtp_server):
    results = backend_for(smtp_server).deliver([])

    assert results == []
    assert smtp_server.connections == 0


def test_unknown_tls_mode_is_rejected():
    with pytest.raises(ConfigurationError):
        SMTPBackend("127.0.0.1", 25, "", "", "tls", SENDER)
