"""Videos: list, read, change, delete, retry; who may do which.

Reading follows the access policy's rule for playing: public and unlisted videos are visible
to anyone once ready; private ones, and any video still processing or failed, only to their
owner and admins (to anyone else they do not exist). Lists of everyone's videos show public,
ready ones only. Changing, deleting and retrying are for the owner and admins.

Deleting removes every stored object (renditions, thumbnails, the source) before the rows, so
a failure half-way leaves a row the owner can delete again, never objects without a row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from ripplecast.db.engine import Database
from ripplecast.db.models import Job, JobState, Video, VideoState, Visibility
from ripplecast.errors import RipplecastError
from ripplecast.storage import Storage
from ripplecast.vod.jobs import JobQueue
from ripplecast.vod.uploads import source_key

log = logging.getLogger("ripplecast.vod")

__all__ = ["VideoNotFound", "VideoNotRetryable", "Videos", "Viewer", "media_prefix"]


class VideoNotFound(RipplecastError):
    """No such video, or not one the caller may see."""


class VideoNotRetryable(RipplecastError):
    """Only a failed video's job can be retried."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking (None: anonymous)."""

    user_id: int | None = None
    admin: bool = False

    def owns(self, video: Video) -> bool:
        return self.admin or (self.user_id is not None and video.owner_id == self.user_id)


def media_prefix(public_id: str) -> str:
    """Where a video's playable objects live (master.m3u8, renditions, thumbnails)."""
    return f"vod/{public_id}/"


class Videos:
    """The video catalogue."""

    def __init__(self, db: Database, storage: Storage, jobs: JobQueue) -> None:
        self._db = db
        self._storage = storage
        self._jobs = jobs

    async def list(
        self,
        viewer: Viewer,
        *,
        mine: bool = False,
        owner_id: int | None = None,
        state: VideoState | None = None,
        search: str = "",
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Video], int]:
        """A page of videos, newest first, and the total count.

        `mine`: the viewer's own (every state and visibility); otherwise public ready ones
        (an admin sees all), optionally of one owner. `search` matches titles (substring,
        case-insensitive)."""
        query = select(Video)
        if mine:
            if viewer.user_id is None:
                raise VideoNotFound("sign in to list your videos")
            query = query.where(Video.owner_id == viewer.user_id)
        elif not viewer.admin:
            query = query.where(
                Video.visibility == Visibility.PUBLIC, Video.state == VideoState.READY
            )
        if owner_id is not None:
            query = query.where(Video.owner_id == owner_id)
        if state is not None:
            query = query.where(Video.state == state)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(Video.title).like(f"%{escaped}%", escape="\\"))
        async with self._db.session() as session:
            total = (
                await session.execute(select(func.count()).select_from(query.subquery()))
            ).scalar_one()
            rows = (
                await session.execute(
                    query.options(selectinload(Video.job))
                    .order_by(Video.created_at.desc(), Video.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).scalars()
            return list(rows), int(total)

    async def get(self, public_id: str, viewer: Viewer) -> Video:
        """The video if the viewer may see it (with its job loaded)."""
        async with self._db.session() as session:
            video = (
                await session.execute(
                    select(Video)
                    .options(selectinload(Video.job))
                    .where(Video.public_id == public_id)
                )
            ).scalar_one_or_none()
        if video is None:
            raise VideoNotFound(f"no video {public_id}")
        visible = video.state is VideoState.READY and video.visibility is not Visibility.PRIVATE
        if not visible and not viewer.owns(video):
            raise VideoNotFound(f"no video {public_id}")
        return video

    async def update(
        self,
        public_id: str,
        viewer: Viewer,
        *,
        title: str | None = None,
        description: str | None = None,
        visibility: Visibility | None = None,
    ) -> Video:
        """Change the title, description or visibility (owner or admin)."""
        async with self._db.transaction() as session:
            video = (
                await session.execute(
                    select(Video)
                    .options(selectinload(Video.job))
                    .where(Video.public_id == public_id)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if video is None or not viewer.owns(video):
                raise VideoNotFound(f"no video {public_id}")
            if title is not None:
                video.title = title
            if description is not None:
                video.description = description
            if visibility is not None:
                video.visibility = visibility
            await session.flush()
            await session.refresh(video, ["updated_at"])
        return video

    async def delete(self, public_id: str, viewer: Viewer) -> None:
        """Remove the video: its objects in storage, then its rows (the job goes with it)."""
        video = await self.get(public_id, viewer)
        if not viewer.owns(video):
            raise VideoNotFound(f"no video {public_id}")
        removed = await self._storage.delete_prefix(media_prefix(public_id))
        await self._storage.delete(source_key(public_id))
        async with self._db.transaction() as session:
            row = await session.get(Video, video.id)
            if row is not None:
                await session.delete(row)
        log.info("video %s deleted (%d objects)", public_id, removed + 1)

    async def retry(self, public_id: str, viewer: Viewer) -> Job:
        """Queue a failed video's job again (owner or admin)."""
        video = await self.get(public_id, viewer)
        if not viewer.owns(video):
            raise VideoNotFound(f"no video {public_id}")
        job = video.job
        if video.state is not VideoState.FAILED or job is None or job.state is not JobState.FAILED:
            raise VideoNotRetryable(f"video {public_id} has not failed: nothing to retry")
        await self._jobs.retry(job.id)
        found = await self._jobs.job_for_video(video.id)
        assert found is not None
        return found
