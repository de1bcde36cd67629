"""Behavemail's operator app: sign-in, navigation and the sidebar.

Run it with ``streamlit run app.py``. Each screen is a file in pages/; this file
only decides who may see them and in which order.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from behavemail_core.errors import ConfigurationError
from ui import auth, entry, services, sidebar
from ui.errors import show_error

APP_DIR = Path(__file__).resolve().parent


# (file, title, icon) of every screen, in menu order; the first one that exists opens first.
SCREENS = (
    ("pages/dashboard.py", "Dashboard", ":material/monitoring:"),
    ("pages/rules.py", "Rules", ":material/rule:"),
    ("pages/templates.py", "Templates", ":material/mail:"),
    ("pages/activity.py", "Activity", ":material/history:"),
    ("pages/settings.py", "Settings", ":material/settings:"),
)


def build_pages() -> dict[str, st.Page]:
    """Map each screen's file to its page; screens whose file does not exist yet are left out."""
    return {path: st.Page(path, title=title, icon=icon)
            for path, title, icon in SCREENS if (APP_DIR / path).exists()}


def main() -> None:
    # A local icon file: Streamlit fetches a ":material/..." page icon from Google's
    # font servers, which an installation without internet access cannot reach.
    st.set_page_config(page_title="Behavemail", page_icon=str(APP_DIR / "ui" / "assets" / "icon.png"),
                       layout="wide")
    services.configure_app_logging()
    entry.mark_entered()
    try:
        settings = services.current_settings()
    except ConfigurationError as exc:
        show_error(exc)
        st.stop()
    if auth.resolve_access(settings) is None:
        st.navigation([st.Page(auth.sign_in_page, title="Sign in", icon=":material/login:")]).run()
        return
    sidebar.render_sidebar(settings)
    pages = build_pages()
    navigation = st.navigation(list(pages.values()))
    requested = entry.take_requested_page()
    if requested in pages:
        st.switch_page(pages[requested])
    navigation.run()


main()
