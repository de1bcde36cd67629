"""The account directory: user id -> email, names and attributes, from the customer's database."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .errors import AccountLookupError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("user_id", "email")
# One statement per this many ids; drivers cap bound parameters (SQLite at 32,766).
CHUNK_SIZE = 10_000

Account = Mapping[str, Any]


class AccountDirectory:
    """Looks accounts up with one batched query (BEHAVEMAIL_ACCOUNTS_QUERY) per call."""

    def __init__(self, url: str, query: str, *, engine: Engine | None = None) -> None:
        if ":user_ids" not in query:
            raise AccountLookupError(
                "BEHAVEMAIL_ACCOUNTS_QUERY must take the list of user ids as :user_ids, e.g. "
                "SELECT user_id, email, first_name FROM users WHERE user_id IN :user_ids")
        self._engine = engine or create_engine(url, pool_pre_ping=True)
        self._statement = text(query).bindparams(bindparam("user_ids", expanding=True))

    def close(self) -> None:
        self._engine.dispose()

    def lookup(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the accounts found, keyed by user id as text; missing ids are left out."""
        ids = sorted({str(u) for u in user_ids})
        if not ids:
            return {}
        started = time.monotonic()
        accounts: dict[str, dict[str, Any]] = {}
        try:
            with self._engine.connect() as connection:
                for start in range(0, len(ids), CHUNK_SIZE):
                    result = connection.execute(self._statement, {"user_ids": ids[start:start + CHUNK_SIZE]})
                    columns = list(result.keys())
                    _check_columns(columns)
                    for row in result.mappings():
                        account = dict(row)
                        accounts[str(account["user_id"])] = account
        except SQLAlchemyError as exc:
            raise AccountLookupError(
                f"The accounts query failed ({exc.__class__.__name__}: {_first_line(exc)}): check "
                "BEHAVEMAIL_ACCOUNTS_URL and BEHAVEMAIL_ACCOUNTS_QUERY") from exc
        log.info("accounts looked up requested=%d found=%d duration_ms=%.0f",
                 len(ids), len(accounts), (time.monotonic() - started) * 1000)
        return accounts

    def columns(self) -> list[str]:
        """Return the column names the accounts query returns (for the template editor)."""
        try:
            with self._engine.connect() as connection:
                result = connection.execute(self._statement, {"user_ids": ["__behavemail_probe__"]})
                return list(result.keys())
        except SQLAlchemyError as exc:
            raise AccountLookupError(
                f"The accounts query failed ({_first_line(exc)}): check BEHAVEMAIL_ACCOUNTS_QUERY") from exc


def _check_columns(columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise AccountLookupError(
            f"The accounts query returns no {', '.join(missing)} column (it returns {', '.join(columns)}): "
            "alias your columns, e.g. SELECT id AS user_id, email_address AS email ...")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
