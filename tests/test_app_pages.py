"""Every screen of the operator app runs under AppTest against a real database and Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

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
