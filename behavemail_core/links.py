"""Signed links in emails: open pixel, click redirect and unsubscribe.

Every token is signed with BEHAVEMAIL_SECRET_KEY (HMAC-SHA256 through itsdangerous)
and a salt per purpose, so an open token cannot be replayed as an unsubscribe token.
Tokens carry no expiry: an unsubscribe link must keep working for as long as the
email sits in someone's mailbox. A click token carries the target URL itself, so the
redirect endpoint only ever redirects to a URL that Behavemail put into an email.
"""

from __future__ import annotations

import hashlib
import logging
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from itsdangerous import BadData, URLSafeSerializer

from .errors import ConfigurationError, TokenError

log = logging.getLogger(__name__)

OPEN_SALT = "behavemail.open"
CLICK_SALT = "behavemail.click"
UNSUBSCRIBE_SALT = "behavemail.unsubscribe"

OPEN_PATH = "/o/"
OPEN_SUFFIX = ".gif"
CLICK_PATH = "/c/"
UNSUBSCRIBE_PATH = "/u/"

# Characters that may stay as they are in a URI (RFC 3986 reserved and unreserved
# characters, plus "%" so that existing percent-escapes are not encoded twice).
_URI_SAFE_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"


def _serializer(secret_key: str, salt: str) -> URLSafeSerializer:
    if not secret_key:
        raise ConfigurationError(
            "BEHAVEMAIL_SECRET_KEY is empty: set it, or leave it unset so load_settings() generates one"
        )
    return URLSafeSerializer(secret_key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


def token_hint(token: str) -> str:
    """Shorten a token for logs, so a logged line never contains a usable link."""
    return f"{token[:6]}…" if len(token) > 6 else "…"


# --- Building links ---------------------------------------------------------------


def make_open_token(secret_key: str, send_id: int) -> str:
    return _serializer(secret_key, OPEN_SALT).dumps(send_id)


def make_click_token(secret_key: str, send_id: int, target_url: str) -> str:
    _check_target_url(target_url)
    return _serializer(secret_key, CLICK_SALT).dumps([send_id, target_url])


def make_unsubscribe_token(secret_key: str, send_id: int) -> str:
    return _serializer(secret_key, UNSUBSCRIBE_SALT).dumps(send_id)


def open_pixel_url(public_url: str, secret_key: str, send_id: int) -> str:
    """Build the URL of the 1×1 open pixel of one send."""
    token = make_open_token(secret_key, send_id)
    return f"{public_url.rstrip('/')}{OPEN_PATH}{token}{OPEN_SUFFIX}"


def click_url(public_url: str, secret_key: str, send_id: int, target_url: str) -> str:
    """Build the click-tracking URL that redirects to ``target_url`` and nowhere else."""
    token = make_click_token(secret_key, send_id, target_url)
    return f"{public_url.rstrip('/')}{CLICK_PATH}{token}"


def unsubscribe_url(public_url: str, secret_key: str, send_id: int) -> str:
    """Build the unsubscribe URL of one send (the page, and the RFC 8058 one-click target)."""
    token = make_unsubscribe_token(secret_key, send_id)
    return f"{public_url.rstrip('/')}{UNSUBSCRIBE_PATH}{token}"


# --- Verifying tokens -------------------------------------------------------------


def _load(secret_key: str, salt: str, token: str, purpose: str) -> Any:
    try:
        return _serializer(secret_key, salt).loads(token)
    except BadData as exc:
        raise TokenError(
            f"Invalid {purpose} token {token_hint(token)}: the signature does not match "
            "(altered, truncated, or signed with another BEHAVEMAIL_SECRET_KEY)"
        ) from exc


def _check_send_id(value: Any, token: str, purpose: str) -> int:
    # bool is a subclass of int, and JSON true must not pass as send 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TokenError(f"Invalid {purpose} token {token_hint(token)}: it does not contain a send id")
    return value


def _check_target_url(target_url: str) -> None:
    scheme = urlsplit(target_url).scheme.lower()
    if scheme not in ("http", "https"):
        raise TokenError(
            f"Click tracking only redirects to http(s) URLs, not {target_url[:60]!r}: "
            "leave other links untracked"
        )


def verify_open_token(secret_key: str, token: str) -> int:
    """Return the send id of an open pixel token; raise TokenError when it is invalid."""
    value = _load(secret_key, OPEN_SALT, token, "open")
    return _check_send_id(value, token, "open")


def verify_click_token(secret_key: str, token: str) -> tuple[int, str]:
    """Return the send id and the target URL of a click token; raise TokenError when it is invalid."""
    value = _load(secret_key, CLICK_SALT, token, "click")
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str):
        raise TokenError(f"Invalid click token {token_hint(token)}: it does not contain a send id and a URL")
    send_id = _check_send_id(value[0], token, "click")
    _check_target_url(value[1])
    return send_id, value[1]


def verify_unsubscribe_token(secret_key: str, token: str) -> int:
    """Return the send id of an unsubscribe token; raise TokenError when it is invalid."""
    value = _load(secret_key, UNSUBSCRIBE_SALT, token, "unsubscribe")
    return _check_send_id(value, token, "unsubscribe")


