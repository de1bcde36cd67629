"""Test support for the event endpoints: an app database, sends, signed webhook batches."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.models import SENT, DeliveryEvent, Rule, SchedulerInstance, Send, Suppression
from behavemail_core.settings import Settings, load_settings

SECRET_KEY = "events-test-secret-key-0123456789abcdef"
# 2025-03-01T12:00:00Z, a fixed instant that SendGrid event timestamps count from.
BASE_TIMESTAMP = 1740830400
BASE_TIME = datetime.fromtimestamp(BASE_TIMESTAMP, timezone.utc)


@dataclass
class AppDatabase:
    """A migrated app database (SQLite or PostgreSQL), with helpers to seed and read it."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    def create_send(self, email: str = "Ada.Lovelace@Example.com", user_id: str = "u-1") -> int:
        """Insert a sent email (and the rule it needs) and return its send id."""
        with self.sessions.begin() as session:
            rule = Rule(name=f"rule for {user_id} {email}", definition={"condition": {}})
            session.add(rule)
            session.flush()
            send = Send(rule_id=rule.id, user_id=user_id, dedupe_key="ever", email=email,
                        status=SENT, sent_at=BASE_TIME)
            session.add(send)
            session.flush()
            return send.id

    def add_scheduler(self, scheduler_id: str, last_cycle_at: datetime | None) -> None:
        with self.sessions.begin() as session:
            session.add(SchedulerInstance(id=scheduler_id, hostname="test-host", pid=1,
                                          last_cycle_at=last_cycle_at))

    def send(self, send_id: int) -> Send:
        with self.sessions() as session:
            send = session.get(Send, send_id)
            assert send is not None, f"send {send_id} not found"
            return send

    def events(self) -> list[DeliveryEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(DeliveryEvent).order_by(DeliveryEvent.id)))

    def suppressions(self) -> list[Suppression]:
        with self.sessions() as session:
            return list(session.scalars(select(Suppression).order_by(Suppression.id)))


def make_app_database(directory: Path) -> AppDatabase:
    return open_app_database(f"sqlite:///{directory / 'behavemail.db'}")


def open_app_database(url: str) -> AppDatabase:
    """Migrate the empty database at ``url`` to the newest schema and open it."""
    upgrade(url)
    engine = create_app_engine(url)
    return AppDatabase(url=url, engine=engine, sessions=session_factory(engine))


def make_settings(directory: Path, *, webhook_public_key: str = "") -> Settings:
    """Load settings from an explicit environment, so no file of the working tree is read."""
    environ = {
        "BEHAVEMAIL_DATABASE_URL": f"sqlite:///{directory / 'behavemail.db'}",
        "BEHAVEMAIL_SECRET_KEY": SECRET_KEY,
        "BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY": webhook_public_key,
        "BEHAVEMAIL_EVENTS_ADDRESS": "127.0.0.1:8502",
    }
    return load_settings(environ=environ, config_dir=directory)


class StepClock:
    """A clock that starts at BASE_TIME and moves one second forward on every call."""

    def __init__(self) -> None:
        self._ticks: Iterator[int] = iter(range(10**9))

    def __call__(self) -> datetime:
        return BASE_TIME + timedelta(seconds=next(self._ticks))


class WebhookSigner:
    """Sign Event Webhook bodies as SendGrid does: ECDSA P-256 over timestamp + body."""

    def __init__(self) -> None:
        self._private_key = ec.generate_private_key(ec.SECP256R1())
        der = self._private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        # SendGrid shows the verification key as base64 DER, without PEM header lines.
        self.public_key = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: str = str(BASE_TIMESTAMP)) -> dict[str, str]:
        signature = self._private_key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_event(event: str, *, send_id: int | None, email: str = "ada.lovelace@example.com",
                   offset: int = 0, sg_event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Build one SendGrid event, ``offset`` seconds after BASE_TIMESTAMP, with send_id as a custom argument."""
    raw: dict[str, Any] = {
        "email": email,
        "timestamp": BASE_TIMESTAMP + offset,
        "event": event,
        "sg_event_id": sg_event_id or f"{event}-{send_id}-{offset}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
    }
    if send_id is not None:
        # SendGrid sends custom arguments back as strings, at the top level of the event.
        raw["send_id"] = str(send_id)
    raw.update(fields)
    return raw


def batch_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode("utf-8")


def send_raw_request(host: str, port: int, head: str, timeout: float = 10.0) -> bytes:
    """Send a hand-written request head (no body) and return the whole response."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(head.encode("ascii"))
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
