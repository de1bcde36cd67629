"""The event endpoints on PostgreSQL: ON CONFLICT inserts and timestamptz comparisons."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from behavemail_core.events import EventServer, start_event_server
from behavemail_core.links import open_pixel_url, unsubscribe_url
from tests.support.events import (BASE_TIME, SECRET_KEY, AppDatabase, StepClock, batch_body, make_settings,
                                  open_app_database, sendgrid_event)
from tests.support.postgres import PostgresCluster

WEBHOOK = "/webhooks/sendgrid"


@pytest.fixture
def postgres_events(tmp_path: Path,
                    postgres_cluster: PostgresCluster) -> Iterator[tuple[EventServer, AppDatabase]]:
    database = open_app_database(postgres_cluster.new_database())
    server = start_event_server(make_settings(tmp_path), database.sessions, clock=StepClock(),
                                address=("127.0.0.1", 0))
    yield server, database
    server.shutdown()
    database.engine.dispose()


def post_batch(server: EventServer, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{server.url}{WEBHOOK}", content=batch_body(events), timeout=30)


def test_postgres_events_deduplicated(postgres_events: tuple[EventServer, AppDatabase]) -> None:
    server, database = postgres_events
    send_id = database.create_send()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=5, sg_event_id="first")])
    response = post_batch(server, [sendgrid_event("open", send_id=send_id, offset=5, sg_event_id="second")])

    assert response.json()["duplicates"] == 1
    assert len(database.events()) == 1


def test_postgres_times_only_move_earlier(postgres_events: tuple[EventServer, AppDatabase]) -> None:
    server, database = postgres_events
    send_id = database.create_send()

    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=60)])
    post_batch(server, [sendgrid_event("open", send_id=send_id, offset=600),
                        sendgrid_event("delivered", send_id=send_id, offset=10)])
    send = database.send(send_id)

    assert send.opened_at == BASE_TIME + timedelta(seconds=60)
    assert send.delivered_at == BASE_TIME + timedelta(seconds=10)


def test_postgres_concurrent_batches(postgres_events: tuple[EventServer, AppDatabase]) -> None:
    # Four requests insert the same 300 events at once; ON CONFLICT keeps one of each.
    server, database = postgres_events
    send_id = database.create_send()
    events = [sendgrid_event("click", send_id=send_id, offset=index, url=f"https://example.com/{index}")
              for index in range(300)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: post_batch(server, events), range(4)))

    assert [response.status_code for response in responses] == [200, 200, 200, 200]
    assert len(database.events()) == 300


def test_postgres_suppressions_once(postgres_events: tuple[EventServer, AppDatabase]) -> None:
    server, database = postgres_events
    send_id = database.create_send(email="Ada.Lovelace@Example.com")

    post_batch(server, [sendgrid_event("bounce", send_id=send_id, type="bounce")])
    httpx.post(unsubscribe_url(server.url, SECRET_KEY, send_id), content=b"List-Unsubscribe=One-Click")
    httpx.get(open_pixel_url(server.url, SECRET_KEY, send_id))
    suppressions = database.suppressions()

    assert [(row.email, row.reason) for row in suppressions] == [("ada.lovelace@example.com", "bounced")]
    assert database.send(send_id).unsubscribed_at is not None
    assert [event.event_type for event in database.events()] == ["bounce", "unsubscribe", "open"]
