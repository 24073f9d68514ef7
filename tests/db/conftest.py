"""Database fixtures: every database test runs on SQLite, PostgreSQL and MariaDB (see
tests/databases.py for how each test gets its own fresh database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from databases import db_url
from ripplecast.db.engine import Database, normalize_url
from ripplecast.db.migrate import upgrade

__all__ = ["db_url"]


@pytest.fixture
def dialect(db_url: str) -> str:
    """The backend name of `db_url`: sqlite, postgresql, mysql or mariadb."""
    return normalize_url(db_url).get_backend_name()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A started `Database` on a schema migrated to head."""
    await upgrade(db_url)
    database = Database(db_url)
    await database.start()
    try:
        yield database
    finally:
        await database.close()
