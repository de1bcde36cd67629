"""What an editor does with the open rule: validate, save, enable or disable, duplicate, delete."""

from __future__ import annotations

import streamlit as st

from behavemail_core.errors import BehavemailError
from behavemail_core.metric_catalog import MetricInfo
from behavemail_core.preview import CompiledRule, compile_rule, uses_raw_promql, verify_query
from behavemail_core.rule_overview import RuleSummary
from behavemail_core.rule_store import delete_rule, duplicate_rule, save_rule, set_enabled
from behavemail_core.rules import RuleSpec, rule_spec_from_dict
from behavemail_core.settings import Settings

from . import auth, services
from .editors import wait_for_editor_updates
from .errors import error_box, show_error
from .rule_list import open_rule
from .state import Flash, RulesState, widget_key


UNNAMED_RULE = "Unnamed rule"


def validate(settings: Settings, state: RulesState) -> tuple[RuleSpec, CompiledRule] | None:
    """Validate and compile the form; show why and return None when it is not a valid rule yet.

    A rule without a name still gets its preview (as "Unnamed rule"), so the name can
    come last; saving asks for it.
    """
    data = state.draft.to_dict()
    data["name"] = data["name"] or UNNAMED_RULE
    try:
        spec = rule_spec_from_dict(data)
        return spec, compile_rule(spec, user_label=settings.user_label,
                                  scrape_interval_seconds=settings.scrape_interval)
    except BehavemailError as exc:
        show_error(exc)
        return None


def is_dirty(state: RulesState) -> bool:
    """Return whether the form differs from the rule as loaded or last saved."""
    return state.baseline is None or state.baseline != state.draft.to_dict()


def rule_toolbar(settings: Settings, state: RulesState, summary: RuleSummary, catalog: list[MetricInfo]) -> None:
    """Show Enable/Disable, Duplicate, Reload and Delete for the open rule."""
    key = lambda name: widget_key(RulesState.PREFIX, "toolbar", name)  # noqa: E731
    columns = st.columns(4)
    with columns[0]:
        label = "Disable" if summary.enabled else "Enable"
        if st.button(label, key=key("enable"), icon=":material/power_settings_new:"):
            with error_box():
                _set_enabled(settings, state, not summary.enabled)
    with columns[1]:
        if st.button("Duplicate", key=key("duplicate"), icon=":material/content_copy:"):
            with error_box():
                _duplicate(settings, state, catalog)
    with columns[2]:
        if st.button("Discard changes", key=key("reload"), icon=":material/undo:", disabled=not is_dirty(state),
                     help="Reload the saved version of this rule."):
            with error_box():
                open_rule(settings, state, state.rule_id, catalog)
                st.rerun()
    with columns[3]:
        if st.button("Delete", key=key("delete"), icon=":material/delete:"):
            state.confirm_delete = True
    if state.confirm_delete:
        _confirm_delete(settings, state, summary, catalog)


def _set_enabled(settings: Settings, state: RulesState, enabled: bool) -> None:
    assert state.rule_id is not None
    with services.sessions(settings)() as session:
        rule = set_enabled(session, state.rule_id, enabled, actor=auth.current_actor())
        new_version = rule.version
    # Keep the form's other unsaved changes. Only when nobody else saved in between
    # does the form move to the new version; otherwise the next save reports the conflict.
    if state.loaded_version is not None and new_version == state.loaded_version + 1:
        state.loaded_version = new_version
        if state.baseline is not None:
            state.baseline["enabled"] = enabled
    state.draft.enabled = enabled
    state.generation += 1
    state.flash = Flash("success", f"Rule {'enabled' if enabled else 'disabled'}.")
    st.rerun()


def _duplicate(settings: Settings, state: RulesState, catalog: list[MetricInfo]) -> None:
    assert state.rule_id is not None
    with services.sessions(settings)() as session:
        copy = duplicate_rule(session, state.rule_id, actor=auth.current_actor())
        copy_id, copy_name = copy.id, copy.name
    open_rule(settings, state, copy_id, catalog)
    state.picker_generation += 1
    state.flash = Flash("success", f"Created {copy_name!r}, disabled, and opened it.")
    st.rerun()


def _confirm_delete(settings: Settings, state: RulesState, summary: RuleSummary, catalog: list[MetricInfo]) -> None:
    st.warning(f"Delete the rule {summary.name!r}? The scheduler stops evaluating it. Its sent emails, "
               "evaluations and episodes stay in the history.")
    yes_column, no_column = st.columns(2)
    with yes_column:
        if st.button("Yes, delete it", type="primary", key=widget_key(RulesState.PREFIX, "toolbar", "confirm")):
            with error_box():
                assert state.rule_id is not None
                with services.sessions(settings)() as session:
                    delete_rule(session, state.rule_id, actor=auth.current_actor())
                open_rule(settings, state, None, catalog)
                state.picker_generation += 1
                state.flash = Flash("success", f"Deleted the rule {summary.name!r}; its history stays.")
                st.rerun()
    with no_column:
        if st.button("Cancel", key=widget_key(RulesState.PREFIX, "toolbar", "cancel")):
            state.confirm_delete = False
            st.rerun()


def save_area(settings: Settings, state: RulesState, valid: tuple[RuleSpec, CompiledRule] | None,
              query_ok: bool) -> None:
    """Show the unsaved-changes notice and the Save button, enabled only for a valid rule."""
    if state.baseline is None:
        st.caption("This rule is not saved yet.")
    elif is_dirty(state):
        st.warning("Unsaved changes: the form differs from the saved rule. Save to keep them.")
    reason = None
    if valid is None:
        reason = "Fix the problems shown above to save this rule."
    elif not query_ok:
        reason = "Prometheus rejects this rule's query: fix it to save the rule."
    elif not state.draft.name.strip():
        reason = "Give the rule a name to save it."
    if reason:
        st.caption(reason)
    if st.button("Save rule", type="primary", key=widget_key(RulesState.PREFIX, "save"),
                 disabled=reason is not None, icon=":material/save:"):
        state.save_requested = True
    if not state.save_requested:
        return
    wait_for_editor_updates()
    state.save_requested = False
    if valid is not None and reason is None:
        with error_box():
            _save(settings, state, *valid)


def _save(settings: Settings, state: RulesState, spec: RuleSpec, compiled: CompiledRule) -> None:
    if uses_raw_promql(spec.condition):
        # Hand-written PromQL is checked against Prometheus once more, uncached, before it is stored.
        with st.spinner("Checking the query with Prometheus…"):
            verify_query(services.prometheus(settings), compiled.promql, user_label=settings.user_label)
    with services.sessions(settings)() as session:
        rule = save_rule(session, spec, actor=auth.current_actor(), rule_id=state.rule_id,
                         expected_version=state.loaded_version)
        rule_id, version, name = rule.id, rule.version, rule.name
    if state.rule_id != rule_id:
        state.picker_generation += 1
    state.rule_id, state.loaded_version = rule_id, version
    state.baseline = state.draft.to_dict()
    state.flash = Flash("success", f"Saved the rule {name!r} (version {version}).")
    st.rerun()