def iri_to_uri(url: str) -> str:
    """Convert a URL that may contain non-ASCII characters into an ASCII URI.

    The host is IDNA-encoded and the other parts are percent-encoded as UTF-8, which
    is what a browser does with such an href. Existing percent-escapes, reserved
    characters ("&", "#", "?", "=") and ASCII text stay as they are, so an ASCII URL
    comes back unchanged. Tab, CR and LF are removed (``urlsplit`` does that, as
    browsers do) and other control characters are percent-encoded, so the result
    is safe in an HTTP header.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        netloc = _encode_netloc(netloc)
    return urlunsplit((
        parts.scheme,
        netloc,
        quote(parts.path, safe=_URI_SAFE_CHARACTERS),
        quote(parts.query, safe=_URI_SAFE_CHARACTERS),
        quote(parts.fragment, safe=_URI_SAFE_CHARACTERS),
    ))


def _encode_netloc(netloc: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = quote(host, safe="")
    ascii_userinfo = quote(userinfo, safe=_URI_SAFE_CHARACTERS) if at else ""
    return f"{ascii_userinfo}{at}{ascii_host}{colon}{port}"


# --- Rewriting HTML -----------------------------------------------------------------


class _LinkFinder(HTMLParser):
    """Find the <a href> start tags to rewrite and the position of the last </body>.

    Positions are (line, column) pairs as HTMLParser reports them. HTMLParser
    decodes character references in attribute values, so ``href`` values arrive
    with ``&amp;`` already turned into ``&``.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[tuple[int, int], str, list[tuple[str, str | None]]]] = []
        self.body_end: tuple[int, int] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append((self.getpos(), self.get_starttag_text() or "", attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self.getpos()


def _line_offsets(text: str) -> list[int]:
    """Return the offset of the first character of each line (HTMLParser counts lines from 1)."""
    offsets = [0, 0]
    for index, character in enumerate(text):
        if character == "\n":
            offsets.append(index + 1)
    return offsets


def _is_trackable(href: str, public_url: str) -> bool:
    """Tell whether a link gets click tracking: http(s) links other than Behavemail's own."""
    scheme = urlsplit(href).scheme.lower()
    if scheme not in ("http", "https"):
        return False
    own_prefixes = tuple(f"{public_url}{path}" for path in (UNSUBSCRIBE_PATH, CLICK_PATH, OPEN_PATH))
    return not href.startswith(own_prefixes)


def _render_start_tag(tag: str, attrs: list[tuple[str, str | None]], self_closing: bool) -> str:
    parts = [f"<{tag}"]
    for name, value in attrs:
        parts.append(f" {name}" if value is None else f' {name}="{escape(value, quote=True)}"')
    parts.append(" />" if self_closing else ">")
    return "".join(parts)


def apply_tracking(html: str, *, send_id: int, public_url: str, secret_key: str) -> str:
    """Rewrite the http(s) links of an email to click URLs and add the open pixel.

    mailto: and other schemes, fragment-only links (``#top``) and Behavemail's own
    links (the unsubscribe link above all) stay as they are. The redirect target of
    a rewritten link is its decoded href, so ``?a=1&amp;b=2`` in the HTML redirects
    to ``?a=1&b=2``. The 1×1 pixel goes right before the last ``</body>``, or at the
    end when the HTML has no body element.
    """
    public_url = public_url.rstrip("/")
    finder = _LinkFinder()
    finder.feed(html)
    finder.close()
    line_offsets = _line_offsets(html)

    replacements: list[tuple[int, int, str]] = []
    for (line, column), raw_tag, attrs in finder.anchors:
        new_attrs, changed = _track_href(attrs, send_id, public_url, secret_key)
        if not changed:
            continue
        start = line_offsets[line] + column
        self_closing = raw_tag.rstrip().endswith("/>")
        replacements.append((start, start + len(raw_tag), _render_start_tag("a", new_attrs, self_closing)))

    pixel = (f'<img src="{escape(open_pixel_url(public_url, secret_key, send_id), quote=True)}" '
             'width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px" />')
    if finder.body_end is None:
        pixel_at = len(html)
    else:
        pixel_at = line_offsets[finder.body_end[0]] + finder.body_end[1]
    replacements.append((pixel_at, pixel_at, pixel))

    return _splice(html, replacements)


def _track_href(attrs: list[tuple[str, str | None]], send_id: int, public_url: str,
                secret_key: str) -> tuple[list[tuple[str, str | None]], bool]:
    new_attrs: list[tuple[str, str | None]] = []
    changed = False
    seen_href = False
    for name, value in attrs:
        # Browsers follow the first href of a tag and ignore any repeated one.
        if name == "href" and value is not None and not seen_href:
            seen_href = True
            # Browsers also strip leading and trailing whitespace from an href.
            target = value.strip()
            if _is_trackable(target, public_url):
                value = click_url(public_url, secret_key, send_id, target)
                changed = True
        new_attrs.append((name, value))
    return new_attrs, changed


def _splice(text: str, replacements: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    cursor = 0
    for start, end, new_text in sorted(replacements, key=lambda item: (item[0], item[1])):
        pieces.append(text[cursor:start])
        pieces.append(new_text)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)
