"""The operator app's password check and roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from behavemail_core.auth import EDITOR, OPEN, PASSWORD, VIEWER, access_mode, can_edit, role_for_password
from behavemail_core.settings import Settings, load_settings


def settings_with(tmp_path: Path, editor: str = "", viewer: str = "") -> Settings:
    return load_settings({"BEHAVEMAIL_SECRET_KEY": "auth-test-secret-key-0123456789",
                          "BEHAVEMAIL_APP_PASSWORD": editor, "BEHAVEMAIL_VIEWER_PASSWORD": viewer},
                         config_dir=tmp_path)


ROLE_CASES = [
    # the editor password gives the editor role
    ("edit-secret", "view-secret", "edit-secret", EDITOR),
    # the viewer password gives the viewer role
    ("edit-secret", "view-secret", "view-secret", VIEWER),
    # a wrong password gives nothing
    ("edit-secret", "view-secret", "guess", None),
    # an empty password never matches, not even an unset one
    ("edit-secret", "", "", None),
    # a password that only differs in case is wrong
    ("edit-secret", "", "Edit-Secret", None),
    # non-ASCII passwords compare as UTF-8
    ("pässwörd", "", "pässwörd", EDITOR),
    # with only a viewer password, nobody becomes editor
    ("", "view-secret", "view-secret", VIEWER),
]


@pytest.mark.parametrize("editor, viewer, given, role", ROLE_CASES)
def test_role_for_password(tmp_path: Path, editor: str, viewer: str, given: str, role: str | None) -> None:
    assert role_for_password(settings_with(tmp_path, editor, viewer), given) == role


@pytest.mark.parametrize("editor, viewer, mode", [
    # no password at all: open
    ("", "", OPEN),
    # either password: passwords
    ("edit-secret", "", PASSWORD),
    ("", "view-secret", PASSWORD),
])
def test_access_mode(tmp_path: Path, editor: str, viewer: str, mode: str) -> None:
    assert access_mode(settings_with(tmp_path, editor, viewer)) == mode


def test_only_editors_edit() -> None:
    assert can_edit(EDITOR)
    assert not can_edit(VIEWER)
    assert not can_edit(None)
