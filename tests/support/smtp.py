"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 that records what it receives.

``SMTPTestServer`` listens on a free port, records every envelope (MAIL FROM,
RCPT TO, raw DATA) and counts client connections. Tests can make it reject
chosen recipients with a chosen reply, delay its reply to DATA, or drop a
connection after a number of messages. Use it as a context manager, or through
the ``smtp_server`` fixture, which a test module gets by importing it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"
# Finding a free port and starting the server on it is not atomic, so another
# process may take the port in between. Starting is tried this many times, each
# time on a new port.
START_ATTEMPTS = 5


@dataclass(frozen=True)
class ReceivedEnvelope:
    """One message the server accepted: the SMTP envelope and the raw message bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    # 1 for the first client connection since the server started, 2 for the next ...
    connection: int

    def message(self) -> EmailMessage:
        """Parse the raw data as the recipient's mail client would."""
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _RecordingHandler:
    """aiosmtpd handler hooks that record envelopes and apply the server's scripted replies."""

    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any,
                          address: str, mail_options: list[str]) -> str:
        state = self._server
        if state._should_drop(server):
            # Close without a reply, as a server that crashed or timed out would.
            server.transport.close()
            return "421 4.3.0 Closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self._server.recipient_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        state = self._server
        if state.data_delay:
            await asyncio.sleep(state.data_delay)
        state._record(server, envelope)
        return "250 2.0.0 Message accepted for delivery"


class _CountingController(Controller):
    """A Controller that numbers each client connection it accepts."""

    def __init__(self, server: SMTPTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._test_server = server

    def factory(self) -> SMTP:
        smtp = super().factory()
        self._test_server._connection_opened(smtp)
        return smtp


class SMTPTestServer:
    """An aiosmtpd server on 127.0.0.1 and a free port, recording what it receives.

    ``recipient_replies`` maps a lower-case address to the reply its RCPT TO gets,
    e.g. ``{"gone@example.com": "550 5.1.1 User unknown"}``. ``data_delay`` is the
    time in seconds the server waits before it replies to DATA. ``tls_context`` offers
    STARTTLS, ``implicit_tls_context`` makes the whole connection TLS (SMTPS), and
    ``credentials`` (user name, password) turns on AUTH.
    """

    def __init__(self, *, recipient_replies: dict[str, str] | None = None,
                 data_delay: float = 0.0, tls_context: ssl.SSLContext | None = None,
                 implicit_tls_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.host = HOST
        self.port = 0
        self.recipient_replies = {address.lower(): reply
                                  for address, reply in (recipient_replies or {}).items()}
        self.data_delay = data_delay
        self._tls_context = tls_context
        self._implicit_tls_context = implicit_tls_context
        self._credentials = credentials
        self._lock = threading.Lock()
        self._envelopes: list[ReceivedEnvelope] = []
        self._connection_numbers: dict[int, int] = {}
        self._connections_seen: list[SMTP] = []
        self._messages_per_connection: dict[int, int] = {}
        self._drop_after: int | None = None
        self._drops_left = 0
        self._controller: _CountingController | None = None

    @property
    def envelopes(self) -> list[ReceivedEnvelope]:
        with self._lock:
            return list(self._envelopes)

    @property
    def connections(self) -> int:
        """Client connections accepted since the server started."""
        with self._lock:
            return len(self._connection_numbers)

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 User unknown") -> None:
        self.recipient_replies[address.lower()] = reply

    def drop_connection_after(self, messages: int, *, times: int = 1) -> None:
        """Close a connection at its next MAIL FROM once it has delivered ``messages`` messages.

        Applies to the next ``times`` connections that get that far.
        """
        with self._lock:
            self._drop_after = messages
            self._drops_left = times

    def start(self) -> SMTPTestServer:
        last_error: OSError | RuntimeError | None = None
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            controller = self._controller_for(self.port)
            try:
                controller.start()
            except (OSError, RuntimeError) as exc:
                last_error = exc
                continue
            self._controller = controller
            # The controller's own readiness probe is a connection too: start counting after it.
            with self._lock:
                self._connection_numbers.clear()
                self._connections_seen.clear()
            return self
        raise RuntimeError(f"aiosmtpd failed to start on {HOST}: {last_error}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _controller_for(self, port: int) -> _CountingController:
        options: dict[str, Any] = {}
        if self._tls_context is not None:
            options.update(tls_context=self._tls_context, require_starttls=True)
        if self._credentials is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=True)
        return _CountingController(
            self, _RecordingHandler(self), hostname=HOST, port=port,
            ssl_context=self._implicit_tls_context, ready_timeout=5.0, **options,
        )

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if (isinstance(auth_data, LoginPassword) and self._credentials is not None
                and (auth_data.login.decode(), auth_data.password.decode()) == self._credentials):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _connection_opened(self, smtp: SMTP) -> None:
        with self._lock:
            # Keeping the SMTP object alive keeps its id() unique while the server runs.
            self._connections_seen.append(smtp)
            self._connection_numbers[id(smtp)] = len(self._connection_numbers) + 1

    def _should_drop(self, smtp: SMTP) -> bool:
        with self._lock:
            if self._drop_after is None:
                return False
            delivered = self._messages_per_connection.get(id(smtp), 0)
            if delivered < self._drop_after:
                return False
            self._drops_left -= 1
            if self._drops_left <= 0:
                self._drop_after = None
            return True

    def _record(self, smtp: SMTP, envelope: Any) -> None:
        with self._lock:
            key = id(smtp)
            self._messages_per_connection[key] = self._messages_per_connection.get(key, 0) + 1
            self._envelopes.append(ReceivedEnvelope(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content),
                connection=self._connection_numbers.get(key, 0),
            ))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Create a certificate for 127.0.0.1 and return (server context, client context).

    The client context trusts only that certificate, so TLS tests verify the
    server the way production code does, without the system CA store.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path = directory / "smtp-cert.pem"
    key_path = directory / "smtp-key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate_path, key_path)
    client_context = ssl.create_default_context(cafile=str(certificate_path))
    return server_context, client_context


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A started SMTPTestServer, stopped after the test."""
    with SMTPTestServer() as server:
        yield server
