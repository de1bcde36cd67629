"""Fictional demo accounts: generated from a seed, stored as data/accounts.csv, loaded into SQLite.

The CSV is generated against the fixed :data:`REFERENCE_DATE`, so regenerating it
gives the same file. At demo time :func:`shift_signup_dates` moves every signup date
by whole days so that the reference date becomes the demo's "today", and "signed up
three days ago" stays true whenever the demo runs.
"""

from __future__ import annotations

import csv
import logging
import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from .personas import SEARCH_PLANS, Persona, assign_personas

logger = logging.getLogger(__name__)

SEED = 20240611
ACCOUNT_COUNT = 200
REFERENCE_DATE = date(2025, 1, 15)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
PLANS = ("free", "starter", "pro", "enterprise")
PLAN_WEIGHTS = (40, 30, 22, 8)
COLUMNS = ("user_id", "email", "first_name", "last_name", "company", "plan", "country", "timezone", "signup_date")

# (display name, ASCII spelling for the email address)
FIRST_NAMES = (
    ("Anna", "anna"), ("Ben", "ben"), ("Chloé", "chloe"), ("David", "david"), ("Elena", "elena"),
    ("Fatima", "fatima"), ("Grace", "grace"), ("Hugo", "hugo"), ("Ines", "ines"), ("Jörg", "joerg"),
    ("Kenji", "kenji"), ("Laura", "laura"), ("Łukasz", "lukasz"), ("Mei", "mei"), ("Noah", "noah"),
    ("Olga", "olga"), ("Priya", "priya"), ("Rafael", "rafael"), ("Sofia", "sofia"), ("Tomás", "tomas"),
    ("Uma", "uma"), ("Viktor", "viktor"), ("Wen", "wen"), ("Yusuf", "yusuf"), ("Zoë", "zoe"),
    ("José", "jose"), ("Ayşe", "ayse"), ("Björn", "bjorn"), ("Hiroshi", "hiroshi"), ("Amara", "amara"),
)
LAST_NAMES = (
    ("Müller", "mueller"), ("Sørensen", "sorensen"), ("García", "garcia"), ("田中", "tanaka"),
    ("Nowak", "nowak"), ("Smith", "smith"), ("Okafor", "okafor"), ("Dubois", "dubois"), ("Rossi", "rossi"),
    ("Kowalski", "kowalski"), ("Johansson", "johansson"), ("Novák", "novak"), ("Silva", "silva"),
    ("Yılmaz", "yilmaz"), ("O'Brien", "obrien"), ("Nguyen", "nguyen"), ("Patel", "patel"), ("Kim", "kim"),
    ("佐藤", "sato"), ("Fernández", "fernandez"), ("Weber", "weber"), ("Andersen", "andersen"),
    ("Ivanova", "ivanova"), ("Haddad", "haddad"), ("Brown", "brown"),
)
COMPANY_WORDS = (
    "Acme", "Bluefin", "Cobalt", "Driftwood", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper",
    "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchid", "Pylon", "Quartz", "Rook", "Sable", "Tundra",
)
COMPANY_SUFFIXES = ("Labs", "Logistics", "Health", "Pay", "Analytics", "Studio", "Systems", "Foods", "Travel", "GmbH")
# (country code, IANA time zones used there)
COUNTRIES = (
    ("US", ("America/New_York", "America/Chicago", "America/Los_Angeles")),
    ("DE", ("Europe/Berlin",)),
    ("GB", ("Europe/London",)),
    ("FR", ("Europe/Paris",)),
    ("PL", ("Europe/Warsaw",)),
    ("DK", ("Europe/Copenhagen",)),
    ("ES", ("Europe/Madrid",)),
    ("BR", ("America/Sao_Paulo",)),
    ("JP", ("Asia/Tokyo",)),
    ("IN", ("Asia/Kolkata",)),
    ("AU", ("Australia/Sydney",)),
    ("NG", ("Africa/Lagos",)),
)


@dataclass(frozen=True)
class Account:
    """One row of the demo accounts table."""

    user_id: str
    email: str
    first_name: str
    last_name: str
    company: str
    plan: str
    country: str
    timezone: str
    signup_date: date


