"""Uploads: resumable (the tus core protocol's state) and single-request, to a video and its job.

Bytes are staged in a file on the node that receives them (`staging_dir/PUBLIC_ID`), never
held in memory. The database row keeps the offset the client may resume from; the staged file
is cut back to it before each append, so a write torn by a crash is simply sent again.

When the last byte arrives the file is probed (PyAV, in a thread). A file that is not usable
media is refused with the probe's reason, and its staged bytes and row are removed: nothing is
left behind. A good file is stored as `sources/VIDEO_ID`, then ONE transaction replaces the
upload row with the video row and its job, so no video is ever without its job. If that
transaction fails the stored source is deleted again.

Limits (settings): the size of one file, each user's quota (bytes of sources stored plus bytes
announced by unfinished uploads), and the body of one append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from ripplecast.db.engine import Database
from ripplecast.db.models import PUBLIC_ID_LENGTH, Upload, User, Video, VideoState, Visibility
from ripplecast.errors import RipplecastError
from ripplecast.storage import Storage
from ripplecast.vod.jobs import JobQueue
from ripplecast.vod.probe import InvalidMedia, MediaInfo, probe

log = logging.getLogger("ripplecast.vod")

__all__ = [
    "MediaRefused",
    "OffsetMismatch",
    "UploadBusy",
    "UploadError",
    "UploadLimits",
    "UploadNotFound",
    "UploadTooLarge",
    "Uploader",
    "Uploads",
    "new_public_id",
    "source_key",
]


class UploadError(RipplecastError):
    """An upload was refused; `status` is the HTTP answer."""

    status = 400


class UploadNotFound(UploadError):
    status = 404


class UploadTooLarge(UploadError):
    """Over the size limit or the user's quota."""

    status = 413


class OffsetMismatch(UploadError):
    """The client's offset is not where the upload stands (tus: 409)."""

    status = 409


class UploadBusy(UploadError):
    """Another request is appending to the same upload right now."""

    status = 409


class MediaRefused(UploadError):
    """The complete file is not media Ripplecast can use (the probe's reason)."""

    status = 422

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    quota_bytes: int
    expiry: timedelta
    chunk_max_bytes: int
    max_duration: float
    max_pixels: int
    accept_audio_only: bool = True


@dataclass(frozen=True, slots=True)
class Uploader:
    """Who uploads: admins have no quota."""

    user_id: int
    admin: bool = False


def new_public_id(length: int = PUBLIC_ID_LENGTH) -> str:
    """A random URL-safe id (letters, digits, '-', '_')."""
    return secrets.token_urlsafe(length)[:length]


def source_key(video_public_id: str) -> str:
    """Where a video's original file is stored."""
    return f"sources/{video_public_id}"


