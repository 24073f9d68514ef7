"""`create_backup` and `restore_backup`: a whole system (database, media objects, secret) into a
backup folder and back.

Backup order, and why: the database is dumped first, then the objects are listed and copied.
A video is marked ready only after all its objects are stored, so every video the dump calls
ready has its objects in the backup; objects written after the dump are extra, harmless.
A video deleted while the backup runs may lose its objects before they are read: such keys are
listed in the manifest as `vanished`. The folder is written under a temporary name next to
OUT and renamed to OUT only when complete (manifest last), so OUT never names half a backup.

A restore changes nothing until every check passed: the manifest loads, every file matches its
size and SHA-256, the schema revision is one this version knows, the database programs are
there in the right version, the secret fits, and the target is empty (or `force`). Then: the
database is loaded, migrated to the newest revision if the backup is older, unfinished uploads
are dropped (their bytes were staged on the node that received them, never in storage), the
objects are stored (hashed again on the way) and the secret file is put in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import delete

from ripplecast import __version__
from ripplecast.backup.databases import (
    ALEMBIC_TABLE,
    database_contents,
    display_url,
    drop_all_tables,
    dump_database,
    find_restore_tools,
    kind_of,
    restore_database,
)
from ripplecast.backup.errors import BackupError, SecretMismatch, TargetNotEmpty
from ripplecast.backup.manifest import (
    DUMP_FILES,
    SECRET_FILE,
    DatabaseEntry,
    Manifest,
    ObjectsEntry,
    SecretEntry,
    SecretSource,
    read_manifest,
    secret_fingerprint,
    write_manifest,
)
from ripplecast.backup.objects import (
    DEFAULT_PARALLEL,
    FileCheck,
    back_up_objects,
    human_bytes,
    restore_objects,
    verify_files,
)
from ripplecast.db import Database
from ripplecast.db.migrate import alembic_config, current_revision, head_revision, upgrade
from ripplecast.db.models import Upload
from ripplecast.storage import ObjectInfo, Storage

__all__ = ["SecretPlace", "System", "create_backup", "restore_backup"]

SHOWN_KEYS = 3
"""Object keys named when a restore finds a storage that is not empty."""

Report = Callable[[str], None]


def _silent(_line: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class SecretPlace:
    """Where a system's server secret is: the `secret_key` setting, else the generated file."""

    configured: bytes | None
    """`secret_key` from the settings, if set."""
    file: Path
    """DATA_DIR/secret.key (used when `configured` is None)."""


@dataclass(frozen=True, slots=True)
class System:
    """What a backup reads and a restore writes."""

    database_url: str
    storage: Storage
    """Started by the caller."""
    storage_description: str
    """For messages ("local folder /srv/media", "s3://bucket/prefix")."""
    secret: SecretPlace


# --- backup ------------------------------------------------------------------------------------


async def create_backup(
    system: System, out: Path, *, parallel: int = DEFAULT_PARALLEL, report: Report = _silent
) -> Manifest:
    """Back up `system` (which may be running) into the new folder `out`; return its manifest.

    Raises `BackupError` (out exists, a database or storage failure...) leaving nothing at
    `out`.
    """
    out, work = await asyncio.to_thread(_prepare_out, out, system.storage.local_path("probe"))
    started = time.monotonic()
    created_at = datetime.now(UTC)
    try:
        manifest = await _back_up_into(system, work, created_at, started, parallel, report)
        # rename(2) refuses a non-empty target: a backup made meanwhile at OUT is not replaced.
        await asyncio.to_thread(work.rename, out)
        await asyncio.to_thread(_fsync_folder, out.parent)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, work, True)
        raise
    report(
        f"done: {out}: database {human_bytes(manifest.database.size)},"
        f" {manifest.objects.count} objects ({human_bytes(manifest.objects.bytes)}),"
        f" in {manifest.duration_seconds:.1f} s"
    )
    return manifest


def _prepare_out(out: Path, storage_file: Path | None) -> tuple[Path, Path]:
    """`out` made absolute and checked, and the temporary folder next to it to fill first."""
    out = out.absolute()
    if out.exists():
        raise BackupError(f"{out} already exists: a backup never overwrites, choose a new name")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a folder")
    if storage_file is not None and out.is_relative_to(storage_file.parent.absolute()):
        raise BackupError(f"{out} is inside the media storage folder {storage_file.parent}")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    return out, work


