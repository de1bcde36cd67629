"""A local stand-in for SendGrid's v3 Mail Send API, the one double the test suite allows.

``SendGridDouble`` is a ThreadingHTTPServer on 127.0.0.1 and a free port. It
responds to ``POST /v3/mail/send`` the way SendGrid documents it:

- 401 unless the request has ``Authorization: Bearer <the double's key>``;
- 400 with ``{"errors": [{"message", "field", "help"}]}`` for a request that breaks
  the documented rules: 1 to 1,000 personalizations and recipients, each
  personalization with a ``to`` of valid addresses, each address at most once per
  request (compared case-insensitively), a subject, content or substitutions, string
  custom_args, and at most 10,000 bytes of substitutions per personalization;
- 202 with an ``X-Message-Id`` header and an empty body otherwise.

Tests can script the next responses, for example a 429 with the X-RateLimit-Limit,
X-RateLimit-Remaining and X-RateLimit-Reset headers. Every request is recorded
with its headers and parsed body.

The 400 messages follow SendGrid's published list of Mail Send errors where it
gives one. The field paths ("personalizations.2.to.0.email") follow the format
SendGrid uses in its responses, but a real response may name a different field.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

HOST = "127.0.0.1"
MAIL_SEND_PATH = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_SUBSTITUTION_BYTES = 10_000
# SendGrid's limit on the whole request, attachments included.
MAX_BODY_BYTES = 30 * 1024 * 1024
HELP_URL = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL_SYNTAX = re.compile(r"[^@\s\"<>(),;:]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the double received, with the status of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass(frozen=True)
class ScriptedResponse:
    """A response the double sends to the next request instead of processing it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    # Seconds to wait before answering, to make the client's read time out.
    delay: float = 0.0


@dataclass(frozen=True)
class AcceptedEmail:
    """One personalization of an accepted request, with substitutions applied to the content."""

    message_id: str
    to: list[dict[str, str]]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    custom_args: dict[str, str]


