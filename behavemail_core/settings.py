"""Configuration: every BEHAVEMAIL_* variable, declared once with its default and help.

Values come from, in order of precedence: the process environment, a ``.env`` file
in the working directory, a ``behavemail.toml`` file in the working directory, and
the declared default. Nothing else in the package reads ``os.environ``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import ConfigurationError

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_DIR / "data"

DEMO_ACCOUNTS_QUERY = (
    "SELECT user_id, email, first_name, last_name, company, plan, country, "
    "timezone, signup_date FROM accounts WHERE user_id IN :user_ids"
)


def _parse_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid URL: expected http://host:port or https://host"
        )
    return raw.rstrip("/")


def _parse_headers(name: str, raw: str) -> dict[str, str]:
    """Parse ``Name: value`` pairs separated by commas or newlines."""
    headers: dict[str, str] = {}
    for item in raw.replace("\n", ",").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition(":")
        if not sep or not key.strip() or any(c in key for c in " \t\r"):
            raise ConfigurationError(
                f"{name} has a malformed entry {item.strip()[:40]!r}: expected "
                "'Header-Name: value' pairs separated by commas, "
                "e.g. 'X-Scope-OrgID: tenant1, Authorization: Bearer TOKEN'"
            )
        headers[key.strip()] = value.strip()
    return headers


def _parse_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number: expected digits only, e.g. 60") from None
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} must not be negative")
    return value


def _parse_port(name: str, raw: str) -> int:
    value = _parse_int(name, raw)
    if not 1 <= value <= 65535:
        raise ConfigurationError(f"{name}={raw!r} is not a TCP port: expected 1 to 65535")
    return value


def _parse_choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigurationError(
                f"{name}={raw!r} is not supported: expected one of {', '.join(choices)}"
            )
        return value
    return parse


def _parse_host_port(name: str, raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ConfigurationError(f"{name}={raw!r} is malformed: expected host:port, e.g. 127.0.0.1:8502")
    return host.strip("[]"), _parse_port(name, port)


def _parse_label(name: str, raw: str) -> str:
    import re
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", raw):
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid Prometheus label name: "
            "expected letters, digits and underscores, not starting with a digit"
        )
    return raw


def _parse_sql_url(name: str, raw: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        make_url(raw)
    except ArgumentError:
        raise ConfigurationError(
            f"{name} is not a valid SQLAlchemy URL: expected e.g. "
            "sqlite:///data/behavemail.db or postgresql+psycopg://user:password@host/db"
        ) from None
    return raw


def _parse_text(name: str, raw: str) -> str:
    return raw


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: expected true or false")


@dataclass(frozen=True)
class SettingSpec:
    """One configuration variable: its name, default, help text and parser."""

    name: str
    default: str
    help: str
    parse: Callable[[str, str], Any] = _parse_text
    secret: bool = False
    group: str = "general"


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("BEHAVEMAIL_DATABASE_URL", f"sqlite:///{DATA_DIR / 'behavemail.db'}",
                "SQLAlchemy URL of the app database (rules, templates, sends, events). "
                "SQLite by default; use postgresql+psycopg://... to run several schedulers.",
                _parse_sql_url, secret=True, group="databases"),
    SettingSpec("BEHAVEMAIL_PROMETHEUS_URL", "http://127.0.0.1:9090",
                "Base URL of a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics).",
                _parse_url, group="prometheus"),
    SettingSpec("BEHAVEMAIL_PROMETHEUS_HEADERS", "",
                "Extra HTTP headers sent to Prometheus, as 'Name: value' pairs separated by commas "
                "(a tenant header or 'Authorization: Bearer ...').",
                _parse_headers, secret=True, group="prometheus"),
    SettingSpec("BEHAVEMAIL_PROMETHEUS_TIMEOUT", "30",
                "Seconds to wait for one Prometheus query before giving up.",
                _parse_int, group="prometheus"),
    SettingSpec("BEHAVEMAIL_SCRAPE_INTERVAL", "60",
                "Scrape interval of the metrics in seconds; windows shorter than two intervals are widened.",
                _parse_int, group="prometheus"),
    SettingSpec("BEHAVEMAIL_USER_LABEL", "user_id",
                "The Prometheus label that carries the customer's user id.",
                _parse_label, group="prometheus"),
    SettingSpec("BEHAVEMAIL_ACCOUNTS_URL", f"sqlite:///{DATA_DIR / 'accounts.db'}",
                "SQLAlchemy URL of your accounts database, read-only.",
                _parse_sql_url, secret=True, group="databases"),
    SettingSpec("BEHAVEMAIL_ACCOUNTS_QUERY", DEMO_ACCOUNTS_QUERY,
                "SQL that takes the bound list parameter :user_ids and returns user_id, email, "
                "first_name, last_name and any other attributes.",
                _parse_text, group="databases"),
    SettingSpec("BEHAVEMAIL_EMAIL_BACKEND", "outbox",
                "How email leaves: outbox (an .eml file per message under data/outbox), smtp or sendgrid.",
                _parse_choice("outbox", "smtp", "sendgrid"), group="email"),
    SettingSpec("BEHAVEMAIL_OUTBOX_DIR", str(DATA_DIR / "outbox"),
                "Folder the outbox backend writes .eml files into.", _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_SMTP_HOST", "", "SMTP server host name.", _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_SMTP_PORT", "587", "SMTP server port: usually 587 with starttls, 465 with ssl.", _parse_port, group="email"),
    SettingSpec("BEHAVEMAIL_SMTP_USERNAME", "", "SMTP user name; empty for no authentication.",
                _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_SMTP_PASSWORD", "", "SMTP password, used with BEHAVEMAIL_SMTP_USERNAME.", _parse_text, secret=True, group="email"),
    SettingSpec("BEHAVEMAIL_SMTP_TLS", "starttls",
                "SMTP transport security: starttls, ssl (implicit TLS, usually port 465) or none.",
                _parse_choice("starttls", "ssl", "none"), group="email"),
    SettingSpec("BEHAVEMAIL_SENDGRID_API_KEY", "", "SendGrid API key with Mail Send permission.",
                _parse_text, secret=True, group="email"),
    SettingSpec("BEHAVEMAIL_SENDGRID_API_HOST", "https://api.sendgrid.com",
                "SendGrid API base URL; https://api.eu.sendgrid.com for the EU region.",
                _parse_url, group="email"),
    SettingSpec("BEHAVEMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", "",
                "Verification key of SendGrid's Signed Event Webhook (base64); when set, unsigned "
                "or badly signed batches are rejected with 403.", _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_FROM", "Behavemail Demo <hello@example.com>",
                "Sender of every email, as 'Name <address>'.", _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_POSTAL_ADDRESS", "Example API Inc., 1 Demo Street, Springfield",
                "Your postal address, shown in every email's footer as anti-spam law requires.",
                _parse_text, group="email"),
    SettingSpec("BEHAVEMAIL_EVENTS_ADDRESS", "127.0.0.1:8502",
                "host:port the scheduler's event endpoints (webhook, tracking, unsubscribe) listen on.",
                _parse_host_port, group="scheduler"),
    SettingSpec("BEHAVEMAIL_PUBLIC_URL", "http://127.0.0.1:8502",
                "Base URL of the event endpoints as recipients reach them, used in tracking and "
                "unsubscribe links.", _parse_url, group="scheduler"),
    SettingSpec("BEHAVEMAIL_SECRET_KEY", "",
                "Key that signs tracking and unsubscribe tokens; generated into data/secret_key "
                "on first run when empty.", _parse_text, secret=True, group="scheduler"),
    SettingSpec("BEHAVEMAIL_SCHEDULER_INTERVAL", "60",
                "Seconds between two evaluation cycles of the scheduler.", _parse_int, group="scheduler"),
    SettingSpec("BEHAVEMAIL_TRACKING", "true",
                "Add an open pixel and click tracking to outbox and SMTP email.", _parse_bool,
                group="scheduler"),
    SettingSpec("BEHAVEMAIL_APP_PASSWORD", "",
                "Password of the operator app's editor role; empty leaves the app open "
                "(only do that on 127.0.0.1).", _parse_text, secret=True, group="app"),
    SettingSpec("BEHAVEMAIL_VIEWER_PASSWORD", "",
                "Password of the read-only viewer role of the operator app.",
                _parse_text, secret=True, group="app"),
)

SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Settings:
    """The parsed configuration. Build it with :func:`load_settings`."""

    database_url: str
    prometheus_url: str
    prometheus_headers: Mapping[str, str]
    prometheus_timeout: int
    scrape_interval: int
    user_label: str
    accounts_url: str
    accounts_query: str
    email_backend: str
    outbox_dir: str
    smtp_host: str
    smtp_port: int
    smtp_username: str
    smtp_password: str
    smtp_tls: str
    sendgrid_api_key: str
    sendgrid_api_host: str
    sendgrid_webhook_public_key: str
    sender: str
    postal_address: str
    events_address: tuple[str, int]
    public_url: str
    secret_key: str
    scheduler_interval: int
    tracking: bool
    app_password: str
    viewer_password: str
    sources: Mapping[str, str] = field(default_factory=dict)

    def masked(self) -> list[dict[str, str]]:
        """List every setting with its shown value, help text and source; secrets are masked."""
        rows = []
        for spec in SPECS:
            raw = self.raw_value(spec.name)
            shown = mask(raw) if spec.secret else raw
            rows.append({"name": spec.name, "value": shown, "group": spec.group,
                         "source": self.sources.get(spec.name, "default"), "help": spec.help})
        return rows

    def raw_value(self, name: str) -> str:
        value = getattr(self, _ATTRIBUTE_BY_NAME[name])
        if isinstance(value, tuple):
            return f"{value[0]}:{value[1]}"
        if isinstance(value, Mapping):
            return ", ".join(f"{k}: {v}" for k, v in value.items())
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


_ATTRIBUTE_BY_NAME = {
    "BEHAVEMAIL_FROM": "sender",
}
for _spec in SPECS:
    _ATTRIBUTE_BY_NAME.setdefault(_spec.name, _spec.name.removeprefix("BEHAVEMAIL_").lower())


def mask(value: str) -> str:
    """Hide a secret, keeping only enough to recognise which one is set."""
    if not value:
        return ""
    if "://" in value and "@" in value:
        # A database URL: hide the password part only.
        scheme, rest = value.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:****@{host}"
    if "://" in value:
        return value
    return "****"


def _read_toml(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    return {str(k): str(v) for k, v in data.items()}


def load_settings(environ: Mapping[str, str] | None = None,
                  config_dir: Path | None = None) -> Settings:
    """Read and validate every setting; raise ConfigurationError naming the bad variable."""
    environ = os.environ if environ is None else environ
    config_dir = Path.cwd() if config_dir is None else config_dir
    layers = [
        ("environment", dict(environ)),
        (".env", {k: v for k, v in dotenv_values(config_dir / ".env").items() if v is not None}),
        ("behavemail.toml", _read_toml(config_dir / "behavemail.toml")),
    ]
    unknown = sorted(
        name for source, layer in layers[1:] for name in layer
        if name.startswith("BEHAVEMAIL_") and name not in SPECS_BY_NAME
    )
    if unknown:
        raise ConfigurationError(
            f"Unknown setting {unknown[0]}: check the spelling against the configuration table in README.md"
        )

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SPECS:
        raw, source = spec.default, "default"
        for layer_name, layer in layers:
            if spec.name in layer:
                raw, source = layer[spec.name], layer_name
                break
        values[_ATTRIBUTE_BY_NAME[spec.name]] = spec.parse(spec.name, raw)
        sources[spec.name] = source

    if not values["secret_key"]:
        values["secret_key"] = _load_or_create_secret_key(DATA_DIR / "secret_key")
        sources["BEHAVEMAIL_SECRET_KEY"] = "data/secret_key"
    _check_backend(values)
    return Settings(**values, sources=sources)


def _check_backend(values: dict[str, Any]) -> None:
    backend = values["email_backend"]
    if backend == "smtp" and not values["smtp_host"]:
        raise ConfigurationError(
            "BEHAVEMAIL_EMAIL_BACKEND=smtp needs BEHAVEMAIL_SMTP_HOST: set it to your SMTP server"
        )
    if backend == "sendgrid" and not values["sendgrid_api_key"]:
        raise ConfigurationError(
            "BEHAVEMAIL_EMAIL_BACKEND=sendgrid needs BEHAVEMAIL_SENDGRID_API_KEY: "
            "create a key with Mail Send permission in SendGrid and set it"
        )
    from email.headerregistry import Address  # noqa: F401  (checked by parse_sender)
    from .delivery.message import parse_sender
    parse_sender(values["sender"])


def _load_or_create_secret_key(path: Path) -> str:
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    # Create with owner-only permissions before anything is written to it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
