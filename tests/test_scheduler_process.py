"""scheduler.py as a process: real Prometheus, the demo accounts, a real SMTP server.

Every run is a subprocess with its own environment, so these tests see what an
operator sees: exit codes, the emails that arrive, and the rows left behind.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, update

from behavemail_core.heartbeat import INTERRUPTED_ERROR
from behavemail_core.models import Evaluation, Rule, Send
from tests.support.appdb import migrated_sessions, write_accounts
from tests.support.prometheus import Series, free_port, render_openmetrics
from tests.support.smtp import SMTPTestServer

ROOT = Path(__file__).resolve().parent.parent
STARTER_RULES = ROOT / "data" / "starter_rules.yaml"
DEMO_ACCOUNTS = ROOT / "data" / "accounts.csv"


def demo_accounts() -> list[dict[str, str]]:
    with DEMO_ACCOUNTS.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def quota_history(high_users: list[str], low_users: list[str]) -> str:
    """Quota gauges for the last 30 minutes, ending 10 s ago, one sample every 15 s."""
    end = int(time.time()) - 10
    times = range(end - 1800, end + 1, 15)
    series = [Series("api_quota_used_ratio", {"user_id": u}, "gauge", [(t, 0.91) for t in times])
              for u in high_users]
    series += [Series("api_quota_used_ratio", {"user_id": u}, "gauge", [(t, 0.2) for t in times])
               for u in low_users]
    return render_openmetrics(series)


def environment(tmp_path: Path, prometheus_url: str, smtp: SMTPTestServer) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BEHAVEMAIL_")}
    env.update({
        "BEHAVEMAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "BEHAVEMAIL_ACCOUNTS_URL": f"sqlite:///{tmp_path / 'accounts.db'}",
        "BEHAVEMAIL_PROMETHEUS_URL": prometheus_url,
        "BEHAVEMAIL_EMAIL_BACKEND": "smtp",
        "BEHAVEMAIL_SMTP_HOST": smtp.host,
        "BEHAVEMAIL_SMTP_PORT": str(smtp.port),
        "BEHAVEMAIL_SMTP_TLS": "none",
        "BEHAVEMAIL_SECRET_KEY": "process-test-secret-key-0123456789",
        "BEHAVEMAIL_FROM": "Example API <hello@example.com>",
        "BEHAVEMAIL_POSTAL_ADDRESS": "Example API Inc., 1 Test Street, Springfield",
        "BEHAVEMAIL_SCRAPE_INTERVAL": "15",
        # The runs use a temporary working directory (no stray .env), so the package
        # is found through the path.
        "PYTHONPATH": str(ROOT),
    })
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def make_all_rules_due(database_url: str) -> None:
    sessions = migrated_sessions(database_url)
    with sessions() as session, session.begin():
        session.execute(update(Rule).values(next_due_at=None))


def all_sends(database_url: str) -> list[Send]:
    sessions = migrated_sessions(database_url)
    with sessions() as session:
        return list(session.scalars(select(Send).order_by(Send.id)))


@pytest.fixture
def installation(tmp_path: Path, prometheus_factory):
    """The demo accounts, the starter rules and an SMTP server; yields (env, high users, smtp)."""
    accounts = demo_accounts()
    high = [a["user_id"] for a in accounts[:4]]
    low = [a["user_id"] for a in accounts[4:8]]
    write_accounts(tmp_path / "accounts.db", accounts)
    prometheus = prometheus_factory(openmetrics=quota_history(high, low))
    with SMTPTestServer() as smtp:
        env = environment(tmp_path, prometheus.url, smtp)
        imported = run(["-m", "behavemail_core", "rules", "import", str(STARTER_RULES)], env, tmp_path)
        assert imported.returncode == 0, imported.stderr
        yield env, {a["user_id"]: a for a in accounts[:4]}, smtp


def test_once_twice_delivers_once(installation, tmp_path: Path) -> None:
    env, high, smtp = installation

    first = run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)
    received_after_first = len(smtp.envelopes)
    make_all_rules_due(env["BEHAVEMAIL_DATABASE_URL"])
    second = run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert received_after_first == 4
    assert len(smtp.envelopes) == 4
    recipients = sorted(r for e in smtp.envelopes for r in e.rcpt_tos)
    assert recipients == sorted(a["email"] for a in high.values())
    assert "rule evaluated" in first.stderr
    assert "matched=4" in first.stderr


def test_email_content_and_headers(installation, tmp_path: Path) -> None:
    env, high, smtp = installation

    run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)

    by_address = {e.rcpt_tos[0]: e.message() for e in smtp.envelopes}
    account = next(iter(high.values()))
    message = by_address[account["email"]]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert message["Subject"] == f"{account['first_name']}, you have used 91 % of your quota"
    assert message["To"].addresses[0].display_name == f"{account['first_name']} {account['last_name']}"
    assert message["From"].addresses[0].addr_spec == "hello@example.com"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(message["List-Unsubscribe"]).strip().startswith("<http://127.0.0.1:8502/u/")
    assert account["company"] in html
    assert "width: 91%" in html  # the quota bar, with its CSS inlined
    assert "Example API Inc., 1 Test Street, Springfield" in text
    assert message.get_content_type() == "multipart/alternative"


def test_second_run_evaluates_and_skips(installation, tmp_path: Path) -> None:
    env, _, _ = installation
    run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)
    make_all_rules_due(env["BEHAVEMAIL_DATABASE_URL"])

    run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)

    sessions = migrated_sessions(env["BEHAVEMAIL_DATABASE_URL"])
    with sessions() as session:
        quota_rule = session.scalar(select(Rule).where(Rule.name == "Quota above 80 %"))
        evaluations = list(session.scalars(select(Evaluation).where(Evaluation.rule_id == quota_rule.id)
                                           .order_by(Evaluation.id)))
    assert [(e.matched, e.triggered, e.sent) for e in evaluations] == [(4, 4, 4), (4, 0, 0)]


def test_dry_run_prints_and_sends_nothing(installation, tmp_path: Path) -> None:
    env, high, smtp = installation

    result = run([str(ROOT / "scheduler.py"), "--dry-run"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert smtp.envelopes == []
    for account in high.values():
        assert account["email"] in result.stdout
    assert "4 emails would be sent; nothing was sent or recorded." in result.stdout
    assert all_sends(env["BEHAVEMAIL_DATABASE_URL"]) == []


def test_bad_setting_stops_startup(installation, tmp_path: Path) -> None:
    env, _, _ = installation

    result = run([str(ROOT / "scheduler.py"), "--once"], {**env, "BEHAVEMAIL_SMTP_PORT": "smtp"}, tmp_path)

    assert result.returncode == 2
    assert "BEHAVEMAIL_SMTP_PORT='smtp' is not a whole number" in result.stderr


def test_sigterm_stops_cleanly(installation, tmp_path: Path) -> None:
    env, _, _ = installation
    process = subprocess.Popen([sys.executable, str(ROOT / "scheduler.py")],
                               env={**env, "BEHAVEMAIL_EVENTS_ADDRESS": f"127.0.0.1:{free_port()}"}, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(s.status == "sent" for s in
                                                      all_sends(env["BEHAVEMAIL_DATABASE_URL"])):
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    assert "scheduler stopped" in stderr


def test_sigkill_mid_batch_never_sends_twice(tmp_path: Path, prometheus_factory) -> None:
    accounts = demo_accounts()
    high = [a["user_id"] for a in accounts[:40]]
    write_accounts(tmp_path / "accounts.db", accounts)
    prometheus = prometheus_factory(openmetrics=quota_history(high, []))
    # Each DATA waits, so the first run is still mid-batch when it is killed.
    with SMTPTestServer(data_delay=0.2) as smtp:
        env = environment(tmp_path, prometheus.url, smtp)
        imported = run(["-m", "behavemail_core", "rules", "import", str(STARTER_RULES)], env, tmp_path)
        assert imported.returncode == 0, imported.stderr
        victim = subprocess.Popen([sys.executable, str(ROOT / "scheduler.py"), "--once"], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(smtp.envelopes) < 13:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        delivered_before_restart = len(smtp.envelopes)
        make_all_rules_due(env["BEHAVEMAIL_DATABASE_URL"])

        restart = run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path, timeout=300)

        recipients = [r for e in smtp.envelopes for r in e.rcpt_tos]

    sends = [s for s in all_sends(env["BEHAVEMAIL_DATABASE_URL"])]
    assert restart.returncode == 0, restart.stderr
    assert 13 <= delivered_before_restart < 40
    assert len(recipients) == len(set(recipients))
    assert [s for s in sends if s.status == "pending"] == []
    assert sorted({s.user_id for s in sends}) == sorted(high)
    assert len(sends) == 40
    interrupted = [s for s in sends if s.error == INTERRUPTED_ERROR]
    assert 1 <= len(interrupted) <= 10  # at most the batch in flight
    assert len(recipients) + len(interrupted) >= 40 - 1  # every other user got exactly one email
    sent_addresses = {s.email for s in sends if s.status == "sent"}
    assert sent_addresses <= set(recipients)


def test_once_exits_1_when_prometheus_down(installation, tmp_path: Path) -> None:
    env, _, smtp = installation

    result = run([str(ROOT / "scheduler.py"), "--once"],
                 {**env, "BEHAVEMAIL_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}, tmp_path)

    assert result.returncode == 1
    assert "Cannot connect to Prometheus at http://127.0.0.1:" in result.stderr
    assert "5 rule evaluations failed" in result.stderr
    assert smtp.envelopes == []


def test_dry_run_ignores_check_interval(installation, tmp_path: Path) -> None:
    env, high, smtp = installation
    run([str(ROOT / "scheduler.py"), "--once"], env, tmp_path)

    result = run([str(ROOT / "scheduler.py"), "--dry-run"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    # Right after a cycle no rule is due, yet the dry run evaluates them all and shows
    # that the matched users already got their email in this episode.
    assert ("Quota above 80 %: 4 matched, 0 outside the audience, 4 held back by the send policy, "
            "0 triggered") in result.stdout
    assert "0 emails would be sent" in result.stdout
    assert len(smtp.envelopes) == 4


def test_unopenable_database_names_variable(installation, tmp_path: Path) -> None:
    env, _, _ = installation
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    result = run([str(ROOT / "scheduler.py"), "--once"],
                 {**env, "BEHAVEMAIL_DATABASE_URL": f"sqlite:///{blocker}/app.db"}, tmp_path)

    assert result.returncode == 2
    assert "check BEHAVEMAIL_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
