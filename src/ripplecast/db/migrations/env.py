"""Alembic environment: runs migrations on the connection `ripplecast.db.migrate` hands over.

`config.attributes["connection"]` is a synchronous facade of an async connection (from
`AsyncConnection.run_sync`). Without one (the `alembic` command line with an ini file), an
async engine is made from `sqlalchemy.url`. SQLite gets batch mode, since it alters tables by
copying them.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from ripplecast.db.engine import create_engine
from ripplecast.db.models import Base

target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: set sqlalchemy.url or pass a connection")
    asyncio.run(run_with_own_engine(url))


main()
