"""Benchmark: one rule evaluation end to end, from the PromQL query to .eml files.

Run: .venv/bin/python bench/bench_evaluation.py [--users 2000] [--repeat 3]

Starts a private Prometheus on 127.0.0.1 (Debian's prometheus package) with a
gauge above the threshold for every user, an accounts SQLite database and a fresh
app database per run, then times evaluate_rule with the outbox backend, with and
without tracking links. Record the output in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from behavemail_core import rule_store, template_store  # noqa: E402
from behavemail_core.accounts import AccountDirectory  # noqa: E402
from behavemail_core.conditions import condition_from_dict  # noqa: E402
from behavemail_core.delivery import create_backend  # noqa: E402
from behavemail_core.evaluation import Services, evaluate_rule  # noqa: E402
from behavemail_core.prometheus import PrometheusClient  # noqa: E402
from behavemail_core.rules import RuleSpec  # noqa: E402
from tests.support.appdb import make_settings, migrated_sessions, write_accounts  # noqa: E402
from tests.support.prometheus import Series, render_openmetrics, start_prometheus  # noqa: E402

STARTER = (Path(__file__).resolve().parent.parent / "data" / "starter_rules.yaml")


def one_run(folder: Path, prometheus_url: str, users: int, now: int, tracking: bool) -> tuple[float, int]:
    settings = make_settings(folder, BEHAVEMAIL_PROMETHEUS_URL=prometheus_url,
                             BEHAVEMAIL_TRACKING="true" if tracking else "false")
    write_accounts(folder / "accounts.db", [
        {"user_id": f"u{i:05d}", "email": f"user{i}@example.com", "first_name": "Zoë", "last_name": "Müller",
         "company": "Example GmbH", "plan": "pro"} for i in range(users)])
    sessions = migrated_sessions(settings.database_url)
    import yaml
    quota = next(t for t in yaml.safe_load(STARTER.read_text())["templates"] if t["name"] == "Quota nearly used")
    with sessions() as session:
        template_store.save_template(session, template_store.TemplateSpec(
            name=quota["name"], subject=quota["subject"], html=quota["html"]), actor="bench")
        rule_id = rule_store.save_rule(session, RuleSpec(
            name="Quota", template=quota["name"], condition=condition_from_dict(
                {"kind": "gauge", "metric": "api_quota_used_ratio", "op": ">", "threshold": 0.8})),
            actor="bench").id
    services = Services(settings=settings, sessions=sessions, prometheus=PrometheusClient(prometheus_url),
                        accounts=AccountDirectory(settings.accounts_url, settings.accounts_query),
                        backend=create_backend(settings))
    started = time.perf_counter()
    report = evaluate_rule(services, rule_id, datetime.fromtimestamp(now, timezone.utc))
    elapsed = time.perf_counter() - started
    services.prometheus.close()
    services.accounts.close()
    return elapsed, report.sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    now = int(time.time()) // 60 * 60 - 600
    series = [Series("api_quota_used_ratio", {"user_id": f"u{i:05d}"}, "gauge",
                     [(t, 0.9) for t in range(now - 1200, now + 1, 60)]) for i in range(args.users)]
    with tempfile.TemporaryDirectory() as root:
        server = start_prometheus(Path(root) / "prometheus", render_openmetrics(series))
        try:
            timings: dict[bool, list[float]] = {True: [], False: []}
            for run in range(args.repeat):
                for tracking in (True, False):
                    folder = Path(root) / f"run-{run}-{tracking}"
                    folder.mkdir()
                    elapsed, sent = one_run(folder, server.url, args.users, now, tracking)
                    assert sent == args.users, sent
                    timings[tracking].append(elapsed)
        finally:
            server.stop()
    print(f"users={args.users} repeat={args.repeat} backend=outbox template='Quota nearly used'")
    for tracking in (False, True):
        median = statistics.median(timings[tracking])
        print(f"tracking={'on ' if tracking else 'off'} median {median:6.2f} s  "
              f"{args.users / median:7.0f} emails/s")
    print(f"ratio tracking on / off = {statistics.median(timings[True]) / statistics.median(timings[False]):.2f}")


if __name__ == "__main__":
    main()
