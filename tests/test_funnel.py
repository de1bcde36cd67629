"""Funnel aggregations on a fresh SQLite database and on a private PostgreSQL cluster.

The period is 2025-03-01 to 2025-03-03 (UTC days). Rule A has a control group and
rule B has none. SENDS lists every row with a comment saying what it stands for.
The PostgreSQL session runs in Asia/Tokyo, so a day bucket that ignored UTC would
put late-evening rows on the next day.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.demo.send_history import seed_history
from behavemail_core.errors import BehavemailError
from behavemail_core.funnel import (HoldoutComparison, Period, daily_activity, evaluation_summaries, funnel,
                                    rule_funnels, triggered_per_day)
from behavemail_core.models import FAILED, HELD_OUT, PENDING, SENT, SUPPRESSED, DeliveryEvent, Evaluation, Rule, Send
from behavemail_core.portability import import_document
from tests.support.postgres import PostgresCluster

PERIOD = Period.for_days(date(2025, 3, 1), date(2025, 3, 3))
STARTER_RULES = Path(__file__).resolve().parent.parent / "data" / "starter_rules.yaml"
SEED_NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Row:
    """A hand-built send: its rule, outcome, creation time and the event times that are set."""

    rule: str
    status: str
    created: str
    events: dict[str, str]
    goal: bool | None = None  # None: not measured


A1 = "2025-03-01T10:00:00"
B2 = "2025-03-02T23:30:00"
SENDS = [
    # s1: delivered, opened, clicked, goal reached
    Row("A", SENT, A1, {"delivered_at": "2025-03-01T10:01:00", "opened_at": "2025-03-02T08:00:00",
                        "clicked_at": "2025-03-02T08:01:00"}, goal=True),
    # s2: delivered, opened, goal reached
    Row("A", SENT, A1, {"delivered_at": "2025-03-01T10:01:00", "opened_at": "2025-03-01T12:00:00"}, goal=True),
    # s3: delivered, opened only by a machine (privacy proxy)
    Row("A", SENT, A1, {"delivered_at": "2025-03-01T10:01:00", "machine_opened_at": "2025-03-01T10:02:00"},
        goal=False),
    # s4: no delivery event (SMTP), but a human open proves delivery
    Row("A", SENT, A1, {"opened_at": "2025-03-03T09:00:00"}, goal=False),
    # s5: bounced
    Row("A", SENT, A1, {"bounced_at": "2025-03-01T10:01:00"}, goal=False),
    # s6: delivered, unsubscribed, goal not measured yet
    Row("A", SENT, A1, {"delivered_at": "2025-03-01T10:01:00", "unsubscribed_at": "2025-03-01T11:00:00"}),
    # h1 to h4: control group, one reached, two did not, one not measured yet
    Row("A", HELD_OUT, A1, {}, goal=True),
    Row("A", HELD_OUT, A1, {}, goal=False),
    Row("A", HELD_OUT, A1, {}, goal=False),
    Row("A", HELD_OUT, A1, {}),
    # f1 and p1: failed and suppressed, triggered but not sent
    Row("A", FAILED, A1, {}),
    Row("A", SUPPRESSED, A1, {}),
    # b1: a click without a recorded open (images blocked) counts as opened and delivered
    Row("B", SENT, B2, {"clicked_at": "2025-03-02T23:50:00"}, goal=True),
    # b2: spam report, goal reached anyway
    Row("B", SENT, B2, {"spam_reported_at": "2025-03-03T01:00:00"}, goal=True),
    # b3: claimed, not yet handed to a provider
    Row("B", PENDING, B2, {}),
    # outside: one second before the period and at its (exclusive) end
    Row("A", SENT, "2025-02-28T23:59:59", {"opened_at": "2025-03-01T09:00:00"}, goal=True),
    Row("A", SENT, "2025-03-04T00:00:00", {}, goal=True),
]

EVALUATIONS = [
    # rule, evaluated at, matched, triggered, error
    ("A", A1, 20, 12, None),
    ("B", B2, 5, 3, None),
    ("A", "2025-03-02T10:00:00", 20, 0, None),                 # nothing triggered: left out
    ("B", "2025-03-03T05:00:00", 0, 0, "Cannot connect to Prometheus"),  # failed: listed
    ("A", "2025-03-05T10:00:00", 20, 2, None),                 # after the period
]


def seed(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Insert rules A, B and an unused rule C, then SENDS and EVALUATIONS; return rule ids by name."""
    with sessions.begin() as session:
        rules = {name: Rule(name=f"Rule {name}", definition={"condition": {}}, holdout_percent=percent)
                 for name, percent in (("A", 10.0), ("B", 0.0), ("C", 0.0))}
        session.add_all(rules.values())
        session.flush()
        for index, row in enumerate(SENDS):
            created = utc(row.created)
            send = Send(rule_id=rules[row.rule].id, user_id=f"u{index}", dedupe_key="ever", status=row.status,
                        created_at=created, sent_at=created if row.status == SENT else None,
                        **{column: utc(value) for column, value in row.events.items()})
            if row.goal is not None:
                send.goal_reached, send.goal_measured_at = row.goal, created
            session.add(send)
        for name, evaluated, matched, triggered, error in EVALUATIONS:
            session.add(Evaluation(rule_id=rules[name].id, evaluated_at=utc(evaluated), query="q",
                                   matched=matched, triggered=triggered, error=error))
        return {name: rule.id for name, rule in rules.items()}


