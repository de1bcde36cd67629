"""Tables of the app database, as SQLAlchemy 2 declarative models.

Schema changes go through Alembic (behavemail_core/migrations); never call
``create_all`` on a real database.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column: attach tzinfo=timezone.utc")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Send outcomes. A row starts as PENDING (claimed before the provider is called)
# and ends in exactly one of the others.
PENDING = "pending"
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
HELD_OUT = "held_out"
OUTCOMES = (PENDING, SENT, FAILED, SUPPRESSED, HELD_OUT)


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[Optional[str]] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}


class Rule(Base):
    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The structured definition: {"condition": {...}, "audience": [...]}; see rules.py.
    definition: Mapped[dict] = mapped_column(JSON)
    template_id: Mapped[Optional[int]] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    send_policy: Mapped[str] = mapped_column(String(32), default="once_per_episode")
    cooldown_seconds: Mapped[Optional[int]] = mapped_column(Integer)
    check_interval_seconds: Mapped[int] = mapped_column(Integer, default=300)
    holdout_percent: Mapped[float] = mapped_column(Float, default=0.0)
    # Goal measured after each send: a condition like the rule's, or null for
    # "made at least one API request".
    goal: Mapped[Optional[dict]] = mapped_column(JSON)
    goal_window_seconds: Mapped[int] = mapped_column(Integer, default=72 * 3600)
    next_due_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_evaluated_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Deleted rules keep their send history; they are hidden and never evaluated.
    deleted_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    template: Mapped[Optional[Template]] = relationship()

    __mapper_args__ = {"version_id_col": version}


class Evaluation(Base):
    """One evaluation of one rule in one scheduler cycle, with its counts."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id"), index=True)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    query: Mapped[str] = mapped_column(Text)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    triggered: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    held_out: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[Optional[int]] = mapped_column(Integer)
    error: Mapped[Optional[str]] = mapped_column(Text)
    scheduler_id: Mapped[Optional[str]] = mapped_column(String(64))


class Episode(Base):
    """A stretch of time during which a user kept matching a rule."""

    __tablename__ = "episodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id"))
    user_id: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_episodes_rule_user_open", "rule_id", "user_id", "ended_at"),)


class Send(Base):
    """One triggered user of one evaluation, with exactly one outcome."""

    __tablename__ = "sends"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id"))
    evaluation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("evaluations.id"))
    episode_id: Mapped[Optional[int]] = mapped_column(ForeignKey("episodes.id"))
    user_id: Mapped[str] = mapped_column(String(255))
    # What makes this send unique for the rule and user under its send policy:
    # "ever", "episode:<id>" or "cooldown:<unix time>".
    dedupe_key: Mapped[str] = mapped_column(String(64))
    email: Mapped[Optional[str]] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    reason: Mapped[Optional[str]] = mapped_column(Text)
    error: Mapped[Optional[str]] = mapped_column(Text)
    retryable: Mapped[Optional[bool]] = mapped_column(Boolean)
    value: Mapped[Optional[float]] = mapped_column(Float)
    subject: Mapped[Optional[str]] = mapped_column(Text)
    html: Mapped[Optional[str]] = mapped_column(Text)
    text: Mapped[Optional[str]] = mapped_column(Text)
    backend: Mapped[Optional[str]] = mapped_column(String(16))
    provider_message_id: Mapped[Optional[str]] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Latest state from delivery events; each is the first time it was seen.
    delivered_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    opened_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    machine_opened_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    clicked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    bounced_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    spam_reported_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Goal measurement after the send (or after the hold-out decision).
    goal_due_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    goal_reached: Mapped[Optional[bool]] = mapped_column(Boolean)
    goal_measured_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("rule_id", "user_id", "dedupe_key", name="uq_sends_rule_user_dedupe"),
        Index("ix_sends_rule_created", "rule_id", "created_at"),
        Index("ix_sends_status_created", "status", "created_at"),
        Index("ix_sends_user", "user_id"),
        Index("ix_sends_goal_due", "goal_due_at", "goal_measured_at"),
        # The dashboard and the activity log filter and sort by these times.
        Index("ix_sends_created", "created_at"),
        Index("ix_sends_sent", "sent_at"),
        Index("ix_sends_opened", "opened_at"),
    )


class DeliveryEvent(Base):
    """A delivery, open, click, bounce or unsubscribe event for one send."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sends.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # "sendgrid" or "tracking"
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Idempotency key: SendGrid's sg_event_id is not enough because SendGrid may
    # deliver the same event again under a new one, so this hashes its content.
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    sg_event_id: Mapped[Optional[str]] = mapped_column(String(128))
    email: Mapped[Optional[str]] = mapped_column(String(320))
    url: Mapped[Optional[str]] = mapped_column(Text)
    machine_open: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[Optional[dict]] = mapped_column(JSON)

    __table_args__ = (Index("ix_delivery_events_type_occurred", "event_type", "occurred_at"),)


class Suppression(Base):
    """An address that must not be emailed, with the reason."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lower-cased address, so one suppression covers every spelling.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(32))  # unsubscribed, bounced, spam_report, manual
    source: Mapped[Optional[str]] = mapped_column(String(64))
    send_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sends.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Who changed what in the operator app or through the command line."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[Optional[int]] = mapped_column(Integer)
    detail: Mapped[Optional[dict]] = mapped_column(JSON)


class SchedulerInstance(Base):
    """A running (or crashed) scheduler process and its heartbeat."""

    __tablename__ = "scheduler_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_cycle_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    stopped_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
