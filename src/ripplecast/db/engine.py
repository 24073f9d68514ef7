"""Engines, sessions and transactions for the three supported databases.

The database is chosen by URL: SQLite through aiosqlite (the embedded default, a file in the
data dir), PostgreSQL through asyncpg, MySQL/MariaDB through asyncmy. Plain `postgresql://`,
`mysql://` and `mariadb://` URLs are mapped to those async drivers; anything else is refused
with `DatabaseURLError` at start rather than failing on first use.

Per engine, every connection is set up the same way:
- SQLite: foreign keys ON (off by default, per connection), WAL journal, a busy timeout, and
  transactions begun by us (`BEGIN`), not by the driver's implicit heuristics, so that
  `transaction()` means what it says and DDL is transactional.
- MySQL/MariaDB: utf8mb4, session time zone UTC, pre-ping and recycle (server idle timeouts),
  and a failed CHECK raised as `IntegrityError` like on the other engines.
- PostgreSQL: a bounded pool with pre-ping.

Transactions are explicit: `Database.transaction()` begins one and commits it (or rolls back on
error). Sessions do not expire objects on commit, so attributes stay readable afterwards
without a lazy reload (there is no lazy I/O in async code).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from ripplecast.db.errors import DatabaseURLError
from ripplecast.errors import UsageError

SQLITE_FILE = "ripplecast.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 10
POOL_RECYCLE_SECONDS = 1800

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mysql+aiomysql": "mysql+aiomysql",
    "mariadb": "mariadb+asyncmy",
    "mariadb+asyncmy": "mariadb+asyncmy",
    "mariadb+aiomysql": "mariadb+aiomysql",
}


def database_url_for(data_dir: Path, url: str | None) -> str:
    """The async SQLAlchemy URL to use: `url` normalised, or the SQLite file in `data_dir`.

    Raises `DatabaseURLError` for a malformed URL or an unsupported engine/driver.
    """
    if url is None or not url.strip():
        path = (data_dir / SQLITE_FILE).absolute()
        return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string(
            hide_password=False
        )
    return normalize_url(url).render_as_string(hide_password=False)


def normalize_url(url: str | URL) -> URL:
    """`url` with its driver mapped to the async one (utf8mb4 added for MySQL/MariaDB)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"malformed database URL: {exc}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise DatabaseURLError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite://,"
            " postgresql:// or mysql:// / mariadb:// (async drivers aiosqlite, asyncpg,"
            " asyncmy are chosen automatically)"
        )
    parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # The driver must not begin transactions implicitly; `_sqlite_on_begin` does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


SQLITE_WRITE = "ripplecast_sqlite_write"
"""Execution option: begin this SQLite transaction with the write lock (`BEGIN IMMEDIATE`)."""


def _sqlite_on_begin(connection: Connection) -> None:
    # A deferred transaction that reads, then writes, must upgrade its lock; in WAL mode that
    # fails at once ("database is locked", no busy wait) when another connection wrote since
    # the read. Transactions that will write take the lock up front and wait their turn.
    write = connection.get_execution_options().get(SQLITE_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _mysql_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET time_zone = '+00:00'")
    finally:
        cursor.close()


# MySQL 3819 (ER_CHECK_CONSTRAINT_VIOLATED) and MariaDB 4025 (ER_CONSTRAINT_FAILED) arrive as
# OperationalError; every other engine reports a failed CHECK as IntegrityError, so do we.
_MYSQL_CHECK_FAILED = frozenset({3819, 4025})


def _mysql_on_error(context: ExceptionContext) -> BaseException | None:
    original = context.original_exception
    code = original.args[0] if original.args else None
    if code in _MYSQL_CHECK_FAILED and isinstance(context.sqlalchemy_exception, OperationalError):
        return IntegrityError(context.statement, context.parameters, original)
    return None


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An `AsyncEngine` for `url` (normalised as by `normalize_url`), set up per engine."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"echo": echo}
    if backend == "sqlite":
        # SQLite creates the file on first connect, but not the folder it lives in.
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in str(parsed):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    options.update(pool_size=POOL_SIZE, max_overflow=POOL_MAX_OVERFLOW, pool_pre_ping=True)
    if backend in ("mysql", "mariadb"):
        engine = create_async_engine(parsed, pool_recycle=POOL_RECYCLE_SECONDS, **options)
        event.listen(engine.sync_engine, "connect", _mysql_on_connect)
        event.listen(engine.sync_engine, "handle_error", _mysql_on_error)
        return engine
    return create_async_engine(parsed, **options)


class Database:
    """The metadata database of one node: an engine and its session factory.

    `start()` creates the engine (and, with `upgrade_on_start`, migrates the schema to the
    newest revision first); `close()` disposes it. Use `transaction()` for work that writes,
    `session()` when you manage the transaction yourself.
    """

    def __init__(self, url: str, *, upgrade_on_start: bool = False, echo: bool = False) -> None:
        self.url = normalize_url(url).render_as_string(hide_password=False)
        self.upgrade_on_start = upgrade_on_start
        self.echo = echo
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The engine; raises `UsageError` before `start()` or after `close()`."""
        if self._engine is None:
            raise UsageError("Database is not started")
        return self._engine

    async def start(self) -> None:
        """Create the engine; migrate first if `upgrade_on_start`. Idempotent."""
        if self._engine is not None:
            return
        if self.upgrade_on_start:
            from ripplecast.db.migrate import upgrade

            await upgrade(self.url)
        self._engine = create_engine(self.url, echo=self.echo)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def check(self) -> None:
        """Readiness probe: one `SELECT 1`; raises what the driver raises if it fails."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Dispose of the engine and its pooled connections. Idempotent."""
        engine, self._engine, self._sessions = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A new session (closed on exit); nothing is committed unless you commit."""
        if self._sessions is None:
            raise UsageError("Database is not started")
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction begun now: committed on success, rolled back on error.

        On SQLite it holds the write lock from the start (see `_sqlite_on_begin`)."""
        async with self.session() as session, session.begin():
            if self.engine.dialect.name == "sqlite":
                await session.connection(execution_options={SQLITE_WRITE: True})
            yield session
