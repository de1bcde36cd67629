"""Dashboard: how the emails perform, per rule and overall, and whether customers used the API afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from behavemail_core import funnel as funnel_queries
from behavemail_core.funnel import DailyActivity, EvaluationSummary, Funnel, HoldoutComparison, Period, RuleFunnel
from behavemail_core.models import Rule
from behavemail_core.rule_store import list_rules
from ui import entry, services
from ui.errors import error_box

DEFAULT_DAYS = 30
SENT_COLOR = "#2563eb"
CONTROL_COLOR = "#9ca3af"
OPEN_COLOR = "#16a34a"
MACHINE_COLOR = "#d1d5db"


@dataclass(frozen=True)
class DashboardData:
    rules: list[RuleFunnel]
    selected: Funnel
    daily: list[DailyActivity]
    triggered: list[tuple[date, str, int]]
    evaluations: list[EvaluationSummary]


def dashboard_page() -> None:
    """Show the funnel, the control-group comparison, the per-rule table and the daily activity."""
    st.title("Dashboard")
    settings = services.current_settings()
    sessions = services.sessions(settings)
    with sessions() as session:
        rules = list_rules(session, include_deleted=True)

    filters = _filters(rules)
    if filters is None:
        return
    period, rule_id = filters
    with error_box(), sessions() as session:
        data = _load(session, period, rule_id)
        _show(data, period, rule_id)


def _filters(rules: list[Rule]) -> tuple[Period, int | None] | None:
    """Show the day range and rule pickers; their widgets keep the choice across reruns."""
    names = {rule.id: _rule_label(rule) for rule in rules}
    today = datetime.now(timezone.utc).date()
    left, right = st.columns([2, 3])
    with left:
        picked = st.date_input("Days (UTC)", value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
                               max_value=today, key="dashboard.days",
                               help="Emails triggered on these days; opens, clicks and goal results "
                                    "that came later are counted too.")
    with right:
        rule_id = st.selectbox("Rule", [None, *names], key="dashboard.rule",
                               format_func=lambda value: "All rules" if value is None else names[value])
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick the last day of the range as well.")
        return None
    return Period.for_days(picked[0], picked[1]), rule_id


def _rule_label(rule: Rule) -> str:
    return f"{rule.name} (deleted)" if rule.deleted_at is not None else rule.name


def _load(session, period: Period, rule_id: int | None) -> DashboardData:
    rules = funnel_queries.rule_funnels(session, period)
    chosen = [rule for rule in rules if rule_id is None or rule.rule_id == rule_id]
    return DashboardData(
        rules=rules,
        selected=funnel_queries.funnel_of(chosen),
        daily=funnel_queries.daily_activity(session, period, rule_id),
        triggered=funnel_queries.triggered_per_day(session, period, rule_id),
        evaluations=funnel_queries.evaluation_summaries(session, period, rule_id, limit=100),
    )


def _show(data: DashboardData, period: Period, rule_id: int | None) -> None:
    if data.selected.counts.triggered == 0:
        st.info("No rule triggered in this period. Pick other days, or check on the Activity page "
                "that the scheduler is running.")
        return
    _headline(data.selected)

    left, right = st.columns(2)
    with left:
        st.subheader("Funnel")
        st.plotly_chart(funnel_figure(data.selected), key="dashboard.funnel")
        st.caption(f"Opened counts human opens and clicks. Machine opens (mail privacy proxies, scanners) "
                   f"are not counted: {data.selected.counts.machine_opened_only:,} emails were opened only "
                   "by a machine. Delivered counts delivery events, or an open or click that proves delivery.")
    with right:
        st.subheader("Goal reached: emailed vs. control group")
        _holdout(data.selected.comparison)

    if rule_id is None and len(data.rules) > 1:
        with st.expander("Funnel per rule"):
            st.plotly_chart(rule_funnel_figure(data.rules), key="dashboard.rule_funnels")

    st.subheader("Per rule")
    table = rule_table(data.rules)
    st.dataframe(table, hide_index=True, key="dashboard.table", column_config=TABLE_COLUMNS, placeholder="–")
    st.download_button("Download CSV", table.to_csv(index=False).encode("utf-8"), mime="text/csv",
                       file_name=f"behavemail-rules-{period.days()[0]}-{period.days()[-1]}.csv",
                       key="dashboard.download")

    st.subheader("Sends and opens per day")
    st.plotly_chart(daily_figure(data.daily), key="dashboard.daily")

    st.subheader("Evaluations")
    _evaluations(data)


def _headline(selected: Funnel) -> None:
    counts = selected.counts
    comparison = selected.comparison
    columns = st.columns(5)
    columns[0].metric("Triggered", f"{counts.triggered:,}")
    columns[1].metric("Sent", f"{counts.sent:,}")
    columns[2].metric("Open rate", _percent(_share(counts.opened, counts.delivered)),
                      help="Human opens among delivered emails.")
    columns[3].metric("Click rate", _percent(_share(counts.clicked, counts.delivered)),
                      help="Clicks among delivered emails.")
    lift = comparison.lift_points
    columns[4].metric("Lift in goal rate", "–" if lift is None else f"{lift:+.1f} pts",
                      help="Goal rate of emailed users minus that of the control group, "
                           "for rules with a control group.")


def _holdout(comparison: HoldoutComparison) -> None:
    if not comparison.held_out_measured:
        st.info("No rule with a control group has goal results in this period yet. Set a control group "
                "share on a rule; goals are measured when the goal window (72 hours by default) closes.")
        if comparison.sent_measured:
            st.write(f"Goal rate of emailed users: {_percent(comparison.sent_rate)} "
                     f"({comparison.sent_reached:,} of {comparison.sent_measured:,}).")
        return
    st.plotly_chart(holdout_figure(comparison), key="dashboard.holdout")
    st.markdown(holdout_summary(comparison))


def holdout_summary(comparison: HoldoutComparison) -> str:
    """Describe the lift, its interval and p-value, and whether the samples are large enough."""
    lines = [f"**Lift: {comparison.lift_points:+.1f} percentage points**"]
    if comparison.lift_relative_percent is not None:
        lines[0] += f" ({comparison.lift_relative_percent:+.0f} % relative)"
    interval = comparison.confidence_interval_points
    if interval is not None:
        lines.append(f"95 % confidence interval: {interval[0]:+.1f} to {interval[1]:+.1f} points.")
    if comparison.p_value is not None:
        lines.append(f"Two-proportion z-test: p = {comparison.p_value:.3f} ({funnel_queries.holdout_verdict(comparison)}).")
    lines.append(f"Emailed: {comparison.sent_reached:,} of {comparison.sent_measured:,} reached the goal. "
                 f"Control group: {comparison.held_out_reached:,} of {comparison.held_out_measured:,}.")
    if not comparison.enough_data:
        lines.append("Too few users for a reliable test: wait for more goal results before drawing conclusions.")
    return "  \n".join(lines)


def funnel_figure(selected: Funnel) -> go.Figure:
    """Draw the funnel with each step's count and its conversion from the step before."""
    steps = selected.steps
    labels = []
    for step in steps:
        conversion = step.conversion_percent
        suffix = "" if conversion is None else f" · {conversion:.1f} % of {step.base_name.lower()}"
        labels.append(f"{step.count:,}{suffix}")
    figure = go.Figure(go.Funnel(y=[step.name for step in steps], x=[step.count for step in steps],
                                 text=labels, textinfo="text", textposition="outside",
                                 marker={"color": [SENT_COLOR] * 5 + [OPEN_COLOR]}))
    figure.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=360)
    figure.update_xaxes(range=[0, max(step.count for step in steps) * 1.9])
    return figure


