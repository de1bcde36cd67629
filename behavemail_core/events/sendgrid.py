"""SendGrid's Event Webhook: signature check, batch parsing and storage.

SendGrid posts a JSON array of events. Custom arguments of the message (here
``send_id``) arrive as top-level fields of each event, as strings. With the
Signed Event Webhook, each request carries an ECDSA P-256 signature over the
timestamp header followed by the raw body.
"""

from __future__ import annotations

import binascii
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.exc import SQLAlchemyError

from ..errors import BehavemailError, ConfigurationError
from .context import EventContext
from .recording import (BOUNCED, SPAM_REPORT, UNSUBSCRIBED, IncomingEvent, make_dedupe_key,
                        record_events, run_in_transaction)
from .responses import Response, json_response

log = logging.getLogger(__name__)

SOURCE = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# Dropped events whose reason shows that SendGrid already suppresses the address;
# Behavemail mirrors those suppressions so it stops choosing the address too.
DROPPED_REASONS = {
    "bounced address": BOUNCED,
    "spam reporting address": SPAM_REPORT,
    "unsubscribed address": UNSUBSCRIBED,
}
SUPPRESSING_EVENTS = {
    "spamreport": SPAM_REPORT,
    "unsubscribe": UNSUBSCRIBED,
    "group_unsubscribe": UNSUBSCRIBED,
}

_MAX_TEXT = {"email": 320, "sg_event_id": 128, "event": 32}


class WebhookRejectedError(BehavemailError):
    """A webhook request was rejected; ``status`` is the HTTP status of the response."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one Event Webhook batch, as logged and returned to SendGrid."""

    events: int
    stored: int
    duplicates: int
    skipped: int
    unmatched: int
    suppressions: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def load_webhook_verifier(public_key: str) -> EventWebhook | None:
    """Build the signature verifier from BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY; None when it is empty."""
    public_key = public_key.strip()
    if not public_key:
        return None
    try:
        verifier = EventWebhook(public_key)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            "BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key: copy the "
            "verification key (base64, without PEM header lines) from SendGrid's Mail Settings, "
            "Signed Event Webhook"
        ) from exc
    if not isinstance(verifier.public_key, ec.EllipticCurvePublicKey):
        raise ConfigurationError(
            "BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic curve key: SendGrid "
            "signs with ECDSA P-256, so copy its verification key unchanged"
        )
    return verifier


def verify_signature(verifier: EventWebhook, payload: str, signature: str | None,
                     timestamp: str | None) -> None:
    """Raise WebhookRejectedError (403) unless ``signature`` signs ``timestamp`` + ``payload``."""
    if not signature or not timestamp:
        raise WebhookRejectedError(
            f"Missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header: enable the Signed Event "
            "Webhook in SendGrid, or unset BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", status=403)
    try:
        valid = verifier.verify_signature(payload, signature, timestamp)
    except (binascii.Error, ValueError, TypeError):
        valid = False
    if not valid:
        raise WebhookRejectedError(
            "Invalid Event Webhook signature: the body or timestamp was changed, or "
            "BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY is not this webhook's verification key", status=403)


def parse_batch(payload: str) -> list[Any]:
    """Parse a batch body; raise WebhookRejectedError (400) unless it is a JSON array."""
    try:
        batch = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise WebhookRejectedError(
            f"Malformed JSON in the request body at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}. Expected a JSON array of SendGrid events", status=400) from exc
    if not isinstance(batch, list):
        raise WebhookRejectedError(
            f"Expected a JSON array of SendGrid events, got a JSON {type(batch).__name__}", status=400)
    return batch


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    limit = _MAX_TEXT.get(name)
    return value.strip()[:limit] if limit else value.strip()