class Uploads:
    """Resumable and single-request uploads ending in a video and its queued job."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        jobs: JobQueue,
        staging_dir: Path,
        limits: UploadLimits,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._storage = storage
        self._jobs = jobs
        self._staging = staging_dir
        self.limits = limits
        self._clock = clock or (lambda: datetime.now(UTC))
        self._busy: set[str] = set()
        self.refused: dict[str, int] = {}
        """Refusals by reason, for logs and metrics."""
        self.bytes_received = 0
        """Upload bytes written to the staging folder (both kinds of upload), for metrics."""
        self.on_queued: Callable[[], None] = lambda: None
        """Called after a video's job is queued (a local worker starts at once)."""

    def _refuse(self, error: UploadError, reason: str) -> UploadError:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return error

    def _path(self, public_id: str) -> Path:
        # Public ids are generated here (URL-safe alphabet), never taken from a client as-is:
        # callers look the row up first, so the name cannot climb out of the folder.
        return self._staging / public_id

    async def _check_quota(self, uploader: Uploader, length: int) -> None:
        limits = self.limits
        if length > limits.max_bytes:
            raise self._refuse(
                UploadTooLarge(
                    f"the file is {length} bytes; the largest accepted is {limits.max_bytes}"
                ),
                "too_large",
            )
        if uploader.admin:
            return
        async with self._db.session() as session:
            stored = (
                await session.execute(
                    select(func.coalesce(func.sum(Video.source_bytes), 0)).where(
                        Video.owner_id == uploader.user_id
                    )
                )
            ).scalar_one()
            pending = (
                await session.execute(
                    select(func.coalesce(func.sum(Upload.length), 0)).where(
                        Upload.owner_id == uploader.user_id
                    )
                )
            ).scalar_one()
        used = int(stored) + int(pending)
        if used + length > limits.quota_bytes:
            raise self._refuse(
                UploadTooLarge(
                    f"over quota: {used} of {limits.quota_bytes} bytes used, this file needs"
                    f" {length} more"
                ),
                "quota",
            )

    # ----------------------------------------------------------------------------------
    # Resumable uploads

    async def create(
        self,
        uploader: Uploader,
        length: int,
        *,
        filename: str = "",
        title: str = "",
        description: str = "",
        visibility: Visibility = Visibility.PUBLIC,
    ) -> Upload:
        """Start an upload of `length` bytes (tus creation)."""
        if length <= 0:
            raise self._refuse(UploadError("an upload must have at least one byte"), "empty")
        await self._check_quota(uploader, length)
        now = self._clock()
        upload = Upload(
            public_id=new_public_id(PUBLIC_ID_LENGTH * 2),
            owner_id=uploader.user_id,
            length=length,
            received=0,
            filename=filename[:255],
            title=title[:200] or Path(filename).stem[:200],
            description=description,
            visibility=visibility,
            created_at=now,
            expires_at=now + self.limits.expiry,
        )
        await asyncio.to_thread(self._staging.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._path(upload.public_id).touch)
        async with self._db.transaction() as session:
            session.add(upload)
        return upload

    async def get(self, public_id: str, uploader: Uploader) -> Upload:
        """The caller's unexpired upload (someone else's is not found)."""
        async with self._db.session() as session:
            upload = (
                await session.execute(select(Upload).where(Upload.public_id == public_id))
            ).scalar_one_or_none()
        if (
            upload is None
            or (upload.owner_id != uploader.user_id and not uploader.admin)
            or upload.expires_at <= self._clock()
        ):
            raise UploadNotFound(f"no upload {public_id}")
        return upload

    async def append(
        self, public_id: str, uploader: Uploader, offset: int, chunks: AsyncIterable[bytes]
    ) -> tuple[Upload, Video | None]:
        """Append the bytes of one PATCH at `offset`; returns the upload and, once the last
        byte is in, the video it became."""
        upload = await self.get(public_id, uploader)
        if offset != upload.received:
            raise self._refuse(
                OffsetMismatch(f"the upload is at offset {upload.received}, not {offset}"),
                "offset",
            )
        if public_id in self._busy:
            raise self._refuse(UploadBusy("another request is appending to this upload"), "busy")
        self._busy.add(public_id)
        try:
            try:
                received = await self._write(upload, chunks)
            except asyncio.CancelledError:
                # The client went away mid-body (aiohttp cancels the handler): keep what
                # reached the disk, so it resumes from there instead of from the last PATCH.
                path = self._path(public_id)
                on_disk = (await asyncio.to_thread(path.stat)).st_size
                kept = max(upload.received, min(on_disk, upload.length))
                await asyncio.shield(self._save_received(upload, kept))
                raise
            await self._save_received(upload, received)
            upload.received = received
            if received < upload.length:
                return upload, None
            return upload, await self._finish(upload, uploader, self._path(public_id))
        finally:
            self._busy.discard(public_id)

    async def _save_received(self, upload: Upload, received: int) -> None:
        async with self._db.transaction() as session:
            row = (
                await session.execute(select(Upload).where(Upload.id == upload.id))
            ).scalar_one_or_none()
            if row is None:
                raise UploadNotFound(f"no upload {upload.public_id}")
            row.received = received

    async def _write(self, upload: Upload, chunks: AsyncIterable[bytes]) -> int:
        """Write at the upload's offset; return the new offset (what reached the disk, even
        when the client went away mid-body)."""
        path = self._path(upload.public_id)
        limit = min(upload.length - upload.received, self.limits.chunk_max_bytes)
        handle = await asyncio.to_thread(open, path, "r+b")
        written = 0
        try:
            await asyncio.to_thread(handle.truncate, upload.received)
            await asyncio.to_thread(handle.seek, upload.received)
            try:
                async for chunk in chunks:
                    if written + len(chunk) > limit:
                        raise self._refuse(
                            UploadTooLarge(
                                f"the body goes past the upload's length or the"
                                f" {self.limits.chunk_max_bytes}-byte limit of one request"
                            ),
                            "chunk_too_large",
                        )
                    await asyncio.to_thread(handle.write, chunk)
                    written += len(chunk)
                    self.bytes_received += len(chunk)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                # The client went away: keep what arrived, it resumes from there.
                log.info("upload %s: body ended early (%s)", upload.public_id, exc)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        finally:
            await asyncio.to_thread(handle.close)
        return upload.received + written

    async def terminate(self, public_id: str, uploader: Uploader) -> None:
        """Abandon an upload: its row and staged bytes go (tus termination)."""
        upload = await self.get(public_id, uploader)
        await self._discard(upload)

    async def _discard(self, upload: Upload) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(Upload).where(Upload.id == upload.id))
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(upload.public_id).unlink)

    async def expire(self) -> int:
        """Remove unfinished uploads past their expiry; returns how many."""
        async with self._db.session() as session:
            stale = list(
                (
                    await session.execute(select(Upload).where(Upload.expires_at <= self._clock()))
                ).scalars()
            )
        for upload in stale:
            if upload.public_id not in self._busy:
                await self._discard(upload)
        return len(stale)

    # ----------------------------------------------------------------------------------
    # Single-request uploads

    async def upload(
        self,
        uploader: Uploader,
        chunks: AsyncIterable[bytes],
        *,
        length: int | None = None,
        filename: str = "",
        title: str = "",
        description: str = "",
        visibility: Visibility = Visibility.PUBLIC,
    ) -> Video:
        """A whole file in one request body (streamed to the staging folder)."""
        limit = self.limits.max_bytes if length is None else length
        await self._check_quota(uploader, length or 1)
        await asyncio.to_thread(self._staging.mkdir, parents=True, exist_ok=True)
        path = self._staging / f"single-{new_public_id()}"
        try:
            size = 0
            with await asyncio.to_thread(open, path, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise self._refuse(
                            UploadTooLarge(
                                f"the body is larger than {limit} bytes"
                                + (" (its Content-Length)" if length is not None else "")
                            ),
                            "too_large",
                        )
                    await asyncio.to_thread(handle.write, chunk)
                    self.bytes_received += len(chunk)
            if length is not None and size != length:
                raise self._refuse(
                    UploadError(f"the body ended after {size} of {length} bytes"), "truncated"
                )
            if size == 0:
                raise self._refuse(UploadError("the body is empty"), "empty")
            await self._check_quota(uploader, size)
            upload = Upload(
                public_id="",
                owner_id=uploader.user_id,
                length=size,
                received=size,
                filename=filename[:255],
                title=title[:200] or Path(filename).stem[:200],
                description=description,
                visibility=visibility,
            )
            return await self._finish(upload, uploader, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)

    # ----------------------------------------------------------------------------------

    async def _finish(self, upload: Upload, uploader: Uploader, path: Path) -> Video:
        """Probe, store the source, and swap the upload for a video and its job."""
        limits = self.limits
        try:
            info: MediaInfo = await asyncio.to_thread(
                probe,
                path,
                max_duration=limits.max_duration,
                max_pixels=limits.max_pixels,
                accept_audio_only=limits.accept_audio_only,
            )
        except InvalidMedia as exc:
            if upload.public_id:
                await self._discard(upload)
            raise self._refuse(MediaRefused(exc.reason, str(exc)), f"media_{exc.reason}") from None
        video = Video(
            public_id=new_public_id(),
            owner_id=uploader.user_id,
            title=upload.title,
            description=upload.description,
            visibility=upload.visibility,
            state=VideoState.PROCESSING,
            source_name=upload.filename,
            source_bytes=upload.length,
            duration_seconds=info.duration,
            width=info.video.display_width if info.video else None,
            height=info.video.display_height if info.video else None,
            video_codec=info.video.codec if info.video else None,
            audio_codec=info.audio.codec if info.audio else None,
            renditions=[],
        )
        key = source_key(video.public_id)
        await self._storage.put_file(key, path)
        try:
            async with self._db.transaction() as session:
                owner = await session.get(User, uploader.user_id)
                if owner is None:
                    raise UploadNotFound("the uploading account no longer exists")
                if upload.public_id:
                    gone = await session.execute(delete(Upload).where(Upload.id == upload.id))
                    if gone.rowcount != 1:  # type: ignore[attr-defined]
                        raise UploadNotFound(f"no upload {upload.public_id}")
                session.add(video)
                await session.flush()
                await self._jobs.enqueue(session, video)
        except BaseException:
            await self._storage.delete(key)
            raise
        if upload.public_id:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
        self.on_queued()
        log.info(
            "video %s uploaded by user %d: %d bytes, %.1f s, queued for transcoding",
            video.public_id,
            uploader.user_id,
            upload.length,
            info.duration,
        )
        return video
