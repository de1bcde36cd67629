"""The live preview next to the rule builder: sentence, PromQL, chart, backtest and matches."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from behavemail_core.describe import describe_policy
from behavemail_core.errors import BehavemailError
from behavemail_core.preview import Backtest, CompiledRule, CurrentMatches
from behavemail_core.rules import RuleSpec
from behavemail_core.settings import Settings

from . import queries
from .errors import show_error
from .state import RulesState, widget_key
from .widgets import humanize

RANGE_CHOICES = ("24h", "3d", "7d", "14d", "30d")
RANGE_SECONDS = {"24h": 86400, "3d": 3 * 86400, "7d": 7 * 86400, "14d": 14 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "7d"
# Up to this many customers, the chart's y axis gets one tick per customer.
SMALL_COUNT = 5


def rule_preview(settings: Settings, spec: RuleSpec, compiled: CompiledRule, *, rule_id: int | None) -> bool:
    """Show the preview of a valid rule; return False when Prometheus rejects its query."""
    st.markdown(f"**Reads as:** {compiled.sentence}")
    st.caption("PromQL that the scheduler runs (copy it with the button on the right)")
    st.code(compiled.promql, language=None, wrap_lines=True)
    for note in compiled.notes:
        st.info(note)

    chart_area = st.container()
    matches_area = st.container()
    with matches_area:
        matches = _current_matches(settings, spec, compiled)
        if matches is None:
            return False
        _matches_table(matches, settings)
    with chart_area:
        _chart_and_backtest(settings, spec, compiled, rule_id)
    return True


def _current_matches(settings: Settings, spec: RuleSpec, compiled: CompiledRule) -> CurrentMatches | None:
    with st.spinner("Finding the customers who match now…"):
        try:
            return queries.current_matches(settings, spec, compiled.promql)
        except BehavemailError as exc:
            show_error(exc)
            return None


def _chart_and_backtest(settings: Settings, spec: RuleSpec, compiled: CompiledRule, rule_id: int | None) -> None:
    range_name = st.segmented_control(
        "Range", RANGE_CHOICES, default=DEFAULT_RANGE, format_func=lambda name: f"last {humanize(name)}",
        key=widget_key(RulesState.PREFIX, "preview", "range")) or DEFAULT_RANGE
    seconds = RANGE_SECONDS[range_name]
    with st.spinner(f"Counting matching customers over the last {humanize(range_name)}…"):
        try:
            points = queries.hit_counts(settings, compiled.promql, seconds, spec.check_interval_seconds)
        except BehavemailError as exc:
            show_error(exc)
            return
    st.plotly_chart(hit_count_figure(points, range_name), key=widget_key(RulesState.PREFIX, "preview", "chart"),
                    config={"displayModeBar": False})
    with st.spinner("Replaying the send policy over that range…"):
        try:
            result = queries.backtest(settings, spec, compiled.promql, seconds, rule_id)
        except BehavemailError as exc:
            show_error(exc)
            return
    st.markdown(backtest_sentence(result, spec, range_name))


def hit_count_figure(points: list[tuple[datetime, int]], range_name: str) -> go.Figure:
    """Draw how many customers matched at each check, as a step line."""
    figure = go.Figure(go.Scatter(
        x=[moment for moment, _ in points], y=[count for _, count in points], mode="lines",
        line={"shape": "hv", "width": 2}, fill="tozeroy", name="customers matching",
        hovertemplate="%{x|%Y-%m-%d %H:%M} UTC: %{y} customers<extra></extra>"))
    peak = max((count for _, count in points), default=0)
    yaxis: dict[str, object] = {"title": "customers", "rangemode": "tozero", "tickformat": "d"}
    if peak <= SMALL_COUNT:
        # Automatic ticks on a small range fall between whole customers (0.2, 0.4 ...).
        yaxis.update(range=[0, max(peak, 1) * 1.15], dtick=1)
    figure.update_layout(
        title={"text": f"Customers matching the condition, last {humanize(range_name)} (UTC)", "font": {"size": 14}},
        height=280, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False, yaxis=yaxis)
    return figure


def backtest_sentence(result: Backtest, spec: RuleSpec, range_name: str) -> str:
    """Summarize a backtest in one or two sentences."""
    sentence = (f"**Backtest:** over the last {humanize(range_name)}, this rule would have sent "
                f"**{_count(result.emails, 'email')}** to {_count(result.customers, 'customer')} "
                f"({describe_policy(spec.send_policy, spec.cooldown_seconds)}).")
    extras = []
    if result.held_out:
        extras.append(f"{_count(result.held_out, 'email')} would have gone to the control group instead")
    if result.outside_audience:
        extras.append(f"{_count(result.outside_audience, 'matching customer')} never passed the audience filter")
    if result.no_account:
        extras.append(f"{_count(result.no_account, 'matching user')} had no account")
    if extras:
        sentence += " " + "; ".join(extras) + "."
    return sentence


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _matches_table(matches: CurrentMatches, settings: Settings) -> None:
    in_audience = matches.in_audience
    summary = f"**Matching now:** {_count(len(in_audience), 'customer')}"
    outside = len(matches.rows) - len(in_audience)
    if outside:
        summary += f" ({outside} more match the condition but are outside the audience or have no account)"
    st.markdown(summary)
    if matches.truncated:
        st.caption(f"Showing the {len(matches.rows)} highest values of {matches.total} matching users.")
    if not matches.rows:
        return
    table = pd.DataFrame([{
        settings.user_label: row.user_id,
        "email": row.email or "",
        "value": round(row.value, 3),
        "in audience": "yes" if row.outside_audience is None else f"no: {row.outside_audience}",
    } for row in sorted(matches.rows, key=lambda row: row.outside_audience is not None)])
    st.dataframe(table, hide_index=True, height=min(38 + 35 * len(table), 360))
