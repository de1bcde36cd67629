"""Command line: ``python -m behavemail_core db upgrade | rules export FILE | rules import FILE``."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .database import create_app_engine, session_factory, upgrade
from .errors import BehavemailError
from .logs import configure_logging
from .portability import export_file, import_document
from .settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m behavemail_core",
                                     description="Manage Behavemail's database, rules and templates.")
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="app database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply the newest schema migrations")
    rules = commands.add_parser("rules", help="rules and templates as YAML").add_subparsers(
        dest="action", required=True)
    export = rules.add_parser("export", help="write every rule and template to FILE")
    export.add_argument("file", type=Path)
    imported = rules.add_parser("import", help="create or update rules and templates from FILE, by name")
    imported.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    try:
        settings = load_settings()
        upgrade(settings.database_url)
        if args.command == "db":
            print("The app database is at the newest schema.")
            return 0
        sessions = session_factory(create_app_engine(settings.database_url))
        with sessions() as session:
            if args.action == "export":
                export_file(session, args.file)
                print(f"Wrote the rules and templates to {args.file}.")
            else:
                if not args.file.is_file():
                    print(f"error: {args.file} does not exist", file=sys.stderr)
                    return 2
                summary = import_document(session, args.file.read_text(encoding="utf-8"),
                                          actor=f"cli:{getpass.getuser()}", source=str(args.file))
                print(f"Imported {args.file}: templates {summary.templates_created} created, "
                      f"{summary.templates_updated} updated, {summary.templates_unchanged} unchanged; "
                      f"rules {summary.rules_created} created, {summary.rules_updated} updated, "
                      f"{summary.rules_unchanged} unchanged.")
    except BehavemailError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
