"""Schema migrations (Alembic), configured in code: no alembic.ini is needed at runtime.

The scripts live in the package (`ripplecast/db/migrations`), revisions are numbered
(`0001`, `0002`, ...) in files named `rNNNN_slug.py`, and they run over the async engine through
`connection.run_sync`. `upgrade()` is what `ripplecast db upgrade` and the embedded default's
start call; `schema_differences()` is how the tests (and `ripplecast db check`) prove that the
migrated schema is exactly the models' schema.

To write the next revision: `make_revision(url, "add videos", "0002")` autogenerates a draft
against a database migrated to head; review it by hand (portable types, names, SQLite batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from ripplecast.db.engine import create_engine, normalize_url
from ripplecast.db.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic `Config` pointing at the packaged scripts (and at `url`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision the packaged scripts define."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _run(url: str, action: Any, *args: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(action, *args)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def _with_connection(connection: Connection) -> Config:
    config = alembic_config()
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_with_connection(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(_with_connection(connection), revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (default: the newest)."""
    await _run(url, _upgrade, revision)


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`"base"`: drop everything)."""
    await _run(url, _downgrade, revision)


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None if it was never migrated."""
    result: str | None = await _run(url, _current)
    return result


async def schema_differences(url: str) -> list[Any]:
    """Alembic's diff between the live schema at `url` and the models; empty when equal."""
    result: list[Any] = await _run(url, _differences)
    return result


def _revision(connection: Connection, message: str, rev_id: str) -> None:
    command.revision(
        _with_connection(connection), message=message, autogenerate=True, rev_id=rev_id
    )


async def make_revision(url: str, message: str, rev_id: str) -> None:
    """Autogenerate a draft revision `rev_id` from the models against the database at `url`."""
    await _run(url, _revision, message, rev_id)
