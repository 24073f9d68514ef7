"""Video on demand: videos, transcoding jobs, resumable uploads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Self-contained like 0001: the types are spelled here, portable across SQLite, PostgreSQL and
MySQL/MariaDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}
VISIBILITIES = "visibility IN ('public', 'unlisted', 'private')"


def id_type() -> TypeEngine[int]:
    """BIGINT; INTEGER on SQLite so the key is the rowid (autoincrement)."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def key_string(length: int) -> TypeEngine[str]:
    """VARCHAR compared byte for byte (binary collation on MySQL/MariaDB)."""
    binary = mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin")
    return sa.String(length).with_variant(binary, "mysql", "mariadb")


def utc_time() -> TypeEngine[datetime]:
    """TIMESTAMP WITH TIME ZONE; DATETIME(6) holding UTC on MySQL/MariaDB."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def cascade_to(table: str, column: str, parent: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{parent}.id"],
        name=op.f(f"fk_{table}_{column}_{parent}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", id_type(), nullable=False),
        sa.Column("public_id", key_string(16), nullable=False),
        sa.Column("owner_id", id_type(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("source_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("video_codec", sa.String(32), nullable=True),
        sa.Column("audio_codec", sa.String(32), nullable=True),
        sa.Column("renditions", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.Column("created_at", utc_time(), nullable=False),
        sa.Column("updated_at", utc_time(), nullable=False),
        sa.Column("ready_at", utc_time(), nullable=True),
        sa.CheckConstraint(VISIBILITIES, name=op.f("ck_videos_visibility")),
        sa.CheckConstraint(
            "state IN ('processing', 'ready', 'failed')", name=op.f("ck_videos_state")
        ),
        cascade_to("videos", "owner_id", "users"),
        pk("videos"),
        sa.UniqueConstraint("public_id", name=op.f("uq_videos_public_id")),
        **MYSQL_TABLE,
    )
    op.create_index(op.f("ix_videos_owner_id"), "videos", ["owner_id"])
    op.create_index(op.f("ix_videos_state"), "videos", ["state"])
    op.create_table(
        "jobs",
        sa.Column("id", id_type(), nullable=False),
        sa.Column("video_id", id_type(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", utc_time(), nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", utc_time(), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("eta_seconds", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("created_at", utc_time(), nullable=False),
        sa.Column("started_at", utc_time(), nullable=True),
        sa.Column("finished_at", utc_time(), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_jobs_state")
        ),
        cascade_to("jobs", "video_id", "videos"),
        pk("jobs"),
        sa.UniqueConstraint("video_id", name=op.f("uq_jobs_video_id")),
        **MYSQL_TABLE,
    )
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"])
    op.create_index(op.f("ix_jobs_run_after"), "jobs", ["run_after"])
    op.create_index(op.f("ix_jobs_lease_expires_at"), "jobs", ["lease_expires_at"])
    op.create_table(
        "uploads",
        sa.Column("id", id_type(), nullable=False),
        sa.Column("public_id", key_string(32), nullable=False),
        sa.Column("owner_id", id_type(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("created_at", utc_time(), nullable=False),
        sa.Column("expires_at", utc_time(), nullable=False),
        sa.CheckConstraint(VISIBILITIES, name=op.f("ck_uploads_visibility")),
        cascade_to("uploads", "owner_id", "users"),
        pk("uploads"),
        sa.UniqueConstraint("public_id", name=op.f("uq_uploads_public_id")),
        **MYSQL_TABLE,
    )
    op.create_index(op.f("ix_uploads_owner_id"), "uploads", ["owner_id"])
    op.create_index(op.f("ix_uploads_expires_at"), "uploads", ["expires_at"])


def downgrade() -> None:
    for table in ("uploads", "jobs", "videos"):
        op.drop_table(table)
