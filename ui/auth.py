"""Sign-in for the operator app: single sign-on through st.login, or the app's passwords.

Single sign-on (OIDC) applies when Streamlit's secrets have an ``[auth]`` section.
Signed-in users are editors, unless ``[behavemail] editor_emails`` lists the editors,
in which case everybody else is a viewer. Without ``[auth]``, BEHAVEMAIL_APP_PASSWORD
and BEHAVEMAIL_VIEWER_PASSWORD decide, and with neither set the app is open to
everybody as editor. The role lives in the session only: a new browser session signs
in again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import streamlit as st

from behavemail_core.auth import EDITOR, OPEN, VIEWER, access_mode, can_edit, role_for_password
from behavemail_core.settings import Settings

from . import services

log = logging.getLogger(__name__)

ROLE_KEY = "auth.role"
ACTOR_KEY = "auth.actor"
METHOD_KEY = "auth.method"
PASSWORD_METHOD = "password"
# Slows down password guessing within a session. NOTE: a new session starts over,
# so this is friction, not a lockout; put the app behind a proxy before exposing it.
FAILED_SIGN_IN_DELAY_SECONDS = 1.0


def _secrets_section(name: str) -> Any:
    try:
        if not st.secrets.load_if_toml_exists() or name not in st.secrets:
            return None
        return st.secrets[name]
    except FileNotFoundError:
        return None


def oidc_configured() -> bool:
    """Return whether Streamlit's secrets configure single sign-on (an ``[auth]`` section)."""
    return _secrets_section("auth") is not None


def _oidc_provider() -> str | None:
    # With named providers ([auth.google], [auth.okta] ...) st.login needs the name.
    section = _secrets_section("auth") or {}
    named = [key for key, value in section.items() if hasattr(value, "items")]
    return named[0] if named else None


def _oidc_role(email: str | None) -> str:
    section = _secrets_section("behavemail") or {}
    editors = section.get("editor_emails") if hasattr(section, "get") else None
    if editors is None:
        return EDITOR
    return EDITOR if email and email.lower() in {str(e).lower() for e in editors} else VIEWER


def resolve_access(settings: Settings) -> str | None:
    """Store and return the session's role, or return None when the operator must sign in."""
    if oidc_configured():
        if not st.user.get("is_logged_in", False):
            return None
        email = st.user.get("email")
        _remember(_oidc_role(email), str(email or st.user.get("name") or "signed-in user"))
    elif access_mode(settings) == OPEN:
        _remember(EDITOR, "operator (open access)")
    return st.session_state.get(ROLE_KEY)


def _remember_method(method: str) -> None:
    st.session_state[METHOD_KEY] = method


def _remember(role: str, actor: str) -> None:
    st.session_state[ROLE_KEY] = role
    st.session_state[ACTOR_KEY] = actor


def current_role() -> str | None:
    """Return the signed-in role (editor or viewer), or None."""
    return st.session_state.get(ROLE_KEY)


def is_editor() -> bool:
    """Return whether this session may save, delete and send test emails."""
    return can_edit(current_role())


def signed_in_text() -> str:
    """Describe the sign-in for the sidebar: which password, or which account and role."""
    if st.session_state.get(METHOD_KEY) == PASSWORD_METHOD:
        return f"Signed in with the {current_role()} password."
    return f"Signed in as {current_actor()} ({current_role()})."


def current_actor() -> str:
    """Return who acts, for the audit log: an email with SSO, else the role."""
    return str(st.session_state.get(ACTOR_KEY) or "unknown")


def sign_in_page() -> None:
    """Show the sign-in screen: a single sign-on button, or the password form."""
    st.title("Sign in to Behavemail")
    if oidc_configured():
        st.write("This app uses your organisation's single sign-on.")
        st.button("Sign in with single sign-on", type="primary", on_click=st.login,
                  args=(_oidc_provider(),) if _oidc_provider() else ())
        return
    settings = services.current_settings()
    with st.form("auth.sign_in"):
        password = st.text_input("Password", type="password",
                                 help="The editor or the viewer password of this Behavemail.")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not settings.app_password:
        st.caption("Only a viewer password is set: nobody can edit rules or templates here "
                   "until BEHAVEMAIL_APP_PASSWORD is set.")
    if submitted:
        _check_password(settings, password)


def _check_password(settings: Settings, password: str) -> None:
    role = role_for_password(settings, password)
    if role is None:
        log.warning("sign-in failed: wrong password")
        time.sleep(FAILED_SIGN_IN_DELAY_SECONDS)
        st.error("Wrong password: check it and try again, or ask whoever runs Behavemail for it.")
        return
    log.info("signed in role=%s", role)
    _remember(role, f"{role} (password)")
    _remember_method(PASSWORD_METHOD)
    st.rerun()


def sign_out() -> None:
    """End the session's sign-in (and the SSO session when single sign-on is on)."""
    for key in (ROLE_KEY, ACTOR_KEY, METHOD_KEY):
        st.session_state.pop(key, None)
    if oidc_configured():
        st.logout()
