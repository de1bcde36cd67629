"""Behavemail's scheduler: evaluates due rules, sends, and serves the event endpoints.

    python scheduler.py            run every BEHAVEMAIL_SCHEDULER_INTERVAL seconds
    python scheduler.py --once     run one cycle and exit
    python scheduler.py --dry-run  print who would get what, and send and record nothing

Exit status: 0 when everything went well, 1 when --once or --dry-run met a failed
rule evaluation or a failed email, 2 when the configuration is invalid.
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
    if args.once or args.dry_run:
        return report_failures(reports)
    return 0


def report_failures(reports: list) -> int:
    """Print a line about failed evaluations and emails; return the exit status."""
    rules = [rule for report in reports for rule in report.rules]
    failed_rules = [rule.rule_name for rule in rules if rule.error]
    failed_emails = sum(rule.failed for rule in rules)
    if not failed_rules and not failed_emails:
        return 0
    print(f"{len(failed_rules)} rule evaluations failed ({', '.join(failed_rules) or 'none'}) and "
          f"{failed_emails} emails failed: see the log above, or the Activity page for each email.",
          file=sys.stderr)
    return 1


def print_plan(reports: list) -> None:
    rows = [row for report in reports for rule in report.rules for row in rule.planned]
    rule_width = max([4, *(len(row["rule"]) for row in rows)])
    print(f"{'RULE':{rule_width}} {'USER':14} {'EMAIL':32} {'OUTCOME':12} SUBJECT / REASON")
    for row in rows:
        detail = row["subject"] if row["outcome"] == "would send" else row["reason"]
        print(f"{row['rule']:{rule_width}} {str(row['user_id'])[:14]:14} {str(row['email'] or '-')[:32]:32} "
              f"{row['outcome']:12} {detail}")
    print()
    for rule in (rule for report in reports for rule in report.rules):
        if rule.error:
            print(f"{rule.rule_name}: evaluation failed: {rule.error}")
            continue
        print(f"{rule.rule_name}: {rule.matched} matched, {rule.outside_audience} outside the audience, "
              f"{rule.skipped - rule.outside_audience} held back by the send policy, "
              f"{rule.triggered} triggered")
    print(f"{sum(r['outcome'] == 'would send' for r in rows)} emails would be sent; nothing was sent or recorded.")


if __name__ == "__main__":
    sys.exit(main())