# --- databases -----------------------------------------------------------------


def tokyo_database(cluster: PostgresCluster) -> str:
    """Return a fresh database's URL whose sessions run in Asia/Tokyo, to prove days are UTC."""
    return cluster.new_database() + "?options=-c%20timezone%3DAsia/Tokyo"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = tokyo_database(request.getfixturevalue("postgres_cluster"))
    upgrade(url)
    engine = create_app_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def database(empty_database: sessionmaker[Session]) -> tuple[sessionmaker[Session], dict[str, int]]:
    return empty_database, seed(empty_database)


# --- tests -----------------------------------------------------------------------


def test_overall_funnel_steps(database) -> None:
    sessions, _ = database

    with sessions() as session:
        result = funnel(session, PERIOD)

    assert [(step.name, step.count) for step in result.steps] == [
        ("Triggered", 15), ("Sent", 8), ("Delivered", 6), ("Opened", 4), ("Clicked", 2), ("Goal reached", 4)]


def test_overall_funnel_conversions(database) -> None:
    sessions, _ = database

    with sessions() as session:
        steps = funnel(session, PERIOD).steps

    conversions = [step.conversion_percent for step in steps]
    assert conversions[0] is None
    assert conversions[1:] == pytest.approx([100 * 8 / 15, 75.0, 100 * 4 / 6, 50.0, 100 * 4 / 7])
    assert steps[-1].base_name == "Sent, goal measured"


def test_overall_counts_apart_from_steps(database) -> None:
    sessions, _ = database

    with sessions() as session:
        counts = funnel(session, PERIOD).counts

    assert counts.machine_opened_only == 1
    assert counts.bounced == 1
    assert counts.unsubscribed == 1
    assert counts.spam_reported == 1
    assert (counts.failed, counts.suppressed, counts.held_out, counts.pending) == (1, 1, 4, 1)


def test_overall_comparison_keeps_controlled_rules(database) -> None:
    sessions, _ = database

    with sessions() as session:
        comparison = funnel(session, PERIOD).comparison

    # Rule B has no control group, so its two reached sends stay out of the comparison.
    assert (comparison.sent_measured, comparison.sent_reached) == (5, 2)
    assert (comparison.held_out_measured, comparison.held_out_reached) == (3, 1)
    assert comparison.lift_points == pytest.approx(40 - 100 / 3)
    assert comparison.lift_relative_percent == pytest.approx(20.0)


def test_funnel_for_one_rule(database) -> None:
    sessions, ids = database

    with sessions() as session:
        result = funnel(session, PERIOD, rule_id=ids["B"])

    assert [step.count for step in result.steps] == [3, 2, 1, 1, 1, 2]
    assert result.comparison.held_out_measured == 0
    assert result.comparison.lift_points is None


