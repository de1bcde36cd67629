"""Benchmark: one batched accounts query per evaluation against one query per user.

Run: .venv/bin/python bench/bench_account_lookup.py [--accounts 50000] [--lookup 5000] [--repeat 5]

Both variants run in the same process, alternating, against the same SQLite file,
so the ratio holds even when the machine is busy. Results go to stdout; record
them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import bindparam, create_engine, text  # noqa: E402

from behavemail_core.accounts import AccountDirectory  # noqa: E402
from behavemail_core.settings import DEMO_ACCOUNTS_QUERY  # noqa: E402

COLUMNS = ("user_id", "email", "first_name", "last_name", "company", "plan", "country", "timezone",
           "signup_date")


def build(path: Path, count: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute(f"CREATE TABLE accounts ({', '.join(c + ' TEXT' for c in COLUMNS)}, PRIMARY KEY (user_id))")
    connection.executemany(
        "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(f"u{i:06d}", f"user{i}@example.com", "First", "Last", "Company", "pro", "DE", "Europe/Berlin",
          "2024-01-01") for i in range(count)])
    connection.commit()
    connection.close()


def per_user(url: str, ids: list[str]) -> int:
    """Look each matched user up with a query of its own (the naive alternative)."""
    engine = create_engine(url)
    statement = text(DEMO_ACCOUNTS_QUERY).bindparams(bindparam("user_ids", expanding=True))
    found = 0
    with engine.connect() as connection:
        for user_id in ids:
            found += len(connection.execute(statement, {"user_ids": [user_id]}).all())
    engine.dispose()
    return found


def batched(url: str, ids: list[str]) -> int:
    directory = AccountDirectory(url, DEMO_ACCOUNTS_QUERY)
    found = len(directory.lookup(ids))
    directory.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=50_000)
    parser.add_argument("--lookup", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "accounts.db"
        build(path, args.accounts)
        url = f"sqlite:///{path}"
        ids = random.Random(1).sample([f"u{i:06d}" for i in range(args.accounts)], args.lookup)
        timings: dict[str, list[float]] = {"batched": [], "per_user": []}
        for _ in range(args.repeat):
            for name, function in (("batched", batched), ("per_user", per_user)):
                started = time.perf_counter()
                found = function(url, ids)
                timings[name].append(time.perf_counter() - started)
                assert found == args.lookup, (name, found)

    batched_s = statistics.median(timings["batched"])
    per_user_s = statistics.median(timings["per_user"])
    print(f"accounts={args.accounts} looked_up={args.lookup} repeat={args.repeat}")
    print(f"batched   median {batched_s * 1000:8.1f} ms")
    print(f"per user  median {per_user_s * 1000:8.1f} ms")
    print(f"ratio per_user / batched = {per_user_s / batched_s:.1f}")


if __name__ == "__main__":
    main()
