"""Every screen of the operator app runs under AppTest against a real database and Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.prometheus import free_port

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    app.switch_page(page).run()
    return app


@pytest.mark.parametrize("page, title", [
    # the rule builder with an empty app database
    ("pages/rules.py", "Rules"),
    # the template editor with an empty app database
    ("pages/templates.py", "Templates"),
    # connection checks and the settings table
    ("pages/settings.py", "Settings"),
])
def test_page_runs_without_exception(app_env, page: str, title: str) -> None:
    app = open_page(page)
    assert not app.exception, app.exception
    assert app.title[0].value == title


@pytest.mark.parametrize("page, expected", [
    # the metric list and the preview need Prometheus
    ("pages/rules.py", "Prometheus"),
    # the variables come from the accounts query
    ("pages/templates.py", "The accounts query failed"),
    # both connection checks fail
    ("pages/settings.py", "Accounts database"),
])
def test_page_survives_unreachable_services(app_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            page: str, expected: str) -> None:
    monkeypatch.setenv("BEHAVEMAIL_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("BEHAVEMAIL_ACCOUNTS_URL", f"sqlite:///{tmp_path / 'missing' / 'accounts.db'}")
    app = open_page(page)
    assert not app.exception, app.exception
    messages = [item.value for item in [*app.error, *app.warning]]
    assert any(expected in text for text in messages), messages