def test_rule_table_rows(database) -> None:
    sessions, ids = database

    with sessions() as session:
        rows = rule_funnels(session, PERIOD)

    assert [(row.rule_name, row.rule_id) for row in rows] == [("Rule A", ids["A"]), ("Rule B", ids["B"])]
    a = rows[0].counts
    assert (a.triggered, a.sent, a.delivered, a.opened, a.clicked) == (12, 6, 5, 3, 1)
    assert (a.bounced, a.unsubscribed, a.sent_goal_reached) == (1, 1, 2)
    assert rows[0].comparison.lift_points == pytest.approx(40 - 100 / 3)
    assert rows[0].holdout_percent == 10.0


def test_daily_activity_by_utc_day(database) -> None:
    sessions, _ = database

    with sessions() as session:
        days = daily_activity(session, PERIOD)

    assert [(d.day.isoformat(), d.triggered, d.sent, d.opened, d.machine_opened, d.clicked) for d in days] == [
        # 12 rule-A rows created and 6 sent on 1 March. Opens: s2 and the row created before the period.
        # Machine opens: s3.
        ("2025-03-01", 12, 6, 2, 1, 0),
        # Rule B's rows at 23:30 UTC stay on 2 March. Opens: s1. Clicks: s1 and b1.
        ("2025-03-02", 3, 2, 1, 0, 2),
        # s4 opened
        ("2025-03-03", 0, 0, 1, 0, 0),
    ]


def test_triggered_per_day_from_evaluations(database) -> None:
    sessions, _ = database

    with sessions() as session:
        rows = triggered_per_day(session, PERIOD)

    assert rows == [(date(2025, 3, 1), "Rule A", 12), (date(2025, 3, 2), "Rule B", 3)]


def test_evaluation_summaries_newest_first(database) -> None:
    sessions, _ = database

    with sessions() as session:
        rows = evaluation_summaries(session, PERIOD)

    assert [(row.rule_name, row.triggered, row.error) for row in rows] == [
        ("Rule B", 0, "Cannot connect to Prometheus"), ("Rule B", 3, None), ("Rule A", 12, None)]


def test_empty_period_funnel(database) -> None:
    sessions, _ = database

    with sessions() as session:
        result = funnel(session, Period.for_days(date(2024, 1, 1), date(2024, 1, 2)))

    assert [step.count for step in result.steps] == [0, 0, 0, 0, 0, 0]
    assert [step.conversion_percent for step in result.steps] == [None] * 6


Z_TEST_CASES = [
    # 45 % of 100 against 30 % of 100: z = 2.1909, two-sided p = 0.02846
    (HoldoutComparison(100, 45, 100, 30), 2.19089, 0.028459),
    # equal rates: z = 0, p = 1
    (HoldoutComparison(50, 10, 200, 40), 0.0, 1.0),
    # sent below control: negative z, same p as the mirrored case
    (HoldoutComparison(100, 30, 100, 45), -2.19089, 0.028459),
]


@pytest.mark.parametrize(("comparison", "z", "p"), Z_TEST_CASES)
def test_two_proportion_z_test(comparison: HoldoutComparison, z: float, p: float) -> None:
    assert comparison.z_score == pytest.approx(z, abs=1e-4)
    assert comparison.p_value == pytest.approx(p, abs=1e-5)


def test_confidence_interval_of_lift() -> None:
    comparison = HoldoutComparison(100, 45, 100, 30)

    low, high = comparison.confidence_interval_points

    # 15 points ± 1.96 * sqrt(0.45*0.55/100 + 0.3*0.7/100) * 100
    margin = 1.959964 * math.sqrt(0.45 * 0.55 / 100 + 0.3 * 0.7 / 100) * 100
    assert low == pytest.approx(15 - margin)
    assert high == pytest.approx(15 + margin)


def test_comparison_without_variance() -> None:
    comparison = HoldoutComparison(10, 10, 10, 10)

    assert comparison.z_score is None
    assert comparison.p_value is None
    assert comparison.lift_points == 0.0


def test_enough_data_rule_of_thumb() -> None:
    assert HoldoutComparison(100, 45, 100, 30).enough_data
    assert not HoldoutComparison(5, 2, 3, 1).enough_data


