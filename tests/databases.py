"""Fresh databases on SQLite, PostgreSQL and MariaDB, for every suite that runs on all three.

SQLite is a file in `tmp_path`. PostgreSQL and MariaDB are the machine's servers (URLs
overridable with RIPPLECAST_TEST_POSTGRESQL_URL / RIPPLECAST_TEST_MARIADB_URL); each test gets
its own freshly created database `rc_test_<random>`, dropped afterwards, so tests never see
each other's rows or leftovers. An unreachable server skips its tests, or fails them when
RIPPLECAST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ripplecast.db.engine import normalize_url
from support import REQUIRE_SERVICES

ENGINES = ["sqlite", "postgresql", "mariadb"]

SERVER_URLS = {
    "postgresql": os.environ.get(
        "RIPPLECAST_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("RIPPLECAST_TEST_MARIADB_URL", "mariadb://root@127.0.0.1:3306/test"),
}

_unreachable: dict[str, str] = {}


def _admin_engine(kind: str) -> AsyncEngine:
    url = normalize_url(SERVER_URLS[kind])
    connect_args = {"timeout": 5} if kind == "postgresql" else {"connect_timeout": 5}
    return create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args)


def _unavailable(kind: str, reason: str) -> None:
    message = f"{kind} server at {SERVER_URLS[kind]} is unreachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=ENGINES)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database on each engine."""
    kind: str = request.param
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ripplecast.db'}"
        return
    if kind in _unreachable:
        _unavailable(kind, _unreachable[kind])
    name = f"rc_test_{secrets.token_hex(6)}"
    admin = _admin_engine(kind)
    try:
        try:
            connection = await admin.connect()
        except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
            _unreachable[kind] = f"{type(exc).__name__}: {exc}"
            _unavailable(kind, _unreachable[kind])
        try:
            if kind == "postgresql":
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                # latin1 on purpose: the schema must bring utf8mb4 itself, whatever the
                # server's or database's default character set is.
                await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET latin1"))
        finally:
            await connection.close()
        try:
            yield (
                make_url(SERVER_URLS[kind]).set(database=name).render_as_string(hide_password=False)
            )
        finally:
            async with admin.connect() as connection:
                if kind == "postgresql":
                    await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await admin.dispose()
