"""The SendGrid backend against a local double of the v3 Mail Send API."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from behavemail_core.delivery.message import OutgoingEmail, Sender
from behavemail_core.delivery.sendgrid import (
    HTML_TAG, MAX_SUBSTITUTION_BYTES, TEXT_TAG, RetryPolicy, SendGridBackend, recipient_name,
)
from behavemail_core.errors import ConfigurationError
from tests.support.sendgrid_double import ScriptedResponse, sendgrid_double  # noqa: F401
from tests.support.smtp import free_port

SENDER = Sender(address="hello@example.com", name="Behavemail Demo")
NOW = 1_800_000_000.0


class FakeTime:
    """A clock that is fixed at NOW until a sleep advances it. It records every sleep."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def outgoing(send_id: int, address: str | None = None, *, html: str | None = None) -> OutgoingEmail:
    return OutgoingEmail(
        send_id=send_id, to_address=address or f"user{send_id}@example.com",
        to_name=f"User {send_id}", subject=f"Hello {send_id}",
        html=html or f"<p>Hello {send_id}</p>", text=f"Hello {send_id}\n",
        unsubscribe_url=f"https://mail.example.com/u/{send_id}",
    )


def backend_for(double, time: FakeTime | None = None, *, api_key: str | None = None,
                **options) -> SendGridBackend:
    time = time or FakeTime()
    return SendGridBackend(api_key or double.api_key, double.url, SENDER,
                           sleep=time.sleep, clock=time.clock, **options)


def test_batch_splits_into_requests_of_1000(sendgrid_double):
    emails = [outgoing(send_id) for send_id in range(2345)]

    results = backend_for(sendgrid_double).deliver(emails)

    requests = sendgrid_double.requests
    assert [len(request.body["personalizations"]) for request in requests] == [1000, 1000, 345]
    assert [request.status for request in requests] == [202, 202, 202]
    assert sum(result.accepted for result in results) == 2345


def test_every_recipient_gets_own_content(sendgrid_double):
    emails = [outgoing(send_id) for send_id in range(1, 4)]

    backend_for(sendgrid_double).deliver(emails)

    delivered = {email.custom_args["send_id"]: email for email in sendgrid_double.accepted_emails}
    for email in emails:
        received = delivered[str(email.send_id)]
        assert received.to == [{"email": email.to_address, "name": email.to_name}]
        assert received.subject == email.subject
        assert received.html == email.html
        assert received.text == email.text


def test_personalization_carries_unsubscribe_headers(sendgrid_double):
    backend_for(sendgrid_double).deliver([outgoing(7)])

    [received] = sendgrid_double.accepted_emails
    assert received.headers["List-Unsubscribe"] == "<https://mail.example.com/u/7>"
    assert received.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.custom_args == {"send_id": "7"}


def test_request_uses_substitution_tags(sendgrid_double):
    backend_for(sendgrid_double).deliver([outgoing(1), outgoing(2)])

    [request] = sendgrid_double.requests
    assert request.body["content"] == [{"type": "text/plain", "value": TEXT_TAG},
                                       {"type": "text/html", "value": HTML_TAG}]
    assert request.body["from"] == {"email": "hello@example.com", "name": "Behavemail Demo"}
    assert request.headers["authorization"] == f"Bearer {sendgrid_double.api_key}"


def test_provider_id_is_x_message_id(sendgrid_double):
    results = backend_for(sendgrid_double).deliver([outgoing(1), outgoing(2)])

    [accepted] = sendgrid_double.accepted_emails[:1]
    assert [result.provider_message_id for result in results] == [accepted.message_id] * 2


def test_oversized_email_gets_own_request(sendgrid_double):
    large_html = "<p>" + "x" * MAX_SUBSTITUTION_BYTES + "</p>"
    emails = [outgoing(1), outgoing(2, html=large_html), outgoing(3)]

    results = backend_for(sendgrid_double).deliver(emails)

    requests = sendgrid_double.requests
    assert [len(request.body["personalizations"]) for request in requests] == [2, 1]
    assert "substitutions" not in requests[1].body["personalizations"][0]
    assert requests[1].body["content"][1] == {"type": "text/html", "value": large_html}
    assert all(result.accepted for result in results)


def test_duplicate_address_goes_to_next_request(sendgrid_double):
    emails = [outgoing(1, "same@example.com"), outgoing(2), outgoing(3, "SAME@example.com")]

    results = backend_for(sendgrid_double).deliver(emails)

    assert [request.status for request in sendgrid_double.requests] == [202, 202]
    assert [len(request.body["personalizations"]) for request in sendgrid_double.requests] == [2, 1]
    assert all(result.accepted for result in results)


def test_rate_limit_waits_until_reset(sendgrid_double):
    time = FakeTime()
    sendgrid_double.rate_limit_next(reset_epoch=int(NOW) + 7)
    emails = [outgoing(send_id) for send_id in range(1500)]

    results = backend_for(sendgrid_double, time).deliver(emails)

    assert time.sleeps == [7.0]
    assert [request.status for request in sendgrid_double.requests] == [429, 202, 202]
    assert all(result.accepted for result in results)
    delivered = Counter(email.custom_args["send_id"] for email in sendgrid_double.accepted_emails)
    assert sorted(delivered) == sorted(str(email.send_id) for email in emails)
    assert set(delivered.values()) == {1}


def test_rate_limit_beyond_max_wait_fails_retryable(sendgrid_double):
    time = FakeTime()
    sendgrid_double.rate_limit_next(reset_epoch=int(NOW) + 3600)
    emails = [outgoing(send_id) for send_id in range(1500)]

    results = backend_for(sendgrid_double, time, max_rate_limit_wait=60).deliver(emails)

    assert time.sleeps == []
    assert [result.retryable for result in results] == [True] * 1500
    assert "resets in 3600 s" in results[0].error
    # The batch stops at the first 429: the second request is never sent.
    assert len(sendgrid_double.requests) == 1


