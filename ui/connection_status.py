"""Connection checks as shown on the Settings screen."""

from __future__ import annotations

import streamlit as st

from behavemail_core.accounts import AccountDirectory
from behavemail_core.connection_checks import OK, CheckResult, run_checks
from behavemail_core.errors import BehavemailError
from behavemail_core.settings import Settings

from . import services


def check_connections(settings: Settings) -> list[CheckResult]:
    """Run every connection check now (nothing is cached, so a fix shows at once)."""
    directory: AccountDirectory | None
    try:
        directory = services.accounts(settings)
    except BehavemailError:
        directory = None
    return run_checks(settings, services.prometheus(settings), directory)


def show_check(result: CheckResult) -> None:
    """Show one component's status in green or red, with the details below the summary."""
    body = f"**{result.component}:** {result.summary}"
    if result.detail:
        body += f"  \n{result.detail}"
    if result.status == OK:
        st.success(body, icon=":material/check_circle:")
    else:
        st.error(body, icon=":material/error:")