def _send_id(raw: Mapping[str, Any]) -> int | None:
    value = raw.get("send_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip()) or None
    return None


def _timestamp(raw: Mapping[str, Any]) -> tuple[datetime, str] | None:
    """Return the event time and its canonical text for the dedupe key."""
    value = raw.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    try:
        occurred_at = datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    canonical = str(int(value)) if float(value).is_integer() else repr(float(value))
    return occurred_at, canonical


def _suppression_reason(event_type: str, raw: Mapping[str, Any]) -> str | None:
    if event_type == "bounce":
        # "blocked" is a rejection for reasons other than the address (reputation,
        # content); only a real bounce means the address does not accept mail.
        bounce_type = _text(raw, "type")
        return BOUNCED if bounce_type in (None, "bounce") else None
    if event_type == "dropped":
        reason = (_text(raw, "reason") or "").lower()
        return next((value for key, value in DROPPED_REASONS.items() if key in reason), None)
    return SUPPRESSING_EVENTS.get(event_type)


def to_incoming_event(raw: Any) -> IncomingEvent | None:
    """Map one SendGrid event to an IncomingEvent; None when it lacks a type or timestamp."""
    if not isinstance(raw, dict):
        return None
    event_type = _text(raw, "event")
    when = _timestamp(raw)
    if event_type is None or when is None:
        return None
    occurred_at, canonical_time = when

    send_id = _send_id(raw)
    email = _text(raw, "email")
    url = _text(raw, "url")
    subject = f"send:{send_id}" if send_id is not None else f"email:{(email or '').lower()}"
    detail = url or _text(raw, "reason") or _text(raw, "response") or ""
    machine_open = raw.get("sg_machine_open") in (True, "true")
    return IncomingEvent(
        source=SOURCE,
        event_type=event_type,
        occurred_at=occurred_at,
        dedupe_key=make_dedupe_key(SOURCE, subject, event_type, canonical_time, detail),
        send_id=send_id,
        email=email,
        url=url,
        machine_open=event_type == "open" and machine_open,
        sg_event_id=_text(raw, "sg_event_id"),
        suppression_reason=_suppression_reason(event_type, raw),
        payload=raw,
    )


def decode_body(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejectedError(
            f"The request body is not UTF-8 (invalid byte at offset {exc.start}): "
            "SendGrid sends UTF-8 JSON", status=400) from exc


def handle_webhook(context: EventContext, body: bytes, headers: Mapping[str, str]) -> Response:
    """Verify, parse and store one Event Webhook batch, and build the response."""
    try:
        payload = decode_body(body)
        if context.webhook_verifier is not None:
            verify_signature(context.webhook_verifier, payload,
                             headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER))
        batch = parse_batch(payload)
    except WebhookRejectedError as exc:
        log.warning("rejected SendGrid webhook batch of %d bytes with %d: %s", len(body), exc.status, exc)
        return json_response(exc.status, {"error": str(exc)})

    events = [event for event in map(to_incoming_event, batch) if event is not None]
    skipped = len(batch) - len(events)
    if skipped:
        log.warning("skipped %d of %d SendGrid events without a valid 'event' and 'timestamp'",
                    skipped, len(batch))

    try:
        result = run_in_transaction(
            context.sessions, lambda session: record_events(session, events, received_at=context.clock()))
    except SQLAlchemyError as exc:
        # With a 5xx status SendGrid learns that the batch was not accepted, so it
        # posts the batch again later. The rolled-back transaction stored none of it.
        log.error("failed to store SendGrid webhook batch of %d events: %s", len(events), exc)
        return json_response(503, {"error": "The app database is unavailable; the batch was not stored"})
    summary = BatchSummary(events=len(batch), stored=result.stored, duplicates=result.duplicates,
                           skipped=skipped, unmatched=result.unmatched, suppressions=result.suppressions)
    log.info("SendGrid webhook batch: events=%d stored=%d duplicates=%d skipped=%d unmatched=%d "
             "suppressions=%d", summary.events, summary.stored, summary.duplicates, summary.skipped,
             summary.unmatched, summary.suppressions)
    return json_response(200, summary.as_dict())
