"""The SendGrid backend: v3 Mail Send requests with up to 1,000 personalizations each.

Every email is rendered per user, so its HTML and text differ from the others'.
One request still carries many emails: the request's content is two
substitution tags, and each personalization substitutes its own HTML and text
for them. Emails too large for SendGrid's substitution limit go in a request of
their own with the content set directly.

Limits of the v3 Mail Send API, from SendGrid's API reference and its list of
Mail Send errors:

- at most 1,000 personalizations and 1,000 recipients per request;
- each recipient address at most once per request;
- at most 10,000 bytes of substitutions per personalization.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from ..errors import ConfigurationError, DeliveryError
from .message import DeliveryResult, OutgoingEmail, Sender
from .mime import (
    SEND_ID_HEADER, extra_header_items, header_text, list_unsubscribe_headers,
    recipient_address,
)

logger = logging.getLogger(__name__)

MAX_PERSONALIZATIONS_PER_REQUEST = 1000
# SendGrid's limit on the substitutions of one personalization. Its API reference
# does not define how the size is measured. This backend counts the UTF-8 bytes of
# the JSON-encoded substitutions, which are never fewer than those of the raw text.
MAX_SUBSTITUTION_BYTES = 10_000
# SendGrid replaces these tags in the request's content with each
# personalization's values. They contain characters that rendered templates
# practically never produce next to each other.
HTML_TAG = "[%behavemail_html%]"
TEXT_TAG = "[%behavemail_text%]"

# A 400 error's "field" names the personalization it is about, e.g.
# "personalizations.3" or "personalizations[3].to[0].email".
_PERSONALIZATION_FIELD = re.compile(r"^personalizations(?:\.|\[)(\d+)")

# One email and its personalization, without substitutions.
_Item = tuple[OutgoingEmail, dict[str, Any]]


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a Mail Send request is retried.

    A 429 is retried after its X-RateLimit-Reset time, at most
    ``max_rate_limit_retries`` times and only while that time is at most
    ``max_rate_limit_wait`` seconds away. 5xx responses and network errors are
    retried ``max_server_error_retries`` times, after ``backoff`` seconds that
    double with each retry.
    """

    max_rate_limit_wait: float = 60.0
    max_rate_limit_retries: int = 3
    max_server_error_retries: int = 2
    backoff: float = 1.0


