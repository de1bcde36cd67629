"""The visual rule builder: every field of a rule as widgets, written back into a RuleDraft.

Widgets take their first value from the draft and write what the operator picks
back into it on every run, so the draft (in the screen's session state) always contains
the whole form, including the fields of condition kinds not shown at the moment.
Widget keys contain the state's ``generation``; opening another rule raises it, which
resets every widget to the newly loaded draft.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from behavemail_core.audience import AUDIENCE_OPERATORS
from behavemail_core.compiler import compile_condition
from behavemail_core.conditions import GAUGE_AGGREGATIONS, condition_from_dict
from behavemail_core.describe import COMPARISON_WORDS, LEVEL_WORDS, describe_condition
from behavemail_core.errors import BehavemailError
from behavemail_core.metric_catalog import GAUGE, MetricInfo
from behavemail_core.promql import MATCHER_OPERATORS, MATCHES_REGEX, NOT_MATCHES_REGEX, ONE_OF
from behavemail_core.rules import COOLDOWN, ONCE_EVER, ONCE_PER_EPISODE, SEND_POLICIES
from behavemail_core.settings import Settings

from . import queries
from .editors import code_editor, enable_metric_completion
from .rule_draft import (BUILDER, BUILDER_KINDS, CONDITION_GOAL, COOLDOWN_UNITS, DAYS_AUDIENCE_OPERATORS,
                         DEFAULT_GOAL, KEPT_GOAL, LIST_AUDIENCE_OPERATORS, PROMQL, AudienceRow,
                         ConditionDraft, FilterRow, RuleDraft)
from .state import RulesState, widget_key
from .widgets import CHECK_INTERVAL_CHOICES, duration_select

KIND_LABELS = {
    "count": "A count over a window crosses a threshold",
    "ratio": "A share (percent) crosses a threshold",
    "inactive": "Activity stopped: no activity since",
    "never_used": "A feature was never used",
    "gauge": "A gauge value crosses a threshold",
}
MATCHER_LABELS = {"=": "equals", "!=": "does not equal", "in": "is one of",
                  "=~": "matches regex", "!~": "does not match regex"}
POLICY_LABELS = {
    ONCE_EVER: "Once per customer, ever",
    ONCE_PER_EPISODE: "Once each time they start matching",
    COOLDOWN: "At most once every …",
}
AGGREGATION_LABELS = {"max": "highest value", "min": "lowest value", "avg": "average", "sum": "sum"}
MODE_LABELS = {BUILDER: "Builder", PROMQL: "PromQL (advanced)"}
GOAL_LABELS = {DEFAULT_GOAL: "Any API request after the email", CONDITION_GOAL: "A condition",
               KEPT_GOAL: "The saved goal"}
COUNTER_KINDS = ("count", "ratio", "inactive", "never_used")


class _Form:
    """The context of every form section: settings, screen state, metric catalog and read-only flag."""

    def __init__(self, settings: Settings, state: RulesState, catalog: list[MetricInfo], disabled: bool) -> None:
        self.settings = settings
        self.state = state
        self.catalog = catalog
        self.disabled = disabled

    def key(self, *parts: object) -> str:
        return widget_key(RulesState.PREFIX, self.state.generation, *parts)


def load_catalog(settings: Settings) -> list[MetricInfo]:
    """Return Prometheus's metrics, or none (with a warning) when Prometheus cannot list them."""
    try:
        return queries.metrics(settings)
    except BehavemailError as exc:
        st.warning(f"The metric list is not available, so type metric names yourself. {exc}")
        return []


def rule_form(settings: Settings, state: RulesState, catalog: list[MetricInfo], *, templates: Sequence[str],
              disabled: bool) -> None:
    """Show the whole rule form and write every value back into ``state.draft``."""
    form = _Form(settings, state, catalog, disabled)
    draft = state.draft
    _name_section(form, draft)
    st.subheader("When")
    _condition_section(form, draft)
    st.subheader("Who")
    _audience_section(form, draft)
    st.subheader("What and how often")
    _delivery_section(form, draft, templates)


def _name_section(form: _Form, draft: RuleDraft) -> None:
    draft.name = st.text_input("Rule name", value=draft.name, key=form.key("name"), disabled=form.disabled,
                               placeholder="e.g. 4xx spike on the free plan")
    draft.description = st.text_input("Description (optional)", value=draft.description,
                                      key=form.key("description"), disabled=form.disabled)