def rule_funnel_figure(rules: list[RuleFunnel]) -> go.Figure:
    """Draw one funnel trace per rule, stacked, so each rule's part of every step shows."""
    figure = go.Figure()
    for rule in rules:
        steps = funnel_queries.funnel_of([rule]).steps
        figure.add_trace(go.Funnel(name=rule.rule_name, y=[step.name for step in steps],
                                   x=[step.count for step in steps], textinfo="value"))
    figure.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=420,
                         legend={"orientation": "h", "y": -0.1})
    return figure


def holdout_figure(comparison: HoldoutComparison) -> go.Figure:
    """Draw the goal rates of both groups with 95 % intervals and the sample sizes."""
    groups = [("Emailed", comparison.sent_reached, comparison.sent_measured, SENT_COLOR),
              ("Control group", comparison.held_out_reached, comparison.held_out_measured, CONTROL_COLOR)]
    figure = go.Figure()
    for name, reached, measured, color in groups:
        rate = reached / measured
        margin = funnel_queries.Z_95 * (rate * (1 - rate) / measured) ** 0.5
        # Rate and sample size go under the bar, where a short bar cannot hide them.
        label = f"{name}<br><b>{100 * rate:.1f} %</b> of n = {measured:,}"
        figure.add_trace(go.Bar(x=[label], y=[100 * rate], marker_color=color, name=name,
                                error_y={"type": "data", "array": [100 * margin], "visible": True}))
    figure.update_layout(showlegend=False, yaxis={"title": "Goal reached (%)", "range": [0, 105]},
                         margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=300)
    return figure


