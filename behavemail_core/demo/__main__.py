"""Command line for the demo data: ``python -m behavemail_core.demo COMMAND``.

- ``accounts`` regenerates data/accounts.csv from the seed (the same file every time);
- ``prepare`` builds data/accounts.db and the OpenMetrics history for promtool, both
  relative to the current time;
- ``personas`` lists which users get which persona.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..settings import DATA_DIR
from .accounts import SEED, build_accounts_db, generate_accounts, read_accounts_csv, shift_signup_dates, write_accounts_csv
from .history import DEFAULT_STEP_SECONDS, Timeline, history_end, write_history
from .personas import DESCRIPTIONS, assign_personas, users_by_persona

logger = logging.getLogger("behavemail_core.demo")


def parse_now(raw: str) -> datetime:
    """Parse an ISO 8601 time with a zone, e.g. 2025-01-15T12:00:00+00:00."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--now {raw!r} is not an ISO 8601 time, e.g. 2025-01-15T12:00:00+00:00") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--now {raw!r} has no time zone: add one, e.g. {raw}+00:00")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m behavemail_core.demo", description="Generate the demo data.")
    commands = parser.add_subparsers(dest="command", required=True)

    accounts = commands.add_parser("accounts", help="regenerate the accounts CSV from the seed")
    accounts.add_argument("--out", type=Path, default=DATA_DIR / "accounts.csv", help="CSV file to write")

    prepare = commands.add_parser("prepare", help="build the accounts database and the metric history file")
    prepare.add_argument("--accounts", type=Path, default=DATA_DIR / "accounts.csv", help="accounts CSV to read")
    prepare.add_argument("--db", type=Path, default=DATA_DIR / "accounts.db", help="SQLite file to write")
    prepare.add_argument("--history", type=Path, default=DATA_DIR / "demo_history.om", help="OpenMetrics file to write")
    prepare.add_argument("--now", type=parse_now, default=None, help="current time, ISO 8601 with zone (default: the clock)")
    prepare.add_argument("--step", type=int, default=DEFAULT_STEP_SECONDS, help="seconds between samples, at most 300")

    personas = commands.add_parser("personas", help="list the users of every persona")
    personas.add_argument("--accounts", type=Path, default=DATA_DIR / "accounts.csv", help="accounts CSV to read")
    return parser


def run_accounts(args: argparse.Namespace) -> None:
    accounts = generate_accounts()
    write_accounts_csv(accounts, args.out)
    logger.info("wrote %d accounts to %s", len(accounts), args.out)


def run_prepare(args: argparse.Namespace) -> None:
    if not 1 <= args.step <= 300:
        raise SystemExit(f"--step {args.step} is out of range: expected 1 to 300 seconds")
    now = args.now or datetime.now(timezone.utc)
    end = history_end(now)
    accounts = shift_signup_dates(read_accounts_csv(args.accounts), end.date())
    personas = assign_personas([account.user_id for account in accounts], SEED)

    build_accounts_db(accounts, args.db)
    write_history(args.history, accounts, personas, Timeline.ending_at(end, args.step), SEED)
    for persona, members in users_by_persona(personas).items():
        logger.info("persona %s: %d users", persona.value, len(members))


def run_personas(args: argparse.Namespace) -> None:
    accounts = read_accounts_csv(args.accounts)
    personas = assign_personas([account.user_id for account in accounts], SEED)
    for persona, members in users_by_persona(personas).items():
        print(f"{persona.value} ({len(members)}): {DESCRIPTIONS[persona]}")
        print("    " + " ".join(members))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    commands = {"accounts": run_accounts, "prepare": run_prepare, "personas": run_personas}
    commands[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
