"""Make sure every screen runs through app.py, where sign-in and navigation happen.

Streamlit 1.67 treats a folder named pages/ as an old-style multipage app until the
entry script first calls st.navigation in the running process. Until then, a session
that opens a screen's URL directly (a bookmark, say) runs that file alone, without
app.py, and so without sign-in. Each screen therefore calls :func:`require_entry`
first: outside app.py it remembers the screen and switches to app.py, which signs
the operator in and then opens the screen.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ENTERED_KEY = "entry.through_app"
REQUESTED_KEY = "entry.requested_page"


def mark_entered() -> None:
    """Record that this session runs through app.py (app.py calls this on every run)."""
    st.session_state[ENTERED_KEY] = True


def require_entry(page_file: str) -> None:
    """Switch to app.py when this screen (``page_file`` is its ``__file__``) runs without it."""
    if st.session_state.get(ENTERED_KEY):
        return
    st.session_state[REQUESTED_KEY] = f"pages/{Path(page_file).name}"
    st.switch_page("app.py")


def take_requested_page() -> str | None:
    """Return (once) the screen a session asked for before it went through app.py."""
    return st.session_state.pop(REQUESTED_KEY, None)
