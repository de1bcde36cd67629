"""Connection checks of the Settings screen, against real servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from behavemail_core.accounts import AccountDirectory
from behavemail_core.connection_checks import (ERROR, OK, check_accounts, check_email_backend, check_prometheus,
                                               run_checks)
from behavemail_core.prometheus import PrometheusClient
from behavemail_core.settings import DEMO_ACCOUNTS_QUERY, Settings, load_settings
from tests.support.prometheus import free_port
from tests.support.smtp import SMTPTestServer, self_signed_tls

SECRET_KEY = "connection-check-secret-key-0123456789"


def settings_for(tmp_path: Path, **variables: str) -> Settings:
    return load_settings({"BEHAVEMAIL_SECRET_KEY": SECRET_KEY, **variables}, config_dir=tmp_path)


def test_prometheus_reachable(operator_world) -> None:
    with PrometheusClient(operator_world.prometheus.url) as client:
        result = check_prometheus(client)
    assert result.status == OK
    assert result.summary.startswith("Connected to Prometheus 2.")


def test_prometheus_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusClient(url, timeout=2) as client:
        result = check_prometheus(client)
    assert result.status == ERROR
    assert "Cannot connect to Prometheus" in result.detail


ACCOUNT_CASES = [
    # the demo query returns user_id, email and the attributes
    (DEMO_ACCOUNTS_QUERY, OK, "Columns available to templates and audience filters: user_id, email, first_name"),
    # a query without an email column cannot address anybody
    ("SELECT user_id, plan FROM accounts WHERE user_id IN :user_ids", ERROR, "It returns user_id, plan."),
    # a query on a missing table fails with the database's message
    ("SELECT user_id, email FROM users WHERE user_id IN :user_ids", ERROR, "no such table: users"),
]


@pytest.mark.parametrize("query, status, detail", ACCOUNT_CASES, ids=["demo", "no-email", "no-table"])
def test_accounts_query(operator_world, query: str, status: str, detail: str) -> None:
    directory = AccountDirectory(operator_world.accounts_url, query)
    try:
        result = check_accounts(directory)
    finally:
        directory.close()
    assert result.status == status
    assert detail in result.detail


def test_outbox_writable(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    result = check_email_backend(settings_for(tmp_path, BEHAVEMAIL_OUTBOX_DIR=str(outbox)))
    assert result.status == OK
    assert outbox.is_dir()
    assert list(outbox.iterdir()) == []


def test_outbox_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = check_email_backend(settings_for(tmp_path, BEHAVEMAIL_OUTBOX_DIR=str(blocker / "outbox")))
    assert result.status == ERROR
    assert "BEHAVEMAIL_OUTBOX_DIR" in result.detail


def test_smtp_plain_connects_without_mail(tmp_path: Path) -> None:
    with SMTPTestServer() as server:
        result = check_email_backend(settings_for(
            tmp_path, BEHAVEMAIL_EMAIL_BACKEND="smtp", BEHAVEMAIL_SMTP_HOST=server.host,
            BEHAVEMAIL_SMTP_PORT=str(server.port), BEHAVEMAIL_SMTP_TLS="none"))
        envelopes, connections = server.envelopes, server.connections
    assert result.status == OK
    assert result.summary == (f"SMTP: connected to {server.host}:{server.port} (no encryption), EHLO accepted, "
                              "no login configured")
    assert connections == 1
    assert envelopes == []


@pytest.mark.parametrize("password, status", [
    # the right password logs in
    ("right-password", OK),
    # a wrong one is reported with the settings to check
    ("wrong-password", ERROR),
])
def test_smtp_starttls_login(tmp_path: Path, password: str, status: str) -> None:
    server_context, client_context = self_signed_tls(tmp_path)
    with SMTPTestServer(tls_context=server_context, credentials=("behavemail", "right-password")) as server:
        settings = settings_for(tmp_path, BEHAVEMAIL_EMAIL_BACKEND="smtp", BEHAVEMAIL_SMTP_HOST=server.host,
                                BEHAVEMAIL_SMTP_PORT=str(server.port), BEHAVEMAIL_SMTP_TLS="starttls",
                                BEHAVEMAIL_SMTP_USERNAME="behavemail", BEHAVEMAIL_SMTP_PASSWORD=password)
        result = check_email_backend(settings, smtp_ssl_context=client_context)
    assert result.status == status
    if status == OK:
        assert "(STARTTLS), EHLO accepted, logged in as behavemail" in result.summary
    else:
        assert "BEHAVEMAIL_SMTP_PASSWORD" in result.detail


def test_smtp_server_down(tmp_path: Path) -> None:
    port = free_port()
    result = check_email_backend(settings_for(tmp_path, BEHAVEMAIL_EMAIL_BACKEND="smtp",
                                              BEHAVEMAIL_SMTP_HOST="127.0.0.1", BEHAVEMAIL_SMTP_PORT=str(port),
                                              BEHAVEMAIL_SMTP_TLS="none"))
    assert result.status == ERROR
    assert f"127.0.0.1:{port}" in result.summary


def test_sendgrid_key_checked_without_request(tmp_path: Path) -> None:
    # The API host is a closed port: a request would fail, so an OK proves none was made.
    settings = settings_for(tmp_path, BEHAVEMAIL_EMAIL_BACKEND="sendgrid",
                            BEHAVEMAIL_SENDGRID_API_KEY="SG.test-key-0123456789",
                            BEHAVEMAIL_SENDGRID_API_HOST=f"http://127.0.0.1:{free_port()}")
    result = check_email_backend(settings)
    assert result.status == OK
    assert result.summary == "SendGrid: API key **** is set (not verified)"
    assert "No request is made" in result.detail


def test_run_checks_without_accounts(operator_world, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, BEHAVEMAIL_OUTBOX_DIR=str(tmp_path / "outbox"))
    with PrometheusClient(operator_world.prometheus.url) as client:
        results = run_checks(settings, client, None)
    assert [result.component for result in results] == ["Prometheus", "Accounts database", "Email backend"]
    assert [result.status for result in results] == [OK, ERROR, OK]
