"""Store delivery events, update their sends and add suppressions, idempotently.

Both event sources go through :func:`record_events`: SendGrid's Event Webhook
batches and Behavemail's own tracking endpoints (open pixel, click redirect,
unsubscribe). Each event carries a dedupe key, and with the unique constraint on
``delivery_events.dedupe_key`` it is stored at most once, however often it arrives.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..models import DeliveryEvent, Send, Suppression

log = logging.getLogger(__name__)

# Suppression reasons, as stored in suppressions.reason.
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
SPAM_REPORT = "spam_report"

# Event types whose first occurrence is kept on the send row. An open flagged as
# a machine open (a mail privacy proxy or a prefetcher) goes to machine_opened_at.
FIRST_SEEN_COLUMNS = {
    "delivered": "delivered_at",
    "open": "opened_at",
    "click": "clicked_at",
    "bounce": "bounced_at",
    "spamreport": "spam_reported_at",
    "unsubscribe": "unsubscribed_at",
    "group_unsubscribe": "unsubscribed_at",
}
MACHINE_OPEN_COLUMN = "machine_opened_at"

# Number of values bound in one IN (...) clause; well under SQLite's limit of
# 32766 variables (SQLite 3.32 and later) and PostgreSQL's 65535.
_IN_CLAUSE_CHUNK = 500

_SQLITE_LOCK_ATTEMPTS = 3


@dataclass(frozen=True)
class IncomingEvent:
    """A delivery event as received, before it is stored.

    ``suppression_reason`` is set when the event means the address must not be
    emailed again (a hard bounce, a spam report, an unsubscribe).
    """

    source: str
    event_type: str
    occurred_at: datetime
    dedupe_key: str
    send_id: int | None = None
    email: str | None = None
    url: str | None = None
    machine_open: bool = False
    sg_event_id: str | None = None
    suppression_reason: str | None = None
    payload: dict[str, Any] | None = None


@dataclass
class RecordingResult:
    """Counts of one call of :func:`record_events`.

    ``stored`` counts the new events handed to the database. When a concurrent
    request stores the same event in the same instant, the database skips it and
    both requests count it as stored.
    """

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    # Events whose send id matches no send: stored without a send, or dropped.
    unmatched: int = 0
    suppressions: int = 0


def make_dedupe_key(source: str, subject: str, event_type: str, occurred: str, detail: str = "") -> str:
    """Hash what makes an event unique: who, what, when, and its URL or reason.

    ``subject`` is "send:<id>" or "email:<address>". The parts are joined with a
    separator that cannot occur in them, so different parts never hash alike.
    """
    joined = "\x1f".join((source, subject, event_type, occurred, detail))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def first_seen_column(event: IncomingEvent) -> str | None:
    """Return the send column that keeps the first time of this event type, if any."""
    if event.event_type == "open" and event.machine_open:
        return MACHINE_OPEN_COLUMN
    return FIRST_SEEN_COLUMNS.get(event.event_type)


def record_events(session: Session, events: Sequence[IncomingEvent], *, received_at: datetime,
                  keep_unmatched: bool = True) -> RecordingResult:
    """Store new events, move their sends' first-seen times and add suppressions.

    Runs inside the caller's transaction. Events already stored (same dedupe key)
    are counted as duplicates and change nothing. A send time only ever moves to
    an earlier instant, so events arriving out of order never undo each other.
    An event whose send id matches no send is stored without a send, or dropped
    when ``keep_unmatched`` is false; either way it counts as unmatched.
    """
    result = RecordingResult(received=len(events))
    unique_events = _drop_repeated_keys(events)
    existing_keys = _existing_dedupe_keys(session, [event.dedupe_key for event in unique_events])
    new_events = [event for event in unique_events if event.dedupe_key not in existing_keys]
    result.duplicates = len(events) - len(new_events)
    if not new_events:
        return result

    send_emails = _send_emails(session, {event.send_id for event in new_events if event.send_id is not None})
    rows = []
    for event in new_events:
        send_id = event.send_id if event.send_id in send_emails else None
        if event.send_id is not None and send_id is None:
            result.unmatched += 1
            if not keep_unmatched:
                continue
        rows.append(_event_row(event, send_id, received_at))

    insert_ignoring_conflicts(session, DeliveryEvent.__table__, rows, "dedupe_key")
    result.stored = len(rows)

    matched = [event for event in new_events if event.send_id in send_emails]
    _move_first_seen_times(session, matched)
    events_to_suppress = new_events if keep_unmatched else matched
    result.suppressions = _add_suppressions(session, events_to_suppress, send_emails, received_at)
    return result


def _drop_repeated_keys(events: Iterable[IncomingEvent]) -> list[IncomingEvent]:
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.dedupe_key not in seen:
            seen.add(event.dedupe_key)
            unique.append(event)
    return unique


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _IN_CLAUSE_CHUNK):
        yield values[start:start + _IN_CLAUSE_CHUNK]


def _existing_dedupe_keys(session: Session, keys: Sequence[str]) -> set[str]:
    existing: set[str] = set()
    for chunk in _chunks(keys):
        statement = select(DeliveryEvent.dedupe_key).where(DeliveryEvent.dedupe_key.in_(chunk))
        existing.update(session.scalars(statement))
    return existing


def _send_emails(session: Session, send_ids: set[int]) -> dict[int, str | None]:
    """Map each existing send id of ``send_ids`` to its recipient address."""
    emails: dict[int, str | None] = {}
    for chunk in _chunks(sorted(send_ids)):
        for send_id, email in session.execute(select(Send.id, Send.email).where(Send.id.in_(chunk))):
            emails[send_id] = email
    return emails


def _event_row(event: IncomingEvent, send_id: int | None, received_at: datetime) -> dict[str, Any]:
    return {
        "send_id": send_id,
        "source": event.source,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "received_at": received_at,
        "dedupe_key": event.dedupe_key,
        "sg_event_id": event.sg_event_id,
        "email": event.email,
        "url": event.url,
        "machine_open": event.machine_open,
        "payload": event.payload,
    }


def _move_first_seen_times(session: Session, events: Iterable[IncomingEvent]) -> None:
    """Set each send column to the earliest time seen, never to a later one."""
    earliest: dict[tuple[str, int], datetime] = {}
    for event in events:
        column = first_seen_column(event)
        if column is None or event.send_id is None:
            continue
        key = (column, event.send_id)
        if key not in earliest or event.occurred_at < earliest[key]:
            earliest[key] = event.occurred_at

    sends = Send.__table__
    for column_name in sorted({column for column, _ in earliest}):
        column = sends.c[column_name]
        # The WHERE clause makes this a "minimum" update that is safe against
        # concurrent writers: a later time never replaces an earlier one.
        statement = (
            update(sends)
            .where(sends.c.id == bindparam("b_send_id"))
            .where(or_(column.is_(None), column > bindparam("b_at", type_=column.type)))
            .values({column_name: bindparam("b_at", type_=column.type)})
        )
        parameters = [{"b_send_id": send_id, "b_at": at}
                      for (name, send_id), at in earliest.items() if name == column_name]
        session.execute(statement, parameters)


def _add_suppressions(session: Session, events: Iterable[IncomingEvent], send_emails: dict[int, str | None],
                      received_at: datetime) -> int:
    """Suppress the address of every event that carries a suppression reason; return the number of new rows."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.suppression_reason is None:
            continue
        address = event.email or (send_emails.get(event.send_id) if event.send_id is not None else None)
        if not address:
            log.warning("cannot suppress: %s event of send %s has no email address",
                        event.event_type, event.send_id)
            continue
        address = address.strip().lower()
        rows.setdefault(address, {
            "email": address,
            "reason": event.suppression_reason,
            "source": f"{event.source}:{event.event_type}",
            "send_id": event.send_id if event.send_id in send_emails else None,
            "created_at": received_at,
        })
    if not rows:
        return 0

    existing = set()
    addresses = sorted(rows)
    for chunk in _chunks(addresses):
        existing.update(session.scalars(select(Suppression.email).where(Suppression.email.in_(chunk))))
    new_rows = [rows[address] for address in addresses if address not in existing]
    insert_ignoring_conflicts(session, Suppression.__table__, new_rows, "email")
    for row in new_rows:
        log.info("suppressed address of send %s: reason=%s source=%s",
                 row["send_id"], row["reason"], row["source"])
    return len(new_rows)


