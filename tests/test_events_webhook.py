"""POST /webhooks/sendgrid and GET /healthz against a real event server and SQLite database."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from behavemail_core.events import EventServer
from behavemail_core.events.server import MAX_WEBHOOK_BODY_BYTES
from tests.support.events import (BASE_TIME, AppDatabase, WebhookSigner, batch_body, send_raw_request,
                                  sendgrid_event)

WEBHOOK = "/webhooks/sendgrid"
ALL_EVENT_TYPES = ["processed", "delivered", "deferred", "bounce", "dropped", "open", "click",
                   "spamreport", "unsubscribe", "group_unsubscribe"]


def post_batch(server: EventServer, events: list[dict], signer: WebhookSigner | None = None) -> httpx.Response:
    body = batch_body(events)
    headers = signer.headers(body) if signer else {"Content-Type": "application/json"}
    return httpx.post(f"{server.url}{WEBHOOK}", content=body, headers=headers, timeout=30)


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


# --- Signature ----------------------------------------------------------------------


def test_signed_batch_accepted(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                               signer: WebhookSigner) -> None:
    send_id = event_database.create_send()
    server = event_server_factory(webhook_public_key=signer.public_key)

    response = post_batch(server, [sendgrid_event("delivered", send_id=send_id)], signer)

    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert [event.event_type for event in event_database.events()] == ["delivered"]


def test_tampered_body_rejected(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                                signer: WebhookSigner) -> None:
    send_id = event_database.create_send()
    server = event_server_factory(webhook_public_key=signer.public_key)
    body = batch_body([sendgrid_event("delivered", send_id=send_id)])
    headers = signer.headers(body)
    tampered = body.replace(b"delivered", b"bounce")

    response = httpx.post(f"{server.url}{WEBHOOK}", content=tampered, headers=headers)

    assert response.status_code == 403
    assert event_database.events() == []


def test_changed_timestamp_rejected(event_server_factory: Callable[..., EventServer],
                                   event_database: AppDatabase, signer: WebhookSigner) -> None:
    server = event_server_factory(webhook_public_key=signer.public_key)
    body = batch_body([sendgrid_event("delivered", send_id=None)])
    headers = signer.headers(body)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "1"

    response = httpx.post(f"{server.url}{WEBHOOK}", content=body, headers=headers)

    assert response.status_code == 403


SIGNATURE_HEADER_CASES = [
    # no signature headers at all
    {},
    # a timestamp but no signature
    {"X-Twilio-Email-Event-Webhook-Timestamp": "1740830400"},
    # a signature that is not base64
    {"X-Twilio-Email-Event-Webhook-Signature": "%%%not base64%%%",
     "X-Twilio-Email-Event-Webhook-Timestamp": "1740830400"},
    # base64 that is not a DER signature
    {"X-Twilio-Email-Event-Webhook-Signature": "c2lnbmF0dXJl",
     "X-Twilio-Email-Event-Webhook-Timestamp": "1740830400"},
]


@pytest.mark.parametrize("headers", SIGNATURE_HEADER_CASES)
def test_missing_or_bad_signature_rejected(event_server_factory: Callable[..., EventServer],
                                           event_database: AppDatabase, signer: WebhookSigner,
                                           headers: dict[str, str]) -> None:
    server = event_server_factory(webhook_public_key=signer.public_key)
    body = batch_body([sendgrid_event("delivered", send_id=None)])

    response = httpx.post(f"{server.url}{WEBHOOK}", content=body, headers=headers)

    assert response.status_code == 403
    assert event_database.events() == []


def test_other_key_signature_rejected(event_server_factory: Callable[..., EventServer],
                                      event_database: AppDatabase, signer: WebhookSigner) -> None:
    server = event_server_factory(webhook_public_key=signer.public_key)

    response = post_batch(server, [sendgrid_event("delivered", send_id=None)], WebhookSigner())

    assert response.status_code == 403


def test_unsigned_batch_accepted_without_key(event_server_factory: Callable[..., EventServer],
                                             event_database: AppDatabase) -> None:
    server = event_server_factory()

    response = post_batch(server, [sendgrid_event("delivered", send_id=None)])

    assert response.status_code == 200
    assert len(event_database.events()) == 1


# --- Parsing ---------------------------------------------------------------------


MALFORMED_BODIES = [
    # truncated JSON
    b'[{"event": "delivered", "timestamp": 1740830400',
    # not JSON at all
    b"event=delivered",
    # an object instead of an array
    b'{"event": "delivered", "timestamp": 1740830400}',
    # empty body
    b"",
    # not UTF-8
    b'[{"event": "\xff"}]',
]


@pytest.mark.parametrize("body", MALFORMED_BODIES)
def test_malformed_json_rejected(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                                 body: bytes) -> None:
    server = event_server_factory()

    response = httpx.post(f"{server.url}{WEBHOOK}", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert "JSON" in response.json()["error"] or "UTF-8" in response.json()["error"]
    assert event_database.events() == []


def test_invalid_events_skipped(event_server_factory: Callable[..., EventServer],
                                event_database: AppDatabase) -> None:
    # Events without a type or a timestamp are skipped, the rest of the batch is stored.
    server = event_server_factory()
    events = [
        sendgrid_event("delivered", send_id=None),
        {"email": "x@example.com", "timestamp": 1740830400},
        {"event": "open", "timestamp": "yesterday"},
        "not an object",
    ]

    response = post_batch(server, events)

    assert response.status_code == 200
    assert response.json()["skipped"] == 3
    assert response.json()["stored"] == 1


def test_all_event_types_stored(event_server_factory: Callable[..., EventServer],
                                event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event(event_type, send_id=send_id, offset=index, reason="x", url="https://example.com/")
              for index, event_type in enumerate(ALL_EVENT_TYPES)]

    response = post_batch(server, events)
    stored = event_database.events()

    assert response.status_code == 200
    assert [event.event_type for event in stored] == ALL_EVENT_TYPES
    assert {event.send_id for event in stored} == {send_id}
    assert {event.source for event in stored} == {"sendgrid"}


def test_event_payload_and_fields_kept(event_server_factory: Callable[..., EventServer],
                                       event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    raw = sendgrid_event("click", send_id=send_id, offset=30, url="https://example.com/a?b=1&c=2#d",
                         sg_event_id="sg-click-1", useragent="Mozilla/5.0 (X11)")

    post_batch(server, [raw])
    [event] = event_database.events()

    assert event.url == "https://example.com/a?b=1&c=2#d"
    assert event.sg_event_id == "sg-click-1"
    assert event.email == "ada.lovelace@example.com"
    assert event.occurred_at == BASE_TIME + timedelta(seconds=30)
    assert event.payload == raw


def test_unknown_send_stored_unmatched(event_server_factory: Callable[..., EventServer],
                                       event_database: AppDatabase) -> None:
    server = event_server_factory()

    response = post_batch(server, [sendgrid_event("delivered", send_id=999)])
    [event] = event_database.events()

    assert response.json()["unmatched"] == 1
    assert event.send_id is None
    assert event.email == "ada.lovelace@example.com"


# --- Idempotency -------------------------------------------------------------------


def test_repeated_batch_stored_once(event_server_factory: Callable[..., EventServer],
                                    event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event("delivered", send_id=send_id), sendgrid_event("open", send_id=send_id, offset=5)]

    first = post_batch(server, events)
    second = post_batch(server, events)

    assert first.json()["stored"] == 2
    assert second.json()["stored"] == 0
    assert second.json()["duplicates"] == 2
    assert len(event_database.events()) == 2


def test_new_sg_event_id_stored_once(event_server_factory: Callable[..., EventServer],
                                     event_database: AppDatabase) -> None:
    # SendGrid may deliver the same event again under a new sg_event_id.
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=5, sg_event_id="first-id")])
    response = post_batch(server, [sendgrid_event("open", send_id=send_id, offset=5, sg_event_id="second-id")])

    assert response.json()["duplicates"] == 1
    assert [event.sg_event_id for event in event_database.events()] == ["first-id"]


def test_duplicate_within_batch_stored_once(event_server_factory: Callable[..., EventServer],
                                            event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    event = sendgrid_event("click", send_id=send_id, url="https://example.com/")

    response = post_batch(server, [event, dict(event, sg_event_id="other")])

    assert response.json()["stored"] == 1
    assert len(event_database.events()) == 1


def test_distinct_clicks_both_stored(event_server_factory: Callable[..., EventServer],
                                     event_database: AppDatabase) -> None:
    # Two clicks in the same second on different URLs are two events.
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event("click", send_id=send_id, url="https://example.com/a"),
              sendgrid_event("click", send_id=send_id, url="https://example.com/b")]

    post_batch(server, events)

    assert len(event_database.events()) == 2


# --- Send state --------------------------------------------------------------------


def test_delivered_after_open_keeps_opened(event_server_factory: Callable[..., EventServer],
                                           event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=60)])
    post_batch(server, [sendgrid_event("delivered", send_id=send_id, offset=10)])
    send = event_database.send(send_id)

    assert send.opened_at == BASE_TIME + timedelta(seconds=60)
    assert send.delivered_at == BASE_TIME + timedelta(seconds=10)


def test_first_seen_time_never_moves_later(event_server_factory: Callable[..., EventServer],
                                           event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=60)])
    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=600)])

    assert event_database.send(send_id).opened_at == BASE_TIME + timedelta(seconds=60)


def test_earlier_event_arriving_late_wins(event_server_factory: Callable[..., EventServer],
                                         event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event("click", send_id=send_id, offset=600, url="https://example.com/b")])
    post_batch(server, [sendgrid_event("click", send_id=send_id, offset=60, url="https://example.com/a")])

    assert event_database.send(send_id).clicked_at == BASE_TIME + timedelta(seconds=60)


def test_machine_open_kept_apart(event_server_factory: Callable[..., EventServer],
                                 event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=30, sg_machine_open=True)])
    send = event_database.send(send_id)
    [event] = event_database.events()

    assert send.machine_opened_at == BASE_TIME + timedelta(seconds=30)
    assert send.opened_at is None
    assert event.machine_open is True


SEND_COLUMN_CASES = [
    # event type, extra fields, send column that gets the event time
    ("delivered", {}, "delivered_at"),
    ("open", {"sg_machine_open": False}, "opened_at"),
    ("click", {"url": "https://example.com/"}, "clicked_at"),
    ("bounce", {"type": "bounce", "reason": "550 no such user"}, "bounced_at"),
    ("spamreport", {}, "spam_reported_at"),
    ("unsubscribe", {}, "unsubscribed_at"),
    ("group_unsubscribe", {"asm_group_id": 7}, "unsubscribed_at"),
]


@pytest.mark.parametrize(("event_type", "fields", "column"), SEND_COLUMN_CASES)
def test_event_sets_send_column(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                                event_type: str, fields: dict, column: str) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    post_batch(server, [sendgrid_event(event_type, send_id=send_id, offset=45, **fields)])

    assert getattr(event_database.send(send_id), column) == BASE_TIME + timedelta(seconds=45)


# --- Suppressions ------------------------------------------------------------------


SUPPRESSION_CASES = [
    # event type, extra fields, expected suppression reason (None: no suppression)
    ("bounce", {"type": "bounce", "reason": "550 5.1.1 unknown user"}, "bounced"),
    ("bounce", {"reason": "550 5.1.1 unknown user"}, "bounced"),
    ("bounce", {"type": "blocked", "reason": "554 IP listed"}, None),
    ("dropped", {"reason": "Bounced Address"}, "bounced"),
    ("dropped", {"reason": "Spam Reporting Address"}, "spam_report"),
    ("dropped", {"reason": "Unsubscribed Address"}, "unsubscribed"),
    ("dropped", {"reason": "Invalid SMTPAPI header"}, None),
    ("spamreport", {}, "spam_report"),
    ("unsubscribe", {}, "unsubscribed"),
    ("group_unsubscribe", {"asm_group_id": 7}, "unsubscribed"),
    ("deferred", {"response": "451 try later"}, None),
    ("delivered", {}, None),
]


@pytest.mark.parametrize(("event_type", "fields", "reason"), SUPPRESSION_CASES)
def test_event_suppression(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                           event_type: str, fields: dict, reason: str | None) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()

    response = post_batch(server, [sendgrid_event(event_type, send_id=send_id, email="Ada.Lovelace@Example.com",
                                                  **fields)])
    suppressions = event_database.suppressions()

    assert response.status_code == 200
    assert [row.reason for row in suppressions] == ([reason] if reason else [])
    assert [row.email for row in suppressions] == (["ada.lovelace@example.com"] if reason else [])


def test_suppression_without_send(event_server_factory: Callable[..., EventServer],
                                  event_database: AppDatabase) -> None:
    # A bounce of mail that Behavemail did not send still suppresses the address.
    server = event_server_factory()

    post_batch(server, [sendgrid_event("bounce", send_id=None, email="Grace@Example.com", type="bounce")])
    [suppression] = event_database.suppressions()

    assert suppression.email == "grace@example.com"
    assert suppression.send_id is None


def test_repeated_bounce_one_suppression(event_server_factory: Callable[..., EventServer],
                                         event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event("bounce", send_id=send_id, offset=offset, type="bounce") for offset in (1, 2)]

    post_batch(server, events)
    post_batch(server, [sendgrid_event("spamreport", send_id=send_id, offset=3)])
    suppressions = event_database.suppressions()

    assert len(suppressions) == 1
    assert suppressions[0].reason == "bounced"
    assert suppressions[0].send_id == send_id


# --- Size and speed ------------------------------------------------------------------


def test_large_batch_accepted(event_server_factory: Callable[..., EventServer], event_database: AppDatabase,
                              signer: WebhookSigner) -> None:
    send_ids = [event_database.create_send(email=f"user{index}@example.com", user_id=f"u-{index}")
                for index in range(50)]
    server = event_server_factory(webhook_public_key=signer.public_key)
    events = []
    body_size = 0
    while body_size < 5_200_000:
        index = len(events)
        event = sendgrid_event("click", send_id=send_ids[index % 50], email=f"user{index % 50}@example.com",
                               offset=index, url=f"https://example.com/docs/page-{index}?ref=mail&x=1",
                               useragent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit")
        events.append(event)
        body_size += len(json.dumps(event)) + 2
    body = batch_body(events)

    started = time.monotonic()
    response = httpx.post(f"{server.url}{WEBHOOK}", content=body, headers=signer.headers(body), timeout=60)
    elapsed = time.monotonic() - started

    assert len(body) > 5_000_000
    assert response.status_code == 200
    assert response.json()["stored"] == len(events)
    # A bound with a wide margin for a slow CI machine: the request took 0.6 s on the
    # 2-core development VM.
    assert elapsed < 30


def test_body_over_limit_rejected(event_server_factory: Callable[..., EventServer],
                                  event_database: AppDatabase) -> None:
    # The server responds from the Content-Length header alone, without reading the body.
    server = event_server_factory()
    head = (f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_WEBHOOK_BODY_BYTES + 1}\r\n\r\n")

    response = send_raw_request(server.host, server.port, head)

    assert response.startswith(b"HTTP/1.1 413 ")
    assert event_database.events() == []


def test_batch_logged_in_one_line(event_server_factory: Callable[..., EventServer],
                                  event_database: AppDatabase, caplog: pytest.LogCaptureFixture) -> None:
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event("delivered", send_id=send_id), sendgrid_event("delivered", send_id=send_id)]

    with caplog.at_level(logging.INFO, logger="behavemail_core.events"):
        post_batch(server, events)
    lines = [record.getMessage() for record in caplog.records if "webhook batch" in record.getMessage()]

    assert lines == ["SendGrid webhook batch: events=2 stored=1 duplicates=1 skipped=0 unmatched=0 "
                     "suppressions=0"]


# --- Routing and health -------------------------------------------------------------


def test_webhook_get_not_allowed(event_server_factory: Callable[..., EventServer]) -> None:
    server = event_server_factory()

    response = httpx.get(f"{server.url}{WEBHOOK}")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_health_without_scheduler(event_server_factory: Callable[..., EventServer]) -> None:
    server = event_server_factory()

    response = httpx.get(f"{server.url}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "last_cycle_at": None}


def test_health_reports_newest_cycle(event_server_factory: Callable[..., EventServer],
                                     event_database: AppDatabase) -> None:
    event_database.add_scheduler("a", BASE_TIME)
    event_database.add_scheduler("b", BASE_TIME + timedelta(minutes=5))
    event_database.add_scheduler("c", None)
    server = event_server_factory()

    response = httpx.get(f"{server.url}/healthz")

    assert response.json()["last_cycle_at"] == "2025-03-01T12:05:00+00:00"


def test_unknown_path_not_found(event_server_factory: Callable[..., EventServer]) -> None:
    server = event_server_factory()

    response = httpx.get(f"{server.url}/nothing-here")

    assert response.status_code == 404


def test_webhook_response_is_json(event_server_factory: Callable[..., EventServer]) -> None:
    server = event_server_factory()

    response = post_batch(server, [])

    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"events": 0, "stored": 0, "duplicates": 0, "skipped": 0,
                                            "unmatched": 0, "suppressions": 0}


def test_concurrent_batches_stored_once(event_server_factory: Callable[..., EventServer],
                                        event_database: AppDatabase) -> None:
    # The same batch posted four times at once: every request succeeds and each event is stored once.
    send_id = event_database.create_send()
    server = event_server_factory()
    events = [sendgrid_event("click", send_id=send_id, offset=index, url=f"https://example.com/{index}")
              for index in range(300)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: post_batch(server, events), range(4)))

    assert [response.status_code for response in responses] == [200, 200, 200, 200]
    assert len(event_database.events()) == 300
    assert event_database.send(send_id).clicked_at == BASE_TIME
