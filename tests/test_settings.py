"""Configuration: defaults, precedence, malformed values and masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from behavemail_core.errors import ConfigurationError
from behavemail_core.settings import SPECS, load_settings, mask

BASE = {"BEHAVEMAIL_SECRET_KEY": "test-secret-key-0123456789"}


def load(tmp_path: Path, **values: str):
    return load_settings({**BASE, **values}, config_dir=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings.prometheus_url == "http://127.0.0.1:9090"
    assert settings.user_label == "user_id"
    assert settings.email_backend == "outbox"
    assert settings.events_address == ("127.0.0.1", 8502)


@pytest.mark.parametrize(("name", "value", "message"), [
    # a URL without a scheme
    ("BEHAVEMAIL_PROMETHEUS_URL", "localhost:9090", "BEHAVEMAIL_PROMETHEUS_URL='localhost:9090' is not a valid URL"),
    # an unsupported backend
    ("BEHAVEMAIL_EMAIL_BACKEND", "mailgun", "expected one of outbox, smtp, sendgrid"),
    # a port out of range
    ("BEHAVEMAIL_SMTP_PORT", "70000", "is not a TCP port"),
    # a label name with a dash
    ("BEHAVEMAIL_USER_LABEL", "user-id", "not a valid Prometheus label name"),
    # a header without a colon
    ("BEHAVEMAIL_PROMETHEUS_HEADERS", "X-Scope-OrgID tenant1", "expected 'Header-Name: value'"),
    # an events address without a port
    ("BEHAVEMAIL_EVENTS_ADDRESS", "127.0.0.1", "expected host:port"),
    # a sender that is not an address
    ("BEHAVEMAIL_FROM", "Behavemail", "is not a valid sender"),
    # a database URL SQLAlchemy cannot parse
    ("BEHAVEMAIL_DATABASE_URL", "not a url", "BEHAVEMAIL_DATABASE_URL is not a valid SQLAlchemy URL"),
])
def test_malformed_value_names_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, **{name: value})

    assert message in str(caught.value)


def test_smtp_backend_needs_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs BEHAVEMAIL_SMTP_HOST"):
        load(tmp_path, BEHAVEMAIL_EMAIL_BACKEND="smtp")


def test_precedence_env_dotenv_toml(tmp_path: Path) -> None:
    (tmp_path / "behavemail.toml").write_text('BEHAVEMAIL_USER_LABEL = "from_toml"\n'
                                              'BEHAVEMAIL_SCHEDULER_INTERVAL = "30"\n'
                                              'BEHAVEMAIL_SCRAPE_INTERVAL = "15"\n')
    (tmp_path / ".env").write_text("BEHAVEMAIL_USER_LABEL=from_dotenv\nBEHAVEMAIL_SCHEDULER_INTERVAL=45\n")

    settings = load(tmp_path, BEHAVEMAIL_USER_LABEL="from_env")

    assert settings.user_label == "from_env"
    assert settings.scheduler_interval == 45
    assert settings.scrape_interval == 15
    assert settings.sources["BEHAVEMAIL_SCRAPE_INTERVAL"] == "behavemail.toml"


def test_unknown_setting_in_file_rejected(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BEHAVEMAIL_PROMETEHUS_URL=http://x:9090\n")

    with pytest.raises(ConfigurationError, match="Unknown setting BEHAVEMAIL_PROMETEHUS_URL"):
        load(tmp_path)


def test_secrets_masked(tmp_path: Path) -> None:
    settings = load(tmp_path, BEHAVEMAIL_SMTP_PASSWORD="hunter2-very-secret",
                    BEHAVEMAIL_DATABASE_URL="postgresql+psycopg://app:s3cret@db.internal/behavemail",
                    BEHAVEMAIL_PROMETHEUS_HEADERS="Authorization: Bearer abcdef123456")
    shown = {row["name"]: row["value"] for row in settings.masked()}

    assert "hunter2" not in shown["BEHAVEMAIL_SMTP_PASSWORD"]
    assert shown["BEHAVEMAIL_DATABASE_URL"] == "postgresql+psycopg://app:****@db.internal/behavemail"
    assert "abcdef123456" not in shown["BEHAVEMAIL_PROMETHEUS_HEADERS"]
    assert "test-secret-key" not in shown["BEHAVEMAIL_SECRET_KEY"]


def test_mask_short_secret_fully_hidden() -> None:
    assert mask("abc") == "****"


def test_every_setting_documented_in_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    missing = [spec.name for spec in SPECS if spec.name not in readme]

    assert missing == []


def test_every_setting_has_help() -> None:
    assert [spec.name for spec in SPECS if len(spec.help) < 20] == []


def test_mask_long_secret_shows_nothing() -> None:
    assert mask("SG.abcdefghijklmnopqrstuvwxyz") == "****"
