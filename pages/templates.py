"""Templates: the email editor, its checks, a live preview for a real customer, and test sends."""

from __future__ import annotations

import streamlit as st

from behavemail_core.errors import BehavemailError
from ui import auth, entry, queries, services, template_editor
from ui.errors import error_box
from ui.rule_list import load_summaries
from ui.state import TemplatesState, page_state
from ui.widgets import read_only_notice, show_flash


def templates_page() -> None:
    settings = services.current_settings()
    state = page_state(TemplatesState)
    editor = auth.is_editor()
    st.title("Templates")
    if not editor:
        read_only_notice()
    show_flash(state.flash)
    state.flash = None

    names = template_editor.template_names(settings)
    with error_box():
        template_editor.template_picker(settings, state, names)
    if editor:
        template_editor.starter_copier(state, set(names.values()), disabled=False)
    try:
        columns = queries.account_columns(settings)
    except BehavemailError as exc:
        st.warning(f"The accounts query failed, so only the built-in variables are known. {exc}")
        columns = []

    edit_column, preview_column = st.columns([5, 7], gap="large")
    with edit_column:
        template_editor.template_fields(state, disabled=not editor)
        template_editor.variables_help(columns)
        problems = template_editor.template_problems(state, columns)
        if editor:
            template_editor.save_area(settings, state, problems)
    with preview_column:
        st.subheader("Preview")
        summaries = []
        with error_box():
            summaries = load_summaries(settings)
        customer = template_editor.preview_customer(settings, state, summaries)
        rendered = None
        if customer is not None and problems:
            st.info("Fix the problems listed under the editor to see the preview.")
        elif customer is not None:
            rendered = template_editor.rendered_preview(settings, state, customer)
        if editor and rendered is not None:
            template_editor.test_send_area(settings, rendered)


entry.require_entry(__file__)
templates_page()
