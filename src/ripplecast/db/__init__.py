"""The metadata database: SQLAlchemy 2 (asyncio) models, engines, and Alembic migrations.

- `models`: the schema (users, sessions, API tokens, channels, stream keys, webhooks).
- `engine`: URL handling, per-engine connection setup, `Database` (sessions, transactions).
- `migrate`: `upgrade`, `downgrade`, `current_revision`, `schema_differences`.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) and MySQL/MariaDB (asyncmy)
are chosen by URL. The package imports nothing above it (no HTTP, live or protocol code).
"""

from __future__ import annotations

from ripplecast.db.engine import Database, create_engine, database_url_for, normalize_url
from ripplecast.db.errors import DatabaseError, DatabaseURLError

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseURLError",
    "create_engine",
    "database_url_for",
    "normalize_url",
]
