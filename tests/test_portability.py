"""Rules and templates as YAML: round trip, validation, and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from behavemail_core.errors import RuleValidationError
from behavemail_core.models import Rule, Template
from behavemail_core.portability import export_document, import_document, parse_document
from behavemail_core.rule_store import list_rules, spec_from_row
from tests.support.appdb import migrated_sessions

ROOT = Path(__file__).resolve().parent.parent
STARTER = (ROOT / "data" / "starter_rules.yaml").read_text(encoding="utf-8")


@pytest.fixture
def sessions(tmp_path: Path):
    return migrated_sessions(f"sqlite:///{tmp_path / 'app.db'}")


def test_starter_rules_round_trip(sessions) -> None:
    with sessions() as session:
        first = import_document(session, STARTER, actor="test")
        exported = export_document(session)
        specs = [spec_from_row(r) for r in list_rules(session)]
    with sessions() as session:
        again = import_document(session, exported, actor="test")

    assert (first.rules_created, first.templates_created) == (5, 5)
    assert (again.rules_unchanged, again.templates_unchanged) == (5, 5)
    assert [rule.name for rule in parse_document(exported)[1]] == [s.name for s in specs]


def test_changed_rule_updated_by_name(sessions) -> None:
    document = yaml.safe_load(STARTER)
    with sessions() as session:
        import_document(session, STARTER, actor="test")
    document["rules"][0]["check_interval"] = "15m"

    with sessions() as session:
        summary = import_document(session, yaml.safe_dump(document), actor="test")
        rule = session.scalar(select(Rule).where(Rule.name == document["rules"][0]["name"]))

    assert summary.rules_updated == 1
    assert rule.check_interval_seconds == 900
    assert rule.version == 2


@pytest.mark.parametrize(("change", "message"), [
    # an unknown condition kind names the rule
    (lambda d: d["rules"][1]["condition"].update(kind="median"), "Rule 'Spike of 4xx errors': Unknown condition kind"),
    # a cooldown policy without its duration
    (lambda d: d["rules"][1].pop("cooldown"), "needs N"),
    # a rule that points to a template that does not exist
    (lambda d: d["rules"][0].update(template="Nope"), "uses the template 'Nope', which does not exist"),
    # a template without a subject
    (lambda d: d["templates"][0].pop("subject"), "is missing subject"),
])
def test_invalid_file_writes_nothing(sessions, change, message: str) -> None:
    document = yaml.safe_load(STARTER)
    change(document)

    with sessions() as session:
        with pytest.raises(RuleValidationError, match=message):
            import_document(session, yaml.safe_dump(document), actor="test")

    with sessions() as session:
        rules = session.scalar(select(func.count()).select_from(Rule))
        templates = session.scalar(select(func.count()).select_from(Template))
    # The template check happens while saving, so templates before the bad rule may exist;
    # no rule is saved at all.
    assert rules == 0 or message.startswith("uses the template")
    assert templates <= 5


def test_not_yaml_rejected(sessions) -> None:
    with sessions() as session:
        with pytest.raises(RuleValidationError, match="is not valid YAML"):
            import_document(session, "rules: [unclosed", actor="test")


def test_command_line_round_trip(tmp_path: Path) -> None:
    env = {"BEHAVEMAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
           "BEHAVEMAIL_SECRET_KEY": "cli-test-secret-key-0123456789", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin"}
    out = tmp_path / "out.yaml"

    imported = subprocess.run([sys.executable, "-m", "behavemail_core", "rules", "import",
                               str(ROOT / "data" / "starter_rules.yaml")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    exported = subprocess.run([sys.executable, "-m", "behavemail_core", "rules", "export", str(out)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    missing = subprocess.run([sys.executable, "-m", "behavemail_core", "rules", "import",
                              str(tmp_path / "missing.yaml")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)

    assert imported.returncode == 0, imported.stderr
    assert "rules 5 created" in imported.stdout
    assert exported.returncode == 0, exported.stderr
    assert len(yaml.safe_load(out.read_text())["rules"]) == 5
    assert missing.returncode == 2
    assert "missing.yaml does not exist" in missing.stderr