def _condition_section(form: _Form, draft: RuleDraft) -> None:
    modes = [BUILDER, PROMQL]
    mode = st.radio("Define the condition with", modes, index=modes.index(draft.mode), key=form.key("mode"),
                    format_func=MODE_LABELS.get, horizontal=True, disabled=form.disabled)
    if mode == PROMQL and draft.mode == BUILDER:
        _seed_promql_editor(form, draft)
    draft.mode = mode
    if mode == PROMQL:
        _promql_editor(form, draft)
        return
    _condition_block(form, draft.left, "left")
    draft.combine = st.checkbox("Combine with a second condition", value=draft.combine,
                                key=form.key("combine"), disabled=form.disabled)
    if draft.combine:
        ops = ["and", "unless"]
        draft.combine_op = st.radio(
            "Join them with", ops, index=ops.index(draft.combine_op), key=form.key("combine_op"),
            format_func={"and": "AND: both must hold", "unless": "UNLESS: the first, but not the second"}.get,
            horizontal=True, disabled=form.disabled)
        with st.container(border=True):
            _condition_block(form, draft.right, "right")


def _seed_promql_editor(form: _Form, draft: RuleDraft) -> None:
    """Start the PromQL editor from the builder's condition, so nothing has to be retyped."""
    try:
        condition = condition_from_dict(draft.builder_condition_dict())
        draft.promql = compile_condition(condition, user_label=form.settings.user_label,
                                         scrape_interval_seconds=form.settings.scrape_interval).promql
    except BehavemailError:
        pass  # An incomplete builder condition leaves the editor as it was.
    # A new editor key makes the editor start over from the seeded text.
    form.state.editor_seed += 1


def _promql_editor(form: _Form, draft: RuleDraft) -> None:
    st.caption(f"Write an instant query that returns one series per customer, aggregated by "
               f"`{form.settings.user_label}`, e.g. `sum by ({form.settings.user_label}) "
               f"(increase(api_requests_total{{status=~\"5..\"}}[1h])) > 20`. "
               "Metric names complete as you type.")
    draft.promql = code_editor(draft.promql, key=form.key("promql", form.state.editor_seed), language="plain_text",
                               readonly=form.disabled, min_lines=4)
    if form.catalog:
        enable_metric_completion(form.catalog)


def _condition_block(form: _Form, condition: ConditionDraft, side: str) -> None:
    kinds = list(BUILDER_KINDS)
    condition.kind = st.selectbox("Condition", kinds, index=kinds.index(condition.kind),
                                  key=form.key(side, "kind"), format_func=KIND_LABELS.get,
                                  disabled=form.disabled)
    condition.metric = _metric_picker(form, condition, side)
    sections: dict[str, Callable[[_Form, ConditionDraft, str], None]] = {
        "count": _count_fields, "ratio": _ratio_fields, "inactive": _inactive_fields,
        "never_used": _never_used_fields, "gauge": _gauge_fields,
    }
    sections[condition.kind](form, condition, side)


def _metric_picker(form: _Form, condition: ConditionDraft, side: str) -> str:
    info = {metric.name: metric for metric in form.catalog}
    names = sorted(info, key=lambda name: (_type_rank(info[name], condition.kind), name))
    if condition.metric and condition.metric not in info:
        names.insert(0, condition.metric)
    picked = st.selectbox(
        "Metric", names, index=names.index(condition.metric) if condition.metric in names else None,
        key=form.key(side, "metric"), accept_new_options=True, placeholder="Pick or type a metric",
        format_func=lambda name: f"{name} ({info[name].type})" if name in info else name,
        disabled=form.disabled)
    metric = str(picked or "")
    chosen = info.get(metric)
    if chosen is not None and chosen.help:
        st.caption(chosen.help)
    elif metric:
        st.caption("Prometheus has no description of this metric.")
    _warn_type_mismatch(chosen, condition.kind)
    return metric


def _type_rank(metric: MetricInfo, kind: str) -> int:
    # List the metrics that fit the condition kind first: counters for counts, gauges for gauges.
    fits = metric.type == GAUGE if kind == "gauge" else metric.is_counter
    return 0 if fits else 1