@dataclass(frozen=True)
class _Failure:
    error: str
    retryable: bool

    def results(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        return [DeliveryResult(email.send_id, accepted=False, error=self.error,
                               retryable=self.retryable) for email in emails]


@dataclass(frozen=True)
class _ApiError:
    """One entry of a SendGrid error body: {"message", "field", "help"}."""

    message: str
    field: str | None
    help: str | None

    def describe(self) -> str:
        text = self.message
        if self.field:
            text += f" (field {self.field})"
        if self.help:
            text += f" See {self.help}"
        return text

    def personalization_index(self) -> int | None:
        match = _PERSONALIZATION_FIELD.match(self.field or "")
        return int(match.group(1)) if match else None


class _BadRequest(Exception):
    """A 400 response from SendGrid, with the errors it lists for the request."""

    def __init__(self, errors: list[_ApiError]) -> None:
        super().__init__("; ".join(error.describe() for error in errors))
        self.errors = errors


class SendGridBackend:
    """Send email through SendGrid's v3 Mail Send API with the ``sendgrid`` package.

    Each personalization carries the recipient, subject, the RFC 8058
    List-Unsubscribe headers and ``custom_args: {"send_id": ...}``, which comes
    back in Event Webhook events. Each failure is marked retryable for 429, 5xx
    and network errors, and not retryable for other 4xx responses.

    ``sleep`` and ``clock`` (epoch seconds) are injectable so tests control the
    waits, and ``max_rate_limit_wait`` and ``retry_policy`` bound them.
    """

    name = "sendgrid"

    def __init__(self, api_key: str, api_host: str, sender: Sender, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 max_rate_limit_wait: float | None = None,
                 retry_policy: RetryPolicy = RetryPolicy(),
                 timeout: float = 30.0) -> None:
        if not api_key:
            raise ConfigurationError(
                "BEHAVEMAIL_SENDGRID_API_KEY is empty: create a key with Mail Send "
                "permission in SendGrid and set it"
            )
        self.api_host = api_host.rstrip("/")
        self._client = SendGridAPIClient(api_key, host=self.api_host)
        # python_http_client logs every request's headers, the API key included,
        # and the whole body at DEBUG level: keep its logger at INFO or above.
        http_client_logger = logging.getLogger("python_http_client")
        if http_client_logger.getEffectiveLevel() < logging.INFO:
            http_client_logger.setLevel(logging.INFO)
        self._sender = sender
        self.sleep = sleep
        self.clock = clock
        if max_rate_limit_wait is not None:
            retry_policy = replace(retry_policy, max_rate_limit_wait=max_rate_limit_wait)
        self.retry_policy = retry_policy
        self._timeout = timeout

    def deliver(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        sendable: list[_Item] = []
        for email in emails:
            try:
                sendable.append((email, self._personalization(email)))
            except DeliveryError as exc:
                logger.warning("sendgrid skipped send_id=%s: %s", email.send_id, exc)
                results.extend(_Failure(str(exc), exc.retryable).results([email]))

        batch = _Batch(self)
        for group, use_substitutions in plan_requests(sendable):
            results.extend(batch.send(group, use_substitutions))
        return results

    def close(self) -> None:
        # Every request opens and closes its own HTTPS connection (urllib).
        return None

    def _personalization(self, email: OutgoingEmail) -> dict[str, Any]:
        """Build the personalization of one email, or raise DeliveryError if it is invalid."""
        address = recipient_address(email)
        to: dict[str, str] = {"email": address.addr_spec}
        if address.display_name:
            to["name"] = recipient_name(address.display_name)
        subject = header_text(email.subject)
        if not subject:
            raise DeliveryError(
                f"send_id={email.send_id} has an empty subject, which SendGrid rejects: "
                "give the template a subject",
                retryable=False,
            )
        headers = {**list_unsubscribe_headers(email.unsubscribe_url),
                   SEND_ID_HEADER: str(email.send_id), **extra_header_items(email)}
        return {
            "to": [to],
            "subject": subject,
            "headers": headers,
            "custom_args": {"send_id": str(email.send_id)},
        }

    def request_body(self, personalizations: list[dict[str, Any]],
                     content: list[dict[str, str]]) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self._sender.address}
        if self._sender.name:
            sender["name"] = header_text(self._sender.name)
        return {"personalizations": personalizations, "from": sender, "content": content}

    def post(self, body: Mapping[str, Any]) -> str | None:
        """POST one Mail Send request and return SendGrid's X-Message-Id.

        Raises HTTPError for an HTTP error status and OSError or HTTPException for
        a network failure.
        """
        response = self._client.client.mail.send.post(request_body=body, timeout=self._timeout)
        return response.headers.get("X-Message-Id")


def recipient_name(display_name: str) -> str:
    """Quote a recipient name that contains a comma or semicolon.

    SendGrid's v3 Mail Send documentation lists "," and ";" as not allowed in
    to.name (sendgrid/docs pull request 2452), and SendGrid drops such emails as
    having an invalid address.
    NOTE: quoting the name is the workaround of SendGrid's Node.js library
    (sendgrid-nodejs pull request 522). It has not been tried against the live API.
    """
    if "," not in display_name and ";" not in display_name:
        return display_name
    escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def substitutions_of(email: OutgoingEmail) -> dict[str, str]:
    return {TEXT_TAG: email.text, HTML_TAG: email.html}


def substitution_bytes(email: OutgoingEmail) -> int:
    """Return the size of an email's substitutions as JSON-encoded UTF-8 bytes."""
    return len(json.dumps(substitutions_of(email), ensure_ascii=False).encode("utf-8"))


def plan_requests(sendable: Sequence[_Item]
                  ) -> list[tuple[list[_Item], bool]]:
    """Group emails into Mail Send requests: (emails, whether they use substitutions).

    Emails whose substitutions fit SendGrid's limit share requests of up to 1,000
    personalizations, each recipient address at most once per request. Addresses
    are compared case-insensitively, the stricter reading of SendGrid's rule.
    Every other email gets a request of its own.
    """
    groups: list[list[_Item]] = []
    addresses: list[set[str]] = []
    first_open_group = 0
    oversized = []
    for email, personalization in sendable:
        if substitution_bytes(email) > MAX_SUBSTITUTION_BYTES:
            oversized.append((email, personalization))
            continue
        address = personalization["to"][0]["email"].lower()
        index = first_open_group
        while index < len(groups) and (
                len(groups[index]) >= MAX_PERSONALIZATIONS_PER_REQUEST or address in addresses[index]):
            index += 1
        if index == len(groups):
            groups.append([])
            addresses.append(set())
        groups[index].append((email, personalization))
        addresses[index].add(address)
        while (first_open_group < len(groups)
               and len(groups[first_open_group]) >= MAX_PERSONALIZATIONS_PER_REQUEST):
            first_open_group += 1
    planned = [(group, True) for group in groups]
    planned.extend(([item], False) for item in oversized)
    return planned


class _Batch:
    """The state of one ``deliver`` call, which sends the planned requests in order.

    After a 401, a 403 or a rate limit that outlasts the maximum wait, the remaining
    requests of the batch fail the same way without being sent.
    """

    def __init__(self, backend: SendGridBackend) -> None:
        self._backend = backend
        self._fatal: _Failure | None = None

    def send(self, group: list[_Item],
             use_substitutions: bool) -> list[DeliveryResult]:
        emails = [email for email, _ in group]
        if self._fatal is not None:
            return self._fatal.results(emails)
        body = self._body(group, use_substitutions)
        try:
            message_id = self._post_with_retries(body, _describe(emails))
        except _BadRequest as exc:
            return self._bad_request(group, use_substitutions, exc, resend=True)
        except _RequestFailed as exc:
            return exc.failure.results(emails)
        return [DeliveryResult(email.send_id, accepted=True, provider_message_id=message_id)
                for email in emails]

    def _body(self, group: list[_Item],
              use_substitutions: bool) -> dict[str, Any]:
        if use_substitutions:
            personalizations = [{**personalization, "substitutions": substitutions_of(email)}
                                for email, personalization in group]
            content = [{"type": "text/plain", "value": TEXT_TAG},
                       {"type": "text/html", "value": HTML_TAG}]
        else:
            email, personalization = group[0]
            personalizations = [personalization]
            content = [{"type": "text/plain", "value": email.text},
                       {"type": "text/html", "value": email.html}]
        return self._backend.request_body(personalizations, content)

    def _bad_request(self, group: list[_Item],
                     use_substitutions: bool, exc: _BadRequest,
                     resend: bool) -> list[DeliveryResult]:
        """Fail the personalizations a 400 names and resend the others once.

        When an error names no personalization, every email of the request fails.
        """
        indexes = [error.personalization_index() for error in exc.errors]
        if not resend or any(index is None or index >= len(group) for index in indexes):
            logger.error("sendgrid rejected a request of %s (400): %s",
                         _describe([email for email, _ in group]), exc)
            return _Failure(f"SendGrid rejected the email (400): {exc}", retryable=False).results(
                [email for email, _ in group])

        results = []
        for index in sorted(set(indexes)):
            email = group[index][0]
            messages = "; ".join(error.describe() for error, error_index
                                 in zip(exc.errors, indexes) if error_index == index)
            logger.error("sendgrid rejected send_id=%s (400): %s", email.send_id, messages)
            results.extend(_Failure(f"SendGrid rejected the email (400): {messages}",
                                    retryable=False).results([email]))
        rest = [item for position, item in enumerate(group) if position not in set(indexes)]
        if not rest:
            return results
        logger.warning("sendgrid resending %d emails without the %d it rejected",
                       len(rest), len(group) - len(rest))
        body = self._body(rest, use_substitutions)
        try:
            message_id = self._post_with_retries(body, _describe([email for email, _ in rest]))
        except _BadRequest as second:
            return results + self._bad_request(rest, use_substitutions, second, resend=False)
        except _RequestFailed as failed:
            return results + failed.failure.results([email for email, _ in rest])
        return results + [DeliveryResult(email.send_id, accepted=True, provider_message_id=message_id)
                          for email, _ in rest]

    def _post_with_retries(self, body: Mapping[str, Any], emails: str) -> str | None:
        """POST ``body``, waiting out 429s and retrying 5xx and network errors.

        ``emails`` describes the request's emails for log lines. Returns the
        X-Message-Id. Raises _BadRequest for a 400 and _RequestFailed for any
        other final failure.
        A network error while the request is being sent is retried: SendGrid
        cannot act on a request it did not receive whole. An error while waiting
        for the response (a read timeout, a dropped connection) is not, because
        SendGrid may have accepted the request, and resending would deliver twice.
        """
        backend = self._backend
        policy = backend.retry_policy
        rate_limited = 0
        server_errors = 0
        while True:
            try:
                message_id = backend.post(body)
            except HTTPError as exc:
                status = exc.status_code
                if status == 400:
                    raise _BadRequest(_api_errors(exc)) from exc
                if status == 429:
                    wait = self._rate_limit_wait(exc, rate_limited)
                    rate_limited += 1
                    logger.warning("sendgrid rate limit (429) on a request of %s, "
                                   "retry %d in %.1f s", emails, rate_limited, wait)
                    backend.sleep(wait)
                    continue
                if status >= 500 and server_errors < policy.max_server_error_retries:
                    server_errors += 1
                    self._back_off(f"HTTP {status}", server_errors, emails)
                    continue
                raise _RequestFailed(self._http_failure(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                reason = _network_reason(exc)
                if not isinstance(exc, urllib.error.URLError):
                    # urllib wraps errors up to the end of sending the request in
                    # URLError; anything else happened while waiting for the response.
                    logger.error("sendgrid request of %s: no response (%s), not retried", emails, reason)
                    raise _RequestFailed(_Failure(
                        f"SendGrid at {backend.api_host} did not answer ({reason}) after the request "
                        "was sent. It may have accepted the email, so it is not resent to avoid a "
                        "duplicate.", retryable=False,
                    )) from exc
                if server_errors < policy.max_server_error_retries:
                    server_errors += 1
                    self._back_off(reason, server_errors, emails)
                    continue
                logger.error("sendgrid request of %s failed: %s", emails, reason)
                raise _RequestFailed(_Failure(
                    f"Failed to reach SendGrid at {backend.api_host}: {reason}", retryable=True,
                )) from exc
            logger.info("sendgrid accepted a request of %s: x_message_id=%s",
                        emails, message_id)
            return message_id

    def _rate_limit_wait(self, exc: HTTPError, attempts: int) -> float:
        """Return the seconds until the rate limit resets, or raise _RequestFailed if too long."""
        policy = self._backend.retry_policy
        reset = _header(exc, "X-RateLimit-Reset")
        try:
            wait = max(0.0, float(reset) - self._backend.clock())
        except (TypeError, ValueError):
            wait = policy.backoff * 2 ** attempts
        if attempts < policy.max_rate_limit_retries and wait <= policy.max_rate_limit_wait:
            return wait
        failure = _Failure(
            f"SendGrid rate limit (429) after {attempts} retries of this request: the limit "
            f"resets in {wait:.0f} s, and the emails can be sent again after that.",
            retryable=True,
        )
        logger.error("sendgrid rate limit outlasts the wait: retries=%d reset_in=%.0fs "
                     "max_wait=%.0fs", attempts, wait, policy.max_rate_limit_wait)
        self._fatal = failure
        raise _RequestFailed(failure)

    def _back_off(self, reason: str, attempt: int, emails: str) -> None:
        wait = self._backend.retry_policy.backoff * 2 ** (attempt - 1)
        logger.warning("sendgrid request of %s failed (%s), retry %d in %.1f s",
                       emails, reason, attempt, wait)
        self._backend.sleep(wait)

    def _http_failure(self, exc: HTTPError) -> _Failure:
        status = exc.status_code
        details = "; ".join(error.describe() for error in _api_errors(exc))
        if status in (401, 403):
            failure = _Failure(
                f"SendGrid rejected the API key ({status}): {details}. Check "
                "BEHAVEMAIL_SENDGRID_API_KEY and that the key has the Mail Send permission.",
                retryable=False,
            )
            self._fatal = failure
        elif status >= 500:
            failure = _Failure(f"SendGrid failed with HTTP {status}: {details}", retryable=True)
        else:
            failure = _Failure(f"SendGrid rejected the request ({status}): {details}",
                               retryable=False)
        logger.error("sendgrid request failed: status=%d %s", status, details)
        return failure


def _describe(emails: Sequence[OutgoingEmail]) -> str:
    """Describe a request's emails for a log line: their count and send id range."""
    send_ids = [email.send_id for email in emails]
    return f"{len(send_ids)} emails (send_id {min(send_ids)}..{max(send_ids)})"


class _RequestFailed(Exception):
    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


def _header(exc: HTTPError, name: str) -> str | None:
    headers = getattr(exc, "headers", None)
    return headers.get(name) if headers is not None else None


def _api_errors(exc: HTTPError) -> list[_ApiError]:
    """Parse SendGrid's error body, falling back to the raw text when it is not JSON."""
    raw = exc.body.decode("utf-8", errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        entries = json.loads(raw)["errors"]
        errors = [
            _ApiError(message=str(entry.get("message") or "no message"),
                      field=None if entry.get("field") is None else str(entry["field"]),
                      help=None if entry.get("help") is None else str(entry["help"]))
            for entry in entries
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        errors = []
    return errors or [_ApiError(message=raw.strip()[:500] or str(exc.reason), field=None, help=None)]


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
