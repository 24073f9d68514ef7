"""The media-object storage interface, its key rules and its errors.

This module owns the `Storage` protocol, `ObjectInfo`, the key and prefix rules (`check_key`,
`check_prefix`), the content types derived from key names and the storage error classes. It
holds no implementation: `LocalStorage` (a folder) and `S3Storage` (any S3-compatible store)
keep the contract written here, checked by tests/contract/test_storage_contract.py.

Invariants every implementation keeps:

- Keys are relative, '/'-separated, 1..512 characters, segments of [A-Za-z0-9._-] other than
  '.' and '..'; the first segment '.partial' is reserved (the local backend writes there). Every
  method taking a key validates it first and raises `InvalidKey`, so no key can leave its root.
- An object appears at its key whole or not at all: readers never see a partial write, and a
  failed or cancelled write leaves nothing behind (no temp file, no multipart parts).
- A missing object raises `ObjectNotFound`; any other failure of the backend raises
  `StorageError` naming the operation and the key. No OS, botocore or aiohttp exception escapes.
- `list` and `delete_prefix` match keys by plain string prefix (S3 semantics): 'vod/ab' matches
  'vod/abc/x'. Listings are sorted by key.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ripplecast.errors import RipplecastError, UsageError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_LENGTH",
    "RESERVED_SEGMENT",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "check_key",
    "check_prefix",
    "check_range",
    "content_type_for",
]

MAX_KEY_LENGTH = 512
"""Longest key accepted, in characters (all ASCII, so also in bytes)."""

RESERVED_SEGMENT = ".partial"
"""First key segment no object may use: the local backend keeps in-progress writes there."""

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Bytes per chunk yielded by `Storage.read` unless the caller asks otherwise."""

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")

_CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".json": "application/json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class StorageError(RipplecastError):
    """The storage backend failed; the message names the operation, the key and the cause."""


class ObjectNotFound(StorageError):
    """No object exists at the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at key {key!r}")
        self.key = key


class InvalidKey(StorageError):
    """A key or prefix breaks the key rules (see `check_key`)."""


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise `InvalidKey` saying why.

    Valid: 1..512 characters; '/'-separated segments of [A-Za-z0-9._-], none empty, '.' or '..';
    no leading or trailing '/'; first segment not '.partial' (reserved).
    """
    if not isinstance(key, str):
        raise InvalidKey(f"an object key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKey("an object key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key is {len(key)} characters long; at most {MAX_KEY_LENGTH}")
    segments = key.split("/")
    for segment in segments:
        if not segment:
            raise InvalidKey(f"object key {key!r} has an empty segment (leading, trailing or //)")
        if segment in (".", ".."):
            raise InvalidKey(f"object key {key!r} has a {segment!r} segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(
                f"object key {key!r} has characters outside [A-Za-z0-9._-] in segment {segment!r}"
            )
    if segments[0] == RESERVED_SEGMENT:
        raise InvalidKey(f"object key {key!r} is under the reserved folder {RESERVED_SEGMENT!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it is "" (everything) or a valid key optionally ending with one '/'.

    Raises `InvalidKey` otherwise.
    """
    if prefix == "":
        return prefix
    if not isinstance(prefix, str):
        raise InvalidKey(f"a key prefix must be a str, got {type(prefix).__name__}")
    try:
        check_key(prefix.removesuffix("/"))
    except InvalidKey as exc:
        raise InvalidKey(f"invalid key prefix {prefix!r}: {exc}") from None
    return prefix


def check_range(start: int, stop: int | None, chunk_size: int) -> None:
    """Validate the arguments of `Storage.read`; raise `UsageError` (a caller bug) if wrong."""
    if start < 0:
        raise UsageError(f"read range start must be >= 0, got {start}")
    if stop is not None and stop < start:
        raise UsageError(f"read range stop ({stop}) must be >= start ({start})")
    if chunk_size < 1:
        raise UsageError(f"read chunk_size must be >= 1, got {chunk_size}")


def content_type_for(key: str) -> str:
    """The media type for `key`'s extension (HLS, segments, captions, images, JSON), else
    application/octet-stream."""
    dot = key.rfind(".")
    if dot == -1 or "/" in key[dot:]:
        return DEFAULT_CONTENT_TYPE
    return _CONTENT_TYPES.get(key[dot:].lower(), DEFAULT_CONTENT_TYPE)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    """The object key, as the caller names it (without any backend prefix)."""
    size: int
    """Size in bytes."""
    etag: str
    """Quoted entity tag; changes whenever the content is rewritten (usable as an HTTP ETag)."""
    modified: datetime
    """Last write, timezone-aware UTC."""
    content_type: str
    """Media type stored with the object. In `list` results it is derived from the key
    (`content_type_for`), as listings do not carry it."""


class Storage(Protocol):
    """A flat store of immutable-once-written media objects addressed by key.

    Every method taking a key raises `InvalidKey` for a key breaking the rules and
    `StorageError` for a backend failure.
    """

    async def start(self) -> None:
        """Prepare the backend (folders; S3 client, and the bucket if it does not exist)."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...

    async def check(self) -> None:
        """Readiness probe: return if the backend answers, else raise `StorageError`."""
        ...

    async def put_file(
        self, key: str, path: Path, *, content_type: str | None = None
    ) -> ObjectInfo:
        """Store the content of the local file `path` at `key` (replacing any object there)."""
        ...

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> ObjectInfo:
        """Store `data` at `key` (replacing any object there)."""
        ...

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None
    ) -> ObjectInfo:
        """Store the concatenated `chunks` at `key` without holding the whole object in memory.

        An exception raised by `chunks` propagates unchanged, and nothing is stored.
        """
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """What the store knows about `key`; raises `ObjectNotFound`."""
        ...

    def read(
        self,
        key: str,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """The bytes [start, stop) of `key` (clamped to its size, like a slice) in chunks of at
        most `chunk_size`. Raises `ObjectNotFound` on the first iteration at the latest;
        `UsageError` for a negative start, stop < start or chunk_size < 1."""
        ...

    async def read_bytes(self, key: str) -> bytes:
        """The whole object (meant for small ones such as playlists); raises `ObjectNotFound`."""
        ...

    async def download(self, key: str, path: Path) -> None:
        """Copy `key` to the local file `path`, atomically (whole or not at all); raises
        `ObjectNotFound` leaving `path` untouched."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing object is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; return how many were removed.

        The empty prefix is refused (`InvalidKey`): delete objects by their folder.
        """
        ...

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` ("" for all), sorted by key."""
        ...

    async def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A URL anyone can GET `key` from until it expires, or None if the backend has none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` if the backend is a local folder (for sendfile), else None.

        The file may not exist; `stat` says whether it does."""
        ...