def test_rate_limit_retries_are_bounded(sendgrid_double):
    time = FakeTime()
    sendgrid_double.rate_limit_next(reset_epoch=int(NOW) + 2, times=10)
    policy = RetryPolicy(max_rate_limit_retries=2)

    results = backend_for(sendgrid_double, time, retry_policy=policy).deliver([outgoing(1)])

    assert len(sendgrid_double.requests) == 3
    assert results[0].accepted is False
    assert results[0].retryable is True


def test_bad_request_body_is_surfaced(sendgrid_double):
    sendgrid_double.script(ScriptedResponse(400, body={"errors": [{
        "message": "The from email does not contain a valid address.", "field": "from.email",
        "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.from",
    }]}))

    results = backend_for(sendgrid_double).deliver([outgoing(1), outgoing(2)])

    assert [result.retryable for result in results] == [False, False]
    assert "The from email does not contain a valid address. (field from.email)" in results[0].error
    assert len(sendgrid_double.requests) == 1


def test_bad_personalization_fails_alone(sendgrid_double):
    # The double, like SendGrid, rejects a domain without a dot, which the email package accepts.
    emails = [outgoing(1), outgoing(2, "user2@localhost"), outgoing(3)]

    results = backend_for(sendgrid_double).deliver(emails)

    by_id = {result.send_id: result for result in results}
    assert [request.status for request in sendgrid_double.requests] == [400, 202]
    assert [by_id[send_id].accepted for send_id in (1, 2, 3)] == [True, False, True]
    assert by_id[2].retryable is False
    assert "Does not contain a valid address. (field personalizations.1.to.0.email)" in by_id[2].error
    assert len(sendgrid_double.requests[1].body["personalizations"]) == 2


def test_server_error_is_retried_with_backoff(sendgrid_double):
    time = FakeTime()
    sendgrid_double.script(ScriptedResponse(500), ScriptedResponse(503))

    results = backend_for(sendgrid_double, time).deliver([outgoing(1)])

    assert time.sleeps == [1.0, 2.0]
    assert results[0].accepted is True
    assert [request.status for request in sendgrid_double.requests] == [500, 503, 202]


def test_server_error_retries_are_bounded(sendgrid_double):
    time = FakeTime()
    sendgrid_double.script(*[ScriptedResponse(502)] * 5)

    results = backend_for(sendgrid_double, time).deliver([outgoing(1)])

    assert len(sendgrid_double.requests) == 3
    assert results[0].retryable is True
    assert "HTTP 502" in results[0].error


def test_network_error_fails_retryable():
    time = FakeTime()
    backend = SendGridBackend("SG.key", f"http://127.0.0.1:{free_port()}", SENDER,
                              sleep=time.sleep, clock=time.clock, timeout=2)

    results = backend.deliver([outgoing(1), outgoing(2)])

    assert [result.retryable for result in results] == [True, True]
    assert "Failed to reach SendGrid" in results[0].error
    assert time.sleeps == [1.0, 2.0]


def test_response_timeout_not_resent(sendgrid_double):
    # SendGrid may have accepted a request whose response never came: resending
    # could deliver every email in it twice, so the emails fail for good.
    time = FakeTime()
    sendgrid_double.script(ScriptedResponse(status=202, headers={"X-Message-Id": "late"}, delay=3.0))
    backend = SendGridBackend(sendgrid_double.api_key, sendgrid_double.url, SENDER,
                              sleep=time.sleep, clock=time.clock, timeout=0.5)

    results = backend.deliver([outgoing(1), outgoing(2)])

    assert [result.retryable for result in results] == [False, False]
    assert "may have accepted the email" in results[0].error
    assert time.sleeps == []


def test_wrong_api_key_fails_whole_batch(sendgrid_double):
    emails = [outgoing(send_id) for send_id in range(1500)]

    results = backend_for(sendgrid_double, api_key="SG.wrong").deliver(emails)

    assert [result.retryable for result in results] == [False] * 1500
    assert "BEHAVEMAIL_SENDGRID_API_KEY" in results[0].error
    assert len(sendgrid_double.requests) == 1


def test_invalid_address_fails_before_request(sendgrid_double):
    results = backend_for(sendgrid_double).deliver([outgoing(1, "not-an-address"), outgoing(2)])

    by_id = {result.send_id: result for result in results}
    assert by_id[1].retryable is False
    assert by_id[2].accepted is True
    assert len(sendgrid_double.requests[0].body["personalizations"]) == 1


def test_api_key_never_logged(sendgrid_double, caplog):
    caplog.set_level(logging.DEBUG)

    backend_for(sendgrid_double).deliver([outgoing(1)])

    assert all(sendgrid_double.api_key not in record.getMessage() for record in caplog.records)


def test_empty_api_key_is_rejected(sendgrid_double):
    with pytest.raises(ConfigurationError):
        SendGridBackend("", sendgrid_double.url, SENDER)


@pytest.mark.parametrize("name, expected", [
    # Plain names pass unchanged.
    ("Ada Lovelace", "Ada Lovelace"),
    # A comma makes SendGrid split the name, so the name is quoted.
    ("Müller, Jörg", '"Müller, Jörg"'),
    # A semicolon too, with inner quotes escaped.
    ('Ada "the first"; Countess', '"Ada \\"the first\\"; Countess"'),
])
def test_recipient_name_cases(name, expected):
    assert recipient_name(name) == expected
