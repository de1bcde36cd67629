"""The Rules screen under AppTest: the builder's PromQL and sentence, saving, conflicts, actions.

The app runs against a migrated SQLite app database and the session's Prometheus
(tests/support/app_data.py). Ace editors are unknown elements to AppTest, so the
PromQL editor is given its text through the screen's state, which is what the
editor shows (and returns) when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from behavemail_core.conditions import condition_from_dict
from behavemail_core.database import create_app_engine, session_factory
from behavemail_core.models import AuditEntry, Rule
from behavemail_core.rule_store import get_rule, save_rule, spec_from_row
from behavemail_core.rules import RuleSpec
from ui.rule_draft import PROMQL
from ui.state import RulesState

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60
STATE_KEY = "rules.state"
STATUS_4XX = {"label": "status", "op": "=~", "value": "4.."}


def open_rules() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    app.switch_page("pages/rules.py").run()
    assert not app.exception, app.exception
    return app


def state_of(app: AppTest) -> RulesState:
    return app.session_state[STATE_KEY]


def key(app: AppTest, *parts: object) -> str:
    """Return the key of a builder widget at the form's current generation."""
    return ".".join(["rules", str(state_of(app).generation), *(str(part) for part in parts)])


def promql_shown(app: AppTest) -> str:
    return app.code[0].value


def sentence_shown(app: AppTest) -> str:
    return next(item.value for item in app.markdown if item.value.startswith("**Reads as:**"))


def errors_shown(app: AppTest) -> list[str]:
    return [item.value for item in app.error]


def add_filter(app: AppTest, side: str, group: str, label: str, op: str, value: Any) -> None:
    """Add a label filter row to a condition through its widgets."""
    app.button(key=key(app, side, group, "add")).click().run()
    rows = getattr(getattr(state_of(app).draft, side), group)
    row_id = rows[-1].row_id
    app.selectbox(key=key(app, side, group, row_id, "label")).set_value(label).run()
    app.selectbox(key=key(app, side, group, row_id, "op")).set_value(op).run()
    value_key = key(app, side, group, row_id, "value", op)
    if op == "in":
        app.multiselect(key=value_key).set_value(value).run()
    elif op in ("=~", "!~"):
        app.text_input(key=value_key).input(value).run()
    else:
        app.selectbox(key=value_key).set_value(value).run()


def sessions(app_env: dict[str, str]):
    return session_factory(create_app_engine(app_env["BEHAVEMAIL_DATABASE_URL"]))


def saved_rule(app_env: dict[str, str], name: str) -> Rule:
    with sessions(app_env)() as session:
        rule = session.scalar(select(Rule).where(Rule.name == name))
        assert rule is not None, f"rule {name!r} was not saved"
        session.expunge(rule)
        return rule


def test_free_plan_4xx_rule_from_widgets(app_env) -> None:
    app = open_rules()
    app.text_input(key=key(app, "name")).input("4xx on the free plan").run()
    app.selectbox(key=key(app, "left", "metric")).set_value("api_requests_total").run()
    add_filter(app, "left", "matchers", "status", "=~", "4..")
    app.selectbox(key=key(app, "left", "window")).set_value("24h").run()
    app.number_input(key=key(app, "left", "threshold")).set_value(10.0).run()
    app.button(key=key(app, "audience", "add")).click().run()
    row_id = state_of(app).draft.audience[-1].row_id
    app.selectbox(key=key(app, "audience", row_id, "attribute")).set_value("plan").run()
    app.text_input(key=key(app, "audience", row_id, "value", "=")).input("free").run()

    assert not app.exception, app.exception
    assert errors_shown(app) == []
    assert promql_shown(app) == 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
    assert sentence_shown(app) == ("**Reads as:** Customers on the free plan who got more than 10 API requests "
                                   "with status 4xx in the last 24 hours, once each time they start matching.")
    matches = next(item.value for item in app.markdown if item.value.startswith("**Matching now:**"))
    assert matches.startswith("**Matching now:** 1 customer (2 more")

    app.button(key="rules.save").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value == "Saved the rule '4xx on the free plan' (version 1)."
    rule = saved_rule(app_env, "4xx on the free plan")
    assert rule.enabled is False
    assert rule.definition["condition"]["matchers"] == [STATUS_4XX]
    assert rule.definition["audience"] == [{"attribute": "plan", "op": "=", "value": "free"}]


