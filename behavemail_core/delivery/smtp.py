"""The SMTP backend: one connection per batch, one SMTP transaction per email."""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Sequence

from ..errors import ConfigurationError, DeliveryError
from .message import DeliveryResult, OutgoingEmail, Sender
from .mime import build_mime_message, message_id_domain_of

logger = logging.getLogger(__name__)

TLS_MODES = ("starttls", "ssl", "none")
# Reply code 421: the server is closing the connection (RFC 5321, section 4.2.3).
SERVICE_CLOSING = 421


@dataclass(frozen=True)
class _Failure:
    """The reason an email was not accepted, and whether sending it again later can help."""

    error: str
    retryable: bool

    def result(self, email: OutgoingEmail) -> DeliveryResult:
        return DeliveryResult(email.send_id, accepted=False, error=self.error,
                              retryable=self.retryable)


class _ConnectionLost(Exception):
    """The server closed the connection or the socket failed in the middle of a batch."""


class _OutcomeUnknown(Exception):
    """The connection timed out after the message was handed over; it may have been delivered."""


class SMTPBackend:
    """Send email through an SMTP server with smtplib.

    ``deliver`` opens one connection for the whole batch, logs in when a user
    name is set, and sends one transaction per email so that every recipient
    gets its own result. If the server drops the connection mid-batch, the
    backend reconnects once and goes on. The reply code decides whether a
    failure is retryable: 4xx codes and connection errors are, 5xx codes are not.
    """

    name = "smtp"

    def __init__(self, host: str, port: int, username: str, password: str, tls: str,
                 sender: Sender, timeout: float = 30.0, *,
                 ssl_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None,
                 message_id_domain: str | None = None) -> None:
        if tls not in TLS_MODES:
            raise ConfigurationError(
                f"BEHAVEMAIL_SMTP_TLS={tls!r} is not supported: expected one of {', '.join(TLS_MODES)}"
            )
        if not host:
            raise ConfigurationError("BEHAVEMAIL_SMTP_HOST is empty: set it to your SMTP server")
        self.host = host
        self.port = port
        self.tls = tls
        self._username = username
        self._password = password
        self._sender = sender
        self._timeout = timeout
        # None verifies the server certificate against the system's CA store.
        self._ssl_context = ssl_context
        # None lets smtplib send the machine's fully qualified name in EHLO.
        self._local_hostname = local_hostname
        self._message_id_domain = message_id_domain or message_id_domain_of(sender)

    def deliver(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        if not emails:
            return []
        batch = _Batch(self)
        try:
            results = [batch.send(email) for email in emails]
        finally:
            batch.close()
        accepted = sum(result.accepted for result in results)
        logger.info(
            "smtp batch sent: host=%s:%d accepted=%d failed=%d reconnects=%d",
            self.host, self.port, accepted, len(results) - accepted, batch.reconnects,
        )
        return results

    def close(self) -> None:
        # Each batch closes its own connection, so nothing stays open between batches.
        return None

    def check_connection(self) -> None:
        """Connect, start TLS and log in as a batch would, then quit.

        Raises DeliveryError with the cause and the setting to check.
        """
        connection = self._connect()
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def _connect(self) -> smtplib.SMTP:
        """Open an authenticated connection, mapping failures to DeliveryError."""
        try:
            return self._open_connection()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP server {self.host}:{self.port} rejected the login of user "
                f"{self._username!r}: {_reply(exc)}. Check BEHAVEMAIL_SMTP_USERNAME and "
                "BEHAVEMAIL_SMTP_PASSWORD.",
                retryable=False,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(
                f"SMTP server {self.host}:{self.port} does not support {exc}. Check "
                "BEHAVEMAIL_SMTP_TLS (starttls, ssl or none) and the port.",
                retryable=False,
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"TLS certificate of {self.host}:{self.port} failed verification: "
                f"{exc.verify_message}. Use the host name the certificate is issued for.",
                retryable=False,
            ) from exc
        except ssl.SSLError as exc:
            raise DeliveryError(
                f"TLS with {self.host}:{self.port} failed: {exc}. Check BEHAVEMAIL_SMTP_TLS: "
                "ssl is for implicit TLS (usually port 465), starttls for port 587.",
                retryable=False,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP server {self.host}:{self.port} refused the connection: {_reply(exc)}",
                retryable=_is_temporary(exc.smtp_code),
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"Failed to connect to SMTP server {self.host}:{self.port}: {exc or type(exc).__name__}."
                " Check BEHAVEMAIL_SMTP_HOST, BEHAVEMAIL_SMTP_PORT and that the server is up.",
                retryable=True,
            ) from exc

    def _open_connection(self) -> smtplib.SMTP:
        if self.tls == "ssl":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=self._local_hostname,
                timeout=self._timeout, context=self._tls_context(),
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, local_hostname=self._local_hostname,
                                      timeout=self._timeout)
        try:
            connection.ehlo()
            if self.tls == "starttls":
                connection.starttls(context=self._tls_context())
                connection.ehlo()
            if self._username:
                connection.login(self._username, self._password)
        except BaseException:
            connection.close()
            raise
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _build_message(self, email: OutgoingEmail) -> EmailMessage:
        return build_mime_message(email, self._sender, message_id_domain=self._message_id_domain)

    def _send_one(self, connection: smtplib.SMTP, email: OutgoingEmail,
                  message: EmailMessage) -> DeliveryResult:
        """Send one message over ``connection``, or raise _ConnectionLost if the connection failed.

        A reply that times out raises _OutcomeUnknown: the server may have
        accepted the message, so it is not sent again.
        """
        try:
            connection.send_message(message, from_addr=self._sender.address,
                                    to_addrs=[email.to_address])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            if code == SERVICE_CLOSING:
                raise _ConnectionLost(f"{code} {_text(reply)}") from exc
            return self._rejected(email, "the recipient", code, reply)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == SERVICE_CLOSING:
                raise _ConnectionLost(_reply(exc)) from exc
            return self._rejected_response(email, exc)
        except smtplib.SMTPNotSupportedError as exc:
            return _Failure(
                f"SMTP server {self.host}:{self.port} cannot take this email: {exc}",
                retryable=False,
            ).result(email)
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            # smtplib reports a reply timeout as SMTPServerDisconnected raised while
            # handling the socket's TimeoutError.
            if not isinstance(exc, TimeoutError) and not isinstance(exc.__context__, TimeoutError):
                raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
            raise _OutcomeUnknown(
                f"SMTP server {self.host}:{self.port} did not answer within {self._timeout:g} s. "
                "It may have accepted the email, so it is not resent to avoid a duplicate.") from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
        except smtplib.SMTPException as exc:
            logger.warning("smtp failed send_id=%s: %s", email.send_id, exc)
            return _Failure(f"SMTP delivery via {self.host}:{self.port} failed: {exc}",
                            retryable=True).result(email)
        return DeliveryResult(email.send_id, accepted=True,
                              provider_message_id=message["Message-ID"])

    def _rejected_response(self, email: OutgoingEmail,
                           exc: smtplib.SMTPResponseException) -> DeliveryResult:
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return self._rejected(email, f"the sender {self._sender.address!r}",
                                  exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPDataError):
            return self._rejected(email, "the message", exc.smtp_code, exc.smtp_error)
        return self._rejected(email, "the email", exc.smtp_code, exc.smtp_error)

    def _rejected(self, email: OutgoingEmail, what: str, code: int,
                  reply: bytes | str) -> DeliveryResult:
        retryable = _is_temporary(code)
        logger.warning("smtp rejected send_id=%s: code=%s retryable=%s",
                       email.send_id, code, retryable)
        return _Failure(
            f"SMTP server {self.host}:{self.port} rejected {what}: {code} {_text(reply)}",
            retryable=retryable,
        ).result(email)


