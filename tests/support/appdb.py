"""An app database, an accounts database and settings in a temporary folder, for core tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterable, Mapping

from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.settings import Settings, load_settings

ACCOUNT_COLUMNS = ("user_id", "email", "first_name", "last_name", "company", "plan", "country",
                   "timezone", "signup_date")


def write_accounts(path: Path, accounts: Iterable[Mapping[str, Any]]) -> str:
    """Create a SQLite accounts database with the demo's columns; return its URL."""
    connection = sqlite3.connect(path)
    columns = ", ".join(f"{c} TEXT" for c in ACCOUNT_COLUMNS)
    connection.execute(f"CREATE TABLE accounts ({columns}, PRIMARY KEY (user_id))")
    placeholders = ", ".join("?" for _ in ACCOUNT_COLUMNS)
    connection.executemany(f"INSERT INTO accounts VALUES ({placeholders})",
                           [tuple(a.get(c) for c in ACCOUNT_COLUMNS) for a in accounts])
    connection.commit()
    connection.close()
    return f"sqlite:///{path}"


def make_settings(tmp_path: Path, **overrides: str) -> Settings:
    environ = {
        "BEHAVEMAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "BEHAVEMAIL_ACCOUNTS_URL": f"sqlite:///{tmp_path / 'accounts.db'}",
        "BEHAVEMAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        "BEHAVEMAIL_SECRET_KEY": "test-secret-key-for-signing-0123456789",
        "BEHAVEMAIL_SCRAPE_INTERVAL": "60",
        "BEHAVEMAIL_FROM": "Example API <hello@example.com>",
        "BEHAVEMAIL_PUBLIC_URL": "http://127.0.0.1:8502",
        **overrides,
    }
    return load_settings(environ, config_dir=tmp_path)


def migrated_sessions(url: str):
    upgrade(url)
    return session_factory(create_app_engine(url))
