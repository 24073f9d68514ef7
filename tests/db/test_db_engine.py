"""URLs, per-engine connection setup, explicit transactions and `Database`'s life cycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from ripplecast.db.engine import Database, create_engine, database_url_for, normalize_url
from ripplecast.db.errors import DatabaseURLError
from ripplecast.db.migrate import current_revision, head_revision, schema_differences, upgrade
from ripplecast.db.models import User
from ripplecast.errors import RipplecastError, UsageError


def test_default_is_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    url = database_url_for(tmp_path / "data", None)
    assert url == f"sqlite+aiosqlite:///{tmp_path}/data/ripplecast.db"
    assert make_url(url).database == str(tmp_path / "data" / "ripplecast.db")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("mysql://root@h:3306/d", "mysql+asyncmy://root@h:3306/d?charset=utf8mb4"),
        ("mariadb://root@h/d", "mariadb+asyncmy://root@h/d?charset=utf8mb4"),
        ("mysql+asyncmy://r@h/d?charset=utf8mb4", "mysql+asyncmy://r@h/d?charset=utf8mb4"),
    ],
)
def test_plain_urls_map_to_async_drivers(tmp_path: Path, given: str, expected: str) -> None:
    assert database_url_for(tmp_path, given) == expected


@pytest.mark.parametrize(
    "url", ["oracle://h/d", "postgresql+psycopg2://h/d", "mysql+pymysql://h/d", "not a url"]
)
def test_unsupported_urls_are_refused_clearly(tmp_path: Path, url: str) -> None:
    with pytest.raises(DatabaseURLError, match=r"unsupported|malformed") as info:
        database_url_for(tmp_path, url)
    assert isinstance(info.value, RipplecastError)
    with pytest.raises(DatabaseURLError):
        Database(url)


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = create_engine(database_url_for(tmp_path, None))
    try:
        for _ in range(2):  # each new connection, not only the first
            async with engine.connect() as connection:
                assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
                assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
                assert await connection.scalar(text("PRAGMA busy_timeout")) == 5000
            await engine.dispose()
    finally:
        await engine.dispose()


async def test_not_started_is_a_usage_error() -> None:
    database = Database("sqlite:///unused.db")
    with pytest.raises(UsageError):
        _ = database.engine
    with pytest.raises(UsageError):
        async with database.session():
            pass


async def test_upgrade_creates_the_sqlite_folder(tmp_path: Path) -> None:
    url = database_url_for(tmp_path / "not" / "yet", None)
    await upgrade(url)
    assert (tmp_path / "not" / "yet" / "ripplecast.db").is_file()
    assert await schema_differences(url) == []


async def test_embedded_default_upgrades_on_start(tmp_path: Path) -> None:
    url = database_url_for(tmp_path / "new" / "dir", None)
    async with Database(url, upgrade_on_start=True) as database:
        async with database.transaction() as session:
            session.add(User(username="admin", password_hash="x"))
    assert await current_revision(url) == head_revision()
    async with Database(url, upgrade_on_start=True) as database:  # a second start: no-op
        async with database.session() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 1


async def test_transaction_commits_or_rolls_back(db: Database) -> None:
    async with db.transaction() as session:
        session.add(User(username="kept", password_hash="x"))

    async def fail_midway() -> None:
        async with db.transaction() as session:
            session.add(User(username="dropped", password_hash="x"))
            await session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_midway()
    async with db.session() as session:
        session.add(User(username="never committed", password_hash="x"))
        await session.flush()
    async with db.session() as session:
        names = list(await session.scalars(select(User.username)))
    assert names == ["kept"]


async def test_objects_stay_readable_after_commit(db: Database) -> None:
    async with db.transaction() as session:
        user = User(username="alice", password_hash="x")
        session.add(user)
    assert user.username == "alice"  # no expiry, so no reload (which async code cannot do)
    assert user.id is not None


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
async def test_mysql_scheme_on_mariadb_gives_the_same_schema(db_url: str) -> None:
    """`mysql://` (the `mysql` dialect talking to MariaDB) must build the same schema."""
    url = make_url(db_url).set(drivername="mysql").render_as_string(hide_password=False)
    assert normalize_url(url).get_backend_name() == "mysql"
    await upgrade(url)
    assert await schema_differences(url) == []
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            charsets = set(
                await connection.scalars(
                    text(
                        "SELECT DISTINCT CCSA.character_set_name FROM information_schema.tables T"
                        " JOIN information_schema.collation_character_set_applicability CCSA"
                        " ON CCSA.collation_name = T.table_collation"
                        " WHERE T.table_schema = DATABASE() AND T.table_name <> 'alembic_version'"
                    )
                )
            )
            checks = set(
                await connection.scalars(
                    text(
                        "SELECT constraint_name FROM information_schema.check_constraints"
                        " WHERE constraint_schema = DATABASE()"
                    )
                )
            )
    finally:
        await engine.dispose()
    assert charsets == {"utf8mb4"}
    assert {"ck_users_role", "ck_channels_visibility", "ck_channels_slug"} <= checks


async def test_sqlite_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    """A transaction that reads and then writes, while another connection writes: on SQLite
    in WAL mode a deferred transaction would fail at once with "database is locked"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'rc.db'}"
    await upgrade(url)
    async with Database(url) as first, Database(url) as second:

        async def other_writer() -> None:
            async with second.transaction() as session:
                session.add(User(username="bob", password_hash="x"))

        async with first.transaction() as session:
            await session.execute(select(func.count(User.id)))  # a read first
            writer = asyncio.create_task(other_writer())
            await asyncio.sleep(0.3)  # the other connection tries to write meanwhile
            assert not writer.done()  # it waits for our lock
            session.add(User(username="ann", password_hash="x"))
        await asyncio.wait_for(writer, 10)
        async with first.session() as session:
            names = (await session.execute(select(User.username))).scalars().all()
        assert sorted(names) == ["ann", "bob"]