def _warn_type_mismatch(metric: MetricInfo | None, kind: str) -> None:
    if metric is None:
        return
    if kind in COUNTER_KINDS and metric.type == GAUGE:
        st.warning(f"{metric.name} is a gauge, but this condition counts events and needs a counter "
                   "(a metric that only goes up). Pick a counter, or choose 'A gauge value crosses a threshold'.")
    elif kind == "gauge" and metric.is_counter:
        st.warning(f"{metric.name} is a counter: its value only goes up. To count events over a window, "
                   "choose 'A count over a window crosses a threshold'.")


def _count_fields(form: _Form, condition: ConditionDraft, side: str) -> None:
    _filter_rows(form, condition.matchers, condition.metric, (side, "matchers"),
                 "Only count requests where")
    _window(form, condition, side, "In the last")
    _comparison(form, condition, side, COMPARISON_WORDS, "threshold", "Number")


def _ratio_fields(form: _Form, condition: ConditionDraft, side: str) -> None:
    _filter_rows(form, condition.numerator, condition.metric, (side, "numerator"),
                 "The counted part: requests where (e.g. status matches regex 5..)")
    _filter_rows(form, condition.matchers, condition.metric, (side, "matchers"),
                 "Out of all requests where (optional)")
    _window(form, condition, side, "In the last")
    _comparison(form, condition, side, LEVEL_WORDS, "threshold_percent", "Percent")


def _inactive_fields(form: _Form, condition: ConditionDraft, side: str) -> None:
    _filter_rows(form, condition.matchers, condition.metric, (side, "matchers"),
                 "Only count requests where (optional)")
    left, right = st.columns(2)
    with left:
        condition.active_window = duration_select("Active in the last", condition.active_window,
                                                  key=form.key(side, "active_window"), disabled=form.disabled)
    with right:
        condition.quiet_window = duration_select("but no activity in the last", condition.quiet_window,
                                                 key=form.key(side, "quiet_window"), disabled=form.disabled)


def _never_used_fields(form: _Form, condition: ConditionDraft, side: str) -> None:
    _filter_rows(form, condition.matchers, condition.metric, (side, "matchers"),
                 "Active means requests where (optional)")
    _filter_rows(form, condition.feature, condition.metric, (side, "feature"),
                 "The feature: no request where (e.g. endpoint equals /v2/search)")
    _window(form, condition, side, "In the last")


def _gauge_fields(form: _Form, condition: ConditionDraft, side: str) -> None:
    _filter_rows(form, condition.matchers, condition.metric, (side, "matchers"),
                 "Only series where (optional)")
    aggregations = list(GAUGE_AGGREGATIONS)
    condition.aggregation = st.selectbox(
        "Per customer, take the", aggregations, index=aggregations.index(condition.aggregation),
        key=form.key(side, "aggregation"), format_func=AGGREGATION_LABELS.get, disabled=form.disabled)
    _comparison(form, condition, side, LEVEL_WORDS, "threshold", "Value")


def _window(form: _Form, condition: ConditionDraft, side: str, label: str) -> None:
    condition.window = duration_select(label, condition.window, key=form.key(side, "window"),
                                       disabled=form.disabled)


def _comparison(form: _Form, condition: ConditionDraft, side: str, words: dict[str, str],
                field_name: str, label: str) -> None:
    left, right = st.columns(2)
    ops = list(words)
    with left:
        condition.op = st.selectbox("Is", ops, index=ops.index(condition.op) if condition.op in ops else 0,
                                    key=form.key(side, "op"), format_func=words.get, disabled=form.disabled)
    with right:
        value = st.number_input(label, value=float(getattr(condition, field_name)), min_value=0.0, step=1.0,
                                key=form.key(side, field_name), disabled=form.disabled)
    setattr(condition, field_name, float(value))


def _filter_rows(form: _Form, rows: list[FilterRow], metric: str, where: tuple[str, str], title: str) -> None:
    st.markdown(f"**{title}**")
    labels = _label_names(form.settings, metric)
    for row in rows:
        _filter_row(form, row, rows, metric, labels, where)
    st.button("Add a filter", key=form.key(*where, "add"), on_click=rows.append, args=(FilterRow(),),
              disabled=form.disabled or not metric, icon=":material/add:")


