"""The HTTP server of the event endpoints, run by the scheduler in a background thread.

Routes:

    POST /webhooks/sendgrid   SendGrid Event Webhook batches
    GET  /o/{token}.gif       open pixel
    GET  /c/{token}           click redirect
    GET  /u/{token}           unsubscribe page
    POST /u/{token}           unsubscribe (RFC 8058 one-click, or the page's button)
    GET  /healthz             liveness and the scheduler's newest cycle time
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigurationError
from ..links import token_hint
from ..models import utcnow
from ..settings import Settings
from .context import EventContext
from .health import handle_health
from .responses import Response, html_page, json_response, not_found_page
from .sendgrid import handle_webhook, load_webhook_verifier
from .tracking import handle_click, handle_open, handle_unsubscribe, show_unsubscribe_page

log = logging.getLogger(__name__)

# NOTE: a chosen bound, not a documented SendGrid batch size; it leaves a wide
# margin over batches of several MB while stopping unbounded uploads.
MAX_WEBHOOK_BODY_BYTES = 32 * 1024 * 1024
# An unsubscribe POST carries at most a short form body.
MAX_FORM_BODY_BYTES = 64 * 1024
# Seconds a connection may stay idle or send its request body before it is closed.
REQUEST_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 10
# How often the serving loop checks for a shutdown request; shutdown() waits up to this long.
POLL_INTERVAL_SECONDS = 0.1

WEBHOOK_PATH = "/webhooks/sendgrid"
HEALTH_PATH = "/healthz"
OPEN_ROUTE = re.compile(r"^/o/([^/]+)\.gif$")
CLICK_ROUTE = re.compile(r"^/c/([^/]+)$")
UNSUBSCRIBE_ROUTE = re.compile(r"^/u/([^/]+)$")
_TOKEN_IN_TEXT = re.compile(r"/([ocu])/([^/\s\"?]+)")


def redact_tokens(text: str) -> str:
    """Shorten every token in a request line or path, so logs never contain a usable link."""
    return _TOKEN_IN_TEXT.sub(lambda match: f"/{match.group(1)}/{token_hint(match.group(2))}", text)


class RequestBodyError(Exception):
    """The request body cannot be read; ``response`` is the error response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _EventHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: EventContext) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.context = context
        super().__init__(address, _EventRequestHandler)


class _EventRequestHandler(BaseHTTPRequestHandler):
    server: _EventHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "Behavemail"
    sys_version = ""

    def version_string(self) -> str:
        # The base class joins server_version and sys_version with a space.
        return self.server_version
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            response = route(self.server.context, method, path, self.headers, self._read_body)
        except RequestBodyError as exc:
            response = exc.response
            self.close_connection = True
        except Exception:
            log.exception("event endpoint failed: %s %s", method, redact_tokens(path))
            response = html_page(500, "Server error", "<p>Something went wrong. Please try again later.</p>")
        self._write(response)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestBodyError(json_response(411, {"error": "Chunked request bodies are not supported: "
                                                                "send a Content-Length header"}))
        raw_length = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestBodyError(json_response(400, {"error": f"Invalid Content-Length {raw_length[:20]!r}"}))
        if length > limit:
            log.warning("rejected a %d-byte request body on %s: the limit is %d bytes",
                        length, redact_tokens(self.path), limit)
            raise RequestBodyError(json_response(413, {"error": f"Request body of {length} bytes is larger "
                                                                f"than the limit of {limit} bytes"}))
        return self.rfile.read(length)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        log.debug("%s %s", self.address_string(), redact_tokens(format % args))


def route(context: EventContext, method: str, path: str, headers: Any,
          read_body: Callable[[int], bytes]) -> Response:
    """Pick the endpoint for a request and run it."""
    if path == HEALTH_PATH:
        return handle_health(context) if method == "GET" else _method_not_allowed("GET")
    if path == WEBHOOK_PATH:
        if method != "POST":
            return _method_not_allowed("POST")
        return handle_webhook(context, read_body(MAX_WEBHOOK_BODY_BYTES), headers)
    if match := OPEN_ROUTE.match(path):
        return handle_open(context, match.group(1), headers) if method == "GET" else _method_not_allowed("GET")
    if match := CLICK_ROUTE.match(path):
        return handle_click(context, match.group(1)) if method == "GET" else _method_not_allowed("GET")
    if match := UNSUBSCRIBE_ROUTE.match(path):
        if method == "POST":
            return handle_unsubscribe(context, match.group(1), read_body(MAX_FORM_BODY_BYTES))
        return show_unsubscribe_page(context, match.group(1))
    return not_found_page("There is no page at this address.")


def _method_not_allowed(allowed: str) -> Response:
    response = json_response(405, {"error": f"Method not allowed here: use {allowed}"})
    response.headers["Allow"] = allowed
    return response


class EventServer:
    """A running event server; stop it with :meth:`shutdown`."""

    def __init__(self, httpd: _EventHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop accepting requests, close the socket and wait for the serving thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)
        log.info("event server on %s stopped", self.url)

    def __enter__(self) -> EventServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def start_event_server(settings: Settings, sessions: sessionmaker[Session], *,
                       clock: Callable[[], datetime] = utcnow,
                       address: tuple[str, int] | None = None) -> EventServer:
    """Serve the event endpoints in a daemon thread and return at once.

    Listens on ``address``, or on BEHAVEMAIL_EVENTS_ADDRESS when it is None; port 0
    picks a free port, which ``EventServer.port`` then reports. Raises
    ConfigurationError when the address cannot be bound or the webhook
    verification key is invalid.
    """
    host, port = address if address is not None else settings.events_address
    context = EventContext(
        sessions=sessions,
        secret_key=settings.secret_key,
        public_url=settings.public_url.rstrip("/"),
        clock=clock,
        webhook_verifier=load_webhook_verifier(settings.sendgrid_webhook_public_key),
    )
    try:
        httpd = _EventHTTPServer((host, port), context)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot listen on {host}:{port} for the event endpoints: {exc.strerror or exc}. "
            "Set BEHAVEMAIL_EVENTS_ADDRESS to a free host:port"
        ) from exc
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_SECONDS},
                              name="behavemail-event-server", daemon=True)
    thread.start()
    server = EventServer(httpd, thread)
    log.info("event server listening on %s (webhook signature check %s)", server.url,
             "on" if context.webhook_verifier is not None else "off")
    return server
