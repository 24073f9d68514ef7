"""Cutting an upload into the parts of an S3 multipart upload, one part in memory at a time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from ripplecast.storage._files import run_blocking
from ripplecast.storage.base import StorageError

__all__ = ["file_parts", "source_errors", "stream_parts"]


async def stream_parts(
    head: bytearray, source: AsyncIterator[bytes], part_size: int
) -> AsyncGenerator[bytes, None]:
    """Cut `head` and then the rest of `source` into parts of exactly `part_size` bytes (the
    last one shorter), holding at most one part plus one chunk."""
    pending = head
    while True:
        while len(pending) >= part_size:
            yield bytes(pending[:part_size])
            del pending[:part_size]
        try:
            pending += await anext(source)
        except StopAsyncIteration:
            break
    if pending:
        yield bytes(pending)


async def file_parts(key: str, path: Path, part_size: int) -> AsyncGenerator[bytes, None]:
    """The file at `path` in parts of `part_size` bytes, read in a worker thread."""
    with source_errors(key, path):
        file = await run_blocking(_open_for_reading, path)
    try:
        while True:
            with source_errors(key, path):
                part = await run_blocking(file.read, part_size)
            if not part:
                return
            yield part
    finally:
        file.close()


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb")  # closed by the reading generator


@contextlib.contextmanager
def source_errors(key: str, path: Path) -> Iterator[None]:
    """Turn a failure to read the local file being uploaded into a `StorageError`."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot store {key!r}: reading {str(path)!r} failed: {exc}") from exc