def _filter_row(form: _Form, row: FilterRow, rows: list[FilterRow], metric: str, labels: list[str],
                where: tuple[str, str]) -> None:
    label_column, op_column, value_column, remove_column = st.columns([3, 3, 5, 1], vertical_alignment="bottom")
    with label_column:
        options = _with_current(labels, row.label)
        row.label = str(st.selectbox(
            "Label", options, index=options.index(row.label) if row.label in options else None,
            key=form.key(*where, row.row_id, "label"), accept_new_options=True, placeholder="Pick a label",
            disabled=form.disabled) or "")
    with op_column:
        ops = list(MATCHER_OPERATORS)
        row.op = st.selectbox("Operator", ops, index=ops.index(row.op), key=form.key(*where, row.row_id, "op"),
                              format_func=MATCHER_LABELS.get, disabled=form.disabled)
    with value_column:
        _matcher_value(form, row, metric, where)
    with remove_column:
        st.button("", key=form.key(*where, row.row_id, "remove"), on_click=_remove, args=(rows, row),
                  icon=":material/close:", help="Remove this filter", disabled=form.disabled)


def _matcher_value(form: _Form, row: FilterRow, metric: str, where: tuple[str, str]) -> None:
    values = _label_values(form.settings, row.label, metric)
    key = form.key(*where, row.row_id, "value", row.op)
    if row.op == ONE_OF:
        options = sorted(set(values) | set(row.values))
        row.values = [str(v) for v in st.multiselect("Values", options, default=row.values, key=key,
                                                      accept_new_options=True, disabled=form.disabled)]
    elif row.op in (MATCHES_REGEX, NOT_MATCHES_REGEX):
        row.value = st.text_input("Regular expression", value=row.value, key=key,
                                  placeholder="e.g. 4.. for any 4xx status", disabled=form.disabled)
    else:
        options = _with_current(values, row.value)
        row.value = str(st.selectbox(
            "Value", options, index=options.index(row.value) if row.value in options else None, key=key,
            accept_new_options=True, placeholder="Pick or type a value", disabled=form.disabled) or "")


def _remove(rows: list, row: object) -> None:
    if row in rows:
        rows.remove(row)


def _with_current(options: Sequence[str], current: str) -> list[str]:
    listed = list(options)
    if current and current not in listed:
        listed.insert(0, current)
    return listed


def _label_names(settings: Settings, metric: str) -> list[str]:
    if not metric:
        return []
    try:
        return queries.label_names(settings, metric)
    except BehavemailError:
        return []


def _label_values(settings: Settings, label: str, metric: str) -> list[str]:
    if not label or not metric:
        return []
    try:
        return queries.label_values(settings, label, metric)
    except BehavemailError:
        return []


def _audience_section(form: _Form, draft: RuleDraft) -> None:
    st.caption("Only email customers whose account matches every filter below. "
               "Without filters, every customer the condition matches is emailed.")
    columns = _account_columns(form.settings)
    for row in draft.audience:
        _audience_row(form, row, draft.audience, columns)
    st.button("Add an audience filter", key=form.key("audience", "add"), on_click=draft.audience.append,
              args=(AudienceRow(),), disabled=form.disabled, icon=":material/add:")


def _account_columns(settings: Settings) -> list[str]:
    try:
        return [c for c in queries.account_columns(settings) if c not in ("user_id", "email")]
    except BehavemailError as exc:
        st.warning(f"The account attributes are not available, so type them yourself. {exc}")
        return []


def _audience_row(form: _Form, row: AudienceRow, rows: list[AudienceRow], columns: list[str]) -> None:
    attribute_column, op_column, value_column, remove_column = st.columns([3, 3, 5, 1],
                                                                          vertical_alignment="bottom")
    with attribute_column:
        options = _with_current(columns, row.attribute)
        row.attribute = str(st.selectbox(
            "Attribute", options, index=options.index(row.attribute) if row.attribute in options else None,
            key=form.key("audience", row.row_id, "attribute"), accept_new_options=True,
            placeholder="e.g. plan", disabled=form.disabled) or "")
    with op_column:
        ops = list(AUDIENCE_OPERATORS)
        row.op = st.selectbox("Operator", ops, index=ops.index(row.op), key=form.key("audience", row.row_id, "op"),
                              format_func=lambda op: _audience_op_label(op), disabled=form.disabled)
    with value_column:
        key = form.key("audience", row.row_id, "value", row.op)
        if row.op in LIST_AUDIENCE_OPERATORS:
            row.values = [str(v) for v in st.multiselect(
                "Values", sorted(set(row.values)), default=row.values, key=key, accept_new_options=True,
                placeholder="Type a value and press Enter", disabled=form.disabled)]
        elif row.op in DAYS_AUDIENCE_OPERATORS:
            row.days = float(st.number_input("Days", value=float(row.days), min_value=0.0, step=1.0, key=key,
                                             disabled=form.disabled))
        else:
            row.value = st.text_input("Value", value=row.value, key=key, disabled=form.disabled)
    with remove_column:
        st.button("", key=form.key("audience", row.row_id, "remove"), on_click=_remove, args=(rows, row),
                  icon=":material/close:", help="Remove this filter", disabled=form.disabled)


