"""The sidebar on every screen: scheduler heartbeat, Prometheus status and who is signed in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from behavemail_core.auth import OPEN, access_mode
from behavemail_core.errors import BehavemailError
from behavemail_core.heartbeat import latest_cycle_at
from behavemail_core.settings import Settings

from . import auth, queries, services
from .widgets import relative_time

# A heartbeat older than this many scheduler intervals (plus a minute) counts as stale.
STALE_AFTER_INTERVALS = 3


def render_sidebar(settings: Settings) -> None:
    """Write the scheduler, Prometheus and access sections into the sidebar."""
    with st.sidebar:
        _scheduler_status(settings)
        _prometheus_status(settings)
        st.divider()
        _access_status(settings)


def _scheduler_status(settings: Settings) -> None:
    now = datetime.now(timezone.utc)
    try:
        with services.sessions(settings)() as session:
            last_cycle = latest_cycle_at(session)
    except (BehavemailError, SQLAlchemyError) as exc:
        st.error(f"Scheduler: the app database cannot be read ({type(exc).__name__}). "
                 "Check BEHAVEMAIL_DATABASE_URL.")
        return
    if last_cycle is None:
        st.warning("Scheduler: no evaluation cycle recorded yet. Start it with `python scheduler.py`.")
        return
    stale_after = timedelta(seconds=STALE_AFTER_INTERVALS * settings.scheduler_interval + 60)
    text = f"Scheduler: last cycle {relative_time(last_cycle, now)}"
    if now - last_cycle > stale_after:
        st.warning(f"{text}. It may have stopped: check the scheduler process and its log.")
    else:
        st.success(text)


def _prometheus_status(settings: Settings) -> None:
    try:
        version = queries.prometheus_version(settings)
    except BehavemailError as exc:
        st.error(f"Prometheus: not reachable. {exc}")
        return
    st.success(f"Prometheus {version}: connected")


def _access_status(settings: Settings) -> None:
    if not auth.oidc_configured() and access_mode(settings) == OPEN:
        st.caption("Open access: no password is set, so anyone who can reach this app can edit. "
                   "That is fine on 127.0.0.1; set BEHAVEMAIL_APP_PASSWORD before exposing it.")
        return
    st.caption(auth.signed_in_text())
    if st.button("Sign out", key="auth.sign_out"):
        auth.sign_out()
        st.rerun()
