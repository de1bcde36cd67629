"""Signed links: token round trips, rejection of altered tokens, HTML rewriting."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from behavemail_core.errors import ConfigurationError, TokenError
from behavemail_core.links import (apply_tracking, click_url, iri_to_uri, open_pixel_url, token_hint,
                                   unsubscribe_url, verify_click_token, verify_open_token,
                                   verify_unsubscribe_token)

PUBLIC_URL = "https://events.example.com"
SECRET = "test-secret-key-0123456789"
OTHER_SECRET = "another-secret-key-9876543210"

TARGET_URLS = [
    # query string with several parameters
    "https://example.com/docs?utm_source=mail&utm_medium=email&id=42",
    # fragment after a query string
    "https://example.com/pricing?plan=pro&seats=5#compare",
    # non-ASCII path, query and host
    "https://bücher.example/straße/café?q=größe&lang=de#über",
    # existing percent-escapes must not be encoded twice
    "https://example.com/search?q=a%20b%26c&x=%E2%9C%93",
    # plain http, a port and an empty query value
    "http://localhost:8080/path/?empty=&flag",
]


def _token(url: str, prefix: str) -> str:
    return url.removeprefix(f"{PUBLIC_URL}{prefix}")


class _Anchors(HTMLParser):
    """Collect the decoded href of every <a> and the src of every <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href") is not None:
            self.hrefs.append(values["href"] or "")
        if tag == "img":
            self.images.append(values.get("src") or "")


def _parse(html: str) -> _Anchors:
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    return parser


@pytest.mark.parametrize("target", TARGET_URLS)
def test_click_token_round_trip(target: str) -> None:
    url = click_url(PUBLIC_URL, SECRET, 17, target)

    assert url.startswith(f"{PUBLIC_URL}/c/")
    assert verify_click_token(SECRET, _token(url, "/c/")) == (17, target)


@pytest.mark.parametrize("target", TARGET_URLS)
def test_click_token_is_url_safe(target: str) -> None:
    token = _token(click_url(PUBLIC_URL, SECRET, 17, target), "/c/")

    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", token)


def test_open_and_unsubscribe_round_trip() -> None:
    open_url = open_pixel_url(PUBLIC_URL, SECRET, 5)
    unsubscribe = unsubscribe_url(PUBLIC_URL, SECRET, 6)

    assert open_url.endswith(".gif")
    assert verify_open_token(SECRET, _token(open_url, "/o/").removesuffix(".gif")) == 5
    assert verify_unsubscribe_token(SECRET, _token(unsubscribe, "/u/")) == 6


def test_public_url_trailing_slash_ignored() -> None:
    url = unsubscribe_url(f"{PUBLIC_URL}/", SECRET, 6)

    assert url.startswith(f"{PUBLIC_URL}/u/")


def _altered(token: str) -> list[str]:
    """Tokens that differ from ``token`` in the payload, the signature or the length."""
    payload, _, signature = token.rpartition(".")
    flipped = "A" if payload[0] != "A" else "B"
    return [
        flipped + token[1:],                            # payload's first character changed
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # signature's last character changed
        token[:-4],                                     # signature cut short
        payload,                                        # signature removed
        f"{payload}.{signature}{signature}",            # signature doubled
        "",                                             # empty token
    ]


@pytest.mark.parametrize("index", range(6))
def test_altered_click_token_rejected(index: int) -> None:
    token = _token(click_url(PUBLIC_URL, SECRET, 17, TARGET_URLS[1]), "/c/")
    altered = _altered(token)[index]

    with pytest.raises(TokenError):
        verify_click_token(SECRET, altered)


def test_swapped_target_url_rejected() -> None:
    # A token's payload taken from a link to another URL, with the first link's signature.
    first = _token(click_url(PUBLIC_URL, SECRET, 17, "https://example.com/a"), "/c/")
    second = _token(click_url(PUBLIC_URL, SECRET, 17, "https://evil.example/a"), "/c/")
    forged = f"{second.rpartition('.')[0]}.{first.rpartition('.')[2]}"

    with pytest.raises(TokenError):
        verify_click_token(SECRET, forged)


def test_token_from_other_key_rejected() -> None:
    token = _token(click_url(PUBLIC_URL, OTHER_SECRET, 17, TARGET_URLS[0]), "/c/")

    with pytest.raises(TokenError):
        verify_click_token(SECRET, token)


@pytest.mark.parametrize("verify", [verify_click_token, verify_open_token])
def test_unsubscribe_token_rejected_elsewhere(verify: Callable[[str, str], object]) -> None:
    # Each purpose has its own salt, so a token of one purpose fails for the others.
    token = _token(unsubscribe_url(PUBLIC_URL, SECRET, 6), "/u/")

    with pytest.raises(TokenError):
        verify(SECRET, token)


def test_click_url_rejects_javascript_target() -> None:
    with pytest.raises(TokenError):
        click_url(PUBLIC_URL, SECRET, 17, "javascript:alert(1)")


def test_empty_secret_key_rejected() -> None:
    with pytest.raises(ConfigurationError):
        unsubscribe_url(PUBLIC_URL, "", 6)


def test_token_hint_hides_signature() -> None:
    token = _token(unsubscribe_url(PUBLIC_URL, SECRET, 6), "/u/")

    assert token_hint(token) == f"{token[:6]}…"