def user_ids(count: int = ACCOUNT_COUNT) -> list[str]:
    """Return the demo user ids u0001, u0002, … in order."""
    return [f"u{number:04d}" for number in range(1, count + 1)]


def signup_days_ago(persona: Persona, rng: random.Random) -> int:
    """Pick how many days before the reference date an account of ``persona`` signed up."""
    if persona is Persona.STALLED_AFTER_SIGNUP:
        return rng.randint(4, 6)
    if persona is Persona.NEW:
        return rng.randint(1, 6)
    # Every other persona is an established customer: more than 30 days old.
    return rng.randint(35, 900)


def choose_plan(persona: Persona, rng: random.Random) -> str:
    """Pick a plan; users who never tried search are all on the plans that rule targets."""
    if persona is Persona.SEARCH_NEVER_TRIED:
        return rng.choices(SEARCH_PLANS, (3, 1))[0]
    return rng.choices(PLANS, PLAN_WEIGHTS)[0]


def generate_accounts(
    count: int = ACCOUNT_COUNT, seed: int = SEED, reference_date: date = REFERENCE_DATE
) -> list[Account]:
    """Generate ``count`` accounts, the same ones for the same arguments."""
    rng = random.Random(seed)
    personas = assign_personas(user_ids(count), seed)
    taken_emails: set[str] = set()
    accounts = []
    for user_id in user_ids(count):
        first, first_ascii = rng.choice(FIRST_NAMES)
        last, last_ascii = rng.choice(LAST_NAMES)
        country, zones = rng.choice(COUNTRIES)
        company = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        local_part = f"{first_ascii}.{last_ascii}"
        domain = rng.choice(EMAIL_DOMAINS)
        email = f"{local_part}@{domain}"
        if email in taken_emails:
            email = f"{local_part}.{user_id}@{domain}"
        taken_emails.add(email)
        accounts.append(
            Account(
                user_id=user_id,
                email=email,
                first_name=first,
                last_name=last,
                company=company,
                plan=choose_plan(personas[user_id], rng),
                country=country,
                timezone=rng.choice(zones),
                signup_date=reference_date - timedelta(days=signup_days_ago(personas[user_id], rng)),
            )
        )
    return accounts


def write_accounts_csv(accounts: Iterable[Account], path: Path) -> None:
    """Write accounts as UTF-8 CSV with a header row of :data:`COLUMNS`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(COLUMNS)
        for account in accounts:
            writer.writerow([_column_text(account, column) for column in COLUMNS])


def _column_text(account: Account, column: str) -> str:
    value = getattr(account, column)
    return value.isoformat() if isinstance(value, date) else value


def read_accounts_csv(path: Path) -> list[Account]:
    """Read accounts written by :func:`write_accounts_csv`."""
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}: expected {list(COLUMNS)}")
        return [
            Account(**{**row, "signup_date": date.fromisoformat(row["signup_date"])})
            for row in reader
        ]


def shift_signup_dates(accounts: Sequence[Account], today: date, reference_date: date = REFERENCE_DATE) -> list[Account]:
    """Move every signup date by ``today - reference_date`` days, keeping the accounts' ages."""
    offset = today - reference_date
    return [replace(account, signup_date=account.signup_date + offset) for account in accounts]


def build_accounts_db(accounts: Sequence[Account], path: Path) -> None:
    """Write accounts into a fresh SQLite file with one table ``accounts`` keyed by user_id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    connection = sqlite3.connect(temporary)
    try:
        connection.execute(
            "CREATE TABLE accounts (user_id TEXT PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, "
            "last_name TEXT, company TEXT, plan TEXT, country TEXT, timezone TEXT, signup_date TEXT)"
        )
        connection.executemany(
            f"INSERT INTO accounts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [[_column_text(account, column) for column in COLUMNS] for account in accounts],
        )
        connection.commit()
    finally:
        connection.close()
    # Replace the old file in one step, so a running app never reads a half-written table.
    temporary.replace(path)
    logger.info("wrote %d accounts to %s", len(accounts), path)