# --- demo history ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded_demo(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """A database with the starter rules and the demo history, seeded once per module and backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'app.db'}"
    else:
        url = tokyo_database(request.getfixturevalue("postgres_cluster"))
    upgrade(url)
    engine = create_app_engine(url)
    sessions = session_factory(engine)
    with sessions() as session:
        import_document(session, STARTER_RULES.read_text(encoding="utf-8"), actor="test", source=str(STARTER_RULES))
    # A CSV path that does not exist: the history uses the generated demo accounts.
    seed_history(sessions, SEED_NOW, accounts_csv=tmp_path_factory.mktemp("no-csv") / "missing.csv")
    yield sessions
    engine.dispose()


def test_demo_history_sent_beats_control(seeded_demo: sessionmaker[Session]) -> None:
    with seeded_demo() as session:
        rules = rule_funnels(session, Period.last_days(SEED_NOW, 30))
        overall = funnel(session, Period.last_days(SEED_NOW, 30)).comparison

    controlled = [rule for rule in rules if rule.counts.held_out_goal_measured]
    assert [rule.rule_name for rule in controlled] == [
        "Key gone quiet", "New search endpoint never tried", "Spike of 4xx errors"]
    for rule in controlled:
        assert rule.comparison.sent_rate > rule.comparison.held_out_rate, rule.rule_name
    assert overall.sent_rate > overall.held_out_rate


def test_demo_history_covers_every_rule(seeded_demo: sessionmaker[Session]) -> None:
    with seeded_demo() as session:
        rules = rule_funnels(session, Period.last_days(SEED_NOW, 31))

    assert len(rules) == 5
    assert all(rule.counts.sent > 0 for rule in rules)
    assert sum(rule.counts.clicked for rule in rules) > 0
    assert sum(rule.counts.machine_opened_only for rule in rules) > 0
    assert sum(rule.counts.bounced for rule in rules) > 0


def test_demo_history_nothing_after_now(seeded_demo: sessionmaker[Session]) -> None:
    with seeded_demo() as session:
        latest_send = session.scalar(select(func.max(Send.created_at)))
        latest_event = session.scalar(select(func.max(DeliveryEvent.occurred_at)))
        latest_goal = session.scalar(select(func.max(Send.goal_measured_at)))

    assert latest_send < SEED_NOW
    assert latest_event < SEED_NOW
    assert latest_goal < SEED_NOW


def test_demo_history_spares_live_users(seeded_demo: sessionmaker[Session]) -> None:
    # A past email to a user whose behavior the live traffic changes would hold back
    # that user's live email under the rule's send policy.
    from behavemail_core.demo.accounts import SEED, generate_accounts
    from behavemail_core.demo.personas import assign_personas
    from behavemail_core.demo.traffic import build_script

    personas = assign_personas([account.user_id for account in generate_accounts()], SEED)
    scripted = {event.user_id for event in build_script(personas)}
    with seeded_demo() as session:
        seeded_users = set(session.scalars(select(Send.user_id)))

    assert scripted
    assert scripted.isdisjoint(seeded_users)


def test_demo_history_sent_emails_rendered(seeded_demo: sessionmaker[Session]) -> None:
    with seeded_demo() as session:
        unrendered = session.scalar(select(func.count()).select_from(Send)
                                    .where(Send.status == SENT, Send.html.is_(None)))

    assert unrendered == 0


def test_demo_history_seeded_once(seeded_demo: sessionmaker[Session], tmp_path: Path) -> None:
    with seeded_demo() as session:
        before = session.scalar(select(func.count()).select_from(Send))

    again = seed_history(seeded_demo, SEED_NOW + timedelta(days=1), accounts_csv=tmp_path / "missing.csv")
    with seeded_demo() as session:
        after = session.scalar(select(func.count()).select_from(Send))

    assert again.skipped
    assert after == before


def test_demo_history_needs_starter_rules(empty_database: sessionmaker[Session], tmp_path: Path) -> None:
    with pytest.raises(BehavemailError, match="Starter rule 'Integration stalled after signup' not found"):
        seed_history(empty_database, SEED_NOW, accounts_csv=tmp_path / "missing.csv")