IRI_CASES = [
    # ASCII URLs come back unchanged, & and # included
    ("https://example.com/a?b=1&c=2#frag", "https://example.com/a?b=1&c=2#frag"),
    # existing escapes stay as they are
    ("https://example.com/q?x=%20y", "https://example.com/q?x=%20y"),
    # non-ASCII path and query are percent-encoded as UTF-8
    ("https://example.com/straße?q=ü", "https://example.com/stra%C3%9Fe?q=%C3%BC"),
    # a non-ASCII host is IDNA-encoded, its port kept
    ("https://bücher.example:8443/", "https://xn--bcher-kva.example:8443/"),
    # CR, LF and tab are removed, as browsers do, so they cannot reach an HTTP header
    ("https://example.com/a\r\nSet-Cookie: x=1\t", "https://example.com/aSet-Cookie:%20x=1"),
    # other control characters are percent-encoded
    ("https://example.com/a\x00b\x7f", "https://example.com/a%00b%7F"),
]


@pytest.mark.parametrize(("iri", "uri"), IRI_CASES)
def test_iri_to_uri(iri: str, uri: str) -> None:
    assert iri_to_uri(iri) == uri


EMAIL_HTML = """<!DOCTYPE html>
<html><head><style>a {{ color: red; }}</style></head>
<body>
<p>Hello <a href="https://example.com/docs?a=1&amp;b=2#start" class="button">read the docs</a></p>
<p><a href='https://exämple.com/straße?q=ü'>non-ASCII</a></p>
<p><A HREF=" https://example.com/padded ">padded</A></p>
<p><a href="mailto:support@example.com?subject=Hi&amp;body=x">mail us</a></p>
<p><a href="#top">back to top</a> <a name="anchor">no href</a> <a href="tel:+123">call</a></p>
<!-- <a href="https://example.com/in-comment">commented out</a> -->
<script>var html = '<a href="https://example.com/in-script">';</script>
<p><a href="{unsubscribe}">Unsubscribe</a></p>
</body>
</html>
"""


@pytest.fixture
def tracked_html() -> tuple[str, str]:
    unsubscribe = unsubscribe_url(PUBLIC_URL, SECRET, 9)
    html = EMAIL_HTML.format(unsubscribe=unsubscribe)
    return html, apply_tracking(html, send_id=9, public_url=PUBLIC_URL, secret_key=SECRET)


def test_tracking_rewrites_http_links(tracked_html: tuple[str, str]) -> None:
    _, tracked = tracked_html
    clicks = [href for href in _parse(tracked).hrefs if href.startswith(f"{PUBLIC_URL}/c/")]
    targets = [verify_click_token(SECRET, _token(href, "/c/")) for href in clicks]

    assert targets == [
        (9, "https://example.com/docs?a=1&b=2#start"),
        (9, "https://exämple.com/straße?q=ü"),
        (9, "https://example.com/padded"),
    ]


def test_tracking_leaves_other_links(tracked_html: tuple[str, str]) -> None:
    _, tracked = tracked_html
    hrefs = _parse(tracked).hrefs
    unsubscribe = unsubscribe_url(PUBLIC_URL, SECRET, 9)

    assert "mailto:support@example.com?subject=Hi&body=x" in hrefs
    assert "#top" in hrefs
    assert "tel:+123" in hrefs
    assert unsubscribe in hrefs


def test_tracking_skips_comments_and_scripts(tracked_html: tuple[str, str]) -> None:
    _, tracked = tracked_html

    assert '<a href="https://example.com/in-comment">' in tracked
    assert '<a href="https://example.com/in-script">' in tracked


def test_tracking_keeps_other_attributes(tracked_html: tuple[str, str]) -> None:
    _, tracked = tracked_html

    assert re.search(r'<a href="[^"]+/c/[^"]+" class="button">read the docs</a>', tracked)


def test_tracking_adds_pixel_before_body_end(tracked_html: tuple[str, str]) -> None:
    _, tracked = tracked_html
    images = _parse(tracked).images
    pixel_token = _token(images[0], "/o/").removesuffix(".gif")

    assert len(images) == 1
    assert verify_open_token(SECRET, pixel_token) == 9
    assert re.search(r'<img src="[^"]+\.gif"[^>]*width="1" height="1"[^>]*/></body>', tracked)


def test_tracking_changes_nothing_else(tracked_html: tuple[str, str]) -> None:
    # Removing the rewritten tags and the pixel from both versions leaves equal text.
    html, tracked = tracked_html
    strip = re.compile(r"<a [^>]*(?:docs\?|exämple|padded|/c/)[^>]*>|<img [^>]*>", re.IGNORECASE)

    assert strip.sub("", tracked) == strip.sub("", html)


def test_tracking_without_body_appends_pixel() -> None:
    tracked = apply_tracking('<p><a href="https://example.com">x</a></p>', send_id=3,
                             public_url=PUBLIC_URL, secret_key=SECRET)

    assert tracked.startswith('<p><a href="https://events.example.com/c/')
    assert tracked.endswith('.gif" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px" />')


def test_tracking_uses_first_href_only() -> None:
    # Browsers follow the first of two href attributes, so only that one decides.
    tracked = apply_tracking('<a href="mailto:a@example.com" href="https://example.com">x</a>', send_id=3,
                             public_url=PUBLIC_URL, secret_key=SECRET)

    assert "/c/" not in tracked


def test_tracking_keeps_crlf_positions() -> None:
    # Offsets are computed per line, so CRLF line ends must not shift the rewrite.
    html = '<p>a</p>\r\n<p>b</p>\r\n<a href="https://example.com/x">x</a>\r\n</body>'
    tracked = apply_tracking(html, send_id=3, public_url=PUBLIC_URL, secret_key=SECRET)

    assert tracked.startswith('<p>a</p>\r\n<p>b</p>\r\n<a href="https://events.example.com/c/')
    assert re.search(r'>x</a>\r\n<img [^>]+/></body>$', tracked)
