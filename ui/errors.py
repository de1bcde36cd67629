"""The one place where Behavemail errors become messages on screen."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import streamlit as st

from behavemail_core.errors import BehavemailError

log = logging.getLogger(__name__)

T = TypeVar("T")


def show_error(exc: BehavemailError) -> None:
    """Show the error's message, which names the value and the fix, as st.error."""
    log.warning("error shown to operator type=%s message=%s", type(exc).__name__, exc)
    st.error(str(exc))


@contextmanager
def error_box() -> Iterator[None]:
    """Run a block and show a BehavemailError from it instead of a traceback.

    The rest of the block is skipped after an error; other exceptions propagate,
    because they are bugs that Streamlit should report in full.
    """
    try:
        yield
    except BehavemailError as exc:
        show_error(exc)


def attempt(action: Callable[[], T]) -> T | None:
    """Return ``action()``, or None after showing the BehavemailError it raised."""
    try:
        return action()
    except BehavemailError as exc:
        show_error(exc)
        return None
