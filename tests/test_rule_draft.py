"""The rule builder's form model: every rule survives a round trip through the form."""

from __future__ import annotations

from dataclasses import replace

import pytest

from behavemail_core.compiler import compile_condition
from behavemail_core.conditions import condition_from_dict
from behavemail_core.portability import parse_document
from behavemail_core.rules import RuleSpec, rule_spec_from_dict
from behavemail_core.settings import DATA_DIR
from ui.rule_draft import BUILDER, CONDITION_GOAL, KEPT_GOAL, PROMQL, draft_from_spec, new_draft

STARTER_RULES = parse_document((DATA_DIR / "starter_rules.yaml").read_text(encoding="utf-8"))[1]
FOUR_XX = {"kind": "count", "metric": "api_requests_total", "window": "24h", "op": ">", "threshold": 10,
           "matchers": [{"label": "status", "op": "in", "values": ["401", "404"]}]}


def compiled(condition) -> str:
    return compile_condition(condition).promql


def round_trip(spec: RuleSpec) -> RuleSpec:
    return rule_spec_from_dict(draft_from_spec(spec, compiled).to_dict())


@pytest.mark.parametrize("spec", STARTER_RULES, ids=[spec.name for spec in STARTER_RULES])
def test_starter_rule_round_trip(spec: RuleSpec) -> None:
    assert round_trip(spec) == spec


GOAL_CASES = [
    # a goal the builder can show is edited as a condition
    (FOUR_XX, CONDITION_GOAL),
    # a combined goal is kept as it is
    ({"kind": "combine", "op": "and", "left": FOUR_XX, "right": FOUR_XX}, KEPT_GOAL),
    # a PromQL goal is kept as it is
    ({"kind": "promql", "query": "sum by (user_id) (up)"}, KEPT_GOAL),
]


@pytest.mark.parametrize("goal, mode", GOAL_CASES, ids=["condition", "combined", "promql"])
def test_goal_survives_the_form(goal: dict, mode: str) -> None:
    spec = replace(STARTER_RULES[0], goal=condition_from_dict(goal), goal_window_seconds=5 * 86400)
    draft = draft_from_spec(spec, compiled)
    assert draft.goal_mode == mode
    assert round_trip(spec) == spec


def test_condition_beyond_builder_opens_as_promql() -> None:
    nested = {"kind": "combine", "op": "and", "left": FOUR_XX,
              "right": {"kind": "combine", "op": "unless", "left": FOUR_XX, "right": FOUR_XX}}
    spec = RuleSpec(name="Nested", condition=condition_from_dict(nested), template=None)
    draft = draft_from_spec(spec, compiled)
    assert draft.mode == PROMQL
    assert draft.promql == compiled(spec.condition)


def test_new_draft_is_a_disabled_count() -> None:
    draft = new_draft("api_requests_total")
    draft.name = "New"
    spec = rule_spec_from_dict(draft.to_dict())
    assert draft.mode == BUILDER
    assert spec.enabled is False
    assert spec.goal is None
    assert compiled(spec.condition) == "sum by (user_id) (increase(api_requests_total[24h])) > 10"
