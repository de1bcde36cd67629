"""Settings: connection checks, and every setting with its help text and source."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from behavemail_core.auth import OPEN, access_mode
from ui import auth, entry, services
from ui.connection_status import check_connections, show_check

GROUP_TITLES = {"databases": "Databases", "prometheus": "Prometheus", "email": "Email",
                "scheduler": "Scheduler and links", "app": "Operator app", "general": "General"}


def settings_page() -> None:
    settings = services.current_settings()
    st.title("Settings")

    st.subheader("Connections")
    st.button("Check again", key="settings.check_again", icon=":material/refresh:")
    with st.spinner("Checking Prometheus, the accounts database and the email backend…"):
        results = check_connections(settings)
    for result in results:
        show_check(result)

    st.subheader("Configuration")
    st.caption("Each setting comes from the environment, a .env file or behavemail.toml in the "
               "working directory, or its default (the Source column says which). Change it there and "
               "restart the app and the scheduler. Secrets are masked.")
    rows = settings.masked()
    for group, title in GROUP_TITLES.items():
        group_rows = [row for row in rows if row["group"] == group]
        if not group_rows:
            continue
        st.markdown(f"**{title}**")
        table = pd.DataFrame([{"Setting": row["name"], "Value": _plain(row["value"]), "Source": row["source"],
                               "What it sets": row["help"]} for row in group_rows])
        st.table(table.set_index("Setting"))

    st.subheader("Access")
    if auth.oidc_configured():
        st.write("Single sign-on through Streamlit's `[auth]` secrets.")
    elif access_mode(settings) == OPEN:
        st.write("Open: no password is set, so everyone who reaches the app is an editor.")
    else:
        st.write("Passwords: BEHAVEMAIL_APP_PASSWORD gives the editor role, BEHAVEMAIL_VIEWER_PASSWORD "
                 "the read-only viewer role.")
    st.caption(auth.signed_in_text())


def _plain(value: str) -> str:
    """Escape Markdown in a value, since st.table renders cells as Markdown ("Name <address>")."""
    return "".join(f"\\{char}" if char in "\\`*_[]<>#|" else char for char in value)


entry.require_entry(__file__)
settings_page()