def insert_ignoring_conflicts(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                              unique_column: str) -> None:
    """Insert rows, skipping each one whose ``unique_column`` value is already stored.

    SQLite and PostgreSQL do this in one statement (ON CONFLICT DO NOTHING), which
    also covers a concurrent writer that stored the same key a moment earlier.
    Other databases insert row by row, each in a savepoint.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=[unique_column])
        session.execute(statement, list(rows))
        return
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(table.insert(), row)
        except IntegrityError:
            log.debug("skipped a row of %s already stored under the same %s", table.name, unique_column)


T = TypeVar("T")


def run_in_transaction(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """Run ``work`` in a new transaction and commit it.

    SQLite reports "database is locked" when another connection holds the write
    lock for longer than the busy timeout, or when a read transaction cannot be
    upgraded to a write transaction. Such a transaction is run again, up to three
    times in all.
    """
    attempt = 1
    while True:
        try:
            with sessions.begin() as session:
                return work(session)
        except OperationalError as exc:
            if "database is locked" not in str(exc) or attempt >= _SQLITE_LOCK_ATTEMPTS:
                raise
            log.warning("app database is locked, retrying the transaction (attempt %d of %d)",
                        attempt, _SQLITE_LOCK_ATTEMPTS)
            time.sleep(0.05 * attempt)
            attempt += 1
