"""Small widgets and formatting shared by the screens."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

import streamlit as st

from behavemail_core.errors import RuleValidationError
from behavemail_core.promql import humanize_duration, parse_duration

from .state import Flash

# Windows offered by the duration pickers; any other PromQL duration may be typed.
DURATION_CHOICES = ("5m", "15m", "30m", "1h", "6h", "12h", "24h", "48h", "72h", "7d", "14d", "30d")
CHECK_INTERVAL_CHOICES = ("1m", "5m", "15m", "30m", "1h", "6h", "24h")


def humanize(duration: str) -> str:
    """Return '24 hours' for '24h'; text that is no duration comes back as it is."""
    try:
        return humanize_duration(parse_duration(duration))
    except RuleValidationError:
        return duration


def duration_select(label: str, value: str, *, key: str, choices: Sequence[str] = DURATION_CHOICES,
                    disabled: bool = False, help: str | None = None) -> str:
    """Pick a duration from common ones, or type another (e.g. 36h); returns the PromQL duration."""
    options = list(choices) if value in choices else [value, *choices]
    picked = st.selectbox(label, options, index=options.index(value), key=key, format_func=humanize,
                          accept_new_options=True, disabled=disabled, help=help)
    return str(picked or value).strip()


def relative_time(when: datetime | None, now: datetime | None = None) -> str:
    """Return 'just now', '5 minutes ago', '3 hours ago', '2 days ago', or 'never'."""
    if when is None:
        return "never"
    now = now or datetime.now(timezone.utc)
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return when.strftime("%Y-%m-%d %H:%M UTC")
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def show_flash(flash: Flash | None) -> None:
    """Show a message left by the action before the last rerun."""
    if flash is None:
        return
    {"success": st.success, "info": st.info, "warning": st.warning}.get(flash.kind, st.info)(flash.text)


def read_only_notice() -> None:
    """Tell a viewer why there are no buttons to save, delete or send."""
    st.info("You are signed in as a viewer: you can look at everything, but not save, delete "
            "or send test emails.")