KIND_CASES = [
    # ratio: the 503 share of all requests above 5 %
    ({"kind": "ratio", "numerator": ("status", "=", "503"), "threshold_percent": 5.0, "window": "1h"},
     'sum by (user_id) (increase(api_requests_total{status="503"}[1h]))',
     "whose share of API requests with status 503 was above 5 % of all API requests in the last 1 hour"),
    # inactive: requests in the last 7 days but none in the last 48 hours
    ({"kind": "inactive", "active_window": "7d", "quiet_window": "48h"},
     "(sum by (user_id) (increase(api_requests_total[7d])) > 0) unless on (user_id) "
     "(sum by (user_id) (increase(api_requests_total[48h])) > 0)",
     "who made API requests in the last 7 days but none in the last 48 hours"),
    # never used: active in 7 days, no call to /v2/search
    ({"kind": "never_used", "feature": ("endpoint", "=", "/v2/search"), "window": "7d"},
     'unless on (user_id) (sum by (user_id) (increase(api_requests_total{endpoint="/v2/search"}[7d])) > 0)',
     "who made API requests in the last 7 days but none with endpoint /v2/search"),
    # gauge: the highest quota share above 0.8
    ({"kind": "gauge", "metric": "api_quota_used_ratio", "threshold": 0.8},
     "max by (user_id) (api_quota_used_ratio) > 0.8",
     "whose api_quota_used_ratio (max per customer) is above 80 %"),
]


@pytest.mark.parametrize("fields, promql_part, sentence_part", KIND_CASES,
                         ids=[case[0]["kind"] for case in KIND_CASES])
def test_condition_kind_from_widgets(app_env, fields: dict, promql_part: str, sentence_part: str) -> None:
    app = open_rules()
    app.selectbox(key=key(app, "left", "kind")).set_value(fields["kind"]).run()
    app.selectbox(key=key(app, "left", "metric")).set_value(fields.get("metric", "api_requests_total")).run()
    if "numerator" in fields:
        add_filter(app, "left", "numerator", *fields["numerator"])
    if "feature" in fields:
        add_filter(app, "left", "feature", *fields["feature"])
    for name in ("window", "active_window", "quiet_window"):
        if name in fields:
            app.selectbox(key=key(app, "left", name)).set_value(fields[name]).run()
    for name in ("threshold", "threshold_percent"):
        if name in fields:
            app.number_input(key=key(app, "left", name)).set_value(fields[name]).run()

    assert not app.exception, app.exception
    assert errors_shown(app) == []
    assert promql_part in promql_shown(app)
    assert sentence_part in sentence_shown(app)


def test_combined_conditions_with_unless(app_env) -> None:
    app = open_rules()
    add_filter(app, "left", "matchers", "status", "=~", "4..")
    app.checkbox(key=key(app, "combine")).check().run()
    app.radio(key=key(app, "combine_op")).set_value("unless").run()
    app.selectbox(key=key(app, "right", "kind")).set_value("gauge").run()
    app.selectbox(key=key(app, "right", "metric")).set_value("api_quota_used_ratio").run()
    app.number_input(key=key(app, "right", "threshold")).set_value(0.5).run()

    assert not app.exception, app.exception
    assert promql_shown(app) == ('(sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10) '
                                 "unless on (user_id) (max by (user_id) (api_quota_used_ratio) > 0.5)")
    assert "unless they are also customers whose api_quota_used_ratio" in sentence_shown(app)


def test_one_of_filter_escapes_values(app_env) -> None:
    app = open_rules()
    add_filter(app, "left", "matchers", "status", "in", ["401", "404"])
    assert promql_shown(app) == 'sum by (user_id) (increase(api_requests_total{status=~"401|404"}[24h])) > 10'
    assert "with status 401 or 404" in sentence_shown(app)


def test_cooldown_policy_in_sentence(app_env) -> None:
    app = open_rules()
    app.radio(key=key(app, "send_policy")).set_value("cooldown").run()
    app.number_input(key=key(app, "cooldown_amount")).set_value(3).run()
    assert sentence_shown(app).endswith("at most once every 3 days.")


def set_promql(app: AppTest, query: str) -> None:
    """Put ``query`` into the PromQL editor, as if typed (see the module docstring)."""
    app.radio(key=key(app, "mode")).set_value(PROMQL).run()
    state = state_of(app)
    state.draft.promql = query
    state.editor_seed += 1
    app.run()


PROMQL_CASES = [
    # a parse error shows Prometheus's position
    ("sum by (user_id) (rate(api_requests_total[5m])", "1:47: parse error: unclosed left parenthesis"),
    # a result with several series per user is rejected with the fix
    ("increase(api_requests_total[1h])", "more than one series for user_id="),
    # a result without the user label is rejected with the fix
    ("sum(api_requests_total)", "a series without the 'user_id' label"),
    # a scalar has no users at all
    ("1 + 1", "a single number (a scalar)"),
]


@pytest.mark.parametrize("query, message", PROMQL_CASES, ids=["parse", "series", "label", "scalar"])
def test_invalid_promql_cannot_be_saved(app_env, query: str, message: str) -> None:
    app = open_rules()
    app.text_input(key=key(app, "name")).input("Raw").run()
    set_promql(app, query)
    assert not app.exception, app.exception
    assert any(message in error for error in errors_shown(app)), errors_shown(app)
    assert app.button(key="rules.save").proto.disabled


