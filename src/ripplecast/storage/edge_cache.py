"""`CachingStorage`: the VOD cache of an edge node, a `Storage` in front of the shared store.

An edge serves `/vod/...` bytes itself. Reads are answered, in this order, from:

1. memory: whole objects in an LRU bounded in bytes (`memory_bytes`);
2. a disk folder: one file per object in an LRU bounded in bytes (`disk_bytes`; 0: no disk);
3. the inner storage (the shared folder or S3), through one *fill* per key: any number of
   concurrent misses of one key cause exactly one inner fetch (a `stat` and a `read_bytes`),
   which the others wait for.

Invariants:

- Objects are treated as immutable once written, as a ready video's are: nothing cached is
  revalidated against the inner store. Writes and deletes made *through this object* go to the
  inner storage and then drop the key from memory and disk, and mark a fill or disk write under
  way for it stale, so it caches nothing (its waiters still get what it read).
- A fill that fails (including `ObjectNotFound`) raises the same error in every waiter and caches
  nothing; the next request starts a new fill. A waiter that is cancelled leaves the fill running
  for the others (it waits through `asyncio.shield`); the fill still caches its result.
- Objects bigger than `max_object_bytes`, or than both tiers, are passed through to the inner
  storage and never held whole. Missing objects are not remembered.
- `stat` of an uncached object is a fill: the HTTP layer stats before it reads, so the read that
  follows is a memory hit and a burst of requests costs one inner `stat` and one inner read.
- Disk files are written to DIR/.tmp, fsynced and renamed into DIR/XX/ (whole or not at all).
  Each holds a header (key, `ObjectInfo`, CRC-32 of the bytes) then the object's bytes, so the
  tier survives a restart: `start` re-indexes it (oldest modification first, evicting the oldest
  while over the bound). A file whose size disagrees with its header, whose header is unreadable,
  or (when read whole) whose CRC-32 disagrees, is never served: it is removed and the object is
  fetched again. Memory and disk bounds count object bytes; headers add a few hundred per file.
- `presigned_url` and `local_path` are None: an edge exists to serve the bytes itself (a URL
  of the store would bypass the cache), and `http.vod` streams `read` rather than using
  `local_path`; the cache files also start with a header, so they are not the object's file.
- Counters (plain int attributes, for metrics and tests), per operation (`stat`, `read`,
  `read_bytes`, `download`): `hits_memory`, `hits_disk`, `misses` (fills that reached the inner
  storage), `coalesced` (operations that waited for another's fill), `passthroughs` (operations
  on uncacheable objects), `evictions` (entries dropped from either tier to make room),
  `damaged` (disk files found damaged), `disk_errors` (disk writes that failed),
  `bytes_fetched` (bytes read from the inner storage).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import secrets
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ripplecast.config import Settings
from ripplecast.errors import UsageError
from ripplecast.storage._files import (
    discard,
    fsync_dir,
    open_new,
    run_blocking,
    sibling_temp_path,
    write_all,
)
from ripplecast.storage.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    ObjectInfo,
    Storage,
    StorageError,
    check_key,
    check_prefix,
    check_range,
)

__all__ = ["DISK_FOLDER", "CachingStorage", "open_edge_cache"]

log = logging.getLogger("ripplecast.storage.edge_cache")

DISK_FOLDER = "vod-cache"
"""The disk tier's folder in the data dir (`open_edge_cache`)."""
TEMP_FOLDER = ".tmp"
"""Where disk files are written before their rename; never indexed."""
STALE_TEMP_SECONDS = 3600.0
"""Temp files older than this are left by a crash and removed at `start` (younger ones may be
another process's write under way, if two processes share the folder)."""
FILE_MAGIC = b"RCVODC1\n"
_HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 * 1024
"""A header longer than this marks a damaged file (a real one is a few hundred bytes)."""
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class _Damaged(Exception):
    """A disk file disagrees with its header (or has none); the message says how."""


@dataclass(frozen=True, slots=True)
class _InMemory:
    """An object whose bytes are at hand (cached in memory, or just fetched)."""

    info: ObjectInfo
    data: bytes


@dataclass(frozen=True, slots=True)
class _DiskEntry:
    """An object in the disk tier."""

    path: Path
    info: ObjectInfo
    offset: int
    """Where the object's bytes start in the file (the header's length)."""
    crc32: int


