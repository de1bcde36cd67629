"""The evaluation through SendGrid's Mail Send API, against the local double.

2,346 matched users, two of whom share an address apart from its case (so
2,345 emails), and a 429 on the first request.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from behavemail_core import rule_store, template_store
from behavemail_core.accounts import AccountDirectory
from behavemail_core.conditions import condition_from_dict
from behavemail_core.delivery import SendGridBackend, parse_sender
from behavemail_core.evaluation import Services, evaluate_rule
from behavemail_core.models import Send
from behavemail_core.prometheus import PrometheusClient
from behavemail_core.rules import RuleSpec
from tests.support.appdb import make_settings, migrated_sessions, write_accounts
from tests.support.prometheus import Series, render_openmetrics
from tests.support.sendgrid_double import SendGridDouble

USERS = 2346
STEP = 60
NOW = int(datetime.now(timezone.utc).timestamp()) // STEP * STEP - 600


def user_id(index: int) -> str:
    return f"user-{index:05d}"


def accounts() -> list[dict[str, str]]:
    rows = [{"user_id": user_id(i), "email": f"person{i}@example.com", "first_name": f"Person{i}"}
            for i in range(USERS)]
    # The last user shares the first one's address, in other case.
    rows[-1]["email"] = "PERSON0@Example.COM"
    return rows


@pytest.fixture(scope="module")
def prometheus_url(prometheus_factory) -> str:
    times = range(NOW - 1200, NOW + 1, STEP)
    series = [Series("api_quota_used_ratio", {"user_id": user_id(i)}, "gauge", [(t, 0.95) for t in times])
              for i in range(USERS)]
    return prometheus_factory(openmetrics=render_openmetrics(series)).url


def test_batches_dedupe_and_rate_limit(tmp_path: Path, prometheus_url: str) -> None:
    settings = make_settings(tmp_path, BEHAVEMAIL_PROMETHEUS_URL=prometheus_url)
    write_accounts(tmp_path / "accounts.db", accounts())
    sessions = migrated_sessions(settings.database_url)
    with sessions() as session:
        template_store.save_template(session, template_store.TemplateSpec(
            name="Quota", subject="Hi {{ first_name }}", html="<p>{{ first_name }}: {{ value }}</p>"), actor="test")
        rule_id = rule_store.save_rule(session, RuleSpec(
            name="Quota", template="Quota", condition=condition_from_dict(
                {"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8})),
            actor="test").id
    slept: list[float] = []
    fake_now = [1_900_000_000.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        fake_now[0] += seconds

    with SendGridDouble() as double:
        double.rate_limit_next(reset_epoch=int(fake_now[0]) + 7)
        backend = SendGridBackend(double.api_key, double.url, parse_sender(settings.sender),
                                  sleep=sleep, clock=lambda: fake_now[0])
        services = Services(settings=settings, sessions=sessions, prometheus=PrometheusClient(prometheus_url),
                            accounts=AccountDirectory(settings.accounts_url, settings.accounts_query),
                            backend=backend)

        report = evaluate_rule(services, rule_id, datetime.fromtimestamp(NOW, timezone.utc))

        requests = double.requests
        accepted = double.accepted_requests()
        emails = double.accepted_emails

    recipients = Counter(to["email"].lower() for email in emails for to in email.to)
    with sessions() as session:
        rows = list(session.scalars(select(Send)))
    by_status = Counter(row.status for row in rows)

    assert report.matched == USERS
    assert [r.status for r in requests][0] == 429
    assert len(slept) == 1
    assert 7 <= slept[0] <= 8
    assert [len(r.body["personalizations"]) for r in accepted] == [1000, 1000, 345]
    assert max(recipients.values()) == 1
    assert len(recipients) == USERS - 1
    assert by_status == {"sent": USERS - 1, "suppressed": 1}
    duplicate = next(row for row in rows if row.status == "suppressed")
    assert duplicate.user_id == user_id(USERS - 1)
    assert duplicate.reason == f"duplicate_address: same address as user {user_id(0)}"
    custom_ids = {email.custom_args["send_id"] for email in emails}
    assert custom_ids == {str(row.id) for row in rows if row.status == "sent"}
