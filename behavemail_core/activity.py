"""The send log: filtered pages of sends, one send with its event timeline, and suppressions.

Filtering and paging happen in SQL (WHERE, ORDER BY, LIMIT and OFFSET), so a long
send history never leaves the database as a whole.
"""

from __future__ import annotations

import html
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .errors import BehavemailError
from .funnel import Period
from .models import (FAILED, HELD_OUT, OUTCOMES, PENDING, SENT, SUPPRESSED, AuditEntry, DeliveryEvent, Rule,
                     Send, Suppression, utcnow)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Delivery events shown per send. A send with more (a much-forwarded email) shows the first ones.
MAX_TIMELINE_EVENTS = 200

# An open pixel added by links.apply_tracking: /o/<token>.gif on the public URL.
_OPEN_PIXEL_RE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?[^\"'\s>]*/o/[A-Za-z0-9._~-]+\.gif[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class SendFilter:
    """Filters of the send log: a rule, an outcome, a user and a creation period, each optional."""

    rule_id: int | None = None
    status: str | None = None
    # Part of a user id or email address, matched case-insensitively.
    user: str = ""
    period: Period | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in OUTCOMES:
            raise ValueError(f"Unknown send outcome {self.status!r}: use one of {', '.join(OUTCOMES)}")


@dataclass(frozen=True)
class SendLogRow:
    """One line of the send log."""

    send_id: int
    created_at: datetime
    rule_id: int
    rule_name: str
    user_id: str
    email: str | None
    status: str
    reason: str | None
    error: str | None
    subject: str | None
    delivered: bool
    opened: bool
    clicked: bool
    bounced: bool
    unsubscribed: bool
    goal_reached: bool | None

    @property
    def detail(self) -> str:
        """The error of a failed send or the reason of any other outcome, empty when there is none."""
        return self.error or self.reason or ""


@dataclass(frozen=True)
class SendPage:
    """One page of the send log, and the number of sends matching the filter."""

    rows: list[SendLogRow]
    total: int
    page: int
    page_size: int

    @property
    def page_count(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


@dataclass(frozen=True)
class TimelineEntry:
    """One moment in a send's life: triggered, sent, a delivery event, the goal result."""

    at: datetime
    event: str
    detail: str = ""


@dataclass(frozen=True)
class SuppressionInfo:
    """A suppressed address with its reason."""

    suppression_id: int
    email: str
    reason: str
    source: str | None
    send_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class SendDetail:
    """One send with the rendered email, its event timeline and any suppression of its address."""

    send_id: int
    rule_id: int
    rule_name: str
    user_id: str
    email: str | None
    status: str
    reason: str | None
    error: str | None
    retryable: bool | None
    value: float | None
    subject: str | None
    html: str | None
    text: str | None
    backend: str | None
    provider_message_id: str | None
    created_at: datetime
    sent_at: datetime | None
    goal_due_at: datetime | None
    goal_reached: bool | None
    timeline: list[TimelineEntry]
    suppression: SuppressionInfo | None


def list_sends(session: Session, send_filter: SendFilter, *, page: int = 1,
               page_size: int = DEFAULT_PAGE_SIZE) -> SendPage:
    """Return one page of the sends matching the filter, newest first."""
    page_size = min(max(1, page_size), MAX_PAGE_SIZE)
    conditions = _filter_conditions(send_filter)
    total = session.scalar(select(func.count()).select_from(Send).where(*conditions)) or 0
    page = min(max(1, page), max(1, math.ceil(total / page_size)))
    statement = (select(Send, Rule.name)
                 .join(Rule, Rule.id == Send.rule_id)
                 .where(*conditions)
                 .order_by(Send.created_at.desc(), Send.id.desc())
                 .limit(page_size)
                 .offset((page - 1) * page_size))
    rows = [_log_row(send, rule_name) for send, rule_name in session.execute(statement)]
    return SendPage(rows=rows, total=total, page=page, page_size=page_size)


def send_detail(session: Session, send_id: int) -> SendDetail | None:
    """Return the send with its rendered email and timeline, or None when it does not exist."""
    found = session.execute(select(Send, Rule.name).join(Rule, Rule.id == Send.rule_id)
                            .where(Send.id == send_id)).first()
    if found is None:
        return None
    send, rule_name = found
    return SendDetail(
        send_id=send.id, rule_id=send.rule_id, rule_name=rule_name, user_id=send.user_id, email=send.email,
        status=send.status, reason=send.reason, error=send.error, retryable=send.retryable, value=send.value,
        subject=send.subject, html=send.html, text=send.text, backend=send.backend,
        provider_message_id=send.provider_message_id, created_at=send.created_at, sent_at=send.sent_at,
        goal_due_at=send.goal_due_at, goal_reached=send.goal_reached,
        timeline=event_timeline(session, send), suppression=suppression_for(session, send.email))


def event_timeline(session: Session, send: Send) -> list[TimelineEntry]:
    """Return the send's life in time order: triggered, its outcome, delivery events, the goal."""
    entries = [TimelineEntry(send.created_at, "triggered", _triggered_detail(send))]
    entries.extend(_outcome_entries(send))
    events = session.scalars(select(DeliveryEvent).where(DeliveryEvent.send_id == send.id)
                             .order_by(DeliveryEvent.occurred_at, DeliveryEvent.id)
                             .limit(MAX_TIMELINE_EVENTS))
    entries.extend(_event_entry(event) for event in events)
    goal = _goal_entry(send)
    if goal is not None:
        entries.append(goal)
    return sorted(entries, key=lambda entry: entry.at)


def suppression_for(session: Session, email: str | None) -> SuppressionInfo | None:
    """Return the suppression of this address (compared lower-cased), if there is one."""
    if not email:
        return None
    suppression = session.scalar(select(Suppression).where(Suppression.email == email.strip().lower()))
    return None if suppression is None else _suppression_info(suppression)


def remove_suppression(session: Session, suppression_id: int, *, actor: str,
                       now: datetime | None = None) -> SuppressionInfo:
    """Delete a suppression and record who removed it in the audit log, then commit.

    The address can be emailed again by the next evaluation. Raises BehavemailError
    when the suppression no longer exists.
    """
    suppression = session.get(Suppression, suppression_id)
    if suppression is None:
        raise BehavemailError(f"Suppression {suppression_id} does not exist: someone may have removed it "
                              "already, so reload the page")
    removed = _suppression_info(suppression)
    session.delete(suppression)
    session.add(AuditEntry(at=now or utcnow(), actor=actor, action="suppression.remove", entity="suppression",
                           entity_id=suppression_id,
                           detail={"email": removed.email, "reason": removed.reason, "source": removed.source,
                                   "send_id": removed.send_id}))
    session.commit()
    log.info("suppression removed suppression_id=%s send_id=%s reason=%s actor=%s", suppression_id,
             removed.send_id, removed.reason, actor)
    return removed


def sandboxed_preview(email_html: str, *, height: int = 600) -> str:
    """Return an <iframe> showing the email with scripts, forms, navigation and popups disabled.

    The open pixel is removed so that looking at the email records no open. Links
    open in a new window, which the sandbox blocks, so no click is recorded either.
    """
    document = _OPEN_PIXEL_RE.sub("", email_html)
    document = f'<base target="_blank">{document}'
    return (f'<iframe sandbox="" referrerpolicy="no-referrer" title="Email preview" '
            f'style="width: 100%; height: {int(height)}px; border: 1px solid #e5e7eb; background: #ffffff;" '
            f'srcdoc="{html.escape(document, quote=True)}"></iframe>')


# Helpers


def _filter_conditions(send_filter: SendFilter) -> list[Any]:
    conditions: list[Any] = []
    if send_filter.rule_id is not None:
        conditions.append(Send.rule_id == send_filter.rule_id)
    if send_filter.status is not None:
        conditions.append(Send.status == send_filter.status)
    user = send_filter.user.strip().lower()
    if user:
        conditions.append(or_(func.lower(Send.user_id).contains(user, autoescape=True),
                              func.lower(Send.email).contains(user, autoescape=True)))
    if send_filter.period is not None:
        conditions.extend([Send.created_at >= send_filter.period.start, Send.created_at < send_filter.period.end])
    return conditions


def _log_row(send: Send, rule_name: str) -> SendLogRow:
    return SendLogRow(
        send_id=send.id, created_at=send.created_at, rule_id=send.rule_id, rule_name=rule_name,
        user_id=send.user_id, email=send.email, status=send.status, reason=send.reason, error=send.error,
        subject=send.subject, delivered=send.delivered_at is not None,
        opened=send.opened_at is not None or send.clicked_at is not None, clicked=send.clicked_at is not None,
        bounced=send.bounced_at is not None, unsubscribed=send.unsubscribed_at is not None,
        goal_reached=send.goal_reached if send.goal_measured_at is not None else None)


def _triggered_detail(send: Send) -> str:
    if send.value is None:
        return "the rule matched"
    return f"the rule matched with value {send.value:g}"


def _outcome_entries(send: Send) -> list[TimelineEntry]:
    if send.status == SENT:
        via = f" via {send.backend}" if send.backend else ""
        return [TimelineEntry(send.sent_at or send.created_at, "sent", f"handed to the provider{via}")]
    if send.status == FAILED:
        return [TimelineEntry(send.created_at, "failed", send.error or "")]
    if send.status == SUPPRESSED:
        return [TimelineEntry(send.created_at, "suppressed", send.reason or "")]
    if send.status == HELD_OUT:
        return [TimelineEntry(send.created_at, "held out", "control group: no email sent")]
    if send.status == PENDING:
        return [TimelineEntry(send.created_at, "pending", "claimed, not yet handed to the provider")]
    return []


def _event_entry(event: DeliveryEvent) -> TimelineEntry:
    name = "machine open" if event.event_type == "open" and event.machine_open else event.event_type
    parts = [f"from {event.source}"]
    if event.url:
        parts.append(event.url)
    return TimelineEntry(event.occurred_at, name, ", ".join(parts))


def _goal_entry(send: Send) -> TimelineEntry | None:
    if send.goal_due_at is None:
        return None
    if send.goal_measured_at is None:
        return TimelineEntry(send.goal_due_at, "goal due", "the goal window closes; not measured yet")
    result = "goal reached" if send.goal_reached else "goal not reached"
    return TimelineEntry(send.goal_due_at, result, f"measured {send.goal_measured_at:%Y-%m-%d %H:%M} UTC")


def _suppression_info(suppression: Suppression) -> SuppressionInfo:
    return SuppressionInfo(suppression_id=suppression.id, email=suppression.email, reason=suppression.reason,
                           source=suppression.source, send_id=suppression.send_id,
                           created_at=suppression.created_at)