@dataclass(frozen=True, slots=True)
class _Uncached:
    """An object too big to cache: read from the inner storage each time."""

    info: ObjectInfo


_Found = _InMemory | _DiskEntry | _Uncached


class _Fill:
    """One load of a key into the cache (from disk or from the inner storage) and its waiters."""

    __slots__ = ("key", "stale", "task")

    def __init__(self, key: str) -> None:
        self.key = key
        self.stale = False
        """Set when the key was written or deleted meanwhile: the result is not cached."""
        self.task: asyncio.Task[_Found] | None = None


class CachingStorage:
    """A `Storage` serving reads from memory, then disk, then `inner` (one fetch per key at a
    time); writes and deletes go to `inner` and drop the key from the cache. See the module."""

    def __init__(
        self,
        inner: Storage,
        *,
        memory_bytes: int,
        disk_dir: Path | None,
        disk_bytes: int,
        max_object_bytes: int,
    ) -> None:
        """`disk_bytes` 0 means no disk tier (`disk_dir` is then ignored); otherwise `disk_dir`
        is required. Raises `UsageError` for a negative bound."""
        for name, value in (
            ("memory_bytes", memory_bytes),
            ("disk_bytes", disk_bytes),
            ("max_object_bytes", max_object_bytes),
        ):
            if value < 0:
                raise UsageError(f"CachingStorage {name} must be >= 0, got {value}")
        if disk_bytes > 0 and disk_dir is None:
            raise UsageError("CachingStorage needs a disk_dir when disk_bytes > 0")
        self._inner = inner
        self._memory_bytes = memory_bytes
        self._disk_dir = Path(disk_dir) if disk_dir is not None and disk_bytes > 0 else None
        self._disk_bytes = disk_bytes if self._disk_dir is not None else 0
        self._max_object_bytes = max_object_bytes
        self._cacheable_bytes = min(max_object_bytes, max(memory_bytes, self._disk_bytes))
        self._memory: OrderedDict[str, _InMemory] = OrderedDict()
        self._memory_used = 0
        self._disk: OrderedDict[str, _DiskEntry] = OrderedDict()
        self._disk_used = 0
        self._fills: dict[str, _Fill] = {}
        self._disk_writes: dict[str, _Fill] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.hits_memory = 0
        self.hits_disk = 0
        self.misses = 0
        self.coalesced = 0
        self.passthroughs = 0
        self.evictions = 0
        self.damaged = 0
        self.disk_errors = 0
        self.bytes_fetched = 0

    @property
    def inner(self) -> Storage:
        """The storage behind the cache."""
        return self._inner

    @property
    def memory_used(self) -> int:
        """Object bytes held in memory now."""
        return self._memory_used

    @property
    def disk_used(self) -> int:
        """Object bytes held on disk now (headers not counted)."""
        return self._disk_used

    def __repr__(self) -> str:
        return f"CachingStorage({self._inner!r}, disk_dir={self._disk_dir!r})"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the inner storage and index the disk tier left by an earlier process."""
        await self._inner.start()
        if self._disk_dir is None:
            return
        try:
            await run_blocking((self._disk_dir / TEMP_FOLDER).mkdir, parents=True, exist_ok=True)
            found, damaged = await run_blocking(_scan, self._disk_dir)
        except OSError as exc:
            raise StorageError(
                f"edge cache start in {str(self._disk_dir)!r} failed: {exc}"
            ) from exc
        self.damaged += damaged
        self._disk.clear()
        self._disk_used = 0
        unwanted: list[Path] = []
        for entry in found:  # oldest first, so the newest copy of a key wins
            if entry.info.size > self._cacheable_bytes:
                unwanted.append(entry.path)
            else:
                unwanted.extend(self._index(entry))
        await run_blocking(_discard_all, unwanted)
        log.info(
            "edge cache: %d objects (%d bytes) on disk in %s, %d damaged files removed",
            len(self._disk),
            self._disk_used,
            self._disk_dir,
            damaged,
        )

    async def close(self) -> None:
        """Stop fills and disk writes under way, forget the cache (the disk tier stays for the
        next `start`) and close the inner storage; idempotent."""
        tasks: set[asyncio.Task[Any]] = {f.task for f in self._fills.values() if f.task is not None}
        tasks.update(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fills.clear()
        self._disk_writes.clear()
        self._memory.clear()
        self._memory_used = 0
        self._disk.clear()
        self._disk_used = 0
        await self._inner.close()

    async def check(self) -> None:
        await self._inner.check()
        if self._disk_dir is not None and not os.access(self._disk_dir, os.W_OK | os.X_OK):
            raise StorageError(f"edge cache folder {str(self._disk_dir)!r} is not writable")

    async def wait_for_disk_writes(self) -> None:
        """Return once the disk writes started so far are done (tests, orderly shutdown)."""
        while self._background:
            await asyncio.wait(set(self._background))

    # -- writing: to the inner storage, then the key is forgotten --------------------------

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        try:
            return await self._inner.put_bytes(key, data, content_type=content_type)
        finally:
            await self._forget([key])

    async def put_file(
        self, key: str, path: Path, *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        try:
            return await self._inner.put_file(key, path, content_type=content_type)
        finally:
            await self._forget([key])

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        try:
            return await self._inner.put_stream(key, chunks, content_type=content_type)
        finally:
            await self._forget([key])

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await self._inner.delete(key)
        finally:
            await self._forget([key])

    async def delete_prefix(self, prefix: str) -> int:
        if check_prefix(prefix) == "":
            raise InvalidKey("refusing to delete every object: delete_prefix needs a prefix")
        try:
            return await self._inner.delete_prefix(prefix)
        finally:
            await self._forget(self._cached_keys(prefix))

    # -- reading --------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        found = await self._find(key)
        return found.info

    def read(
        self,
        key: str,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        check_key(key)
        check_range(start, stop, chunk_size)
        return self._read(key, start, stop, chunk_size, None)

    async def read_bytes(self, key: str) -> bytes:
        check_key(key)
        found = await self._find(key)
        if isinstance(found, _InMemory):
            return found.data
        if isinstance(found, _Uncached):
            self.passthroughs += 1
            data = await self._inner.read_bytes(key)
            self.bytes_fetched += len(data)
            return data
        chunks = self._read(key, 0, None, DEFAULT_CHUNK_SIZE, found)
        async with contextlib.aclosing(chunks):
            return b"".join([chunk async for chunk in chunks])

    async def download(self, key: str, path: Path) -> None:
        check_key(key)
        found = await self._find(key)
        if isinstance(found, _Uncached):
            self.passthroughs += 1
            await self._inner.download(key, path)
            self.bytes_fetched += found.info.size
            return
        temp = sibling_temp_path(path)
        try:
            fd = await run_blocking(open_new, temp)
            try:
                chunks = self._read(key, 0, None, DOWNLOAD_CHUNK_BYTES, found)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        await run_blocking(write_all, fd, chunk)
                await run_blocking(os.fsync, fd)
            finally:
                await run_blocking(os.close, fd)
            await run_blocking(os.replace, temp, path)
            await run_blocking(fsync_dir, path.parent)
        except OSError as exc:
            raise StorageError(f"edge cache download of {key!r} to {str(path)!r}: {exc}") from exc
        finally:
            await run_blocking(discard, temp)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """The inner storage's listing (the cache holds only some objects)."""
        return await self._inner.list(prefix)

    async def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """None: the edge serves the bytes itself, from its cache."""
        check_key(key)
        return None

    def local_path(self, key: str) -> Path | None:
        """None: cache files hold a header before the bytes and may be evicted at any time;
        `http.vod` streams `read` anyway."""
        check_key(key)
        return None

    # -- finding an object ------------------------------------------------------------------

    async def _find(self, key: str) -> _Found:
        """The object at `key` from the nearest tier, joining or starting its fill."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            if key in self._disk:
                self._disk.move_to_end(key)
            self.hits_memory += 1
            return entry
        fill = self._fills.get(key)
        if fill is not None:
            self.coalesced += 1
        else:
            on_disk = self._disk.get(key)
            if on_disk is not None and on_disk.info.size > self._memory_bytes:
                # Too big for memory: each reader reads its range from the file.
                self._disk.move_to_end(key)
                self.hits_disk += 1
                return on_disk
            fill = self._start_fill(key)
        assert fill.task is not None
        # Shielded: a waiter cancelled (a viewer gone) must not cancel the others' fetch.
        return await asyncio.shield(fill.task)

    def _start_fill(self, key: str) -> _Fill:
        fill = _Fill(key)
        task = asyncio.create_task(self._fill(fill), name=f"edge cache fill {key}")
        fill.task = task
        self._fills[key] = fill

        def finished(done: asyncio.Task[_Found]) -> None:
            if self._fills.get(key) is fill:
                del self._fills[key]
            if not done.cancelled():
                done.exception()  # retrieved: the waiters, if any, get it through the shield

        task.add_done_callback(finished)
        return fill

    async def _fill(self, fill: _Fill) -> _Found:
        key = fill.key
        on_disk = self._disk.get(key)
        if on_disk is not None:
            data = await self._load(on_disk)
            if data is not None:
                self.hits_disk += 1
                found = _InMemory(on_disk.info, data)
                if not fill.stale:
                    self._remember(found)
                return found
        self.misses += 1
        info = await self._inner.stat(key)
        if info.size > self._cacheable_bytes:
            return _Uncached(info)
        data = await self._inner.read_bytes(key)
        self.bytes_fetched += len(data)
        if len(data) != info.size:  # rewritten between the stat and the read
            info = await self._inner.stat(key)
            if len(data) != info.size:
                raise StorageError(f"edge cache: {key!r} changed while it was fetched")
        found = _InMemory(info, data)
        if not fill.stale:
            self._remember(found)
            if self._disk_dir is not None and info.size <= self._disk_bytes:
                self._disk_writes[key] = fill
                self._spawn(self._write_to_disk(fill, found, self._disk_dir))
        return found

    async def _read(
        self, key: str, start: int, stop: int | None, chunk_size: int, found: _Found | None
    ) -> AsyncGenerator[bytes, None]:
        for _attempt in range(2):
            if found is None:
                found = await self._find(key)
            if isinstance(found, _InMemory):
                data = found.data
                end = min(len(data) if stop is None else stop, len(data))
                for offset in range(start, end, chunk_size):
                    yield data[offset : min(offset + chunk_size, end)]
                return
            if isinstance(found, _Uncached):
                self.passthroughs += 1
                chunks = self._inner.read(key, start=start, stop=stop, chunk_size=chunk_size)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        self.bytes_fetched += len(chunk)
                        yield chunk
                return
            file = self._open(found)
            if file is None:
                found = None  # damaged or gone: dropped, so the next attempt fetches it again
                continue
            try:
                end = min(found.info.size if stop is None else stop, found.info.size)
                position = start
                while position < end:
                    try:
                        chunk = await run_blocking(
                            os.pread,
                            file.fileno(),
                            min(chunk_size, end - position),
                            found.offset + position,
                        )
                    except OSError as exc:
                        raise StorageError(f"edge cache read of {key!r} failed: {exc}") from exc
                    if not chunk:
                        raise StorageError(f"edge cache file of {key!r} shrank while read")
                    position += len(chunk)
                    yield chunk
            finally:
                file.close()
            return
        raise StorageError(f"edge cache: {key!r} was damaged twice in a row on disk")

    # -- the memory tier --------------------------------------------------------------------

    def _remember(self, found: _InMemory) -> None:
        size = found.info.size
        if size > self._memory_bytes:
            return
        key = found.info.key
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old.info.size
        while self._memory and self._memory_used + size > self._memory_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.info.size
            self.evictions += 1
        self._memory[key] = found
        self._memory_used += size

    # -- the disk tier ----------------------------------------------------------------------

    def _index(self, entry: _DiskEntry) -> builtins.list[Path]:
        """Add `entry` to the disk index; return the files to remove (replaced, evicted)."""
        key, size = entry.info.key, entry.info.size
        unwanted: builtins.list[Path] = []
        old = self._disk.pop(key, None)
        if old is not None:
            self._disk_used -= old.info.size
            unwanted.append(old.path)
        while self._disk and self._disk_used + size > self._disk_bytes:
            _, evicted = self._disk.popitem(last=False)
            self._disk_used -= evicted.info.size
            self.evictions += 1
            unwanted.append(evicted.path)
        self._disk[key] = entry
        self._disk_used += size
        return unwanted

    def _unindex(self, entry: _DiskEntry) -> bool:
        """Drop `entry` if the index still holds it; say whether it did."""
        key = entry.info.key
        if self._disk.get(key) is not entry:
            return False
        del self._disk[key]
        self._disk_used -= entry.info.size
        return True

    async def _write_to_disk(self, fill: _Fill, found: _InMemory, folder: Path) -> None:
        key = found.info.key
        digest = hashlib.sha256(key.encode()).hexdigest()
        path = folder / digest[:2] / f"{digest}.{secrets.token_hex(4)}"
        try:
            offset, crc = await run_blocking(_write_file, folder / TEMP_FOLDER, path, found)
        except OSError as exc:
            self.disk_errors += 1
            if self.disk_errors & (self.disk_errors - 1) == 0:  # 1st, 2nd, 4th, 8th...
                log.warning(
                    "edge cache: writing %r to disk failed (%d failures so far): %s",
                    key,
                    self.disk_errors,
                    exc,
                )
            return
        finally:
            if self._disk_writes.get(key) is fill:
                del self._disk_writes[key]
        if fill.stale:  # written or deleted through us meanwhile
            await run_blocking(discard, path)
            return
        await run_blocking(_discard_all, self._index(_DiskEntry(path, found.info, offset, crc)))

    async def _load(self, entry: _DiskEntry) -> bytes | None:
        """The whole object from its disk file, or None (the entry dropped) if it cannot be."""
        try:
            return await run_blocking(_read_payload, entry)
        except FileNotFoundError:
            self._unindex(entry)  # removed behind our back (or evicted meanwhile)
        except _Damaged as exc:
            self._drop_damaged(entry, str(exc))
        except OSError as exc:
            log.warning("edge cache: reading %s failed, fetching again: %s", entry.path, exc)
            self._unindex(entry)
        return None

    def _open(self, entry: _DiskEntry) -> BinaryIO | None:
        """The disk file of `entry`, open and checked against its header, or None (dropped).

        Opened on the loop, not in a thread: a reader cancelled while a thread opened the file
        would leave it open with nobody to close it. It is one cheap system call."""
        try:
            file = _open_for_reading(entry.path)
        except FileNotFoundError:
            self._unindex(entry)
            return None
        except OSError as exc:
            raise StorageError(f"edge cache open of {str(entry.path)!r} failed: {exc}") from exc
        size = os.fstat(file.fileno()).st_size
        if size != entry.offset + entry.info.size:
            file.close()
            self._drop_damaged(entry, f"{size} bytes, expected {entry.offset + entry.info.size}")
            return None
        return file

    def _drop_damaged(self, entry: _DiskEntry, why: str) -> None:
        self.damaged += 1
        log.warning(
            "edge cache: %s is damaged (%s); fetching %r again", entry.path, why, entry.info.key
        )
        if self._unindex(entry):
            discard(entry.path)  # one unlink, like a stat: fine on the loop

    async def _forget(self, keys: Iterable[str]) -> None:
        """Drop `keys` from memory and disk, and make fills and disk writes under way for them
        cache nothing."""
        paths: builtins.list[Path] = []
        for key in keys:
            in_memory = self._memory.pop(key, None)
            if in_memory is not None:
                self._memory_used -= in_memory.info.size
            fill = self._fills.pop(key, None)
            if fill is not None:
                fill.stale = True
            writing = self._disk_writes.get(key)
            if writing is not None:
                writing.stale = True
            on_disk = self._disk.pop(key, None)
            if on_disk is not None:
                self._disk_used -= on_disk.info.size
                paths.append(on_disk.path)
        if paths:
            await run_blocking(_discard_all, paths)

    def _cached_keys(self, prefix: str) -> set[str]:
        """Every key under `prefix` the cache holds or is loading."""
        tables: tuple[dict[str, Any], ...] = (
            self._memory,
            self._fills,
            self._disk_writes,
            self._disk,
        )
        return {key for table in tables for key in table if key.startswith(prefix)}

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("edge cache: background work failed", exc_info=done.exception())

        task.add_done_callback(finished)


def open_edge_cache(inner: Storage, settings: Settings) -> CachingStorage:
    """An edge's VOD cache in front of `inner` (not yet started), bounded by the
    vod_edge_cache_* settings, its disk tier in DATA_DIR/vod-cache."""
    return CachingStorage(
        inner,
        memory_bytes=settings.vod_edge_cache_memory_bytes,
        disk_dir=settings.data_dir / DISK_FOLDER,
        disk_bytes=settings.vod_edge_cache_disk_bytes,
        max_object_bytes=settings.vod_edge_cache_max_object_bytes,
    )


# -- disk files (these run in worker threads) -----------------------------------------------


def _encode_header(info: ObjectInfo, crc: int) -> bytes:
    fields = {
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "modified": info.modified.isoformat(),
        "content_type": info.content_type,
        "crc32": crc,
    }
    encoded = json.dumps(fields, separators=(",", ":")).encode()
    return FILE_MAGIC + _HEADER_LENGTH.pack(len(encoded)) + encoded


def _write_file(temp_folder: Path, path: Path, found: _InMemory) -> tuple[int, int]:
    """Write header and bytes to a temp file, fsync it and rename it to `path`; return the
    header's length and the CRC-32 of the bytes."""
    crc = zlib.crc32(found.data)
    header = _encode_header(found.info, crc)
    temp = temp_folder / secrets.token_hex(16)
    try:
        fd = open_new(temp)
        try:
            write_all(fd, header)
            write_all(fd, found.data)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.parent.mkdir(exist_ok=True)
        os.replace(temp, path)
    except BaseException:
        discard(temp)
        raise
    return len(header), crc