class _Batch:
    """The connection state of one ``deliver`` call: the open connection and reconnects."""

    MAX_RECONNECTS = 1

    def __init__(self, backend: SMTPBackend) -> None:
        self._backend = backend
        self._connection: smtplib.SMTP | None = None
        self._fatal: _Failure | None = None
        self.reconnects = 0

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        try:
            message = self._backend._build_message(email)
        except DeliveryError as exc:
            logger.warning("smtp skipped send_id=%s: %s", email.send_id, exc)
            return _Failure(str(exc), exc.retryable).result(email)

        while self._fatal is None:
            connection = self._connection or self._connect()
            if connection is None:
                break
            try:
                return self._backend._send_one(connection, email, message)
            except _OutcomeUnknown as exc:
                logger.error("smtp outcome unknown send_id=%s: %s", email.send_id, exc)
                connection.close()
                self._connection = None
                return _Failure(str(exc), retryable=False).result(email)
            except _ConnectionLost as exc:
                self._connection_lost(email, exc)
        assert self._fatal is not None
        return self._fatal.result(email)

    def close(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.quit()
        except (smtplib.SMTPException, OSError):
            self._connection.close()
        self._connection = None

    def _connect(self) -> smtplib.SMTP | None:
        try:
            self._connection = self._backend._connect()
        except DeliveryError as exc:
            logger.error("smtp connection failed, failing the rest of the batch: %s", exc)
            self._fatal = _Failure(str(exc), exc.retryable)
            return None
        return self._connection

    def _connection_lost(self, email: OutgoingEmail, exc: _ConnectionLost) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        backend = self._backend
        if self.reconnects < self.MAX_RECONNECTS:
            self.reconnects += 1
            logger.warning("smtp connection to %s:%d lost at send_id=%s (%s), reconnecting",
                           backend.host, backend.port, email.send_id, exc)
            return
        logger.error("smtp connection to %s:%d lost again at send_id=%s (%s), "
                     "failing the rest of the batch", backend.host, backend.port,
                     email.send_id, exc)
        self._fatal = _Failure(
            f"Lost the connection to SMTP server {backend.host}:{backend.port} twice in one "
            f"batch: {exc}",
            retryable=True,
        )


def _is_temporary(code: int) -> bool:
    """Return whether an SMTP reply code is a transient failure (4xx), or not a reply (-1)."""
    return not 500 <= code <= 599


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return reply
