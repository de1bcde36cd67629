"""Template previews, test emails and starter templates of the template editor."""

from __future__ import annotations

from pathlib import Path

import pytest

from behavemail_core import links
from behavemail_core.delivery import OutboxBackend, SMTPBackend, parse_sender
from behavemail_core.errors import DeliveryError, TokenError
from behavemail_core.rendering import TemplateSource
from behavemail_core.settings import Settings, load_settings
from behavemail_core.template_preview import (preview_unsubscribe_url, render_preview, send_test_email,
                                              starter_templates)
from tests.support.smtp import SMTPTestServer

SECRET_KEY = "template-preview-secret-key-0123456789"
ACCOUNT = {"user_id": "u001", "email": "ada@example.com", "first_name": "Ada", "plan": "free",
           "company": "Analytical Engines", "signup_date": "2024-01-02"}
TEMPLATE = TemplateSource(subject="{{ first_name }}, {{ value | int }} errors",
                          html="<p>Hi {{ first_name }} on the {{ plan }} plan ({{ rule_name }})</p>")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"BEHAVEMAIL_SECRET_KEY": SECRET_KEY, "BEHAVEMAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
                          "BEHAVEMAIL_POSTAL_ADDRESS": "1 Test Street, Testville"}, config_dir=tmp_path)


def test_preview_renders_like_a_send(settings: Settings) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=42.7, rule_name="4xx spike", settings=settings)
    assert rendered.subject == "Ada, 42 errors"
    assert "Hi Ada on the free plan (4xx spike)" in rendered.html
    assert "1 Test Street, Testville" in rendered.html
    assert "Unsubscribe" in rendered.text


def test_preview_unsubscribe_link_unsubscribes_nobody(settings: Settings) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=1, rule_name="r", settings=settings)
    url = preview_unsubscribe_url(settings)
    assert url in rendered.text
    with pytest.raises(TokenError, match="does not contain a send id"):
        links.verify_unsubscribe_token(SECRET_KEY, url.rsplit("/", 1)[1])


def test_test_email_to_outbox(settings: Settings, tmp_path: Path) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=3, rule_name="r", settings=settings)
    backend = OutboxBackend(tmp_path / "outbox", parse_sender(settings.sender))
    result = send_test_email(backend, rendered, to_address=" pm@example.com ", settings=settings)
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert result.accepted
    assert len(files) == 1
    assert b"Subject: [Test] Ada, 3 errors" in files[0].read_bytes()


def test_test_email_through_smtp(settings: Settings) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=3, rule_name="r", settings=settings)
    with SMTPTestServer() as server:
        backend = SMTPBackend(server.host, server.port, "", "", "none", parse_sender(settings.sender))
        send_test_email(backend, rendered, to_address="pm@example.com", settings=settings)
        envelopes = server.envelopes
    assert [envelope.rcpt_tos for envelope in envelopes] == [("pm@example.com",)]
    assert envelopes[0].message()["Subject"] == "[Test] Ada, 3 errors"


@pytest.mark.parametrize("address", [
    # empty
    "",
    # two addresses
    "a@example.com, b@example.com",
    # a header injection attempt
    "pm@example.com\r\nBcc: all@example.com",
    # no domain
    "pm@",
])
def test_test_email_rejects_bad_address(settings: Settings, tmp_path: Path, address: str) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=3, rule_name="r", settings=settings)
    backend = OutboxBackend(tmp_path / "outbox", parse_sender(settings.sender))
    with pytest.raises(DeliveryError, match="is not a valid email address"):
        send_test_email(backend, rendered, to_address=address, settings=settings)
    assert not (tmp_path / "outbox").exists()


def test_test_email_failure_is_raised(settings: Settings) -> None:
    rendered = render_preview(TEMPLATE, ACCOUNT, value=3, rule_name="r", settings=settings)
    with SMTPTestServer(recipient_replies={"gone@example.com": "550 5.1.1 User unknown"}) as server:
        backend = SMTPBackend(server.host, server.port, "", "", "none", parse_sender(settings.sender))
        with pytest.raises(DeliveryError, match="550 5.1.1 User unknown"):
            send_test_email(backend, rendered, to_address="gone@example.com", settings=settings)


def test_starter_templates_render(settings: Settings) -> None:
    starters = starter_templates()
    assert [spec.name for spec in starters] == ["Integration stalled", "4xx spike", "Key gone quiet",
                                                "Quota nearly used", "Try search"]
    for spec in starters:
        source = TemplateSource(subject=spec.subject, html=spec.html, text=spec.text)
        rendered = render_preview(source, ACCOUNT, value=0.85, rule_name=spec.name, settings=settings)
        assert "Ada" in rendered.subject
