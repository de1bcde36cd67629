"""Alembic migrations: they reach the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from behavemail_core import database
from behavemail_core.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_cluster").new_database()
    return f"sqlite:///{tmp_path / 'app.db'}"


def test_migrations_match_models(database_url: str) -> None:
    database.upgrade(database_url)
    engine = create_engine(database_url)

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()

    assert differences == []


def test_upgrade_twice_is_harmless(database_url: str) -> None:
    database.upgrade(database_url)
    database.upgrade(database_url)