def _read_entry(path: Path) -> _DiskEntry:
    """The index entry of the disk file `path`; raises `_Damaged` if the file disagrees with
    its header or has none."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        lead = file.read(len(FILE_MAGIC) + _HEADER_LENGTH.size)
        if len(lead) < len(FILE_MAGIC) + _HEADER_LENGTH.size or not lead.startswith(FILE_MAGIC):
            raise _Damaged("no cache header")
        (length,) = _HEADER_LENGTH.unpack_from(lead, len(FILE_MAGIC))
        if length > MAX_HEADER_BYTES:
            raise _Damaged(f"header of {length} bytes")
        raw = file.read(length)
    try:
        fields = json.loads(raw)
        info = ObjectInfo(
            key=check_key(fields["key"]),
            size=int(fields["size"]),
            etag=str(fields["etag"]),
            modified=datetime.fromisoformat(fields["modified"]),
            content_type=str(fields["content_type"]),
        )
        crc = int(fields["crc32"])
    except (ValueError, TypeError, KeyError, InvalidKey) as exc:
        raise _Damaged(f"unreadable header: {exc}") from None
    offset = len(lead) + length
    if info.modified.tzinfo is None or info.size < 0 or size != offset + info.size:
        raise _Damaged(f"{size} bytes, expected {offset + info.size}")
    return _DiskEntry(path, info, offset, crc)


def _read_payload(entry: _DiskEntry) -> bytes:
    """The object's bytes from its file, checked; raises `_Damaged` or `OSError`."""
    with open(entry.path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size != entry.offset + entry.info.size:
            raise _Damaged(f"{size} bytes, expected {entry.offset + entry.info.size}")
        file.seek(entry.offset)
        data = file.read(entry.info.size)
    if len(data) != entry.info.size:
        raise _Damaged(f"{len(data)} bytes read, expected {entry.info.size}")
    if zlib.crc32(data) != entry.crc32:
        raise _Damaged("CRC-32 mismatch")
    with contextlib.suppress(OSError):
        os.utime(entry.path)  # the restart's LRU order follows use, not only writing
    return data


def _scan(folder: Path) -> tuple[list[_DiskEntry], int]:
    """Every sound disk file under `folder`, oldest modification first, and how many damaged
    ones were removed. Stale temp files are removed too."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    with os.scandir(folder / TEMP_FOLDER) as scan:
        for temp in scan:
            with contextlib.suppress(OSError):
                if temp.is_file(follow_symlinks=False) and temp.stat().st_mtime < cutoff:
                    os.unlink(temp.path)
    dated: list[tuple[float, _DiskEntry]] = []
    damaged = 0
    with os.scandir(folder) as shards:
        shard_paths = [
            Path(shard.path)
            for shard in shards
            if shard.name != TEMP_FOLDER and shard.is_dir(follow_symlinks=False)
        ]
    for shard_path in shard_paths:
        with os.scandir(shard_path) as files:
            names = [file.name for file in files if file.is_file(follow_symlinks=False)]
        for name in names:
            path = shard_path / name
            try:
                entry = _read_entry(path)
                dated.append((os.stat(path).st_mtime, entry))
            except FileNotFoundError:
                continue
            except (_Damaged, OSError) as exc:
                # An unreadable file is as good as a damaged one: the object is fetched again.
                log.warning("edge cache: removing damaged %s (%s)", path, exc)
                damaged += 1
                with contextlib.suppress(OSError):
                    discard(path)
    dated.sort(key=lambda pair: pair[0])
    return [entry for _, entry in dated], damaged


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb", buffering=0)  # closed by the reading generator


def _discard_all(paths: Iterable[Path]) -> None:
    for path in paths:
        discard(path)
