"""The creator's videos: `/dashboard/upload` and `/dashboard/videos` with their forms.

Invariants: without JavaScript an upload is one multipart request whose CSRF token and text
fields come before the file, so nothing is stored for a forged request; plain fields are read
up to `FIELD_MAX_BYTES` and the file is streamed to the uploads service in `UPLOAD_CHUNK`
pieces, never held whole in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from ripplecast.accounts.csrf import FORM_FIELD
from ripplecast.db.models import Video
from ripplecast.http.pages.base import (
    LIST_LIMIT,
    PageContext,
    log,
    retry_transcoding,
    video_id,
)
from ripplecast.vod.service import VideoNotFound
from ripplecast.vod.uploads import Uploader, UploadError
from ripplecast.web.views import (
    FormError,
    PageError,
    Redirect,
    Visitor,
    details_fields,
    notice_text,
    video_card,
)

__all__ = ["FIELD_MAX_BYTES", "UPLOAD_CHUNK", "VideoPages"]

FIELD_MAX_BYTES = 64 * 1024
"""Largest plain field of the multipart upload form."""
UPLOAD_CHUNK = 256 * 1024
"""Bytes read from the request at a time while a file streams to the uploads service."""
TUS_CHUNK_MAX_BYTES = 8 * 1024 * 1024
"""Largest chunk the upload page's JavaScript sends (less if the server accepts less)."""


class VideoPages:
    """Uploading videos and managing one's own."""

    def __init__(self, context: PageContext) -> None:
        self._ctx = context

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        page = self._ctx.page
        router.add_get("/dashboard/upload", page(self.upload_form))
        router.add_post("/dashboard/upload", page(self.upload))
        router.add_get("/dashboard/videos", page(self.my_videos))
        router.add_post("/dashboard/videos/{id}/edit", page(self.edit_video))
        router.add_post("/dashboard/videos/{id}/delete", page(self.delete_video))
        router.add_post("/dashboard/videos/{id}/retry", page(self.retry_video))

    async def upload_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The upload form (tus from JavaScript, one multipart request without)."""
        _ = visitor.user
        self._ctx.need_vod()
        return self._upload_page(visitor)

    def _upload_page(self, visitor: Visitor, *, status: int = 200, **context: Any) -> web.Response:
        settings = self._ctx.settings
        return self._ctx.render(
            visitor,
            "upload.html",
            status=status,
            max_bytes=settings.upload_max_bytes,
            chunk_bytes=min(settings.upload_chunk_max_bytes, TUS_CHUNK_MAX_BYTES),
            **context,
        )

    async def upload(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form without JavaScript: one multipart request, streamed to the staging folder.

        The CSRF token and the text fields must come before the file (browsers send fields in
        the form's order), so nothing is stored for a forged request."""
        user = visitor.user
        _, uploads = self._ctx.need_vod()
        if request.content_type != "multipart/form-data":
            raise PageError(415, "The upload form is sent as multipart/form-data.")
        reader = await request.multipart()
        fields: dict[str, str] = {}
        checked = False
        video: Video | None = None
        try:
            while video is None:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise FormError("Nested multipart bodies are not accepted.")
                if part.name != "file":
                    fields[part.name or ""] = await _read_field(part)
                    if part.name == FORM_FIELD:
                        if not self._ctx.csrf_ok(request, visitor, fields[FORM_FIELD]):
                            raise PageError(403, "This form has expired: reload the page.")
                        checked = True
                    continue
                if not checked:
                    raise PageError(403, "This form has no valid CSRF token before the file.")
                details = details_fields(fields)
                filename = (part.filename or "")[:255].replace("\x00", "")
                if not filename:
                    raise FormError("Choose a file to upload.")
                video = await uploads.upload(
                    Uploader(user.user_id, admin=visitor.admin),
                    _part_chunks(part),
                    filename=filename,
                    title=details.title,
                    description=details.description,
                    visibility=details.visibility,
                )
        except (FormError, UploadError) as exc:
            status = exc.status if isinstance(exc, UploadError) else 422
            return self._upload_page(visitor, status=status, error=str(exc))
        if video is None:
            if not checked:
                raise PageError(403, "This form has no valid CSRF token.")
            return self._upload_page(visitor, status=422, error="Choose a file to upload.")
        log.info("web upload video=%s user=%s", video.public_id, user.username)
        raise Redirect("/dashboard/videos?msg=uploaded")

    async def my_videos(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The creator's videos in every state, with transcoding progress."""
        _ = visitor.user
        videos, _ = self._ctx.need_vod()
        rows, total = await videos.list(visitor.viewer, mine=True, limit=LIST_LIMIT)
        return self._ctx.render(
            visitor,
            "videos.html",
            videos=[video_card(v, job=v.job) for v in rows],
            total=total,
            notice=notice_text(request.query.get("msg")),
        )

    async def edit_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change a video's title, description or visibility."""
        videos, _ = self._ctx.need_vod()
        public_id = video_id(request)
        _ = visitor.user
        form = await self._ctx.form(request, visitor)
        try:
            details = details_fields(form)
            await videos.update(
                public_id,
                visitor.viewer,
                title=details.title,
                description=details.description,
                visibility=details.visibility,
            )
        except FormError as exc:
            raise PageError(422, str(exc)) from None
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        raise Redirect("/dashboard/videos?msg=video-saved")

    async def delete_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Delete a video and every file of it."""
        videos, _ = self._ctx.need_vod()
        public_id = video_id(request)
        _ = visitor.user
        await self._ctx.form(request, visitor)
        try:
            await videos.delete(public_id, visitor.viewer)
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        raise Redirect("/dashboard/videos?msg=video-deleted")

    async def retry_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Queue a failed video's transcoding again."""
        videos, _ = self._ctx.need_vod()
        public_id = video_id(request)
        _ = visitor.user
        await self._ctx.form(request, visitor)
        await retry_transcoding(videos, public_id, visitor.viewer)
        raise Redirect("/dashboard/videos?msg=video-retried")


async def _read_field(part: BodyPartReader) -> str:
    """A plain multipart field, at most `FIELD_MAX_BYTES`."""
    data = bytearray()
    while chunk := await part.read_chunk(16 * 1024):
        data += chunk
        if len(data) > FIELD_MAX_BYTES:
            raise FormError(f"The field {part.name!r} is too long.")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise FormError(f"The field {part.name!r} is not UTF-8 text.") from None


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK):
        yield chunk