def test_valid_promql_is_saved(app_env) -> None:
    app = open_rules()
    app.text_input(key=key(app, "name")).input("Raw 4xx").run()
    query = 'sum by (user_id) (increase(api_requests_total{status=~"4.."}[24h])) > 10'
    set_promql(app, query)
    assert errors_shown(app) == []
    app.button(key="rules.save").click().run()
    assert not app.exception, app.exception
    assert saved_rule(app_env, "Raw 4xx").definition["condition"] == {"kind": "promql", "query": query}


def seed_rule(app_env: dict[str, str], name: str = "Seeded 4xx") -> int:
    condition = condition_from_dict({"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">",
                                     "threshold": 10, "matchers": [STATUS_4XX]})
    with sessions(app_env)() as session:
        return save_rule(session, RuleSpec(name=name, condition=condition, template=None), actor="test").id


def open_rule(app: AppTest, rule_id: int) -> None:
    picker = f"rules.picker.{state_of(app).picker_generation}"
    app.selectbox(key=picker).set_value(rule_id).run()
    assert not app.exception, app.exception


def test_second_save_is_refused(app_env) -> None:
    rule_id = seed_rule(app_env)
    app = open_rules()
    open_rule(app, rule_id)
    assert state_of(app).loaded_version == 1

    # Another operator saves the same rule meanwhile.
    with sessions(app_env)() as session:
        spec = spec_from_row(get_rule(session, rule_id))
        save_rule(session, RuleSpec(**{**spec.__dict__, "description": "theirs"}), actor="someone else",
                  rule_id=rule_id, expected_version=1)

    app.text_input(key=key(app, "description")).input("mine").run()
    app.button(key="rules.save").click().run()
    assert not app.exception, app.exception
    assert any("was changed by someone else since you opened it (your version 1, now 2)" in error
               for error in errors_shown(app)), errors_shown(app)
    assert saved_rule(app_env, "Seeded 4xx").description == "theirs"


def test_open_rule_shows_unsaved_changes(app_env) -> None:
    rule_id = seed_rule(app_env)
    app = open_rules()
    open_rule(app, rule_id)
    assert not [item for item in app.warning if item.value.startswith("Unsaved changes")]
    app.number_input(key=key(app, "left", "threshold")).set_value(20.0).run()
    assert [item for item in app.warning if item.value.startswith("Unsaved changes")]


def test_disable_duplicate_delete(app_env) -> None:
    rule_id = seed_rule(app_env)
    app = open_rules()
    open_rule(app, rule_id)

    app.button(key="rules.toolbar.enable").click().run()
    assert saved_rule(app_env, "Seeded 4xx").enabled is False
    assert state_of(app).loaded_version == 2

    app.button(key="rules.toolbar.duplicate").click().run()
    copy = saved_rule(app_env, "Seeded 4xx (copy)")
    assert state_of(app).rule_id == copy.id

    app.button(key="rules.toolbar.delete").click().run()
    assert app.warning[0].value.startswith("Delete the rule 'Seeded 4xx (copy)'?")
    app.button(key="rules.toolbar.confirm").click().run()
    assert not app.exception, app.exception
    with sessions(app_env)() as session:
        deleted = session.get(Rule, copy.id)
        actions = list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert deleted.deleted_at is not None
    assert actions[-3:] == ["rule.disable", "rule.create", "rule.delete"]
    assert state_of(app).rule_id is None


def test_goal_condition_from_widgets(app_env) -> None:
    app = open_rules()
    app.text_input(key=key(app, "name")).input("With a goal").run()
    app.radio(key=key(app, "goal_mode")).set_value("condition").run()
    app.selectbox(key=key(app, "goal", "metric")).set_value("api_requests_total").run()
    add_filter(app, "goal", "matchers", "endpoint", "=", "/v2/search")
    app.number_input(key=key(app, "goal", "threshold")).set_value(0.0).run()
    app.selectbox(key=key(app, "goal_window")).set_value("7d").run()
    app.button(key="rules.save").click().run()
    assert not app.exception, app.exception
    rule = saved_rule(app_env, "With a goal")
    assert rule.goal == {"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">",
                         "threshold": 0.0, "matchers": [{"label": "endpoint", "op": "=", "value": "/v2/search"}]}
    assert rule.goal_window_seconds == 7 * 86400


def test_rules_list_counts_audience(app_env) -> None:
    from behavemail_core.audience import AudienceFilter

    condition = condition_from_dict({"kind": "count", "metric": "api_requests_total", "window": "24h",
                                     "op": ">", "threshold": 10, "matchers": [STATUS_4XX]})
    with sessions(app_env)() as session:
        save_rule(session, RuleSpec(name="Free 4xx", condition=condition, template=None,
                                    audience=(AudienceFilter("plan", "=", "free"),)), actor="test")
        save_rule(session, RuleSpec(name="All 4xx", condition=condition, template=None), actor="test")

    app = open_rules()
    table = app.dataframe[0].value.set_index("Rule")

    # Three customers match the condition; one of them is on the free plan.
    assert table.loc["Free 4xx", "Matching now"] == "3 (1 in audience)"
    assert table.loc["All 4xx", "Matching now"] == "3"
