"""The upload loop: create or resume, append chunk after chunk, ride out transient failures,
then (optionally) follow the transcoding.

Where to send from is always the server's word (`Upload-Offset` from HEAD or PATCH), never a
local guess; the upload URL is saved before the first byte is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin

import aiohttp

from ripplecast.upload_client.store import ResumeStore
from ripplecast.upload_client.tus import TransientFailure, TusClient, UploadGone
from ripplecast.upload_client.wire import (
    DEFAULT_CHUNK_SIZE,
    READ_BLOCK,
    VISIBILITIES,
    OutcomeUnknown,
    SavedUpload,
    ServerMisbehaved,
    ServerUnavailable,
    UploadClientError,
    UploadOutcome,
    UploadRefused,
    UploadUsageError,
    encode_metadata,
    resume_key,
    retry_delay,
    server_base,
)

__all__ = ["UploadOptions", "UploadProgress", "upload_file"]


class UploadProgress(Protocol):
    """What the upload loop reports (a Rich display, or nothing)."""

    def started(self, total: int, offset: int, *, resumed: bool) -> None:
        """Sending begins (again) at `offset` of `total` bytes: the server's offset."""

    def sent(self, offset: int) -> None:
        """Bytes up to `offset` have been written to the connection."""

    def retrying(self, reason: str, delay: float, failures: int, limit: int) -> None:
        """A transient failure; the next attempt comes after `delay` seconds."""

    def note(self, message: str) -> None:
        """Something the person at the terminal should know."""

    def transcoding(self, fraction: float, eta_seconds: float | None) -> None:
        """The server's transcoding progress (with --wait)."""


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """One `ripplecast upload` run."""

    file: Path
    title: str
    server: str
    token: str
    state_file: Path
    description: str = ""
    visibility: str = "public"
    """One of VISIBILITIES."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    wait: bool = False
    retries: int = 5
    """Consecutive transient failures tolerated (the count restarts when bytes get through)."""
    retry_base_seconds: float = 0.5
    retry_cap_seconds: float = 10.0
    poll_seconds: float = 1.0
    wait_timeout_seconds: float = 6 * 3600
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 300.0
    """Silence tolerated on a connection (the last PATCH waits while the server probes)."""


@dataclass
class _Attempts:
    """Consecutive transient failures, bounded by `limit`."""

    limit: int
    base: float
    cap: float
    failures: int = 0

    async def pause(self, reason: str, progress: UploadProgress) -> None:
        self.failures += 1
        if self.failures > self.limit:
            raise ServerUnavailable(
                f"giving up after {self.failures} failures in a row ({reason}); run the same"
                " command again to resume"
            )
        delay = retry_delay(self.failures, base=self.base, cap=self.cap)
        progress.retrying(reason, delay, self.failures, self.limit)
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class _LocalFile:
    """The file as it was when the run began: a change on disk stops the upload."""

    path: Path
    """Absolute."""
    size: int
    mtime_ns: int

    @classmethod
    def inspect(cls, path: Path) -> _LocalFile:
        try:
            absolute = path.resolve(strict=True)
            stat = absolute.stat()
        except OSError as exc:
            raise UploadUsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not absolute.is_file():
            raise UploadUsageError(f"{path} is not a regular file")
        if stat.st_size == 0:
            raise UploadUsageError(f"{path} is empty")
        return cls(absolute, stat.st_size, stat.st_mtime_ns)

    def check_unchanged(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise UploadClientError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns):
            raise UploadClientError(f"{self.path} changed while it was being uploaded")

    async def read(self, offset: int, count: int, progress: UploadProgress) -> AsyncIterator[bytes]:
        """The bytes [offset, offset + count), reporting progress as they are sent."""
        handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            await asyncio.to_thread(handle.seek, offset)
            left = count
            while left > 0:
                block = await asyncio.to_thread(handle.read, min(READ_BLOCK, left))
                if not block:
                    raise UploadClientError(f"{self.path} became shorter while being uploaded")
                yield block
                left -= len(block)
                progress.sent(offset + count - left)
        finally:
            handle.close()  # synchronous: this also runs when the generator is finalised


MAX_STARTS = 3
"""Fresh uploads one run may create (a stored upload can expire; a new one should not)."""


async def upload_file(
    options: UploadOptions, progress: UploadProgress, store: ResumeStore
) -> UploadOutcome:
    """Upload (or resume) the file and, with `options.wait`, wait for its transcoding.

    Raises UploadUsageError, UploadRefused, ServerUnavailable, OutcomeUnknown,
    ServerMisbehaved, UploadClientError."""
    if options.chunk_size < 1:
        raise UploadUsageError("the chunk size must be at least one byte")
    if options.visibility not in VISIBILITIES:
        raise UploadUsageError(
            f"the visibility must be public, unlisted or private, not {options.visibility!r}"
        )
    server = server_base(options.server)
    local = _LocalFile.inspect(options.file)
    metadata = encode_metadata(
        {
            "filename": local.path.name,
            "title": options.title,
            "description": options.description,
            "visibility": options.visibility,
        }
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=options.connect_timeout_seconds,
        sock_read=options.read_timeout_seconds,
    )
    attempts = _Attempts(options.retries, options.retry_base_seconds, options.retry_cap_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = TusClient(session, server, options.token)
        key = resume_key(server, local.path, local.size, local.mtime_ns)
        sender = _Sender(client, store, key, local, metadata, options.chunk_size)
        video_id = await sender.run(progress, attempts)
        if not options.wait:
            return UploadOutcome(video_id, "queued")
        return await _wait(client, video_id, options, progress, attempts)


@dataclass
class _Sender:
    """Creates or resumes the upload and appends until the server names the video."""

    client: TusClient
    store: ResumeStore
    key: str
    local: _LocalFile
    metadata: str
    chunk_size: int
    last_byte_sent: bool = False
    """The request carrying the last byte went out (its answer may have been lost)."""

    async def run(self, progress: UploadProgress, attempts: _Attempts) -> str:
        saved = self.store.get(self.key)
        url = saved.url if saved is not None else None
        starts = 0
        while True:
            try:
                if url is None:
                    starts += 1
                    if starts > MAX_STARTS:
                        raise ServerMisbehaved("the server keeps losing new uploads")
                    url = await self._create()
                    offset, resumed = 0, False
                else:
                    offset, resumed = await self.client.offset(url, self.local.size), True
                progress.started(self.local.size, offset, resumed=resumed)
                return await self._append_all(url, offset, progress, attempts)
            except UploadGone:
                self.store.remove(self.key)
                if self.last_byte_sent:
                    raise OutcomeUnknown(
                        "the whole file was sent but the server's answer was lost, and the"
                        " upload is gone: it has probably become a video; look for it among"
                        " your videos before uploading again"
                    ) from None
                progress.note("the server no longer has the upload (expired?); starting over")
                url = None
            except TransientFailure as exc:
                await attempts.pause(str(exc), progress)
            except UploadRefused as exc:
                if exc.status == 422:  # the media was refused and the upload discarded
                    self.store.remove(self.key)
                raise

    async def _create(self) -> str:
        url, expires = await self.client.create(self.local.size, self.metadata)
        # Saved before the first byte is sent: from here on, any interruption resumes.
        self.store.put(self.key, SavedUpload(url, time.time(), expires))
        return url

    async def _append_all(
        self, url: str, offset: int, progress: UploadProgress, attempts: _Attempts
    ) -> str:
        size = self.local.size
        while True:
            self.local.check_unchanged()
            # At offset == size this is an empty PATCH: it asks the server to finish an upload
            # whose bytes were all stored but which did not become a video (a failure after).
            count = min(self.chunk_size, size - offset)
            self.last_byte_sent = offset + count == size
            body = self.local.read(offset, count, progress) if count else None
            new_offset, video_id = await self.client.append(url, offset, count, body)
            if new_offset > offset:
                attempts.failures = 0
            elif video_id is None:
                raise TransientFailure(f"the server kept none of the bytes after {offset}")
            offset = new_offset
            progress.sent(offset)
            if video_id is not None:
                self.store.remove(self.key)
                return video_id


async def _wait(
    client: TusClient,
    video_id: str,
    options: UploadOptions,
    progress: UploadProgress,
    attempts: _Attempts,
) -> UploadOutcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.wait_timeout_seconds
    attempts.failures = 0
    while True:
        try:
            status = await client.video(video_id)
        except TransientFailure as exc:
            await attempts.pause(str(exc), progress)
            continue
        attempts.failures = 0
        if status.state == "ready":
            progress.transcoding(1.0, 0.0)
            playlist = urljoin(client.server + "/", status.playlist) if status.playlist else None
            return UploadOutcome(video_id, "ready", playlist)
        if status.state == "failed":
            return UploadOutcome(video_id, "failed", error=status.error or "transcoding failed")
        progress.transcoding(min(max(status.progress, 0.0), 1.0), status.eta_seconds)
        if loop.time() + options.poll_seconds > deadline:
            raise UploadClientError(
                f"video {video_id} is still processing after {options.wait_timeout_seconds:g} s"
            )
        await asyncio.sleep(options.poll_seconds)
