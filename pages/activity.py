"""Activity: the send log with filters, and each send's email, outcome and event timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from behavemail_core import activity
from behavemail_core.activity import SendDetail, SendFilter, SendLogRow, SendPage
from behavemail_core.funnel import Period
from behavemail_core.models import FAILED, OUTCOMES, SUPPRESSED
from behavemail_core.rule_store import list_rules
from ui import auth, entry, services
from ui.errors import attempt, error_box
from ui.state import Flash
from ui.widgets import show_flash

PAGE_SIZE = 50
DEFAULT_DAYS = 30
# Query parameter that opens one send directly, e.g. /activity?send=42.
SEND_PARAMETER = "send"
STATE_KEY = "activity.state"
OUTCOME_LABELS = {"pending": "Pending", "sent": "Sent", "failed": "Failed", "suppressed": "Suppressed",
                  "held_out": "Control group"}


@dataclass
class ActivityState:
    """The Activity screen: the page of the log, the open send and a pending suppression removal."""

    page: int = 1
    send_id: int | None = None
    confirm_removal: int | None = None
    flash: Flash | None = None
    # The filters of the page number shown; other filters start again at page 1.
    filter_seen: SendFilter | None = None


def activity_page() -> None:
    """Show the filtered send log and, below it, the send picked in it."""
    st.title("Activity")
    settings = services.current_settings()
    state = _page_state()
    sessions = services.sessions(settings)
    show_flash(state.flash)
    state.flash = None
    _open_send_from_link(state)

    with sessions() as session:
        rules = list_rules(session, include_deleted=True)
    send_filter = _filters(rules)
    if send_filter is None:
        return
    if send_filter != state.filter_seen:
        state.page, state.filter_seen = 1, send_filter

    with error_box(), sessions() as session:
        log_page = activity.list_sends(session, send_filter, page=state.page, page_size=PAGE_SIZE)
    _send_log(state, log_page)

    if state.send_id is not None:
        with sessions() as session:
            detail = activity.send_detail(session, state.send_id)
        if detail is None:
            st.warning(f"Send {state.send_id} does not exist.")
        else:
            _send_panel(state, detail, sessions)


def _page_state() -> ActivityState:
    """Return this session's state, copied into this run's ActivityState class.

    Streamlit executes the page file anew on every rerun, which defines a new
    ActivityState class, so the stored object is rebuilt from its fields.
    """
    stored = st.session_state.get(STATE_KEY)
    try:
        state = ActivityState(**vars(stored)) if stored is not None else ActivityState()
    except TypeError:  # stored by an older version of this page with other fields
        state = ActivityState()
    st.session_state[STATE_KEY] = state
    return state


def _open_send_from_link(state: ActivityState) -> None:
    raw = st.query_params.get(SEND_PARAMETER)
    if raw and raw.isdigit():
        state.send_id = int(raw)


def _filters(rules) -> SendFilter | None:
    names = {rule.id: f"{rule.name} (deleted)" if rule.deleted_at else rule.name for rule in rules}
    today = datetime.now(timezone.utc).date()
    columns = st.columns([3, 2, 3, 3])
    with columns[0]:
        rule_id = st.selectbox("Rule", [None, *names], key="activity.rule",
                               format_func=lambda value: "All rules" if value is None else names[value])
    with columns[1]:
        status = st.selectbox("Outcome", [None, *OUTCOMES], key="activity.outcome",
                              format_func=lambda value: "All outcomes" if value is None else OUTCOME_LABELS[value])
    with columns[2]:
        user = st.text_input("User", key="activity.user", placeholder="user id or email",
                             help="Part of a user id or email address; case does not matter.")
    with columns[3]:
        picked = st.date_input("Triggered on (UTC)", value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
                               max_value=today, key="activity.days")
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick the last day of the range as well.")
        return None
    return SendFilter(rule_id=rule_id, status=status, user=user, period=Period.for_days(*picked))


def _send_log(state: ActivityState, log_page: SendPage) -> None:
    if log_page.total == 0:
        st.info("No sends match these filters.")
        return
    state.page = log_page.page
    frame = pd.DataFrame.from_records([_log_record(row) for row in log_page.rows])
    event = st.dataframe(frame, hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"activity.log.{state.page}",
                         column_config={"Send": st.column_config.NumberColumn(format="%d")})
    selected = event.selection.rows if event is not None else []
    if selected:
        picked = log_page.rows[selected[0]].send_id
        if picked != state.send_id:
            state.send_id, state.confirm_removal = picked, None
            st.query_params[SEND_PARAMETER] = str(picked)

    left, middle, right = st.columns([1, 2, 1])
    if left.button("Previous page", disabled=log_page.page <= 1, key="activity.previous"):
        state.page -= 1
        st.rerun()
    middle.caption(f"Page {log_page.page} of {log_page.page_count} · {log_page.total:,} sends · "
                   "select a row to open the email and its timeline")
    if right.button("Next page", disabled=log_page.page >= log_page.page_count, key="activity.next"):
        state.page += 1
        st.rerun()


def _log_record(row: SendLogRow) -> dict:
    return {
        "Send": row.send_id,
        "Triggered (UTC)": row.created_at.strftime("%Y-%m-%d %H:%M"),
        "Rule": row.rule_name,
        "User": row.user_id,
        "Email": row.email or "",
        "Outcome": OUTCOME_LABELS.get(row.status, row.status),
        "Subject": row.subject or "",
        "Delivered": row.delivered,
        "Opened": row.opened,
        "Clicked": row.clicked,
        "Goal": {True: "reached", False: "not reached", None: ""}[row.goal_reached],
        "Reason or error": row.detail,
    }


def _send_panel(state: ActivityState, detail: SendDetail, sessions) -> None:
    st.divider()
    st.subheader(f"Send {detail.send_id}: {detail.subject or OUTCOME_LABELS.get(detail.status, detail.status)}")
    st.caption(f"Rule {detail.rule_name} · user {detail.user_id} · {detail.email or 'no address'} · "
               f"triggered {detail.created_at:%Y-%m-%d %H:%M} UTC")
    if detail.status == FAILED:
        retry = {True: " A retry can help.", False: " A retry cannot help.", None: ""}[detail.retryable]
        st.error(f"Failed: {detail.error or 'no error recorded'}.{retry}")
    elif detail.status == SUPPRESSED:
        st.warning(f"Suppressed: {detail.reason or 'no reason recorded'}.")
    elif detail.reason:
        st.info(f"{OUTCOME_LABELS.get(detail.status, detail.status)}: {detail.reason}.")
    _suppression(state, detail, sessions)

    email_tab, text_tab, timeline_tab = st.tabs(["Email", "Text", "Timeline"])
    with email_tab:
        if detail.html:
            st.markdown(f"**Subject:** {_escape_markdown(detail.subject or '')}")
            # The outer frame holds only Behavemail's own markup. The email itself sits in
            # the inner, fully sandboxed frame, so its HTML never runs with the app's origin.
            st.iframe(activity.sandboxed_preview(detail.html, height=560), height=580)
        else:
            st.info("No email was rendered for this send.")
    with text_tab:
        if detail.text:
            st.code(detail.text, language=None, wrap_lines=True)
        else:
            st.info("No text part was rendered for this send.")
    with timeline_tab:
        st.table(pd.DataFrame.from_records([
            {"Time (UTC)": entry.at.strftime("%Y-%m-%d %H:%M:%S"), "Event": entry.event, "Detail": entry.detail}
            for entry in detail.timeline]), hide_index=True)


def _suppression(state: ActivityState, detail: SendDetail, sessions) -> None:
    suppression = detail.suppression
    if suppression is None:
        return
    st.warning(f"The address {suppression.email} is suppressed ({suppression.reason}, from "
               f"{suppression.source or 'unknown source'}, since {suppression.created_at:%Y-%m-%d %H:%M} UTC): "
               "no rule emails it.")
    if not auth.is_editor():
        st.caption("Only an editor can remove a suppression.")
        return
    if state.confirm_removal != suppression.suppression_id:
        if st.button("Remove suppression", key="activity.remove"):
            state.confirm_removal = suppression.suppression_id
            st.rerun()
        return
    st.error(f"Remove the suppression of {suppression.email}? Rules will email this address again. "
             "Only do this when the person asked for it, or the bounce was a mistake.")
    confirm, cancel = st.columns(2)
    if confirm.button("Yes, remove it", type="primary", key="activity.remove.confirm"):
        state.confirm_removal = None
        if attempt(lambda: _remove(sessions, suppression.suppression_id)) is not None:
            state.flash = Flash("success", f"Removed the suppression of {suppression.email}.")
            st.rerun()
    if cancel.button("Cancel", key="activity.remove.cancel"):
        state.confirm_removal = None
        st.rerun()


def _remove(sessions, suppression_id: int) -> activity.SuppressionInfo:
    with sessions() as session:
        return activity.remove_suppression(session, suppression_id, actor=auth.current_actor())


def _escape_markdown(text: str) -> str:
    return "".join(f"\\{char}" if char in "\\`*_{}[]()#+-.!|<>$~" else char for char in text)


entry.require_entry(__file__)
activity_page()
