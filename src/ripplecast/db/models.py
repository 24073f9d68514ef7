"""The metadata schema: users, sessions, API tokens, channels, stream keys, webhooks, and for
video on demand: videos, their transcoding jobs and unfinished resumable uploads.

Invariants kept by the database itself, on every engine (not only by Python):
- unique: user names, e-mails, session/token/stream-key hashes, channel slugs, a user's token
  names;
- foreign keys with `ON DELETE CASCADE`: deleting a user deletes their sessions, tokens,
  channels (and so those channels' stream keys) and webhooks;
- a video has at most one job (unique `jobs.video_id`);
- CHECKs: roles, visibilities and states are one of their enum values; a channel slug follows the
  stream-name rule (`STREAM_NAME_PATTERN` in config: ASCII letters, digits, `_.-`, not starting
  with `.`, `_` or `-`, at most `SLUG_MAX_LENGTH`).

Secrets are never stored in the clear, except webhook secrets (they sign deliveries, so they
cannot be hashed): sessions keep the SHA-256 hex of the random session id, API tokens and
stream keys the hex digest the accounts layer computes. Times are aware UTC (`UTCDateTime`).

Relationships are `lazy="raise"`: async code must say what it loads (`selectinload`), and an
unplanned load is an error instead of hidden I/O. One-to-many relationships use
`passive_deletes=True` so deleting a parent leaves the children to the database's cascade.

Primary keys are integers (BIGINT, INTEGER on SQLite so it is the rowid): compact, ordered,
cheap to join. They are internal; what users see are names, slugs and token prefixes.
The naming convention keeps every constraint and index name identical across engines, so
migrations can name what they alter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeEngine

from ripplecast.db.types import StrEnumType, UTCDateTime, WordSet, key_string

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SLUG_MAX_LENGTH = 64
USERNAME_MAX_LENGTH = 64
USER_AGENT_MAX_LENGTH = 255
HEX_DIGEST_LENGTH = 64
"""SHA-256 / HMAC-SHA256 as lowercase hex."""

ID_TYPE: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the only kind the schema stores)."""
    return datetime.now(UTC)


class Role(StrEnum):
    ADMIN = "admin"
    CREATOR = "creator"
    VIEWER = "viewer"


class Visibility(StrEnum):
    PUBLIC = "public"
    UNLISTED = "unlisted"
    PRIVATE = "private"


