"""The API suite runs on every metadata engine: SQLite, PostgreSQL and MariaDB.

`make_node` is wrapped so that each node it starts uses a fresh database of the engine under
test (from tests/databases.py), migrated first as an operator would with `ripplecast db upgrade`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from databases import db_url
from ripplecast.db.migrate import upgrade
from support import NodeFactory, RunningNode

__all__ = ["db_url"]


@pytest.fixture
def make_node(make_node: NodeFactory, db_url: str) -> NodeFactory:
    """Nodes on the engine under test."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[RunningNode]:
        await upgrade(db_url)
        async with make_node(database_url=db_url, **overrides) as running:
            yield running

    return factory
