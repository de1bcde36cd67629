"""Sign-in and roles in the operator app under AppTest: open access, passwords, viewers, SSO."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60
EDITOR_PASSWORD = "editor-password-1234"
VIEWER_PASSWORD = "viewer-password-5678"


@pytest.fixture
def with_passwords(app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEHAVEMAIL_APP_PASSWORD", EDITOR_PASSWORD)
    monkeypatch.setenv("BEHAVEMAIL_VIEWER_PASSWORD", VIEWER_PASSWORD)


def start_app() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    assert not app.exception, app.exception
    return app


def sign_in(app: AppTest, password: str) -> None:
    app.text_input[0].input(password)
    app.button[0].click().run()
    assert not app.exception, app.exception


def test_open_access_is_editor(app_env) -> None:
    app = start_app()
    assert app.session_state["auth.role"] == "editor"
    assert app.sidebar.caption[0].value.startswith("Open access: no password is set")


def test_password_required(with_passwords) -> None:
    app = start_app()
    assert app.title[0].value == "Sign in to Behavemail"
    assert "auth.role" not in app.session_state


def test_wrong_password_rejected(with_passwords) -> None:
    app = start_app()
    sign_in(app, "guess")
    assert app.error[0].value.startswith("Wrong password")
    assert "auth.role" not in app.session_state


def test_editor_password_opens_app(with_passwords) -> None:
    app = start_app()
    sign_in(app, EDITOR_PASSWORD)
    assert app.session_state["auth.role"] == "editor"
    assert app.sidebar.caption[0].value == "Signed in with the editor password."
    app.switch_page("pages/rules.py").run()
    assert app.button(key="rules.save") is not None


def test_viewer_sees_rules_read_only(with_passwords) -> None:
    app = start_app()
    sign_in(app, VIEWER_PASSWORD)
    app.switch_page("pages/rules.py").run()
    assert not app.exception, app.exception
    assert app.info[0].value.startswith("You are signed in as a viewer")
    assert [button.key for button in app.button if button.key == "rules.save"] == []
    generation = app.session_state["rules.state"].generation
    assert app.text_input(key=f"rules.{generation}.name").proto.disabled
    assert app.selectbox(key=f"rules.{generation}.left.metric").proto.disabled
    # The preview still works for viewers.
    assert app.code[0].value.startswith("sum by (user_id)")


def test_viewer_sees_templates_read_only(with_passwords) -> None:
    app = start_app()
    sign_in(app, VIEWER_PASSWORD)
    app.switch_page("pages/templates.py").run()
    assert not app.exception, app.exception
    keys = {button.key for button in app.button}
    assert "templates.save" not in keys
    assert "templates.send_test" not in keys
    assert "templates.copy_starter" not in keys


def test_single_sign_on_offered(app_env) -> None:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback",
                           "cookie_secret": "cookie-secret-0123456789", "client_id": "behavemail",
                           "client_secret": "client-secret",
                           "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}
    app.run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Sign in to Behavemail"
    assert [button.label for button in app.button] == ["Sign in with single sign-on"]
    assert len(app.text_input) == 0
