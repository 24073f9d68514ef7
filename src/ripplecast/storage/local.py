"""`LocalStorage`: media objects as files under one root folder (the single-box default).

The object at key 'vod/abc/720p/0001.ts' is the file ROOT/vod/abc/720p/0001.ts, so the HTTP
layer can hand it to sendfile (`local_path`).

Invariants:

- Writes are atomic: the bytes go to a fresh file in ROOT/.partial/ (same filesystem), are
  fsynced, then `os.replace`d onto the key's path; a failed or cancelled write removes its temp
  file. Nothing partial is ever visible at a key. Temp files older than `stale_partial_seconds`
  (left by a crash) are removed at `start`.
- Every key is checked with `check_key`, and its real path (symlinks resolved) must stay inside
  the root; there is no way to name a file outside it.
- File I/O runs in worker threads (`run_blocking`), never on the event loop, except single
  metadata syscalls (stat, getxattr).
- A content type given explicitly (and different from the one derived from the key) is kept in
  the extended attribute `user.ripplecast.content_type`; on filesystems without user xattrs
  the derived type is reported instead.
- Deleting removes folders left empty, up to (not including) the root. A write racing such a
  cleanup recreates its folder and retries.
- Limitation of folders: a key cannot also be the folder of other keys ('a' and 'a/b'); such a
  write fails with `StorageError`.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

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
    RESERVED_SEGMENT,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_key,
    check_prefix,
    check_range,
    content_type_for,
)

__all__ = ["DEFAULT_STALE_PARTIAL_SECONDS", "DEFAULT_WRITE_BUFFER_BYTES", "LocalStorage"]

log = logging.getLogger("ripplecast.storage.local")

DEFAULT_STALE_PARTIAL_SECONDS = 24 * 3600.0
DEFAULT_WRITE_BUFFER_BYTES = 1024 * 1024
CONTENT_TYPE_XATTR = "user.ripplecast.content_type"
_REPLACE_ATTEMPTS = 3


class LocalStorage:
    """A `Storage` keeping each object as a file under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        stale_partial_seconds: float = DEFAULT_STALE_PARTIAL_SECONDS,
        write_buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
    ) -> None:
        """`write_buffer_bytes`: how much of a stream is gathered before one write to disk."""
        self._root = Path(os.path.realpath(root))
        self._partial = self._root / RESERVED_SEGMENT
        self._stale_partial_seconds = stale_partial_seconds
        self._write_buffer_bytes = max(1, write_buffer_bytes)

    @property
    def root(self) -> Path:
        """The folder holding the objects (symlinks resolved)."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalStorage({str(self._root)!r})"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        with self._os_errors("start", ""):
            await run_blocking(self._partial.mkdir, parents=True, exist_ok=True)
            removed = await run_blocking(self._remove_stale_partials)
        if removed:
            log.info("removed %d stale partial files from %s", removed, self._partial)

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    async def check(self) -> None:
        if not self._root.is_dir():
            raise StorageError(f"local storage root {str(self._root)!r} is not a folder")
        if not os.access(self._partial, os.W_OK | os.X_OK):
            raise StorageError(f"local storage folder {str(self._partial)!r} is not writable")

    # -- writing --------------------------------------------------------------------------

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> ObjectInfo:
        target = self._path(key)
        with self._os_errors("put", key):
            return await run_blocking(self._write_whole, key, target, data, content_type)

    async def put_file(
        self, key: str, path: Path, *, content_type: str | None = None
    ) -> ObjectInfo:
        target = self._path(key)
        with self._os_errors("put_file", key):
            return await run_blocking(self._copy_whole, key, target, path, content_type)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None
    ) -> ObjectInfo:
        target = self._path(key)
        with self._os_errors("put_stream", key):
            temp = self._temp_path()
            fd = await run_blocking(open_new, temp)
        committed = False
        try:
            pending = bytearray()
            async for chunk in chunks:
                pending += chunk
                if len(pending) >= self._write_buffer_bytes:
                    with self._os_errors("put_stream", key):
                        await run_blocking(write_all, fd, pending)
                    pending.clear()
            with self._os_errors("put_stream", key):
                await run_blocking(write_all, fd, pending)
                await run_blocking(os.fsync, fd)
                closing, fd = fd, -1  # never closed twice, even if cancelled right here
                await run_blocking(os.close, closing)
                info = await run_blocking(self._commit, key, temp, target, content_type)
            committed = True
            return info
        finally:
            if fd != -1:
                os.close(fd)
            if not committed:
                await run_blocking(discard, temp)

    # -- reading --------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._os_errors("stat", key):
            return self._info(key, path)

    def read(
        self,
        key: str,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        check_range(start, stop, chunk_size)
        return self._read(key, path, start, stop, chunk_size)

    async def _read(
        self, key: str, path: Path, start: int, stop: int | None, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        # Opened here, not in a thread: a request cancelled while a thread opened the file
        # would leave it open with nobody to close it. Opening is one cheap system call.
        with self._os_errors("read", key, missing=path):
            file = _open_for_reading(path)
        try:
            with self._os_errors("read", key):
                size = os.fstat(file.fileno()).st_size
                await run_blocking(file.seek, start)
            remaining = max(0, min(size if stop is None else stop, size) - start)
            while remaining > 0:
                with self._os_errors("read", key):
                    chunk = await run_blocking(file.read, min(chunk_size, remaining))
                if not chunk:
                    break  # the file was truncated under us; what was there is what we give
                remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._os_errors("read_bytes", key, missing=path):
            return await run_blocking(path.read_bytes)

    async def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        with self._os_errors("download", key, missing=source):
            await run_blocking(_copy_atomically, source, path)

    # -- deleting and listing -------------------------------------------------------------

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with self._os_errors("delete", key):
            await run_blocking(self._delete_files, [path])

    async def delete_prefix(self, prefix: str) -> int:
        if check_prefix(prefix) == "":
            raise InvalidKey("refusing to delete every object: delete_prefix needs a prefix")
        with self._os_errors("delete_prefix", prefix):
            objects = await run_blocking(self._list, prefix)
            return await run_blocking(self._delete_files, [self._root / o.key for o in objects])

    async def list(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        with self._os_errors("list", prefix):
            return await run_blocking(self._list, prefix)

    # -- what only a folder has ------------------------------------------------------------

    async def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """None: a folder has no URLs; the node serves the file itself."""
        check_key(key)
        return None

    def local_path(self, key: str) -> Path:
        return self._path(key)

    # -- internals (the _sync ones run in worker threads) -----------------------------------

    def _path(self, key: str) -> Path:
        """The file of `key`, after checking the key and that no symlink leads out of root."""
        path = self._root / check_key(key)
        real = os.path.realpath(path)
        if not real.startswith(str(self._root) + os.sep):
            raise InvalidKey(f"object key {key!r} resolves outside the storage root")
        return path

    def _temp_path(self) -> Path:
        return self._partial / secrets.token_hex(16)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=_etag(st),
            modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
            content_type=_stored_content_type(path) or content_type_for(key),
        )

    def _write_whole(
        self, key: str, target: Path, data: bytes, content_type: str | None
    ) -> ObjectInfo:
        temp = self._temp_path()
        try:
            fd = open_new(temp)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return self._commit(key, temp, target, content_type)
        except BaseException:
            discard(temp)
            raise

    def _copy_whole(
        self, key: str, target: Path, source: Path, content_type: str | None
    ) -> ObjectInfo:
        temp = self._temp_path()
        try:
            with open(source, "rb") as reader, open(open_new(temp), "wb") as writer:
                shutil.copyfileobj(reader, writer, self._write_buffer_bytes)
                writer.flush()
                os.fsync(writer.fileno())
            return self._commit(key, temp, target, content_type)
        except FileNotFoundError as exc:
            discard(temp)
            if exc.filename is not None and os.fspath(exc.filename) == os.fspath(source):
                raise StorageError(f"cannot store {key!r}: no file {str(source)!r}") from None
            raise
        except BaseException:
            discard(temp)
            raise

    def _commit(self, key: str, temp: Path, target: Path, content_type: str | None) -> ObjectInfo:
        """Move the finished, fsynced `temp` onto `target` and describe the result."""
        if content_type is not None and content_type != content_type_for(key):
            _store_content_type(temp, content_type)
        for attempt in range(_REPLACE_ATTEMPTS):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(temp, target)
                break
            except FileNotFoundError:
                # A delete emptied and removed the folder between mkdir and replace.
                if attempt == _REPLACE_ATTEMPTS - 1 or not temp.exists():
                    raise
        fsync_dir(target.parent)
        return self._info(key, target)

    def _delete_files(self, paths: builtins.list[Path]) -> int:
        deleted = 0
        folders: set[Path] = set()
        for path in paths:
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    continue  # a folder at a key is no object; never remove it here
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                continue
            deleted += 1
            folders.add(path.parent)
        # Deepest first, so a parent is tried after its children went.
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            self._remove_empty_folders(folder)
        return deleted

    def _remove_empty_folders(self, folder: Path) -> None:
        while folder != self._root and self._root in folder.parents:
            try:
                folder.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return
                if exc.errno != errno.ENOENT:
                    raise
            folder = folder.parent

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        head = prefix.rpartition("/")[0]
        base = self._root / head if head else self._root
        objects: builtins.list[ObjectInfo] = []
        for key, path in self._walk(base, head):
            if not key.startswith(prefix):
                continue
            try:
                info = self._info(key, path)
            except ObjectNotFound:
                continue  # deleted while we listed
            # A listing reports the derived type, as an S3 listing does (see ObjectInfo).
            objects.append(dataclasses.replace(info, content_type=content_type_for(key)))
        objects.sort(key=lambda o: o.key)
        return objects

    def _walk(self, base: Path, base_key: str) -> Iterator[tuple[str, Path]]:
        """(key, path) of every regular file below `base`; symlinked folders are not followed,
        files whose names are no valid key are skipped."""
        stack = [(base, base_key)]
        while stack:
            folder, folder_key = stack.pop()
            try:
                with os.scandir(folder) as scan:
                    entries = list(scan)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = f"{folder_key}/{entry.name}" if folder_key else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if key != RESERVED_SEGMENT:
                        stack.append((Path(entry.path), key))
                elif entry.is_file(follow_symlinks=False) and _valid_key(key):
                    yield key, Path(entry.path)

    def _remove_stale_partials(self) -> int:
        cutoff = time.time() - self._stale_partial_seconds
        removed = 0
        with os.scandir(self._partial) as scan:
            entries = list(scan)
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    @contextlib.contextmanager
    def _os_errors(
        self, operation: str, key: str, *, missing: Path | None = None
    ) -> Iterator[None]:
        """Turn OS errors into `StorageError`s naming `operation` and `key`, and a missing
        `missing` file (the object being read) into `ObjectNotFound`."""
        try:
            yield
        except OSError as exc:
            if (
                isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError)
                and missing is not None
                and exc.filename is not None
                and os.fspath(exc.filename) == os.fspath(missing)
            ):
                raise ObjectNotFound(key) from None
            where = f" of {key!r}" if key else f" in {str(self._root)!r}"
            raise StorageError(f"local storage {operation}{where} failed: {exc}") from exc


def _copy_atomically(source: Path, destination: Path) -> None:
    """Copy `source` to `destination` through a sibling temp file and a rename."""
    temp = sibling_temp_path(destination)
    try:
        with open(source, "rb") as reader, open(open_new(temp), "wb") as writer:
            shutil.copyfileobj(reader, writer, DEFAULT_WRITE_BUFFER_BYTES)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temp, destination)
    except BaseException:
        discard(temp)
        raise
    fsync_dir(destination.parent)


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb", buffering=0)  # closed by the reading generator


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _valid_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


def _store_content_type(path: Path, content_type: str) -> None:
    try:
        os.setxattr(path, CONTENT_TYPE_XATTR, content_type.encode())
    except OSError as exc:
        log.debug("cannot keep the content type of %s (no user xattrs?): %s", path, exc)


def _stored_content_type(path: Path) -> str | None:
    try:
        return os.getxattr(path, CONTENT_TYPE_XATTR).decode()
    except OSError:
        return None
