"""The rules list: last evaluation, recent sends and rules that no longer validate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from behavemail_core.conditions import condition_from_dict
from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.models import FAILED, SENT, Evaluation, Rule, Send
from behavemail_core.rule_overview import summarize_rules
from behavemail_core.rule_store import delete_rule, save_rule
from behavemail_core.rules import RuleSpec

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
CONDITION = condition_from_dict({"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8})


def test_summaries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(url)
    sessions = session_factory(create_app_engine(url))
    with sessions() as session:
        quota = save_rule(session, RuleSpec(name="Quota", condition=CONDITION, template=None), actor="t").id
        quiet = save_rule(session, RuleSpec(name="Quiet", condition=CONDITION, template=None, enabled=False),
                          actor="t").id
        deleted = save_rule(session, RuleSpec(name="Gone", condition=CONDITION, template=None), actor="t").id
        delete_rule(session, deleted, actor="t")
        broken = Rule(name="Broken", definition={"condition": {"kind": "nonsense"}})
        session.add(broken)
        session.add_all([
            Evaluation(rule_id=quota, evaluated_at=NOW - timedelta(hours=2), query="q", matched=7),
            Evaluation(rule_id=quota, evaluated_at=NOW - timedelta(minutes=5), query="q", matched=3),
            Evaluation(rule_id=quiet, evaluated_at=NOW - timedelta(minutes=5), query="q", error="timed out"),
            # sent within the week: counted
            Send(rule_id=quota, user_id="a", dedupe_key="ever", status=SENT, sent_at=NOW - timedelta(days=1)),
            Send(rule_id=quota, user_id="b", dedupe_key="ever", status=SENT, sent_at=NOW - timedelta(days=6)),
            # sent eight days ago: not counted
            Send(rule_id=quota, user_id="c", dedupe_key="ever", status=SENT, sent_at=NOW - timedelta(days=8)),
            # failed: not counted
            Send(rule_id=quota, user_id="d", dedupe_key="ever", status=FAILED),
        ])
        session.commit()
        summaries = {summary.name: summary for summary in summarize_rules(session, NOW)}

    assert sorted(summaries) == ["Broken", "Quiet", "Quota"]
    assert summaries["Quota"].last_matched == 3
    assert summaries["Quota"].last_evaluated_at == NOW - timedelta(minutes=5)
    assert summaries["Quota"].sent_recently == 2
    assert summaries["Quiet"].enabled is False
    assert summaries["Quiet"].last_matched is None
    assert summaries["Quiet"].last_error == "timed out"
    assert summaries["Broken"].spec is None
    assert "Unknown condition kind 'nonsense'" in summaries["Broken"].problem