class SendGridDouble:
    """The Mail Send API on 127.0.0.1; use as a context manager or the ``sendgrid_double`` fixture."""

    def __init__(self, api_key: str = "SG.test-key") -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._script: deque[ScriptedResponse] = deque()
        self._requests: list[RecordedRequest] = []
        self._accepted: list[AcceptedEmail] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def accepted_emails(self) -> list[AcceptedEmail]:
        with self._lock:
            return list(self._accepted)

    def accepted_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.status == 202]

    def script(self, *responses: ScriptedResponse) -> None:
        """Answer the next requests with ``responses``, in order, before processing resumes."""
        with self._lock:
            self._script.extend(responses)

    def rate_limit_next(self, reset_epoch: int, *, times: int = 1, limit: int = 600) -> None:
        """Answer the next ``times`` requests with 429, as SendGrid does when over the limit."""
        response = ScriptedResponse(
            status=429,
            headers={"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": str(reset_epoch)},
            body={"errors": [{"field": None, "message": "too many requests", "help": None}]},
        )
        self.script(*[response] * times)

    def start(self) -> SendGridDouble:
        server = ThreadingHTTPServer((HOST, 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="sendgrid-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SendGridDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answer(self, method: str, path: str, headers: dict[str, str],
                raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        """Decide the response to one request and record the request."""
        body: Any = None
        status, answer_headers, answer = self._process(method, path, headers, raw_body)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode("utf-8", errors="replace")
        with self._lock:
            self._requests.append(RecordedRequest(method, path, headers, body, status))
            if status == 202:
                self._accepted.extend(_accepted_emails(body, answer_headers["X-Message-Id"]))
        return status, answer_headers, answer

    def _process(self, method: str, path: str, headers: dict[str, str],
                 raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        if path != MAIL_SEND_PATH:
            return 404, {}, _errors([(f"{path} not found", None)])
        if method != "POST":
            return 405, {}, _errors([("method not allowed", None)])
        authorization = headers.get("authorization", "")
        if not authorization:
            return 401, {}, _errors([("authorization required", None)])
        if authorization != f"Bearer {self.api_key}":
            return 401, {}, _errors([
                ("The provided authorization grant is invalid, expired, or revoked", None)])
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            if scripted.delay:
                time.sleep(scripted.delay)
            return scripted.status, dict(scripted.headers), scripted.body
        if len(raw_body) > MAX_BODY_BYTES:
            return 413, {}, _errors([("The request body exceeds the 30 MB limit.", None)])
        try:
            body = json.loads(raw_body)
        except ValueError:
            return 400, {}, _errors([("Bad Request", None)])
        problems = validate_mail_send(body)
        if problems:
            return 400, {}, _errors(problems)
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)}, None


def _handler_class(double: SendGridDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._handle("POST")

        def do_GET(self) -> None:
            self._handle("GET")

        def log_message(self, format: str, *args: Any) -> None:
            # Keep test output quiet: the double records every request instead.
            return None

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, answer_headers, answer = double._answer(method, self.path, headers, raw_body)
            payload = b"" if answer is None else json.dumps(answer).encode("utf-8")
            self.send_response(status)
            for name, value in answer_headers.items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _errors(problems: list[tuple[str, str | None]]) -> dict[str, Any]:
    return {"errors": [
        {"message": message, "field": field_path, "help": f"{HELP_URL}#message.{field_path}"
         if field_path else None}
        for message, field_path in problems
    ]}


def validate_mail_send(body: Any) -> list[tuple[str, str | None]]:
    """Check a Mail Send body against SendGrid's documented rules; return (message, field) pairs."""
    if not isinstance(body, dict):
        return [("Bad Request", None)]
    problems: list[tuple[str, str | None]] = []
    problems.extend(_check_from(body.get("from")))
    problems.extend(_check_content(body))

    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("You must have at least one personalization.", "personalizations"))
        return problems
    if len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append((
            f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations "
            f"per API request. You have provided {len(personalizations)} personalizations. "
            "Please consider splitting this into multiple requests and resending your request.",
            "personalizations",
        ))
        return problems

    recipients = 0
    seen: set[str] = set()
    for index, personalization in enumerate(personalizations):
        problems.extend(_check_personalization(index, personalization, body, seen))
        if isinstance(personalization, dict) and isinstance(personalization.get("to"), list):
            recipients += len(personalization["to"])
    if recipients > MAX_RECIPIENTS:
        problems.append((
            "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
            "personalizations",
        ))
    return problems


def _check_from(sender: Any) -> list[tuple[str, str | None]]:
    if not isinstance(sender, dict) or not _is_email(sender.get("email")):
        return [("The from object must be provided for every email send. It is an object that "
                 "requires the email parameter, but may also contain a name parameter.", "from")]
    return []


def _check_content(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    if body.get("template_id"):
        return []
    content = body.get("content")
    if not isinstance(content, list) or not content:
        return [("Unless a valid template_id is provided, the content parameter is required. "
                 "There must be at least one defined content block.", "content")]
    problems: list[tuple[str, str | None]] = []
    types = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("value"), str) or not block["value"]:
            problems.append(("The content value must be a string at least one character in length.",
                             f"content.{index}.value"))
            continue
        types.append(block.get("type"))
    if "text/plain" in types and types.index("text/plain") != 0:
        problems.append(("If present, text/plain must be first, followed by text/html, "
                         "followed by any other content.", "content"))
    return problems


def _check_personalization(index: int, personalization: Any, body: dict[str, Any],
                           seen: set[str]) -> list[tuple[str, str | None]]:
    path = f"personalizations.{index}"
    if not isinstance(personalization, dict):
        return [("Bad Request", path)]
    to = personalization.get("to")
    if not isinstance(to, list) or not to:
        return [("The to array is required for all personalization objects, and must have at "
                 "least one email object with a valid email address.", f"{path}.to")]

    problems: list[tuple[str, str | None]] = []
    for position, recipient in enumerate(to):
        address = recipient.get("email") if isinstance(recipient, dict) else None
        if not _is_email(address):
            problems.append(("Does not contain a valid address.", f"{path}.to.{position}.email"))
            continue
        if address.lower() in seen:
            problems.append((
                "Each email address in the personalization block should be unique between to, "
                f"cc, and bcc. We found the first duplicate instance of [{address}] in the "
                f"{path}.to field.", path))
        seen.add(address.lower())

    subject = personalization.get("subject", body.get("subject"))
    if not isinstance(subject, str) or not subject:
        problems.append(("The subject is required. You can get around this requirement if you "
                         "use a template with a subject defined or if every personalization has "
                         "a subject defined.", "subject"))
    problems.extend(_check_string_map(personalization.get("custom_args"), f"{path}.custom_args"))
    problems.extend(_check_string_map(personalization.get("headers"), f"{path}.headers"))
    substitutions = personalization.get("substitutions")
    problems.extend(_check_string_map(substitutions, f"{path}.substitutions"))
    if isinstance(substitutions, dict) and _json_bytes(substitutions) > MAX_SUBSTITUTION_BYTES:
        problems.append((
            "The total collective size of your substitutions may not exceed 10,000 bytes per "
            "personalization object.", f"{path}.substitutions"))
    return problems


def _check_string_map(mapping: Any, path: str) -> list[tuple[str, str | None]]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        return [(f"Invalid type. Expected: object, given: {type(mapping).__name__}.", path)]
    return [(f"Invalid type. Expected: string, given: {type(value).__name__}.", f"{path}.{key}")
            for key, value in mapping.items() if not isinstance(value, str)]


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL_SYNTAX.fullmatch(value) is not None


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _accepted_emails(body: dict[str, Any], message_id: str) -> list[AcceptedEmail]:
    """Expand an accepted request into one email per personalization, substitutions applied."""
    content = {block["type"]: block["value"] for block in body.get("content", [])}
    emails = []
    for personalization in body["personalizations"]:
        substitutions = personalization.get("substitutions", {})
        emails.append(AcceptedEmail(
            message_id=message_id,
            to=personalization["to"],
            subject=_substitute(personalization.get("subject", body.get("subject", "")),
                                substitutions),
            text=_substitute(content.get("text/plain"), substitutions),
            html=_substitute(content.get("text/html"), substitutions),
            headers={**body.get("headers", {}), **personalization.get("headers", {})},
            custom_args={**body.get("custom_args", {}), **personalization.get("custom_args", {})},
        ))
    return emails


def _substitute(text: str | None, substitutions: dict[str, str]) -> str | None:
    if text is None or not substitutions:
        return text
    # One pass, so a value that happens to contain another tag stays as it is.
    pattern = re.compile("|".join(re.escape(tag) for tag in substitutions))
    return pattern.sub(lambda match: substitutions[match.group(0)], text)


@pytest.fixture
def sendgrid_double() -> Iterator[SendGridDouble]:
    """A started SendGridDouble, stopped after the test."""
    with SendGridDouble() as double:
        yield double
