"""Roles of the operator app and the password check behind its sign-in form.

Two passwords may be configured: BEHAVEMAIL_APP_PASSWORD gives the editor role and
BEHAVEMAIL_VIEWER_PASSWORD the read-only viewer role. With neither set, the app is
open and everyone is an editor, which is only safe while the app listens on 127.0.0.1.
Single sign-on (OIDC) is handled by Streamlit itself and decided in the app.
"""

from __future__ import annotations

import hmac
import logging

from .settings import Settings

log = logging.getLogger(__name__)

EDITOR = "editor"
VIEWER = "viewer"
ROLES = (EDITOR, VIEWER)

# Access modes of the app without single sign-on.
OPEN = "open"
PASSWORD = "password"


def access_mode(settings: Settings) -> str:
    """Return OPEN when no password is configured, else PASSWORD."""
    if settings.app_password or settings.viewer_password:
        return PASSWORD
    return OPEN


def role_for_password(settings: Settings, password: str) -> str | None:
    """Return the role a password grants, or None when it matches no configured password.

    Both passwords are always compared, with hmac.compare_digest, so the time taken
    does not reveal which one came closer. An empty password never matches.
    """
    candidate = password.encode("utf-8")
    editor_match = _matches(candidate, settings.app_password)
    viewer_match = _matches(candidate, settings.viewer_password)
    if editor_match:
        return EDITOR
    if viewer_match:
        return VIEWER
    return None


def _matches(candidate: bytes, configured: str) -> bool:
    expected = configured.encode("utf-8")
    # compare_digest runs even for an unset password, so both branches cost the same.
    same = hmac.compare_digest(candidate, expected)
    return bool(configured) and bool(candidate) and same


def can_edit(role: str | None) -> bool:
    """Return whether a role may save, delete and send test emails."""
    return role == EDITOR
