"""Typed session state: one small dataclass per screen, stored under the screen's prefix.

Widget keys start with the same prefix (``rules.``, ``templates.`` ...), so the keys
of different screens never collide, and a screen's whole state is one object a test
can read from AppTest's session_state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import streamlit as st

from .rule_draft import RuleDraft

T = TypeVar("T")


@dataclass
class Flash:
    """A message to show once, after the rerun that follows an action."""

    kind: str  # "success", "info" or "warning"
    text: str


@dataclass
class RulesState:
    """The Rules screen: which rule is open, at which version, and the form's contents.

    ``baseline`` is the form's export form as loaded or last saved, for the
    "unsaved changes" notice. ``generation`` is part of every form widget's key, so
    raising it resets the widgets to the draft (when another rule is opened), and
    ``editor_seed`` does the same for the PromQL editor alone. ``picker_generation``
    resets the rule picker after the open rule changed without it (a save, a delete).
    ``save_requested`` carries a Save click into the rerun that an editor update may
    start (see ui/editors.py).
    """

    PREFIX: ClassVar[str] = "rules"

    opened: bool = False
    rule_id: int | None = None
    loaded_version: int | None = None
    draft: RuleDraft = field(default_factory=RuleDraft)
    baseline: dict[str, Any] | None = None
    generation: int = 0
    editor_seed: int = 0
    picker_generation: int = 0
    save_requested: bool = False
    confirm_delete: bool = False
    flash: Flash | None = None


@dataclass
class TemplatesState:
    """The Templates screen: the open template, at which version, and the editor's contents."""

    PREFIX: ClassVar[str] = "templates"

    opened: bool = False
    template_id: int | None = None
    loaded_version: int | None = None
    name: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    baseline: tuple[str, str, str, str] | None = None
    generation: int = 0
    picker_generation: int = 0
    save_requested: bool = False
    flash: Flash | None = None

    def contents(self) -> tuple[str, str, str, str]:
        """Return (name, subject, html, text) as the editors hold them now."""
        return (self.name, self.subject, self.html, self.text)


def page_state(cls: type[T]) -> T:
    """Return the screen's state, creating it on the session's first visit."""
    key = f"{cls.PREFIX}.state"  # type: ignore[attr-defined]
    value = st.session_state.get(key)
    if not isinstance(value, cls):
        value = cls()
        st.session_state[key] = value
    return value


def widget_key(prefix: str, *parts: object) -> str:
    """Return a widget key under a screen's prefix, e.g. ``rules.3.left.metric``."""
    return ".".join([prefix, *(str(part) for part in parts)])
