"""The Settings screen under AppTest: connection checks and the masked settings table."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from behavemail_core.settings import SPECS_BY_NAME
from tests.support.prometheus import free_port

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60
SMTP_PASSWORD = "smtp-password-never-shown"


def open_settings() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    app.switch_page("pages/settings.py").run()
    assert not app.exception, app.exception
    return app


def test_checks_pass(app_env) -> None:
    app = open_settings()
    summaries = [item.value.split("  \n")[0] for item in app.success]
    assert summaries[0].startswith("**Prometheus:** Connected to Prometheus 2.")
    assert summaries[1] == "**Accounts database:** The accounts query works"
    assert summaries[2].startswith("**Email backend:** Outbox: emails are written as .eml files to ")
    assert [item.value for item in app.error] == []


def test_unreachable_prometheus_is_reported(app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEHAVEMAIL_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    app = open_settings()
    errors = [item.value for item in app.error]
    assert any(error.startswith("**Prometheus:** Prometheus at http://127.0.0.1:") for error in errors), errors


def test_settings_table_masks_secrets(app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEHAVEMAIL_SMTP_PASSWORD", SMTP_PASSWORD)
    app = open_settings()
    email = next(table.value for table in app.table if "BEHAVEMAIL_SMTP_PASSWORD" in table.value.index)
    row = email.loc["BEHAVEMAIL_SMTP_PASSWORD"]
    # Cells are Markdown, so the mask is escaped to show as four asterisks.
    assert row["Value"] == "\\*\\*\\*\\*"
    assert row["Source"] == "environment"
    assert row["What it sets"] == SPECS_BY_NAME["BEHAVEMAIL_SMTP_PASSWORD"].help
    table_text = "".join(table.value.to_csv() for table in app.table)
    assert SMTP_PASSWORD not in table_text
    assert app_env["BEHAVEMAIL_SECRET_KEY"] not in table_text
