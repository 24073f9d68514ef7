"""Blocking file helpers shared by the storage backends, and the one way they leave the loop.

Everything here is synchronous and meant to run in a worker thread through `run_blocking`,
which (unlike a bare `asyncio.to_thread`) waits for the thread to finish when its caller is
cancelled, so cleanup code never races a write still under way on the same descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

__all__ = [
    "discard",
    "fsync_dir",
    "open_new",
    "run_blocking",
    "sibling_temp_path",
    "write_all",
]

P = ParamSpec("P")
T = TypeVar("T")

FILE_MODE = 0o666
"""Mode of new files before the umask: the same as any file the process would create."""


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `func(*args, **kwargs)` in a worker thread and return its result.

    If the caller is cancelled, the thread (which cannot be stopped) is awaited before the
    cancellation propagates, so a caller's `finally` never closes or removes a file that the
    thread is still writing.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({future})
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: its outcome no longer matters
        raise


def open_new(path: Path) -> int:
    """Create `path` exclusively for writing; return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """Make a rename inside folder `path` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    """Remove the file `path` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def sibling_temp_path(path: Path) -> Path:
    """A fresh hidden name next to `path`, on the same filesystem, for an atomic replace."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
