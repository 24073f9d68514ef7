"""The manifest of a backup: what it holds and the checksum of every file in it.

A backup is a folder:

    manifest.json              this manifest (written last: a folder without one is unfinished)
    database/ripplecast.sqlite  SQLite: a snapshot made with SQLite's online backup API, or
    database/ripplecast.pgdump  PostgreSQL: `pg_dump --format=custom`, or
    database/ripplecast.sql     MariaDB/MySQL: `mariadb-dump --single-transaction --routines`
    objects/KEY                every media object, at its storage key
    secret.key                 the server secret, when it was the generated file

Invariants a manifest that loads keeps (anything else is refused as `BackupDamaged`):
- every object key passes the storage key rules, so no entry can name a path outside
  `objects/`; keys are unique and sorted; `count` and `bytes` add up;
- the database and secret files have fixed names, so no entry names another file;
- the secret is described by its source: "file" (included, with its SHA-256), "setting" (not
  included: the restored system must be configured with the same `secret_key`) or "absent";
  in the first two cases a fingerprint, HMAC-SHA256(secret, a constant), lets a restore check a
  configured secret without the backup ever holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ripplecast.backup.errors import BackupDamaged
from ripplecast.storage import InvalidKey, check_key

FORMAT = "ripplecast-backup"
FORMAT_VERSION = 1
"""The layout and manifest version this code writes and reads."""
MANIFEST_FILE = "manifest.json"
OBJECTS_DIR = "objects"
SECRET_FILE = "secret.key"
FINGERPRINT_MESSAGE = b"ripplecast backup secret fingerprint v1"
REPORTED_ERRORS = 5
"""Validation errors of a damaged manifest named in the message (the rest are counted)."""

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class DatabaseKind(StrEnum):
    """The engine a backup's database dump is for (it is restored into the same engine)."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    MARIADB = "mariadb"
    """MariaDB or MySQL (one dump format, the mariadb/mysql client restores it)."""


DUMP_FILES = {
    DatabaseKind.SQLITE: "database/ripplecast.sqlite",
    DatabaseKind.POSTGRESQL: "database/ripplecast.pgdump",
    DatabaseKind.MARIADB: "database/ripplecast.sql",
}
"""Where each kind's dump lives in the backup folder."""


class SecretSource(StrEnum):
    FILE = "file"
    """The secret was DATA_DIR/secret.key (generated on first start): it is in the backup."""
    SETTING = "setting"
    """The secret was the `secret_key` setting: only its fingerprint is in the backup."""
    ABSENT = "absent"
    """The system had no secret yet (never started)."""


def secret_fingerprint(secret: bytes) -> str:
    """HMAC-SHA256 of a constant under `secret`, as hex: says whether two secrets are equal
    without revealing either."""
    return hmac.new(secret, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseEntry(_Entry):
    """The database dump."""

    kind: DatabaseKind
    size: NonNegativeInt
    """Bytes of the dump file."""
    sha256: Sha256
    tool: str
    """What made the dump, with its version ("pg_dump (PostgreSQL) 15.20")."""
    server_version: str
    """The version of the database server (or SQLite library) it was taken from."""

    @property
    def file(self) -> str:
        """The dump's path inside the backup folder."""
        return DUMP_FILES[self.kind]


class ObjectEntry(_Entry):
    """One media object, stored at objects/KEY."""

    key: str
    size: NonNegativeInt
    sha256: Sha256
    etag: str
    """The store's entity tag at backup time (informative: a restore makes new ones)."""

    @field_validator("key")
    @classmethod
    def _valid_key(cls, key: str) -> str:
        try:
            return check_key(key)
        except InvalidKey as exc:
            raise ValueError(str(exc)) from None


class ObjectsEntry(_Entry):
    """Every object of the media storage, sorted by key."""

    count: NonNegativeInt
    bytes: NonNegativeInt
    vanished: list[str] = Field(default_factory=list)
    """Keys listed at the start of the backup but deleted before they were read (a video
    deleted while the backup ran)."""
    items: list[ObjectEntry]

    @model_validator(mode="after")
    def _consistent(self) -> ObjectsEntry:
        keys = [item.key for item in self.items]
        if keys != sorted(set(keys)):
            raise ValueError("object keys are not unique and sorted")
        if self.count != len(self.items):
            raise ValueError(f"count is {self.count} but {len(self.items)} objects are listed")
        total = sum(item.size for item in self.items)
        if self.bytes != total:
            raise ValueError(f"bytes is {self.bytes} but the objects add up to {total}")
        return self


class SecretEntry(_Entry):
    """Where the server secret came from, and how to recognise it."""

    source: SecretSource
    sha256: Sha256 | None = None
    """Of the included secret.key (source "file" only)."""
    fingerprint: str | None = None
    """`secret_fingerprint` of the secret (not for "absent")."""

    @model_validator(mode="after")
    def _consistent(self) -> SecretEntry:
        included = self.source is SecretSource.FILE
        if included != (self.sha256 is not None):
            raise ValueError("sha256 is given exactly when the secret file is included")
        if (self.source is SecretSource.ABSENT) != (self.fingerprint is None):
            raise ValueError("fingerprint is given exactly when there was a secret")
        return self


class Manifest(_Entry):
    """What a backup holds."""

    format: Literal["ripplecast-backup"] = "ripplecast-backup"
    version: Literal[1] = 1
    created_at: datetime
    """When the backup started (UTC)."""
    ripplecast_version: str
    schema_revision: str | None
    """The database's Alembic revision when it was dumped (None: never migrated)."""
    database: DatabaseEntry
    storage: str
    """The media store backed up ("local folder", "s3"); informative."""
    objects: ObjectsEntry
    secret: SecretEntry
    duration_seconds: float = 0.0


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write `folder/manifest.json` atomically and durably (fsynced)."""
    path = folder / MANIFEST_FILE
    temp = path.with_name(MANIFEST_FILE + ".tmp")
    data = manifest.model_dump_json(indent=1).encode() + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the backup in `folder`.

    Raises `BackupDamaged` saying why when it is missing, not JSON (truncated), of a newer
    format or inconsistent.
    """
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BackupDamaged(f"{folder} is not a folder (a backup is the folder `backup` made)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackupDamaged(
            f"{folder} has no {MANIFEST_FILE}: it is not a Ripplecast backup, or the backup"
            " never finished"
        ) from None
    except OSError as exc:
        raise BackupDamaged(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise BackupDamaged(
            f"{path} is not valid JSON ({_reason(exc)}{where}; the file has {len(raw)} bytes):"
            " it is truncated or damaged"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackupDamaged(f"{path} is not a Ripplecast backup manifest (no format {FORMAT!r})")
    version = data.get("version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise BackupDamaged(
            f"{path} is backup format {version}, made by a newer Ripplecast"
            f" ({data.get('ripplecast_version')}); this one reads format {FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in errors[:REPORTED_ERRORS]
        ]
        more = len(errors) - REPORTED_ERRORS
        if more > 0:
            problems.append(f"and {more} more")
        raise BackupDamaged(f"{path} is inconsistent: " + "; ".join(problems)) from None


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return str(exc)
