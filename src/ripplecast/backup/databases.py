"""Dumps and restores of the metadata database, one way per engine.

- SQLite: a snapshot through SQLite's online backup API (`sqlite3.Connection.backup`), copied
  in one step under one read transaction, so it is consistent while the node writes (WAL
  readers do not block writers). Never a copy of the file: a live WAL database is the file
  plus its -wal, changing underneath. The snapshot is integrity-checked and turned into a
  self-contained rollback-journal file. Restored the same way, into a new file.
- PostgreSQL: `pg_dump --format=custom` (one transaction, a consistent snapshot) and
  `pg_restore --single-transaction`. pg_dump must be of the server's major version: it is
  looked for in /usr/lib/postgresql/MAJOR/bin (Debian's layout) before PATH, and its version
  is checked before it runs.
- MariaDB/MySQL: `mariadb-dump --single-transaction --routines` (or mysqldump) and the
  `mariadb` (or mysql) client.

Credentials never appear on a command line (where `ps` shows them): PostgreSQL programs get
them in PG* environment variables, MariaDB programs in a private option file (mode 0600, in a
private temporary folder, removed afterwards). Error messages carry the programs' own stderr,
which does not contain passwords; URLs are only ever shown with the password hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError

from ripplecast.backup.errors import BackupError, DatabaseToolError
from ripplecast.backup.manifest import DatabaseKind
from ripplecast.db import create_engine, normalize_url
from ripplecast.db.models import Base

__all__ = [
    "Dump",
    "PgTool",
    "RestoreTools",
    "database_contents",
    "display_url",
    "drop_all_tables",
    "dump_database",
    "find_pg_tool",
    "find_restore_tools",
    "kind_of",
    "restore_database",
]

ALEMBIC_TABLE = "alembic_version"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
"""How long the snapshot waits for a SQLite write lock held by the node (a checkpoint)."""
CONNECT_TIMEOUT_SECONDS = 10
"""Connection timeout given to pg_dump and pg_restore."""
STDERR_KEPT = 4000
"""Characters of a failed program's stderr carried into the error."""
DEBIAN_POSTGRESQL_BIN = Path("/usr/lib/postgresql")

_PG_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


@dataclass(frozen=True, slots=True)
class Dump:
    """What `dump_database` made."""

    kind: DatabaseKind
    tool: str
    """The program and its version."""
    server_version: str
    schema_revision: str | None


@dataclass(frozen=True, slots=True)
class RestoreTools:
    """The programs a restore will run, found and version-checked before anything changes."""

    kind: DatabaseKind
    client: Path | None
    """pg_restore or the mariadb client; None for SQLite."""
    description: str


def kind_of(url: str) -> DatabaseKind:
    """The engine of a database URL (`DatabaseURLError` if unsupported)."""
    backend = normalize_url(url).get_backend_name()
    if backend == "sqlite":
        return DatabaseKind.SQLITE
    if backend == "postgresql":
        return DatabaseKind.POSTGRESQL
    return DatabaseKind.MARIADB


