"""Open pixel, click redirect and unsubscribe against a real event server and SQLite database."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from behavemail_core.events import EventServer
from behavemail_core.events.responses import TRANSPARENT_GIF
from behavemail_core.links import click_url, iri_to_uri, open_pixel_url, unsubscribe_url
from tests.support.events import SECRET_KEY, AppDatabase

BROWSER_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                      "(KHTML, like Gecko) Chrome/124.0 Safari/537.36")
TARGET = "https://example.com/docs/start?utm_source=mail&utm_campaign=onboarding&id=7#step-2"


@pytest.fixture
def server(event_server_factory: Callable[..., EventServer]) -> EventServer:
    return event_server_factory()


def _altered(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


# --- Open pixel -----------------------------------------------------------------------


def test_pixel_records_one_open(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    response = httpx.get(open_pixel_url(server.url, SECRET_KEY, send_id),
                         headers={"User-Agent": BROWSER_USER_AGENT})
    events = event_database.events()

    assert response.status_code == 200
    assert [(event.event_type, event.source, event.send_id) for event in events] == [("open", "tracking", send_id)]
    assert events[0].machine_open is False
    assert event_database.send(send_id).opened_at is not None


def test_pixel_is_uncached_gif(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    response = httpx.get(open_pixel_url(server.url, SECRET_KEY, send_id))

    assert response.content == TRANSPARENT_GIF
    assert response.headers["Content-Type"] == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    assert response.headers["Pragma"] == "no-cache"


def test_second_open_keeps_first_time(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    url = open_pixel_url(server.url, SECRET_KEY, send_id)

    httpx.get(url, headers={"User-Agent": BROWSER_USER_AGENT})
    first_opened_at = event_database.send(send_id).opened_at
    httpx.get(url, headers={"User-Agent": BROWSER_USER_AGENT})

    assert len(event_database.events()) == 2
    assert event_database.send(send_id).opened_at == first_opened_at


MACHINE_OPEN_CASES = [
    # Apple Mail Privacy Protection's proxy, reported with the bare user agent
    ({"User-Agent": "Mozilla/5.0"}, True),
    # no user agent at all
    ({"User-Agent": ""}, True),
    # a mail security scanner
    ({"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}, True),
    # a Chromium prefetch
    ({"User-Agent": BROWSER_USER_AGENT, "Sec-Purpose": "prefetch"}, True),
    # a person in a browser
    ({"User-Agent": BROWSER_USER_AGENT}, False),
    # a person in Apple Mail without the privacy proxy
    ({"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"}, False),
]


@pytest.mark.parametrize(("headers", "machine_open"), MACHINE_OPEN_CASES)
def test_pixel_flags_machine_opens(server: EventServer, event_database: AppDatabase,
                                   headers: dict[str, str], machine_open: bool) -> None:
    send_id = event_database.create_send()

    httpx.get(open_pixel_url(server.url, SECRET_KEY, send_id), headers=headers)
    [event] = event_database.events()
    send = event_database.send(send_id)

    assert event.machine_open is machine_open
    assert (send.machine_opened_at is not None) is machine_open
    assert (send.opened_at is not None) is not machine_open


def test_pixel_bad_token_still_gif(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    url = open_pixel_url(server.url, SECRET_KEY, send_id)
    altered = url.removesuffix(".gif")[:-1] + "x.gif"

    response = httpx.get(altered)

    assert response.status_code == 200
    assert response.content == TRANSPARENT_GIF
    assert event_database.events() == []


def test_pixel_unknown_send_still_gif(server: EventServer, event_database: AppDatabase) -> None:
    response = httpx.get(open_pixel_url(server.url, SECRET_KEY, 4242))

    assert response.content == TRANSPARENT_GIF
    assert event_database.events() == []


# --- Click redirect -------------------------------------------------------------------


def test_click_redirects_to_exact_url(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    response = httpx.get(click_url(server.url, SECRET_KEY, send_id, TARGET))

    assert response.status_code == 302
    assert response.headers["Location"] == TARGET


def test_click_records_url(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    httpx.get(click_url(server.url, SECRET_KEY, send_id, TARGET))
    events = event_database.events()

    assert [(event.event_type, event.url) for event in events] == [("click", TARGET)]
    assert event_database.send(send_id).clicked_at is not None


def test_click_non_ascii_url(server: EventServer, event_database: AppDatabase) -> None:
    # The Location header carries the URI form; the stored event keeps the URL as written.
    send_id = event_database.create_send()
    target = "https://bücher.example/straße?q=größe&x=1#über"

    response = httpx.get(click_url(server.url, SECRET_KEY, send_id, target))
    [event] = event_database.events()

    assert response.headers["Location"] == "https://xn--bcher-kva.example/stra%C3%9Fe?q=gr%C3%B6%C3%9Fe&x=1#%C3%BCber"
    assert response.headers["Location"] == iri_to_uri(target)
    assert event.url == target


def test_click_followed_by_browser_client(server: EventServer, event_database: AppDatabase) -> None:
    # Following the redirect lands on the target server, here the event server's own health page.
    send_id = event_database.create_send()
    target = f"{server.url}/healthz?a=1&b=2"

    response = httpx.get(click_url(server.url, SECRET_KEY, send_id, target), follow_redirects=True)

    assert str(response.url) == target
    assert response.json()["status"] == "ok"


ALTERED_CLICK_CASES = [
    # signature changed
    lambda token: _altered(token),
    # signature removed
    lambda token: token.rpartition(".")[0],
    # payload of a link to another URL with the original signature
    lambda token: "WzEsImh0dHBzOi8vZXZpbC5leGFtcGxlLyJd." + token.rpartition(".")[2],
    # not a token at all
    lambda token: "https%3A%2F%2Fevil.example%2F",
]


@pytest.mark.parametrize("alter", ALTERED_CLICK_CASES)
def test_altered_click_token_not_found(server: EventServer, event_database: AppDatabase,
                                       alter: Callable[[str], str]) -> None:
    send_id = event_database.create_send()
    token = click_url(server.url, SECRET_KEY, send_id, TARGET).rpartition("/c/")[2]

    response = httpx.get(f"{server.url}/c/{alter(token)}")

    assert response.status_code == 404
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"]
    assert event_database.events() == []


def test_click_token_from_other_key(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    response = httpx.get(click_url(server.url, "some-other-secret-key", send_id, TARGET))

    assert response.status_code == 404
    assert "Location" not in response.headers


def test_click_unknown_send_redirects(server: EventServer, event_database: AppDatabase) -> None:
    # A validly signed link still works when its send is gone; nothing is recorded.
    response = httpx.get(click_url(server.url, SECRET_KEY, 4242, TARGET))

    assert response.headers["Location"] == TARGET
    assert event_database.events() == []


# --- Unsubscribe ------------------------------------------------------------------------


def test_unsubscribe_page_shows_form(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()

    response = httpx.get(unsubscribe_url(server.url, SECRET_KEY, send_id))

    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    assert '<form method="post">' in response.text
    assert "A***********@Example.com" in response.text
    assert event_database.suppressions() == []


def test_unsubscribe_button_suppresses(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send(email="Ada.Lovelace@Example.com")
    url = unsubscribe_url(server.url, SECRET_KEY, send_id)

    httpx.get(url)
    response = httpx.post(url, data={"confirm": "unsubscribe"})
    [suppression] = event_database.suppressions()
    [event] = event_database.events()

    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert suppression.email == "ada.lovelace@example.com"
    assert suppression.reason == "unsubscribed"
    assert suppression.send_id == send_id
    assert event.event_type == "unsubscribe"
    assert event.payload == {"method": "form"}
    assert event_database.send(send_id).unsubscribed_at is not None


def test_one_click_post_suppresses(server: EventServer, event_database: AppDatabase) -> None:
    # RFC 8058: the mail client posts "List-Unsubscribe=One-Click" as a form body.
    send_id = event_database.create_send()

    response = httpx.post(unsubscribe_url(server.url, SECRET_KEY, send_id),
                          content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    [suppression] = event_database.suppressions()
    [event] = event_database.events()

    assert response.status_code == 200
    assert suppression.reason == "unsubscribed"
    assert event.payload == {"method": "one_click"}


def test_one_click_multipart_suppresses(server: EventServer, event_database: AppDatabase) -> None:
    # RFC 8058 also allows a multipart/form-data body.
    send_id = event_database.create_send()

    response = httpx.post(unsubscribe_url(server.url, SECRET_KEY, send_id),
                          files={"List-Unsubscribe": (None, "One-Click")})

    assert response.status_code == 200
    assert len(event_database.suppressions()) == 1


def test_unsubscribe_twice_stored_once(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    url = unsubscribe_url(server.url, SECRET_KEY, send_id)

    first = httpx.post(url, content=b"List-Unsubscribe=One-Click")
    second = httpx.post(url, content=b"List-Unsubscribe=One-Click")

    assert first.status_code == 200
    assert second.status_code == 200
    assert len(event_database.suppressions()) == 1
    assert len(event_database.events()) == 1


def test_unsubscribed_page_says_so(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    url = unsubscribe_url(server.url, SECRET_KEY, send_id)

    httpx.post(url, content=b"List-Unsubscribe=One-Click")
    response = httpx.get(url)

    assert "You are unsubscribed" in response.text
    assert "<form" not in response.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unsubscribe_bad_token_not_found(server: EventServer, event_database: AppDatabase, method: str) -> None:
    send_id = event_database.create_send()
    url = unsubscribe_url(server.url, SECRET_KEY, send_id)

    response = httpx.request(method, _altered(url), content=b"List-Unsubscribe=One-Click")

    assert response.status_code == 404
    assert event_database.suppressions() == []


def test_open_token_cannot_unsubscribe(server: EventServer, event_database: AppDatabase) -> None:
    send_id = event_database.create_send()
    open_token = open_pixel_url(server.url, SECRET_KEY, send_id).rpartition("/o/")[2].removesuffix(".gif")

    response = httpx.post(f"{server.url}/u/{open_token}", content=b"List-Unsubscribe=One-Click")

    assert response.status_code == 404
    assert event_database.suppressions() == []


def test_unsubscribe_unknown_send_not_found(server: EventServer, event_database: AppDatabase) -> None:
    response = httpx.post(unsubscribe_url(server.url, SECRET_KEY, 4242), content=b"List-Unsubscribe=One-Click")

    assert response.status_code == 404
    assert event_database.suppressions() == []


# --- Logging ------------------------------------------------------------------------------


def test_tokens_never_logged_whole(server: EventServer, event_database: AppDatabase,
                                   caplog: pytest.LogCaptureFixture) -> None:
    send_id = event_database.create_send()
    urls = [open_pixel_url(server.url, SECRET_KEY, send_id), click_url(server.url, SECRET_KEY, send_id, TARGET),
            unsubscribe_url(server.url, SECRET_KEY, send_id)]
    tokens = [url.rsplit("/", 1)[1].removesuffix(".gif") for url in urls]

    with caplog.at_level(logging.DEBUG):
        httpx.get(urls[0])
        httpx.get(urls[1])
        httpx.get(_altered(urls[1]))
        httpx.post(urls[2], content=b"List-Unsubscribe=One-Click")
        httpx.post(_altered(urls[2]))
    # Only Behavemail's own loggers count: the httpx client of this test logs its URLs.
    logged = "\n".join(record.getMessage() for record in caplog.records
                       if record.name.startswith("behavemail_core"))

    assert f"send {send_id}" in logged
    for token in tokens:
        assert token not in logged
        assert token[:-1] not in logged
