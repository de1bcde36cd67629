"""Connection checks for the Settings screen: Prometheus, the accounts database, the email backend.

Each check returns a CheckResult instead of raising, so the screen can show every
component's status side by side. No check sends an email or calls the SendGrid API.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .accounts import REQUIRED_COLUMNS, AccountDirectory
from .delivery.message import parse_sender
from .delivery.smtp import SMTPBackend
from .errors import BehavemailError
from .prometheus import PrometheusClient
from .settings import Settings, mask

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"

SMTP_CHECK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CheckResult:
    """The status of one component (OK or ERROR), a one-line summary and details."""

    component: str
    status: str
    summary: str
    detail: str = ""


def check_prometheus(client: PrometheusClient) -> CheckResult:
    """Ask Prometheus for its build information and report the version."""
    try:
        info = client.build_info()
    except BehavemailError as exc:
        log.warning("prometheus check failed url=%s error=%s", client.base_url, exc)
        return CheckResult("Prometheus", ERROR, f"Prometheus at {client.base_url} is not reachable", str(exc))
    version = info.get("version", "unknown version") if isinstance(info, dict) else "unknown version"
    return CheckResult("Prometheus", OK, f"Connected to Prometheus {version} at {client.base_url}")


def check_accounts(directory: AccountDirectory) -> CheckResult:
    """Run the accounts query with a probe id and check that it returns user_id and email."""
    try:
        columns = directory.columns()
    except BehavemailError as exc:
        log.warning("accounts check failed error=%s", exc)
        return CheckResult("Accounts database", ERROR, "The accounts query failed", str(exc))
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        return CheckResult(
            "Accounts database", ERROR,
            f"The accounts query returns no {', '.join(missing)} column",
            f"It returns {', '.join(columns)}. Alias your columns in BEHAVEMAIL_ACCOUNTS_QUERY, "
            "e.g. SELECT id AS user_id, email_address AS email ...")
    return CheckResult("Accounts database", OK, "The accounts query works",
                       f"Columns available to templates and audience filters: {', '.join(columns)}")


def check_email_backend(settings: Settings, *, smtp_ssl_context: ssl.SSLContext | None = None) -> CheckResult:
    """Check the backend that BEHAVEMAIL_EMAIL_BACKEND selects, without sending anything.

    ``smtp_ssl_context`` replaces the system's CA store for SMTP (tests pass their own).
    """
    try:
        parse_sender(settings.sender)
    except BehavemailError as exc:
        return CheckResult("Email backend", ERROR, "The sender address is invalid", str(exc))
    if settings.email_backend == "outbox":
        return _check_outbox(Path(settings.outbox_dir))
    if settings.email_backend == "smtp":
        return _check_smtp(settings, smtp_ssl_context)
    if settings.email_backend == "sendgrid":
        return _check_sendgrid(settings)
    return CheckResult("Email backend", ERROR, f"Unknown backend {settings.email_backend!r}",
                       "Set BEHAVEMAIL_EMAIL_BACKEND to outbox, smtp or sendgrid.")


def _check_outbox(directory: Path) -> CheckResult:
    # The backend creates the folder on its first email, so creating it here changes nothing.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-", suffix=".tmp"):
            pass
    except OSError as exc:
        log.warning("outbox check failed directory=%s error=%s", directory, exc)
        return CheckResult("Email backend", ERROR, f"The outbox folder {directory} is not writable",
                           f"{exc}. Check BEHAVEMAIL_OUTBOX_DIR and the folder's permissions.")
    return CheckResult("Email backend", OK, f"Outbox: emails are written as .eml files to {directory}",
                       "Nothing leaves this machine; open the files with any mail client.")


def _check_smtp(settings: Settings, ssl_context: ssl.SSLContext | None) -> CheckResult:
    backend = SMTPBackend(settings.smtp_host, settings.smtp_port, settings.smtp_username,
                          settings.smtp_password, settings.smtp_tls, parse_sender(settings.sender),
                          timeout=SMTP_CHECK_TIMEOUT_SECONDS, ssl_context=ssl_context)
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        backend.check_connection()
    except BehavemailError as exc:
        log.warning("smtp check failed server=%s error=%s", where, exc)
        return CheckResult("Email backend", ERROR, f"SMTP server {where} failed the check", str(exc))
    security = {"starttls": "STARTTLS", "ssl": "implicit TLS", "none": "no encryption"}[settings.smtp_tls]
    login = (f"logged in as {settings.smtp_username}" if settings.smtp_username
             else "no login configured")
    return CheckResult("Email backend", OK, f"SMTP: connected to {where} ({security}), EHLO accepted, {login}",
                       "No email was sent.")


def _check_sendgrid(settings: Settings) -> CheckResult:
    if not settings.sendgrid_api_key:
        return CheckResult("Email backend", ERROR, "SendGrid: no API key",
                           "Set BEHAVEMAIL_SENDGRID_API_KEY to a key with Mail Send permission.")
    return CheckResult(
        "Email backend", OK,
        f"SendGrid: API key {mask(settings.sendgrid_api_key)} is set (not verified)",
        f"No request is made to {settings.sendgrid_api_host} unless you send a test email "
        "from the Templates screen, which checks the key for real.")


def run_checks(settings: Settings, prometheus: PrometheusClient,
               accounts: AccountDirectory | None) -> list[CheckResult]:
    """Run every check; ``accounts`` is None when the directory could not even be created."""
    results = [check_prometheus(prometheus)]
    if accounts is None:
        results.append(CheckResult("Accounts database", ERROR, "The accounts database is not configured",
                                   "Check BEHAVEMAIL_ACCOUNTS_URL and BEHAVEMAIL_ACCOUNTS_QUERY."))
    else:
        results.append(check_accounts(accounts))
    results.append(check_email_backend(settings))
    return results
