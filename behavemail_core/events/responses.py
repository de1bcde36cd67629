"""HTTP responses of the event endpoints: small HTML pages, JSON, the pixel, redirects."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

# A 1×1 transparent GIF (GIF89a, one transparent palette entry), 42 bytes.
TRANSPARENT_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

NO_CACHE_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem;
       color: #1f2933; line-height: 1.5; }}
button {{ font: inherit; padding: 0.6rem 1.2rem; border: 0; border-radius: 0.4rem;
         background: #1f6feb; color: #fff; cursor: pointer; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""


@dataclass
class Response:
    """One HTTP response, written to the socket by the server."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def html_page(status: int, title: str, body_html: str) -> Response:
    """Build an HTML page; ``title`` is escaped, ``body_html`` must already be safe HTML."""
    page = _PAGE.format(title=escape(title), body=body_html)
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    }
    return Response(status, page.encode("utf-8"), headers)


def json_response(status: int, payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json", "Cache-Control": "no-store"})


def pixel_response() -> Response:
    headers = {"Content-Type": "image/gif", **NO_CACHE_HEADERS}
    return Response(200, TRANSPARENT_GIF, headers)


def redirect_response(location: str) -> Response:
    """Build a 302 to ``location``, which must already be an ASCII URI."""
    headers = {"Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return Response(302, b"", headers)


def not_found_page(message: str = "This link is not valid. It may have been altered or cut short.") -> Response:
    return html_page(404, "Link not valid", f"<p>{escape(message)}</p>")