async def _back_up_into(
    system: System,
    work: Path,
    created_at: datetime,
    started: float,
    parallel: int,
    report: Report,
) -> Manifest:
    url = system.database_url
    kind = kind_of(url)
    dump_path = work / DUMP_FILES[kind]
    dump_path.parent.mkdir()
    report(f"database: dumping {kind} {display_url(url)}")
    dump = await dump_database(url, dump_path)
    await asyncio.to_thread(dump_path.chmod, 0o600)
    size, sha256 = await asyncio.to_thread(_file_digest, dump_path)
    report(
        f"database: {human_bytes(size)} at schema revision {dump.schema_revision or '(none)'}"
        f" ({dump.tool})"
    )
    report(f"objects: listing {system.storage_description}")
    entries, vanished = await back_up_objects(
        system.storage, work, parallel=parallel, report=report
    )
    if vanished:
        report(
            f"objects: {len(vanished)} deleted while the backup ran, left out:"
            f" {', '.join(vanished[:SHOWN_KEYS])}"
        )
    secret = await asyncio.to_thread(_back_up_secret, system.secret, work, report)
    manifest = Manifest(
        created_at=created_at,
        ripplecast_version=__version__,
        schema_revision=dump.schema_revision,
        database=DatabaseEntry(
            kind=kind, size=size, sha256=sha256, tool=dump.tool, server_version=dump.server_version
        ),
        storage=system.storage_description,
        objects=ObjectsEntry(
            count=len(entries),
            bytes=sum(entry.size for entry in entries),
            vanished=vanished,
            items=entries,
        ),
        secret=secret,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    await asyncio.to_thread(write_manifest, work, manifest)
    return manifest


def _back_up_secret(place: SecretPlace, work: Path, report: Report) -> SecretEntry:
    if place.configured is not None:
        fingerprint = secret_fingerprint(place.configured)
        report(
            "secret: secret_key is set in the settings and is NOT in this backup: the restored"
            f" system must be given the same secret_key (fingerprint {fingerprint[:16]}),"
            " or every stream key becomes invalid"
        )
        return SecretEntry(source=SecretSource.SETTING, fingerprint=fingerprint)
    try:
        data = place.file.read_bytes()
    except FileNotFoundError:
        report(f"secret: none yet ({place.file} does not exist and secret_key is not set)")
        return SecretEntry(source=SecretSource.ABSENT)
    fd = os.open(work / SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    report(f"secret: {place.file} included: keep this backup as private as the data dir")
    return SecretEntry(
        source=SecretSource.FILE,
        sha256=hashlib.sha256(data).hexdigest(),
        fingerprint=secret_fingerprint(_secret_value(data)),
    )


def _secret_value(data: bytes) -> bytes:
    """The secret a node reads from secret.key (as `app.load_or_create_secret` does)."""
    return data.decode().strip().encode()


# --- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SecretPlan:
    write: bytes | None
    """Content for the target's secret.key, or None to leave it alone."""
    conflict: str | None
    """What stands in the way without force."""
    message: str


async def restore_backup(
    system: System,
    source: Path,
    *,
    force: bool = False,
    allow_new_secret: bool = False,
    parallel: int = DEFAULT_PARALLEL,
    report: Report = _silent,
) -> Manifest:
    """Restore the backup folder `source` into `system`, which must be empty unless `force`.

    Raises, before anything is written: `BackupDamaged` (the backup does not match its
    manifest), `BackupError` (a schema newer than this version, an unreachable database),
    `DatabaseToolError`, `SecretMismatch` (unless `allow_new_secret`) or `TargetNotEmpty`
    (unless `force`, which drops the database's tables and overwrites objects and secret).
    """
    source = await asyncio.to_thread(source.absolute)
    manifest = await asyncio.to_thread(read_manifest, source)
    report(
        f"backup made {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC by ripplecast"
        f" {manifest.ripplecast_version}: {manifest.database.kind} database at revision"
        f" {manifest.schema_revision or '(none)'}, {manifest.objects.count} objects"
        f" ({human_bytes(manifest.objects.bytes)}), secret: {manifest.secret.source}"
    )
    await verify_files(source, _file_checks(manifest), parallel=parallel, report=report)
    _check_revision(manifest)
    url = system.database_url
    tools = await find_restore_tools(manifest.database.kind, url, manifest.database.tool)
    report(f"database: target {display_url(url)} ({tools.description})")
    secret = await asyncio.to_thread(
        _plan_secret, manifest.secret, source, system.secret, allow_new_secret
    )
    contents = await database_contents(url)
    listed = await system.storage.list("")
    found = _what_is_there(system, url, contents, listed, secret)
    if found and not force:
        raise TargetNotEmpty(
            "the target system is not empty, nothing was restored (--force replaces it):\n  "
            + "\n  ".join(found)
        )
    for line in found:
        report(f"--force: replacing {line}")

    if contents:
        await drop_all_tables(url)
    await restore_database(tools, url, source / manifest.database.file)
    revision, head = await current_revision(url), head_revision()
    if revision != head:
        report(f"database: migrating from revision {revision or '(none)'} to {head}")
        await upgrade(url, "head")
    dropped = await _drop_unfinished_uploads(url)
    report(
        f"database: restored at revision {head}"
        + (
            f"; {dropped} unfinished upload(s) dropped (their bytes were never in storage)"
            if dropped
            else ""
        )
    )
    await restore_objects(
        system.storage, source, manifest.objects.items, parallel=parallel, report=report
    )
    if secret.write is not None:
        await asyncio.to_thread(_write_private, system.secret.file, secret.write)
    report(secret.message)
    report(
        f"done: restored {manifest.objects.count} objects ({human_bytes(manifest.objects.bytes)})"
        f" and the database from {source}"
    )
    return manifest


def _file_checks(manifest: Manifest) -> list[FileCheck]:
    checks = [FileCheck(manifest.database.file, manifest.database.size, manifest.database.sha256)]
    if manifest.secret.sha256 is not None:
        checks.append(FileCheck(SECRET_FILE, None, manifest.secret.sha256))
    checks += [
        FileCheck(f"objects/{item.key}", item.size, item.sha256) for item in manifest.objects.items
    ]
    return checks


def _check_revision(manifest: Manifest) -> None:
    revision = manifest.schema_revision
    if revision is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(revision)
    except CommandError:
        raise BackupError(
            f"the backup's database is at schema revision {revision}, which ripplecast"
            f" {__version__} does not know (its newest is {head_revision()}): restore it with"
            f" ripplecast {manifest.ripplecast_version} or newer"
        ) from None


def _what_is_there(
    system: System,
    url: str,
    contents: dict[str, int],
    listed: list[ObjectInfo],
    secret: _SecretPlan,
) -> list[str]:
    found: list[str] = []
    rows = {name: count for name, count in contents.items() if count and name != ALEMBIC_TABLE}
    if rows:
        tables = ", ".join(
            f"{name} ({count} row{'' if count == 1 else 's'})" for name, count in rows.items()
        )
        found.append(f"database {display_url(url)}: {tables}")
    if listed:
        keys = [info.key for info in listed]
        size = sum(info.size for info in listed)
        more = ", ..." if len(keys) > SHOWN_KEYS else ""
        found.append(
            f"storage {system.storage_description}: {len(keys)} objects, {human_bytes(size)}"
            f" ({', '.join(keys[:SHOWN_KEYS])}{more})"
        )
    if secret.conflict is not None:
        found.append(secret.conflict)
    return found


def _plan_secret(
    entry: SecretEntry, source: Path, place: SecretPlace, allow_new: bool
) -> _SecretPlan:
    if entry.source is SecretSource.ABSENT:
        return _SecretPlan(None, None, "secret: the backup had none; the node makes one at start")
    assert entry.fingerprint is not None
    fingerprint = entry.fingerprint
    new_secret = (
        "secret: NOT the backup's (--allow-new-secret): every stream key of the backup is"
        " invalid; issue new ones with `ripplecast channel key SLUG`"
    )
    if place.configured is not None:
        if secret_fingerprint(place.configured) == fingerprint:
            return _SecretPlan(None, None, "secret: secret_key in the settings is the backup's")
        if allow_new:
            return _SecretPlan(None, None, new_secret)
        remedy = (
            "remove secret_key from the settings to use the backup's secret.key"
            if entry.source is SecretSource.FILE
            else "set the old secret_key"
        )
        raise SecretMismatch(
            "secret_key in the settings is not the secret this backup was made with (their"
            " fingerprints differ): every stream key in the backup would be refused."
            f" {remedy.capitalize()}, or pass --allow-new-secret to restore anyway and issue"
            " new stream keys; nothing was restored"
        )
    if entry.source is SecretSource.SETTING:
        if allow_new:
            return _SecretPlan(None, None, new_secret)
        raise SecretMismatch(
            "the backup was made with secret_key set in the settings, and it is not in the"
            " backup; these settings set no secret_key. Set the same secret_key (fingerprint"
            f" {fingerprint[:16]}) before restoring, or pass --allow-new-secret to restore"
            " anyway and issue new stream keys; nothing was restored"
        )
    content = (source / SECRET_FILE).read_bytes()
    try:
        existing: bytes | None = place.file.read_bytes()
    except FileNotFoundError:
        existing = None
    restored = f"secret: restored into {place.file}"
    if existing is None:
        return _SecretPlan(content, None, restored)
    if _secret_value(existing) == _secret_value(content):
        return _SecretPlan(None, None, f"secret: {place.file} already is the backup's")
    return _SecretPlan(
        content, f"secret {place.file}: exists and is not the backup's secret", restored
    )


async def _drop_unfinished_uploads(url: str) -> int:
    async with Database(url) as db, db.transaction() as session:
        result = await session.execute(delete(Upload))
        return int(getattr(result, "rowcount", 0) or 0)


# --- files ---------------------------------------------------------------------------------------


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".restoring")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
