"""The send log on a fresh SQLite database: filters, paging, one send's timeline, suppressions."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from behavemail_core.activity import (SendFilter, list_sends, remove_suppression, sandboxed_preview,
                                      send_detail, suppression_for)
from behavemail_core.errors import BehavemailError
from behavemail_core.funnel import Period
from behavemail_core.links import open_pixel_url
from behavemail_core.models import (FAILED, HELD_OUT, SENT, SUPPRESSED, AuditEntry, DeliveryEvent, Rule, Send,
                                    Suppression)
from tests.support.appdb import migrated_sessions

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def database(tmp_path: Path):
    sessions = migrated_sessions(f"sqlite:///{tmp_path / 'app.db'}")
    with sessions.begin() as session:
        quota = Rule(name="Quota above 80 %", definition={"condition": {}})
        search = Rule(name="Try search", definition={"condition": {}})
        session.add_all([quota, search])
        session.flush()
        # 30 sent emails of the quota rule, one a minute: user-00 (oldest) to user-29
        for index in range(30):
            session.add(Send(rule_id=quota.id, user_id=f"user-{index:02d}", dedupe_key="ever",
                             email=f"User{index:02d}@Example.com", status=SENT, subject=f"Quota {index}",
                             created_at=T0 + timedelta(minutes=index), sent_at=T0 + timedelta(minutes=index)))
        failed = Send(rule_id=search.id, user_id="ana_b", dedupe_key="ever", email="ana@example.com",
                      status=FAILED, error="SMTP 550: mailbox unavailable", created_at=T0 + timedelta(days=1))
        suppressed = Send(rule_id=search.id, user_id="100%user", dedupe_key="ever", email="Gone@Example.com",
                          status=SUPPRESSED, reason="unsubscribed", created_at=T0 + timedelta(days=1, minutes=1))
        held = Send(rule_id=search.id, user_id="anaxb", dedupe_key="ever", email="held@example.com",
                    status=HELD_OUT, reason="control_group", created_at=T0 + timedelta(days=1, minutes=2),
                    goal_due_at=T0 + timedelta(days=4, minutes=2))
        session.add_all([failed, suppressed, held])
        session.add(Suppression(email="gone@example.com", reason="unsubscribed", source="tracking:unsubscribe"))
    return sessions, {"quota": quota.id, "search": search.id, "failed": failed.id, "suppressed": suppressed.id,
                      "held": held.id}


def timeline_send(sessions, rule_id: int) -> int:
    """Insert a sent email with delivery events and a measured goal; return its id."""
    with sessions.begin() as session:
        send = Send(rule_id=rule_id, user_id="timeline", dedupe_key="ever", email="t@example.com", status=SENT,
                    backend="sendgrid", value=0.93, created_at=T0, sent_at=T0 + timedelta(seconds=5),
                    goal_due_at=T0 + timedelta(hours=72), goal_reached=True,
                    goal_measured_at=T0 + timedelta(hours=72, minutes=3))
        session.add(send)
        session.flush()
        events = [("click", T0 + timedelta(minutes=9), False, "https://docs.example.com/quickstart"),
                  ("open", T0 + timedelta(minutes=2), True, None),
                  ("delivered", T0 + timedelta(minutes=1), False, None),
                  ("open", T0 + timedelta(minutes=8), False, None)]
        for index, (event_type, occurred, machine, url) in enumerate(events):
            session.add(DeliveryEvent(send_id=send.id, source="sendgrid", event_type=event_type,
                                      occurred_at=occurred, dedupe_key=f"k{index}", machine_open=machine, url=url))
        return send.id


FILTER_CASES = [
    # no filter: everything
    (lambda ids: SendFilter(), 33),
    # one rule
    (lambda ids: SendFilter(rule_id=ids["search"]), 3),
    # one outcome
    (lambda ids: SendFilter(status=FAILED), 1),
    # part of an email address, in another case
    (lambda ids: SendFilter(user="USER0"), 10),
    # "_" is a literal character, not a LIKE wildcard: anaxb must not match
    (lambda ids: SendFilter(user="ana_"), 1),
    # "%" is a literal character too
    (lambda ids: SendFilter(user="100%"), 1),
    # creation period: the second day only
    (lambda ids: SendFilter(period=Period.for_days(date(2025, 3, 2), date(2025, 3, 2))), 3),
    # rule and outcome together
    (lambda ids: SendFilter(rule_id=ids["quota"], status=HELD_OUT), 0),
]


@pytest.mark.parametrize(("make_filter", "expected"), FILTER_CASES)
def test_send_log_filters(database, make_filter, expected: int) -> None:
    sessions, ids = database

    with sessions() as session:
        page = list_sends(session, make_filter(ids), page_size=100)

    assert page.total == expected
    assert len(page.rows) == expected


def test_send_log_pages_newest_first(database) -> None:
    sessions, ids = database

    with sessions() as session:
        first = list_sends(session, SendFilter(rule_id=ids["quota"]), page=1, page_size=12)
        last = list_sends(session, SendFilter(rule_id=ids["quota"]), page=3, page_size=12)

    assert first.page_count == 3
    assert [row.user_id for row in first.rows[:2]] == ["user-29", "user-28"]
    assert [row.user_id for row in last.rows] == [f"user-{index:02d}" for index in range(5, -1, -1)]


def test_send_log_page_past_end_clamped(database) -> None:
    sessions, ids = database

    with sessions() as session:
        page = list_sends(session, SendFilter(rule_id=ids["quota"]), page=99, page_size=12)

    assert page.page == 3
    assert len(page.rows) == 6


def test_send_log_row_shows_error(database) -> None:
    sessions, _ = database

    with sessions() as session:
        row = list_sends(session, SendFilter(status=FAILED)).rows[0]

    assert row.detail == "SMTP 550: mailbox unavailable"
    assert row.rule_name == "Try search"


def test_unknown_outcome_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown send outcome 'bounced'"):
        SendFilter(status="bounced")


def test_timeline_in_time_order(database) -> None:
    sessions, ids = database
    send_id = timeline_send(sessions, ids["quota"])

    with sessions() as session:
        detail = send_detail(session, send_id)

    assert [entry.event for entry in detail.timeline] == [
        "triggered", "sent", "delivered", "machine open", "open", "click", "goal reached"]
    assert detail.timeline[0].detail == "the rule matched with value 0.93"
    assert detail.timeline[5].detail == "from sendgrid, https://docs.example.com/quickstart"
    assert detail.timeline[6].detail == "measured 2025-03-04 10:03 UTC"


def test_timeline_of_held_out_send(database) -> None:
    sessions, ids = database

    with sessions() as session:
        detail = send_detail(session, ids["held"])

    assert [(entry.event, entry.detail) for entry in detail.timeline] == [
        ("triggered", "the rule matched"), ("held out", "control group: no email sent"),
        ("goal due", "the goal window closes; not measured yet")]


def test_detail_of_suppressed_send(database) -> None:
    sessions, ids = database

    with sessions() as session:
        detail = send_detail(session, ids["suppressed"])

    assert detail.reason == "unsubscribed"
    assert detail.suppression is not None
    assert detail.suppression.email == "gone@example.com"


def test_detail_of_missing_send(database) -> None:
    sessions, _ = database

    with sessions() as session:
        assert send_detail(session, 9999) is None


def test_remove_suppression_writes_audit(database) -> None:
    sessions, _ = database
    with sessions() as session:
        suppression_id = suppression_for(session, "GONE@example.com").suppression_id

    with sessions() as session:
        removed = remove_suppression(session, suppression_id, actor="editor:ana", now=T0)
    with sessions() as session:
        remaining = session.scalars(select(Suppression)).all()
        audit = session.scalars(select(AuditEntry)).all()

    assert removed.email == "gone@example.com"
    assert remaining == []
    assert [(a.actor, a.action, a.entity, a.entity_id) for a in audit] == [
        ("editor:ana", "suppression.remove", "suppression", suppression_id)]
    assert audit[0].detail == {"email": "gone@example.com", "reason": "unsubscribed",
                               "source": "tracking:unsubscribe", "send_id": None}


def test_remove_missing_suppression_fails(database) -> None:
    sessions, _ = database

    with sessions() as session, pytest.raises(BehavemailError, match="Suppression 4242 does not exist"):
        remove_suppression(session, 4242, actor="editor:ana")


def test_preview_drops_open_pixel() -> None:
    pixel = open_pixel_url("https://mail.example.com", "secret-key-0123456789", 7)
    email = f'<p>Hi "Ana"</p><img src="https://cdn.example.com/logo.png"><img src="{pixel}" width="1" height="1" alt="">'

    preview = sandboxed_preview(email)

    assert "/o/" not in preview
    assert "logo.png" in preview
    assert 'sandbox=""' in preview
    assert "&lt;p&gt;Hi &quot;Ana&quot;&lt;/p&gt;" in preview
