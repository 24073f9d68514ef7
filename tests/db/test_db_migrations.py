"""Migrations: upgrade to head gives exactly the models' schema, and downgrade undoes it."""

from __future__ import annotations

from sqlalchemy import inspect

from ripplecast.db.engine import create_engine
from ripplecast.db.migrate import (
    current_revision,
    downgrade,
    head_revision,
    schema_differences,
    upgrade,
)
from ripplecast.db.models import Base


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: inspect(c).get_table_names())
            return set(names)
    finally:
        await engine.dispose()


def test_one_linear_chain_starting_at_0001() -> None:
    assert head_revision() == "0002"


async def test_upgrade_matches_models_and_downgrade_removes_everything(db_url: str) -> None:
    assert await current_revision(db_url) is None
    await upgrade(db_url)
    assert await current_revision(db_url) == head_revision()
    assert await schema_differences(db_url) == []
    assert await table_names(db_url) == set(Base.metadata.tables) | {"alembic_version"}

    await upgrade(db_url)  # already at head: nothing to do
    assert await current_revision(db_url) == head_revision()

    await downgrade(db_url, "base")
    assert await current_revision(db_url) is None
    assert await table_names(db_url) <= {"alembic_version"}

    await upgrade(db_url)  # and back up again, cleanly
    assert await schema_differences(db_url) == []


async def test_empty_database_differs_from_models(db_url: str) -> None:
    """The comparison used above really detects a missing schema."""
    differences = await schema_differences(db_url)
    added = {diff[1].name for diff in differences if diff[0] == "add_table"}
    assert added == set(Base.metadata.tables)
