"""Media objects into and out of a backup folder, through the `Storage` protocol only, so a
local folder and an S3 bucket are backed up and restored alike.

Objects are streamed (never held whole in memory), several at a time (`parallel`), and
hashed (SHA-256) on the way: out of the store into `objects/KEY`, and on restore from the file
into the store, where the hash is checked again against the manifest. `verify_files` checks
files against the manifest before a restore changes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from ripplecast.backup.errors import BackupDamaged, BackupError
from ripplecast.backup.manifest import OBJECTS_DIR, ObjectEntry
from ripplecast.storage import ObjectInfo, ObjectNotFound, Storage

__all__ = [
    "DEFAULT_PARALLEL",
    "FileCheck",
    "Progress",
    "back_up_objects",
    "human_bytes",
    "restore_objects",
    "verify_files",
]

DEFAULT_PARALLEL = 8
"""Objects copied at once unless the command says otherwise."""
CHUNK_SIZE = 1024 * 1024
"""Bytes read per chunk from the store or a backup file."""
REPORT_STEPS = 10
"""Progress lines per phase (one each time another tenth of the objects is done)."""
PROBLEMS_SHOWN = 10
"""Damaged files named in a refusal (the rest are counted)."""

T = TypeVar("T")
Report = Callable[[str], None]


def human_bytes(count: int) -> str:
    """`count` bytes for people: 812 B, 1.4 MB, 3.0 GB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Counts finished objects and reports `REPORT_STEPS` times per phase (and at the end)."""

    def __init__(
        self, what: str, total: int, total_bytes: int, report: Report, *, noun: str = "objects"
    ) -> None:
        self.what, self.total, self.total_bytes, self.report = what, total, total_bytes, report
        self.noun = noun
        self.done = 0
        self.done_bytes = 0
        self._next = 1

    def add(self, size: int) -> None:
        self.done += 1
        self.done_bytes += size
        if self.done * REPORT_STEPS >= self._next * self.total or self.done == self.total:
            self._next = self.done * REPORT_STEPS // max(self.total, 1) + 1
            self.report(
                f"{self.what}: {self.done}/{self.total} {self.noun},"
                f" {human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}"
            )


async def _pool(items: Sequence[T], parallel: int, work: Callable[[T], Awaitable[None]]) -> None:
    """Run `work` on every item, `parallel` at a time; the first failure cancels the rest and
    is raised as itself."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # shared: each item is taken by exactly one worker
            await work(item)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(parallel, len(items))))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


def _write_and_hash(handle: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    handle.write(chunk)
    digest.update(chunk)


def _read_and_hash(handle: BinaryIO, digest: hashlib._Hash) -> bytes:
    block = handle.read(CHUNK_SIZE)
    digest.update(block)
    return block


async def back_up_objects(
    storage: Storage, folder: Path, *, parallel: int, report: Report
) -> tuple[list[ObjectEntry], list[str]]:
    """Copy every object of `storage` to `folder/objects/KEY`; return their entries (sorted by
    key) and the keys that were deleted between the listing and their read."""
    listed = await storage.list("")
    root = folder / OBJECTS_DIR
    progress = Progress("copied", len(listed), sum(info.size for info in listed), report)
    entries: list[ObjectEntry] = []
    vanished: list[str] = []

    async def copy(info: ObjectInfo) -> None:
        path = root / info.key
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(path.open, "xb")
        except (FileExistsError, NotADirectoryError):
            raise BackupError(
                f"object {info.key!r} cannot be a file in the backup: another key uses its name"
                " as a folder (S3 allows 'a' beside 'a/b'; a folder cannot hold both)"
            ) from None
        digest = hashlib.sha256()
        size = 0
        try:
            with handle:
                async for chunk in storage.read(info.key, chunk_size=CHUNK_SIZE):
                    await asyncio.to_thread(_write_and_hash, handle, digest, chunk)
                    size += len(chunk)
        except ObjectNotFound:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            vanished.append(info.key)
            progress.add(0)
            return
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        entries.append(
            ObjectEntry(key=info.key, size=size, sha256=digest.hexdigest(), etag=info.etag)
        )
        progress.add(size)

    if not listed:
        report("objects: the storage is empty")
    await _pool(listed, parallel, copy)
    entries.sort(key=lambda entry: entry.key)
    return entries, sorted(vanished)


@dataclass(frozen=True, slots=True)
class FileCheck:
    """A file of the backup and what the manifest says it holds."""

    path: str
    """Relative to the backup folder."""
    size: int | None
    """None: not recorded (the hash alone decides)."""
    sha256: str


def _check_file(folder: Path, check: FileCheck) -> str | None:
    path = folder / check.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{check.path}: missing"
    except OSError as exc:
        return f"{check.path}: cannot be read ({exc.strerror})"
    if check.size is not None and size != check.size:
        return f"{check.path}: {size} bytes, the manifest says {check.size}"
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(CHUNK_SIZE):
                digest.update(block)
    except OSError as exc:
        return f"{check.path}: cannot be read ({exc.strerror})"
    if digest.hexdigest() != check.sha256:
        return (
            f"{check.path}: SHA-256 {digest.hexdigest()[:16]}..., the manifest says"
            f" {check.sha256[:16]}... (the content is damaged)"
        )
    return None


async def verify_files(
    folder: Path, checks: Sequence[FileCheck], *, parallel: int, report: Report
) -> None:
    """Check every file's size and SHA-256 against the manifest; raise `BackupDamaged` naming
    the damaged ones (all of them are checked first)."""
    problems: list[str] = []
    total = sum(check.size or 0 for check in checks)
    progress = Progress("verified", len(checks), total, report, noun="files")

    async def verify(check: FileCheck) -> None:
        problem = await asyncio.to_thread(_check_file, folder, check)
        if problem is not None:
            problems.append(problem)
        progress.add(check.size or 0)

    await _pool(checks, parallel, verify)
    if problems:
        problems.sort()
        shown = problems[:PROBLEMS_SHOWN]
        if len(problems) > PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - PROBLEMS_SHOWN} more")
        raise BackupDamaged(
            f"the backup in {folder} does not match its manifest ({len(problems)} damaged or"
            " missing file(s)); nothing was restored:\n  " + "\n  ".join(shown)
        )


async def restore_objects(
    storage: Storage,
    folder: Path,
    entries: Sequence[ObjectEntry],
    *,
    parallel: int,
    report: Report,
) -> None:
    """Store every object of the backup, checking each one's SHA-256 and size on the way."""
    root = folder / OBJECTS_DIR
    progress = Progress("restored", len(entries), sum(entry.size for entry in entries), report)

    async def put(entry: ObjectEntry) -> None:
        digest = hashlib.sha256()

        async def chunks() -> AsyncIterator[bytes]:
            handle = await asyncio.to_thread((root / entry.key).open, "rb")
            try:
                while block := await asyncio.to_thread(_read_and_hash, handle, digest):
                    yield block
            finally:
                handle.close()

        info = await storage.put_stream(entry.key, chunks())
        if digest.hexdigest() != entry.sha256 or info.size != entry.size:
            with contextlib.suppress(Exception):
                await storage.delete(entry.key)
            raise BackupDamaged(
                f"{OBJECTS_DIR}/{entry.key} changed while it was being restored (SHA-256 or size"
                " no longer match the manifest); the restore stopped"
            )
        progress.add(entry.size)

    await _pool(entries, parallel, put)
