"""The evaluation of a rule end to end in-process: real Prometheus, SQLite and outbox files.

Gauge history (one sample a minute) and three evaluation times T1 < T2 < T3 an hour
apart; see USERS for who matches when.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from behavemail_core import rule_store, template_store
from behavemail_core.accounts import AccountDirectory
from behavemail_core.conditions import condition_from_dict
from behavemail_core.cycle import run_cycle
from behavemail_core.delivery import create_backend
from behavemail_core.evaluation import Services, evaluate_rule
from behavemail_core.models import Episode, Evaluation, Send, Suppression
from behavemail_core.policy import in_holdout
from behavemail_core.prometheus import PrometheusClient
from behavemail_core.rules import RuleSpec
from behavemail_core.audience import AudienceFilter
from tests.support.appdb import make_settings, migrated_sessions, write_accounts
from tests.support.prometheus import Series, free_port, render_openmetrics

STEP = 60
NOW = int(datetime.now(timezone.utc).timestamp()) // STEP * STEP - 600
T3 = datetime.fromtimestamp(NOW, timezone.utc)
T2 = T3 - timedelta(hours=1)
T1 = T3 - timedelta(hours=2)


def quota(user: str, value_at) -> Series:
    samples = [(t, value_at(t)) for t in range(NOW - 3 * 3600, NOW + 1, STEP)]
    return Series("api_quota_used_ratio", {"user_id": user}, "gauge", samples)


def dips_around_t2(t: int) -> float:
    """0.9, except 0.1 from 10 minutes after T1 until 10 minutes after T2."""
    return 0.1 if T1.timestamp() + 600 < t <= T2.timestamp() + 600 else 0.9


USERS = {
    "u1": lambda t: 0.9,        # always matches
    "u2": dips_around_t2,       # matches at T1 and T3, not at T2
    "u3": lambda t: 0.95,       # same address as u1 in other case: duplicate
    "u4": lambda t: 0.9,        # unsubscribed address: suppressed
    "u5": lambda t: 0.9,        # first_name is NULL: the template fails for this user only
    "u6": lambda t: 0.9,        # no account row
    "u7": lambda t: 0.5,        # never above the threshold
    "u8": lambda t: 0.9,        # free plan: outside the audience
}

ACCOUNTS = [
    {"user_id": "u1", "email": "ana@example.com", "first_name": "Ana", "plan": "pro"},
    {"user_id": "u2", "email": "bo@example.com", "first_name": "Bø", "plan": "pro"},
    {"user_id": "u3", "email": "ANA@Example.com", "first_name": "Ana2", "plan": "pro"},
    {"user_id": "u4", "email": "gone@example.com", "first_name": "Gone", "plan": "pro"},
    {"user_id": "u5", "email": "noname@example.com", "first_name": None, "plan": "pro"},
    {"user_id": "u7", "email": "low@example.com", "first_name": "Low", "plan": "pro"},
    {"user_id": "u8", "email": "free@example.com", "first_name": "Free", "plan": "free"},
]


@pytest.fixture(scope="module")
def prometheus_url(prometheus_factory) -> str:
    series = [quota(user, values) for user, values in USERS.items()]
    return prometheus_factory(openmetrics=render_openmetrics(series)).url


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request, tmp_path: Path, prometheus_url: str) -> Services:
    overrides = {"BEHAVEMAIL_PROMETHEUS_URL": prometheus_url}
    if request.param == "postgresql":
        overrides["BEHAVEMAIL_DATABASE_URL"] = request.getfixturevalue("postgres_cluster").new_database()
    settings = make_settings(tmp_path, **overrides)
    write_accounts(tmp_path / "accounts.db", ACCOUNTS)
    sessions = migrated_sessions(settings.database_url)
    with sessions() as session:
        session.add(Suppression(email="gone@example.com", reason="unsubscribed", source="test"))
        template_store.save_template(session, template_store.TemplateSpec(
            name="Quota", subject="Quota at {{ (value * 100) | round | int }} %, {{ first_name }}",
            html="<p>Hi {{ first_name }}, you used {{ value }}.</p>"), actor="test")
    built = Services(settings=settings, sessions=sessions,
                     prometheus=PrometheusClient(prometheus_url),
                     accounts=AccountDirectory(settings.accounts_url, settings.accounts_query),
                     backend=create_backend(settings), scheduler_id="test")
    yield built
    built.prometheus.close()
    built.accounts.close()


def add_rule(services: Services, **overrides) -> int:
    spec = RuleSpec(
        name=overrides.pop("name", "Quota above 80 %"),
        condition=condition_from_dict({"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">",
                                       "threshold": 0.8}),
        template="Quota",
        audience=overrides.pop("audience", (AudienceFilter("plan", "in", ("pro", "enterprise")),)),
        **overrides)
    with services.sessions() as session:
        return rule_store.save_rule(session, spec, actor="test").id


def outbox_messages(services: Services) -> list:
    folder = Path(services.settings.outbox_dir)
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


def sends(services: Services) -> dict[str, list[Send]]:
    with services.sessions() as session:
        rows = list(session.scalars(select(Send).order_by(Send.id)))
    by_user: dict[str, list[Send]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    return by_user


def test_first_evaluation_outcomes(services: Services) -> None:
    rule_id = add_rule(services)

    report = evaluate_rule(services, rule_id, T1)
    rows = sends(services)

    assert report.error is None
    assert report.matched == 7
    assert report.skipped == 1  # u8, outside the audience
    assert {u: [r.status for r in rs] for u, rs in rows.items()} == {
        "u1": ["sent"], "u2": ["sent"], "u3": ["suppressed"], "u4": ["suppressed"],
        "u5": ["failed"], "u6": ["failed"]}
    assert rows["u3"][0].reason == "duplicate_address: same address as user u1"
    assert rows["u4"][0].reason == "unsubscribed"
    assert "'first_name', which this account does not have" in rows["u5"][0].error
    assert "No account found for user id 'u6'" in rows["u6"][0].error
    assert (report.sent, report.suppressed, report.failed) == (2, 2, 2)


def test_sent_email_content_and_headers(services: Services) -> None:
    rule_id = add_rule(services)
    evaluate_rule(services, rule_id, T1)

    messages = {m["To"].addresses[0].addr_spec: m for m in outbox_messages(services)}
    ana = messages["ana@example.com"]
    html = ana.get_body(("html",)).get_content()
    text = ana.get_body(("plain",)).get_content()

    assert set(messages) == {"ana@example.com", "bo@example.com"}
    assert ana["Subject"] == "Quota at 90 %, Ana"
    assert "Hi Ana, you used 0.9." in html
    assert ana["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(ana["List-Unsubscribe"]).strip().startswith("<http://127.0.0.1:8502/u/")
    assert "/o/" in html  # open pixel
    assert "Unsubscribe" in text
    assert str(messages["bo@example.com"]["To"]) == "Bø <bo@example.com>"


def test_once_per_episode_rearms(services: Services) -> None:
    rule_id = add_rule(services, send_policy="once_per_episode")

    evaluate_rule(services, rule_id, T1)
    second = evaluate_rule(services, rule_id, T2)
    third = evaluate_rule(services, rule_id, T3)
    rows = sends(services)

    assert second.triggered == 0
    assert third.triggered == 1
    assert [r.status for r in rows["u2"]] == ["sent", "sent"]
    assert len(rows["u1"]) == 1
    assert len(outbox_messages(services)) == 3
    with services.sessions() as session:
        u2_episodes = list(session.scalars(select(Episode).where(Episode.user_id == "u2").order_by(Episode.id)))
    assert [e.ended_at for e in u2_episodes] == [T2, None]


def test_once_ever_never_repeats(services: Services) -> None:
    rule_id = add_rule(services, send_policy="once_ever")

    evaluate_rule(services, rule_id, T1)
    third = evaluate_rule(services, rule_id, T3)

    assert third.triggered == 0
    assert len(outbox_messages(services)) == 2


def test_cooldown_spacing(services: Services) -> None:
    rule_id = add_rule(services, send_policy="cooldown", cooldown_seconds=90 * 60)

    evaluate_rule(services, rule_id, T1)
    second = evaluate_rule(services, rule_id, T2)
    third = evaluate_rule(services, rule_id, T3)

    assert second.triggered == 0
    assert third.sent == 2  # u1 and u2, 120 minutes after their first email
    assert len(outbox_messages(services)) == 4


def test_control_group_gets_no_email(services: Services) -> None:
    rule_id = add_rule(services, holdout_percent=50, audience=())

    evaluate_rule(services, rule_id, T1)
    rows = sends(services)
    addresses = {"u1": "ana@example.com", "u2": "bo@example.com", "u8": "free@example.com"}
    expected_held = {u for u in addresses if in_holdout(rule_id, u, 50)}
    held = {u for u, rs in rows.items() if rs[0].status == "held_out"}
    mailed = {m["To"].addresses[0].addr_spec for m in outbox_messages(services)}

    assert held == expected_held
    assert all(rows[u][0].goal_due_at == T1 + timedelta(hours=72) for u in held)
    assert mailed == {addresses[u] for u in addresses if u not in held}


def test_dry_run_writes_nothing(services: Services) -> None:
    rule_id = add_rule(services)

    report = evaluate_rule(services, rule_id, T1, dry_run=True)

    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Send)) == 0
        assert session.scalar(select(func.count()).select_from(Evaluation)) == 0
        assert session.scalar(select(func.count()).select_from(Episode)) == 0
    assert outbox_messages(services) == []
    planned = {row["user_id"]: row for row in report.planned}
    assert planned["u1"]["outcome"] == "would send"
    assert planned["u1"]["subject"] == "Quota at 90 %, Ana"
    assert planned["u4"]["outcome"] == "suppressed"


def test_prometheus_down_records_error_only(services: Services) -> None:
    rule_id = add_rule(services)
    evaluate_rule(services, rule_id, T1)
    services.prometheus = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2)

    report = evaluate_rule(services, rule_id, T2)

    assert "Cannot connect to Prometheus" in report.error
    with services.sessions() as session:
        open_episodes = session.scalar(select(func.count()).select_from(Episode).where(Episode.ended_at.is_(None)))
        errors = list(session.scalars(select(Evaluation.error).where(Evaluation.error.is_not(None))))
    assert open_episodes == 6  # nothing closed because the query failed
    assert len(errors) == 1
    assert len(outbox_messages(services)) == 2


def test_cycle_runs_due_rules_only(services: Services) -> None:
    due = add_rule(services, name="due")
    disabled = add_rule(services, name="disabled", enabled=False)

    first = run_cycle(services, T1)
    again = run_cycle(services, T1 + timedelta(minutes=1))

    assert [r.rule_id for r in first.rules] == [due]
    assert disabled not in [r.rule_id for r in first.rules]
    assert again.rules == []  # the check interval (5 minutes) has not passed


def test_two_schedulers_evaluate_each_rule_once(services: Services) -> None:
    import threading
    from dataclasses import replace

    rule_ids = [add_rule(services, name=f"rule {i}") for i in range(4)]
    second = replace(services, scheduler_id="other")
    reports = []

    def cycle(own: Services) -> None:
        reports.append(run_cycle(own, T1))

    threads = [threading.Thread(target=cycle, args=(s,)) for s in (services, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    evaluated = sorted(r.rule_id for report in reports for r in report.rules)
    assert evaluated == rule_ids
    with services.sessions() as session:
        per_rule_user = session.execute(select(Send.rule_id, Send.user_id, func.count())
                                        .group_by(Send.rule_id, Send.user_id)).all()
    assert max(count for *_, count in per_rule_user) == 1


def test_cycle_deadline_defers_rules(services: Services) -> None:
    import time

    first = add_rule(services, name="first")
    second = add_rule(services, name="second")

    late = run_cycle(services, T1, deadline=time.monotonic() - 1)
    next_cycle = run_cycle(services, T1 + timedelta(seconds=30))

    assert late.rules == []
    assert late.deferred == 2
    assert [r.rule_id for r in next_cycle.rules] == [first, second]


def test_cycle_measures_closed_goals(services: Services) -> None:
    add_rule(services, holdout_percent=50, audience=(), goal_window_seconds=3600)

    run_cycle(services, T1)
    run_cycle(services, T1 + timedelta(minutes=30))
    before = sends(services)
    run_cycle(services, T1 + timedelta(hours=1, minutes=5))
    after = sends(services)

    measured = [r for rs in after.values() for r in rs if r.status in ("sent", "held_out")]
    assert measured
    assert all(r.goal_measured_at is None for rs in before.values() for r in rs)
    # The history has no API requests at all, so nobody reached the default goal.
    assert all(r.goal_measured_at is not None and r.goal_reached is False for r in measured)


def test_rule_without_template_triggers_nobody(services: Services) -> None:
    with services.sessions() as session:
        rule_id = rule_store.save_rule(session, RuleSpec(
            name="No template", template=None, condition=condition_from_dict(
                {"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8})),
            actor="test").id

    report = evaluate_rule(services, rule_id, T1)

    assert "has no email template" in report.error
    assert sends(services) == {}
    with services.sessions() as session:
        errors = list(session.scalars(select(Evaluation.error).where(Evaluation.rule_id == rule_id)))
    assert len(errors) == 1
    assert "pick a template" in errors[0]


def test_enabling_rule_without_template_refused(services: Services) -> None:
    from behavemail_core.errors import RuleValidationError

    with services.sessions() as session:
        rule_id = rule_store.save_rule(session, RuleSpec(
            name="No template", template=None, enabled=False, condition=condition_from_dict(
                {"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8})),
            actor="test").id
        with pytest.raises(RuleValidationError, match="has no email template"):
            rule_store.set_enabled(session, rule_id, True, actor="test")
