"""The rules list and the picker that opens a rule (or a new one) in the builder."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from behavemail_core.compiler import compile_condition
from behavemail_core.errors import BehavemailError
from behavemail_core.metric_catalog import MetricInfo
from behavemail_core.preview import compile_rule
from behavemail_core.rule_overview import RuleSummary, summarize_rules
from behavemail_core.rule_store import get_rule, spec_from_row
from behavemail_core.settings import Settings

from . import queries, services
from .rule_draft import draft_from_spec, new_draft
from .state import RulesState, widget_key
from .widgets import relative_time

NEW_RULE = 0


def load_summaries(settings: Settings) -> list[RuleSummary]:
    """Read every rule with its last evaluation and the emails sent in the last 7 days."""
    with services.sessions(settings)() as session:
        return summarize_rules(session, datetime.now(timezone.utc))


def rules_table(settings: Settings, summaries: list[RuleSummary]) -> None:
    """Show the rules list, with how many customers each rule matches right now."""
    if not summaries:
        st.info("No rules yet. Build the first one below, or import the starter rules with "
                "`python -m behavemail_core rules import data/starter_rules.yaml`.")
        return
    now = datetime.now(timezone.utc)
    with st.spinner("Counting the customers each rule matches now…"):
        rows = [_table_row(settings, summary, now) for summary in summaries]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "Enabled": st.column_config.CheckboxColumn("Enabled"),
        "Matching now": st.column_config.TextColumn("Matching now", help="Customers the condition matches "
                                                    "right now; in brackets, how many of them "
                                                    "are in the rule's audience."),
        "Sent (7 days)": st.column_config.NumberColumn("Sent (7 days)", help="Emails sent in the last 7 days."),
    })


def _table_row(settings: Settings, summary: RuleSummary, now: datetime) -> dict[str, object]:
    return {
        "Rule": summary.name,
        "Enabled": summary.enabled,
        "Last evaluation": (f"failed {relative_time(summary.last_evaluated_at, now)}" if summary.last_error
                            else relative_time(summary.last_evaluated_at, now)),
        "Matching now": _matching_now(settings, summary),
        "Sent (7 days)": summary.sent_recently,
        "Template": summary.template or "(none)",
    }


def _matching_now(settings: Settings, summary: RuleSummary) -> str:
    if summary.spec is None:
        return "invalid rule"
    try:
        promql = compile_rule(summary.spec, user_label=settings.user_label,
                              scrape_interval_seconds=settings.scrape_interval).promql
        if not summary.spec.audience:
            return str(queries.count_matching(settings, promql))
        matches = queries.current_matches(settings, summary.spec, promql)
    except BehavemailError:
        return "query failed"
    in_audience = len(matches.in_audience)
    at_least = "+" if matches.truncated else ""
    return f"{matches.total} ({in_audience}{at_least} in audience)"


def rule_picker(settings: Settings, state: RulesState, summaries: list[RuleSummary],
                catalog: list[MetricInfo]) -> None:
    """Pick the rule to open; opening one loads it into the builder."""
    if not state.opened:
        open_rule(settings, state, None, catalog)
    names = {summary.rule_id: summary.name for summary in summaries}
    options = [NEW_RULE, *names]
    current = state.rule_id if state.rule_id in names else NEW_RULE
    picked = st.selectbox("Open a rule", options, index=options.index(current),
                          key=widget_key(RulesState.PREFIX, "picker", state.picker_generation),
                          format_func=lambda rule_id: names.get(rule_id, "New rule"))
    if picked != current:
        open_rule(settings, state, picked or None, catalog)


def open_rule(settings: Settings, state: RulesState, rule_id: int | None, catalog: list[MetricInfo]) -> None:
    """Load a saved rule (or a new one when ``rule_id`` is None) into the builder."""
    if rule_id is None:
        counters = [metric.name for metric in catalog if metric.is_counter]
        state.draft = new_draft(counters[0] if counters else "")
        state.rule_id, state.loaded_version, state.baseline = None, None, None
    else:
        with services.sessions(settings)() as session:
            rule = get_rule(session, rule_id)
            if rule is None:
                raise BehavemailError(f"Rule {rule_id} does not exist any more: pick another one")
            spec = spec_from_row(rule)
            state.rule_id, state.loaded_version = rule.id, rule.version

        state.draft = draft_from_spec(spec, lambda condition: compile_condition(
            condition, user_label=settings.user_label, scrape_interval_seconds=settings.scrape_interval).promql)
        state.baseline = state.draft.to_dict()
    state.opened = True
    state.confirm_delete = False
    state.generation += 1
