"""Rules: the list of rules, the visual builder and the live preview."""

from __future__ import annotations

import streamlit as st

from behavemail_core.template_store import list_templates
from ui import auth, entry, rule_actions, rule_list, services
from ui.errors import error_box
from ui.rule_builder import load_catalog, rule_form
from ui.rule_preview import rule_preview
from ui.state import RulesState, page_state
from ui.widgets import read_only_notice, show_flash


def rules_page() -> None:
    settings = services.current_settings()
    state = page_state(RulesState)
    editor = auth.is_editor()
    st.title("Rules")
    if not editor:
        read_only_notice()
    show_flash(state.flash)
    state.flash = None

    summaries = []
    with error_box():
        summaries = rule_list.load_summaries(settings)
    rule_list.rules_table(settings, summaries)
    catalog = load_catalog(settings)
    with error_box():
        rule_list.rule_picker(settings, state, summaries, catalog)
    summary = next((item for item in summaries if item.rule_id == state.rule_id), None)
    if editor and summary is not None:
        rule_actions.rule_toolbar(settings, state, summary, catalog)

    with services.sessions(settings)() as session:
        templates = [template.name for template in list_templates(session)]
    builder_column, preview_column = st.columns([11, 9], gap="large")
    with builder_column:
        rule_form(settings, state, catalog, templates=templates, disabled=not editor)
    with preview_column:
        st.subheader("Preview")
        valid = rule_actions.validate(settings, state)
        query_ok = valid is not None and rule_preview(settings, *valid, rule_id=state.rule_id)
    if editor:
        with builder_column:
            st.divider()
            rule_actions.save_area(settings, state, valid, query_ok)


entry.require_entry(__file__)
rules_page()
