"""Behavemail's scheduler: evaluates due rules, sends, and serves the event endpoints.

    python scheduler.py            run every BEHAVEMAIL_SCHEDULER_INTERVAL seconds
    python scheduler.py --once     run one cycle and exit
    python scheduler.py --dry-run  print who would get what; send and record nothing
"""

from __future__ import annotations

import argparse
import logging
import sys

from behavemail_core.errors import BehavemailError
from behavemail_core.logs import configure_logging
from behavemail_core.runner import SchedulerProcess
from behavemail_core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate Behavemail rules and send the emails.")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="evaluate and print rule, user, email and subject; send and record nothing")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    try:
        settings = load_settings()
        process = SchedulerProcess(settings, dry_run=args.dry_run)
        process.install_signal_handlers()
        reports = process.run(once=args.once or args.dry_run)
    except BehavemailError as exc:
        logging.getLogger("behavemail.scheduler").error("%s", exc)
        return 2

    if args.dry_run:
        print_plan(reports)
    return 0


def print_plan(reports: list) -> None:
    rows = [row for report in reports for rule in report.rules for row in rule.planned]
    errors = [(rule.rule_name, rule.error) for report in reports for rule in report.rules if rule.error]
    print(f"{'RULE':30} {'USER':14} {'EMAIL':32} {'OUTCOME':12} SUBJECT / REASON")
    for row in rows:
        detail = row["subject"] if row["outcome"] == "would send" else row["reason"]
        print(f"{row['rule'][:30]:30} {str(row['user_id'])[:14]:14} {str(row['email'] or '-')[:32]:32} "
              f"{row['outcome']:12} {detail}")
    for name, error in errors:
        print(f"{name}: evaluation failed: {error}")
    print(f"{sum(r['outcome'] == 'would send' for r in rows)} emails would be sent; nothing was sent or recorded.")


if __name__ == "__main__":
    sys.exit(main())