def display_url(url: str) -> str:
    """`url` for messages: the password hidden, a SQLite file as its path."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.database)
    return parsed.set(drivername=backend).render_as_string(hide_password=True)


# --- dump -------------------------------------------------------------------------------------


async def dump_database(url: str, target: Path) -> Dump:
    """Write a consistent dump of the database at `url` to `target` (a new file).

    Raises `BackupError` (no such SQLite file, a damaged snapshot) or `DatabaseToolError`.
    """
    kind = kind_of(url)
    if kind is DatabaseKind.SQLITE:
        source = _sqlite_path(url)
        revision, version = await asyncio.to_thread(_sqlite_snapshot, source, target)
        return Dump(kind, f"SQLite online backup API (SQLite {version})", version, revision)
    facts = await _server_facts(url)
    parsed = make_url(url)
    if kind is DatabaseKind.POSTGRESQL:
        pg_dump = await find_pg_tool("pg_dump", facts.major)
        await _run_tool(
            [str(pg_dump.path), "--format=custom", "--no-password", f"--file={target}"],
            env=_pg_env(parsed),
            what="pg_dump",
        )
        return Dump(kind, pg_dump.version, facts.version, facts.revision)
    tool = _which_first("mariadb-dump", "mysqldump")
    version = await _tool_version(tool)
    with _mysql_options(parsed) as options:
        await _run_tool(
            [
                str(tool),
                f"--defaults-extra-file={options}",
                "--single-transaction",
                "--routines",
                "--triggers",
                "--hex-blob",
                "--default-character-set=utf8mb4",
                "--no-tablespaces",
                f"--result-file={target}",
                _mysql_database(parsed),
            ],
            env=_mysql_env(),
            what=tool.name,
        )
    return Dump(kind, version, facts.version, facts.revision)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or "mode=memory" in url:
        raise BackupError(f"{display_url(url)}: an in-memory SQLite database cannot be backed up")
    return Path(database)


def _sqlite_connect(path: Path, mode: str) -> sqlite3.Connection:
    # A URI with mode=rw never creates the file (a missing database is an error, not a new one).
    uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)


def _sqlite_snapshot(source: Path, target: Path) -> tuple[str | None, str]:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source} (is the data dir right?)")
    with (
        contextlib.closing(_sqlite_connect(source, "rw")) as src,
        contextlib.closing(_sqlite_connect(target, "rwc")) as dst,
    ):
        # pages=-1: the whole database in one step, under one read transaction: a snapshot.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")
        verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the snapshot of {source} fails SQLite's integrity check: {verdict}")
        return _sqlite_revision(dst), sqlite3.sqlite_version


def _sqlite_revision(connection: sqlite3.Connection) -> str | None:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (ALEMBIC_TABLE,)
    ).fetchone()
    if found is None:
        return None
    row = connection.execute(f"SELECT version_num FROM {ALEMBIC_TABLE}").fetchone()
    return None if row is None else str(row[0])


# --- what a database holds -------------------------------------------------------------------


async def database_contents(url: str) -> dict[str, int]:
    """Rows per table of the database at `url` ({} when it has no tables; a SQLite file that
    does not exist is not created). Raises `BackupError` when the server cannot be reached."""
    if kind_of(url) is DatabaseKind.SQLITE:
        return await asyncio.to_thread(_sqlite_contents, _sqlite_path(url))
    async with _connection(url) as connection:
        counts: dict[str, int] = {}
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        for name in sorted(names):
            rows = await connection.scalar(select(func.count()).select_from(table(name)))
            counts[name] = int(rows or 0)
        return counts


def _sqlite_contents(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with contextlib.closing(_sqlite_connect(path, "ro")) as connection:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            name: int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
            for name in names
        }


async def drop_all_tables(url: str) -> None:
    """Remove every table of the database at `url` (a SQLite file and its journals)."""
    if kind_of(url) is DatabaseKind.SQLITE:
        await asyncio.to_thread(_sqlite_remove, _sqlite_path(url))
        return
    async with _connection(url) as connection:

        def drop(sync: Connection) -> None:
            # Reflect what is there (any revision, alembic_version included) and drop it in
            # dependency order.
            metadata = type(Base.metadata)()
            metadata.reflect(sync)
            metadata.drop_all(sync)

        await connection.run_sync(drop)
        await connection.commit()


def _sqlite_remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _Facts:
    version: str
    major: int
    revision: str | None


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            yield connection
    except (OSError, DBAPIError) as exc:
        # The driver's own message, without SQLAlchemy's statement and background link.
        detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        raise BackupError(f"cannot use the database {display_url(url)}: {detail}") from None
    finally:
        await engine.dispose()


async def _server_facts(url: str) -> _Facts:
    async with _connection(url) as connection:
        if kind_of(url) is DatabaseKind.POSTGRESQL:
            version = str(await connection.scalar(text("SHOW server_version")))
            major = int(await connection.scalar(text("SHOW server_version_num"))) // 10000
        else:
            version = str(await connection.scalar(text("SELECT VERSION()")))
            major = int(version.split(".", 1)[0])
        has_alembic = await connection.run_sync(lambda sync: inspect(sync).has_table(ALEMBIC_TABLE))
        revision = None
        if has_alembic:
            found = await connection.scalar(text(f"SELECT version_num FROM {ALEMBIC_TABLE}"))
            revision = None if found is None else str(found)
        return _Facts(version, major, revision)


# --- restore -----------------------------------------------------------------------------------


async def find_restore_tools(kind: DatabaseKind, url: str, dump_tool: str) -> RestoreTools:
    """The program restoring a `kind` dump made by `dump_tool` into `url`, checked now.

    PostgreSQL: pg_restore of the target server's major version, and not older than the
    pg_dump that made the dump (it cannot read newer archives). Raises `DatabaseToolError`,
    or `BackupError` if the target server cannot be reached.
    """
    if kind_of(url) is not kind:
        raise BackupError(
            f"the backup holds a {kind} database but the settings name a"
            f" {kind_of(url)} one ({display_url(url)}); restore into the same engine"
        )
    if kind is DatabaseKind.SQLITE:
        return RestoreTools(kind, None, f"SQLite {sqlite3.sqlite_version}")
    facts = await _server_facts(url)
    if kind is DatabaseKind.POSTGRESQL:
        pg_restore = await find_pg_tool("pg_restore", facts.major)
        made_by = _PG_VERSION.search(dump_tool)
        if made_by is not None and int(made_by.group(1)) > pg_restore.major:
            raise DatabaseToolError(
                f"the dump was made by {dump_tool}; {pg_restore.version} cannot read it"
                f" (pg_restore must be at least version {made_by.group(1)})"
            )
        return RestoreTools(kind, pg_restore.path, f"{pg_restore.version}, server {facts.version}")
    client = _which_first("mariadb", "mysql")
    return RestoreTools(kind, client, f"{await _tool_version(client)}, server {facts.version}")


async def restore_database(tools: RestoreTools, url: str, dump: Path) -> None:
    """Load `dump` into the (empty) database at `url` with `tools`."""
    if tools.kind is DatabaseKind.SQLITE:
        await asyncio.to_thread(_sqlite_restore, dump, _sqlite_path(url))
        return
    assert tools.client is not None
    parsed = make_url(url)
    if tools.kind is DatabaseKind.POSTGRESQL:
        await _run_tool(
            [
                str(tools.client),
                "--no-password",
                "--exit-on-error",
                "--single-transaction",
                "--no-owner",
                "--no-privileges",
                f"--dbname={parsed.database}",
                str(dump),
            ],
            env=_pg_env(parsed),
            what="pg_restore",
        )
        return
    with _mysql_options(parsed) as options, dump.open("rb") as statements:
        await _run_tool(
            [
                str(tools.client),
                f"--defaults-extra-file={options}",
                "--default-character-set=utf8mb4",
                "--binary-mode",
                _mysql_database(parsed),
            ],
            env=_mysql_env(),
            what=tools.client.name,
            stdin=statements,
        )


def _sqlite_restore(dump: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(_sqlite_connect(dump, "ro")) as src,
        contextlib.closing(_sqlite_connect(target, "rwc")) as dst,
    ):
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=WAL")


# --- programs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgTool:
    """A PostgreSQL program and its version."""

    path: Path
    version: str
    major: int


async def find_pg_tool(name: str, server_major: int) -> PgTool:
    """`name` (pg_dump, pg_restore) of PostgreSQL `server_major`: Debian's versioned folder
    first (the /usr/bin wrapper may pick another version), then PATH. Raises
    `DatabaseToolError` naming what was found instead."""
    candidates = [DEBIAN_POSTGRESQL_BIN / str(server_major) / "bin" / name]
    on_path = shutil.which(name)
    if on_path is not None:
        candidates.append(Path(on_path))
    found: list[str] = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        version = await _tool_version(candidate)
        match = _PG_VERSION.search(version)
        major = int(match.group(1)) if match else -1
        if major == server_major:
            return PgTool(candidate, version, major)
        found.append(f"{candidate} is {version!r}")
    seen = "; ".join(found) if found else f"no {name} in {candidates[0].parent} or on PATH"
    raise DatabaseToolError(
        f"{name} of PostgreSQL {server_major} (the server's major version) is needed: {seen}."
        f" Install it (Debian: apt-get install postgresql-client-{server_major}) or put it"
        " first on PATH"
    )


def _which_first(*names: str) -> Path:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return Path(path)
    raise DatabaseToolError(
        f"none of {', '.join(names)} is installed (Debian: apt-get install mariadb-client)"
    )


async def _tool_version(path: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        str(path),
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise DatabaseToolError(f"{path} --version failed: {err.decode(errors='replace')}")
    return out.decode(errors="replace").strip()


async def _run_tool(
    argv: list[str], *, env: Mapping[str, str], what: str, stdin: Any = None
) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    try:
        _, err = await process.communicate()
    except BaseException:
        # Cancelled (Ctrl-C): the program must not outlive us, half-way through a restore.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        output = err.decode(errors="replace").strip()[-STDERR_KEPT:]
        raise DatabaseToolError(f"{what} failed (exit status {process.returncode}): {output}")


def _pg_env(url: URL) -> dict[str, str]:
    # The caller's PG* variables could point the program elsewhere: only ours count.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    for variable, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
        ("PGSSLMODE", url.query.get("sslmode") or url.query.get("ssl")),
    ):
        if value:
            env[variable] = str(value if not isinstance(value, tuple) else value[-1])
    env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_SECONDS)
    env["PGAPPNAME"] = "ripplecast backup"
    return env


def _mysql_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MYSQL_", "MARIADB_"))
    }


def _mysql_database(url: URL) -> str:
    name = url.database or ""
    if not name or name.startswith("-"):
        raise BackupError(f"{display_url(str(url))}: the URL names no usable database")
    return name


def _option_value(name: str, value: str) -> str:
    if any(char in value for char in "\n\r"):
        raise BackupError(f"the database {name} contains a line break; the client cannot take it")
    quote_char = '"' if '"' not in value else "'"
    if quote_char in value:
        raise BackupError(f"the database {name} contains both kinds of quotes")
    return quote_char + value.replace("\\", "\\\\") + quote_char


@contextlib.contextmanager
def _mysql_options(url: URL) -> Any:
    """A private [client] option file with the URL's host, port, user and password."""
    # [client] is read by both mariadb-dump and mariadb; connect-timeout is not a dump option.
    lines = ["[client]", "protocol=TCP"]
    lines.append(f"host={_option_value('host', url.host or '127.0.0.1')}")
    lines.append(f"port={url.port or 3306}")
    if url.username:
        lines.append(f"user={_option_value('user name', url.username)}")
    if url.password:
        lines.append(f"password={_option_value('password', str(url.password))}")
    with tempfile.TemporaryDirectory(prefix="ripplecast-backup-") as folder:
        path = Path(folder) / "client.cnf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        yield path