# Short headers and narrow number columns so that every column fits next to the rule names.
# The CSV keeps the long headers.
NUMBER_COLUMN_PIXELS = 64
TABLE_COLUMNS = {
    "Rule": st.column_config.TextColumn("Rule", width="medium"),
    "Unsubscribed": st.column_config.NumberColumn("Unsub.", help="Unsubscribed", width=NUMBER_COLUMN_PIXELS),
    "Goal reached": st.column_config.NumberColumn("Goal", help="Emailed users who reached the goal",
                                                  width=NUMBER_COLUMN_PIXELS),
    "Goal rate (%)": st.column_config.NumberColumn("Goal %", help="Goal rate of emailed users, in %",
                                                   format="%.1f", width=NUMBER_COLUMN_PIXELS),
    "Control group": st.column_config.NumberColumn("Control", help="Users held out as control group",
                                                   width=NUMBER_COLUMN_PIXELS),
    "Control goal rate (%)": st.column_config.NumberColumn("Ctrl %", help="Goal rate of the control group, in %",
                                                           format="%.1f", width=NUMBER_COLUMN_PIXELS),
    "Lift (pts)": st.column_config.NumberColumn("Lift", help="Goal rate minus control goal rate, in points",
                                                format="%+.1f", width=NUMBER_COLUMN_PIXELS),
    "p-value": st.column_config.NumberColumn("p", help="Two-proportion z-test p-value", format="%.3f",
                                             width=NUMBER_COLUMN_PIXELS),
    **{name: st.column_config.NumberColumn(name, width=NUMBER_COLUMN_PIXELS)
       for name in ("Triggered", "Sent", "Delivered", "Opened", "Clicked", "Bounced")},
}


def rule_table(rules: list[RuleFunnel]) -> pd.DataFrame:
    """Build the per-rule table: counts, goal rates of both groups and the lift."""
    records = []
    for rule in rules:
        counts, comparison = rule.counts, rule.comparison
        records.append({
            "Rule": f"{rule.rule_name} (deleted)" if rule.deleted else rule.rule_name,
            "Triggered": counts.triggered,
            "Sent": counts.sent,
            "Delivered": counts.delivered,
            "Opened": counts.opened,
            "Clicked": counts.clicked,
            "Bounced": counts.bounced,
            "Unsubscribed": counts.unsubscribed,
            "Goal reached": counts.sent_goal_reached,
            "Goal rate (%)": _round(comparison.sent_rate, scale=100),
            "Control group": counts.held_out,
            "Control goal rate (%)": _round(comparison.held_out_rate, scale=100),
            "Lift (pts)": _round(comparison.lift_points),
            "p-value": None if comparison.p_value is None else round(comparison.p_value, 3),
        })
    frame = pd.DataFrame.from_records(records)
    # Missing rates (no control group, nothing measured) become NaN, shown as empty cells.
    rate_columns = ["Goal rate (%)", "Control goal rate (%)", "Lift (pts)", "p-value"]
    if not frame.empty:
        frame[rate_columns] = frame[rate_columns].astype(float)
    return frame


def daily_figure(days: list[DailyActivity]) -> go.Figure:
    """Draw emails sent as bars and human opens, machine opens and clicks as lines, per UTC day."""
    x = [day.day for day in days]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=x, y=[day.sent for day in days], name="Sent", marker_color=SENT_COLOR))
    figure.add_trace(go.Scatter(x=x, y=[day.opened for day in days], name="Opened (human)",
                                mode="lines+markers", line={"color": OPEN_COLOR}))
    figure.add_trace(go.Scatter(x=x, y=[day.clicked for day in days], name="Clicked",
                                mode="lines+markers", line={"color": "#f59e0b"}))
    figure.add_trace(go.Scatter(x=x, y=[day.machine_opened for day in days], name="Machine opens",
                                mode="lines", line={"color": MACHINE_COLOR, "dash": "dot"}))
    figure.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=320, hovermode="x unified",
                         legend={"orientation": "h", "y": 1.12}, yaxis={"title": "Emails"})
    return figure


def _evaluations(data: DashboardData) -> None:
    if data.triggered:
        frame = pd.DataFrame(data.triggered, columns=["Day", "Rule", "Triggered"])
        figure = go.Figure()
        for rule_name, rows in frame.groupby("Rule", sort=True):
            figure.add_trace(go.Bar(x=rows["Day"], y=rows["Triggered"], name=rule_name))
        figure.update_layout(barmode="stack", margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=300,
                             legend={"orientation": "h", "y": 1.15}, yaxis={"title": "Users triggered"})
        st.plotly_chart(figure, key="dashboard.triggered")
    st.caption("Latest evaluations that triggered users or failed, newest first.")
    st.dataframe(pd.DataFrame.from_records([{
        "Evaluated (UTC)": row.evaluated_at.strftime("%Y-%m-%d %H:%M"),
        "Rule": row.rule_name,
        "Matched": row.matched,
        "Triggered": row.triggered,
        "Sent": row.sent,
        "Control group": row.held_out,
        "Suppressed": row.suppressed,
        "Failed": row.failed,
        "Error": row.error or "",
    } for row in data.evaluations]), hide_index=True, key="dashboard.evaluations")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _round(value: float | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(value * scale, 1)


entry.require_entry(__file__)
dashboard_page()