class VideoState(StrEnum):
    PROCESSING = "processing"
    """Uploaded and probed; its job has not stored every rendition yet (not playable)."""
    READY = "ready"
    """Every rendition and the master playlist are stored: playable."""
    FAILED = "failed"
    """Transcoding gave up; `error` says why."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def _in_enum(column: str, enum_class: type[StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum_class)
    return f"{column} IN ({values})"


# The slug rule per engine: no portable regular expression exists, so each engine gets its
# own spelling of the same rule, under the same constraint name (only one is ever created).
SLUG_CHECKS = {
    "sqlite": (
        f"length(slug) BETWEEN 1 AND {SLUG_MAX_LENGTH}"
        " AND slug GLOB '[A-Za-z0-9]*' AND slug NOT GLOB '*[^A-Za-z0-9_.-]*'"
    ),
    "postgresql": (
        f"length(slug) BETWEEN 1 AND {SLUG_MAX_LENGTH}"
        " AND slug ~ '^[A-Za-z0-9]' AND slug !~ '[^A-Za-z0-9_.-]'"
    ),
    "mysql": (
        f"length(slug) BETWEEN 1 AND {SLUG_MAX_LENGTH}"
        " AND slug REGEXP '^[A-Za-z0-9]' AND NOT slug REGEXP '[^A-Za-z0-9_.-]'"
    ),
}
SLUG_CHECKS["mariadb"] = SLUG_CHECKS["mysql"]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The `mariadb` dialect reads only `mariadb_*` options, the `mysql` one only `mysql_*`.
_MYSQL_TABLE = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


def _user_fk() -> Mapped[int]:
    return mapped_column(ID_TYPE, ForeignKey("users.id", ondelete="CASCADE"), index=True)


class User(Base):
    """An account. `password_hash` is an argon2id PHC string, never a password."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in_enum("role", Role), name="role"), _MYSQL_TABLE)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    username: Mapped[str] = mapped_column(key_string(USERNAME_MAX_LENGTH), unique=True)
    email: Mapped[str | None] = mapped_column(key_string(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(StrEnumType(Role, 16), default=Role.VIEWER)
    disabled: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    created_at: Mapped[datetime] = _created_at()
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    sessions: Mapped[list[UserSession]] = relationship(
        back_populates="user", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    api_tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    channels: Mapped[list[Channel]] = relationship(
        back_populates="owner", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    webhooks: Mapped[list[Webhook]] = relationship(
        back_populates="owner", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    videos: Mapped[list[Video]] = relationship(
        back_populates="owner", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    uploads: Mapped[list[Upload]] = relationship(
        back_populates="owner", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class UserSession(Base):
    """A browser login. `token_hash` is the SHA-256 hex of the random id in the cookie."""

    __tablename__ = "sessions"
    __table_args__ = (_MYSQL_TABLE,)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    token_hash: Mapped[str] = mapped_column(key_string(HEX_DIGEST_LENGTH), unique=True)
    user_id: Mapped[int] = _user_fk()
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))

    user: Mapped[User] = relationship(back_populates="sessions", lazy="raise")

    @validates("user_agent")
    def _truncate_user_agent(self, key: str, value: str | None) -> str | None:
        return None if value is None else value[:USER_AGENT_MAX_LENGTH]


class ApiToken(Base):
    """A bearer token for the API. `prefix` is shown to the owner to tell tokens apart."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("user_id", "name"), _MYSQL_TABLE)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    user_id: Mapped[int] = _user_fk()
    name: Mapped[str] = mapped_column(key_string(100))
    token_hash: Mapped[str] = mapped_column(key_string(HEX_DIGEST_LENGTH), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[tuple[str, ...]] = mapped_column(WordSet(1000), default=())
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="api_tokens", lazy="raise")


class Channel(Base):
    """A live channel; its `slug` is the stream name. Live status is runtime state."""

    __tablename__ = "channels"
    __table_args__ = (
        CheckConstraint(_in_enum("visibility", Visibility), name="visibility"),
        *(
            CheckConstraint(rule, name="slug").ddl_if(dialect=dialect)
            for dialect, rule in SLUG_CHECKS.items()
        ),
        _MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    owner_id: Mapped[int] = _user_fk()
    slug: Mapped[str] = mapped_column(key_string(SLUG_MAX_LENGTH), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text(), default="")
    visibility: Mapped[Visibility] = mapped_column(
        StrEnumType(Visibility, 16), default=Visibility.PUBLIC
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    last_live_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    owner: Mapped[User] = relationship(back_populates="channels", lazy="raise")
    stream_keys: Mapped[list[StreamKey]] = relationship(
        back_populates="channel", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class StreamKey(Base):
    """A key that lets its holder publish to one channel. `key_hash` is a keyed hex digest."""

    __tablename__ = "stream_keys"
    __table_args__ = (_MYSQL_TABLE,)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ID_TYPE, ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(key_string(HEX_DIGEST_LENGTH), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    channel: Mapped[Channel] = relationship(back_populates="stream_keys", lazy="raise")


class Webhook(Base):
    """An HTTP endpoint told about events. `secret` signs deliveries, so it is kept as given."""

    __tablename__ = "webhooks"
    __table_args__ = (_MYSQL_TABLE,)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    owner_id: Mapped[int] = _user_fk()
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[tuple[str, ...]] = mapped_column(WordSet(1000), default=())
    secret: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean(), default=True, server_default=true())
    created_at: Mapped[datetime] = _created_at()
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer())
    last_error: Mapped[str | None] = mapped_column(String(500))

    owner: Mapped[User] = relationship(back_populates="webhooks", lazy="raise")


PUBLIC_ID_LENGTH = 16
"""Random URL-safe ids of videos and uploads: unguessable, so unlisted videos stay unlisted."""


class Video(Base):
    """An uploaded video. Its media objects live in storage under `vod/<public_id>/`, the
    source under `sources/<public_id>`; `renditions` describes what the job made."""

    __tablename__ = "videos"
    __table_args__ = (
        CheckConstraint(_in_enum("visibility", Visibility), name="visibility"),
        CheckConstraint(_in_enum("state", VideoState), name="state"),
        _MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    public_id: Mapped[str] = mapped_column(key_string(PUBLIC_ID_LENGTH), unique=True)
    owner_id: Mapped[int] = _user_fk()
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text(), default="")
    visibility: Mapped[Visibility] = mapped_column(
        StrEnumType(Visibility, 16), default=Visibility.PUBLIC
    )
    state: Mapped[VideoState] = mapped_column(
        StrEnumType(VideoState, 16), default=VideoState.PROCESSING, index=True
    )
    source_name: Mapped[str] = mapped_column(String(255), default="")
    source_bytes: Mapped[int] = mapped_column(BigInteger(), default=0)
    duration_seconds: Mapped[float | None] = mapped_column(Float())
    width: Mapped[int | None] = mapped_column(Integer())
    height: Mapped[int | None] = mapped_column(Integer())
    video_codec: Mapped[str | None] = mapped_column(String(32))
    audio_codec: Mapped[str | None] = mapped_column(String(32))
    renditions: Mapped[list[dict[str, object]]] = mapped_column(JSON(), default=list)
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    owner: Mapped[User] = relationship(back_populates="videos", lazy="raise")
    job: Mapped[Job | None] = relationship(
        back_populates="video",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        uselist=False,
    )


class Job(Base):
    """A transcoding job: a durable queue entry claimed by one worker at a time.

    A worker claims a QUEUED job whose `run_after` has come (or a RUNNING one whose lease
    expired), sets `lease_owner` and `lease_expires_at`, and bumps `fence`. It renews the
    lease while it works; every write it makes later (progress, done, failed) is conditional
    on `fence` still being its own, so a worker that lost its lease changes nothing."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in_enum("state", JobState), name="state"),
        _MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    video_id: Mapped[int] = mapped_column(
        ID_TYPE, ForeignKey("videos.id", ondelete="CASCADE"), unique=True
    )
    state: Mapped[JobState] = mapped_column(
        StrEnumType(JobState, 16), default=JobState.QUEUED, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    max_attempts: Mapped[int] = mapped_column(Integer(), default=3)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    fence: Mapped[int] = mapped_column(BigInteger(), default=0)
    progress: Mapped[float] = mapped_column(Float(), default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Float())
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    video: Mapped[Video] = relationship(back_populates="job", lazy="raise")


class Upload(Base):
    """A resumable upload under way. Its bytes are staged on the node that receives it; when
    the last byte arrives the file is probed, stored, and this row is replaced by a video and
    its job in one transaction."""

    __tablename__ = "uploads"
    __table_args__ = (
        CheckConstraint(_in_enum("visibility", Visibility), name="visibility"),
        _MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    public_id: Mapped[str] = mapped_column(key_string(PUBLIC_ID_LENGTH * 2), unique=True)
    owner_id: Mapped[int] = _user_fk()
    length: Mapped[int] = mapped_column(BigInteger())
    received: Mapped[int] = mapped_column(BigInteger(), default=0)
    filename: Mapped[str] = mapped_column(String(255), default="")
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text(), default="")
    visibility: Mapped[Visibility] = mapped_column(
        StrEnumType(Visibility, 16), default=Visibility.PUBLIC
    )
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    owner: Mapped[User] = relationship(back_populates="uploads", lazy="raise")