def _audience_op_label(op: str) -> str:
    words = AUDIENCE_OPERATORS[op]
    if op == "within_days":
        return f"{words} … days"
    if op == "older_than_days":
        return f"{words} … days ago"
    return words


def _delivery_section(form: _Form, draft: RuleDraft, templates: Sequence[str]) -> None:
    options: list[str | None] = [None, *templates]
    if draft.template not in options:
        options.append(draft.template)
    draft.template = st.selectbox("Email template", options, index=options.index(draft.template),
                                  key=form.key("template"), disabled=form.disabled,
                                  format_func=lambda name: name or "(no template yet)",
                                  help="Write templates on the Templates screen.")
    policies = list(SEND_POLICIES)
    draft.send_policy = st.radio("Send", policies, index=policies.index(draft.send_policy),
                                 key=form.key("send_policy"), format_func=POLICY_LABELS.get,
                                 disabled=form.disabled)
    if draft.send_policy == COOLDOWN:
        amount_column, unit_column = st.columns(2)
        with amount_column:
            draft.cooldown_amount = int(st.number_input("Every", value=int(draft.cooldown_amount), min_value=1,
                                                        step=1, key=form.key("cooldown_amount"),
                                                        disabled=form.disabled))
        with unit_column:
            units = list(COOLDOWN_UNITS)
            draft.cooldown_unit = st.selectbox("Unit", units, index=units.index(draft.cooldown_unit),
                                               key=form.key("cooldown_unit"), disabled=form.disabled)
    draft.check_interval = duration_select(
        "Check every", draft.check_interval, key=form.key("check_interval"), choices=CHECK_INTERVAL_CHOICES,
        disabled=form.disabled, help="How often the scheduler evaluates this rule.")
    draft.holdout_percent = float(st.slider(
        "Control group (%)", min_value=0, max_value=50, value=int(draft.holdout_percent),
        key=form.key("holdout"), disabled=form.disabled,
        help="This share of matching customers gets no email, so the Dashboard can compare "
             "what emailed customers do with what the control group does."))
    _goal_section(form, draft)
    draft.enabled = st.toggle("Enabled: the scheduler evaluates this rule and sends emails", value=draft.enabled,
                              key=form.key("enabled"), disabled=form.disabled)


def _goal_section(form: _Form, draft: RuleDraft) -> None:
    st.markdown("**Goal:** what the customer should do after the email. The Dashboard compares how many "
                "emailed customers and how many in the control group reach it.")
    modes = [DEFAULT_GOAL, CONDITION_GOAL] + ([KEPT_GOAL] if draft.goal_raw is not None else [])
    draft.goal_mode = st.radio(
        "Goal", modes, index=modes.index(draft.goal_mode), key=form.key("goal_mode"), horizontal=True,
        format_func=GOAL_LABELS.get, disabled=form.disabled, label_visibility="collapsed")
    if draft.goal_mode == CONDITION_GOAL:
        st.caption("Counts and shares are measured from the email to the end of the goal window; "
                   "a gauge is read at the end of it.")
        with st.container(border=True):
            _condition_block(form, draft.goal, "goal")
    elif draft.goal_mode == KEPT_GOAL and draft.goal_raw is not None:
        st.caption(f"The saved goal is kept as it is: customers {_describe_goal(draft.goal_raw)}. "
                   "Change it in a rules file (see docs/rules.md).")
    draft.goal_window = duration_select("Goal window: measured for", draft.goal_window,
                                        key=form.key("goal_window"), disabled=form.disabled)


def _describe_goal(goal: dict) -> str:
    try:
        return describe_condition(condition_from_dict(goal))
    except BehavemailError as exc:
        return f"(invalid: {exc})"
