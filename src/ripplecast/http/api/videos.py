"""Video operations: upload (one request, or resumable with the tus 1.0 core protocol), list,
read with job progress, change, delete, retry.

Resumable uploads follow tus 1.0.0 (creation, HEAD, PATCH with Upload-Offset, termination and
expiration): `POST /uploads` with `Upload-Length` and `Upload-Metadata` (base64 `filename`,
`title`, `description`, `visibility`), then `PATCH /uploads/ID` with the bytes from
`Upload-Offset`; `HEAD /uploads/ID` says where to resume. The PATCH that brings the last byte
answers with `Ripplecast-Video: ID` once the file has been probed and queued for transcoding.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from ripplecast.accounts.policy import Principal, Scope
from ripplecast.db.models import Job, JobState, Video, VideoState, Visibility
from ripplecast.http.api.framework import ApiContext, ApiRouter, Page, PageQuery
from ripplecast.http.api.models import Text
from ripplecast.http.api.problems import ApiError
from ripplecast.vod.service import VideoNotFound, VideoNotRetryable, Videos, Viewer, media_prefix
from ripplecast.vod.uploads import MediaRefused, Uploader, UploadError, Uploads

__all__ = ["TUS_VERSION", "videos_router"]

TUS_VERSION = "1.0.0"
TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}
VIDEO_ID = r"^[A-Za-z0-9_-]{1,32}$"
UPLOAD_CHUNK = 256 * 1024

Signer = Callable[[str], str]
"""Makes a signed query string for a resource such as `/vod/ID` (the node's signing key)."""


class JobOut(BaseModel):
    """The transcoding job of a video."""

    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(ge=0, le=1, description="Fraction done, 0 to 1.")
    eta_seconds: float | None = Field(description="Estimated seconds left while running.")
    attempts: int = Field(ge=0)
    max_attempts: int = Field(ge=0)
    last_error: str | None


class RenditionOut(BaseModel):
    """One quality of a ready video."""

    name: str
    width: int
    height: int
    bandwidth: int = Field(description="Peak bits per second.")
    average_bandwidth: int | None = None
    codecs: str
    playlist: str = Field(description="The rendition's playlist URL path.")


class VideoOut(BaseModel):
    """A video."""

    id: str
    title: str
    description: str
    visibility: Visibility
    state: Literal["processing", "ready", "failed"]
    owner_id: int
    source_name: str
    source_bytes: int
    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    renditions: list[RenditionOut]
    playlist: str | None = Field(description="The master playlist URL (when ready).")
    poster: str | None
    thumbnails: str | None = Field(description="WebVTT map of the scrub-preview sprites.")
    error: str | None
    job: JobOut | None
    created_at: datetime
    ready_at: datetime | None


class VideoId(BaseModel):
    """The `{id}` path parameter."""

    id: str = Field(pattern=VIDEO_ID)


class VideoListQuery(PageQuery):
    """Paging, filters and search."""

    mine: bool = Field(False, description="Only your own videos (signed in), in every state.")
    state: Literal["processing", "ready", "failed"] | None = None
    q: Text = Field("", max_length=200, description="Search titles (substring).")


class VideoPatch(BaseModel):
    """Fields to change (absent ones stay)."""

    title: Text | None = Field(default=None, max_length=200)
    description: Text | None = Field(default=None, max_length=5000)
    visibility: Visibility | None = None


class SingleUploadQuery(BaseModel):
    """The new video's fields, for a one-request upload."""

    title: Text = Field("", max_length=200)
    description: Text = Field("", max_length=5000)
    visibility: Visibility = Visibility.PUBLIC
    filename: Text = Field("", max_length=255)


class TusCreateHeaders(BaseModel):
    """Headers of a tus creation request."""

    tus_resumable: str = Field(alias="Tus-Resumable", max_length=16)
    upload_length: int = Field(alias="Upload-Length", ge=1, le=2**53)
    upload_metadata: str = Field("", alias="Upload-Metadata", max_length=4096)


class TusPatchHeaders(BaseModel):
    """Headers of a tus append."""

    tus_resumable: str = Field(alias="Tus-Resumable", max_length=16)
    upload_offset: int = Field(alias="Upload-Offset", ge=0, le=2**53)


class TusHeaders(BaseModel):
    """The tus version header."""

    tus_resumable: str = Field(alias="Tus-Resumable", max_length=16)


class UploadId(BaseModel):
    """The `{id}` of an upload."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


def _job_out(job: Job | None) -> JobOut | None:
    if job is None:
        return None
    return JobOut(
        state=job.state.value,
        progress=min(max(job.progress, 0.0), 1.0),
        eta_seconds=job.eta_seconds if job.state is JobState.RUNNING else None,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        last_error=job.last_error,
    )


def _video_out(video: Video, *, query: str = "") -> VideoOut:
    prefix = "/" + media_prefix(video.public_id)
    ready = video.state is VideoState.READY
    suffix = f"?{query}" if query else ""
    has_picture = ready and video.width is not None
    renditions = [
        RenditionOut(
            name=str(r.get("name", "")),
            width=int(r.get("width", 0) or 0),  # type: ignore[call-overload]
            height=int(r.get("height", 0) or 0),  # type: ignore[call-overload]
            bandwidth=int(r.get("bandwidth", 0) or 0),  # type: ignore[call-overload]
            average_bandwidth=(
                int(r["average_bandwidth"])  # type: ignore[call-overload]
                if r.get("average_bandwidth") is not None
                else None
            ),
            codecs=str(r.get("codecs", "")),
            playlist=prefix + str(r.get("playlist", "")) + suffix,
        )
        for r in (video.renditions or [])
    ]
    return VideoOut(
        id=video.public_id,
        title=video.title,
        description=video.description,
        visibility=video.visibility,
        state=video.state.value,
        owner_id=video.owner_id,
        source_name=video.source_name,
        source_bytes=video.source_bytes,
        duration_seconds=video.duration_seconds,
        width=video.width,
        height=video.height,
        video_codec=video.video_codec,
        audio_codec=video.audio_codec,
        renditions=renditions,
        playlist=prefix + "master.m3u8" + suffix if ready else None,
        poster=prefix + "poster.jpg" + suffix if has_picture else None,
        thumbnails=prefix + "thumbs.vtt" + suffix if has_picture else None,
        error=video.error,
        job=_job_out(video.job),
        created_at=video.created_at,
        ready_at=video.ready_at,
    )


def _me(principal: Principal | None) -> Uploader:
    if principal is None:  # the framework checked the credentials first: never reached
        raise ApiError(
            401,
            "authentication required",
            headers={"WWW-Authenticate": 'Bearer realm="ripplecast"'},
        )
    return Uploader(principal.user_id, admin=principal.role == "admin")


async def _viewer(ctx: ApiContext) -> Viewer:
    """Who the caller is, if it says (no or invalid credentials: anonymous)."""
    principal = await ctx.caller()
    if principal is None:
        return Viewer()
    return Viewer(principal.user_id, admin=principal.role == "admin")


def _metadata(header: str) -> dict[str, str]:
    """tus Upload-Metadata: comma-separated `key base64value` pairs."""
    found: dict[str, str] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        try:
            found[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(
                400, f"Upload-Metadata: the value of {key!r} is not base64 UTF-8"
            ) from None
    return found


def _check_tus(version: str) -> None:
    if version != TUS_VERSION:
        raise ApiError(
            412,
            f"this server speaks tus {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION, **TUS_HEADERS},
        )


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
        yield chunk


def _upload_error(exc: UploadError) -> ApiError:
    headers = dict(TUS_HEADERS)
    if isinstance(exc, MediaRefused):
        return ApiError(422, str(exc), headers=headers)
    return ApiError(exc.status, str(exc), headers=headers)


def videos_router(videos: Videos, uploads: Uploads, *, signer: Signer | None = None) -> ApiRouter:
    """The /videos and /uploads operations."""
    router = ApiRouter(tags=("videos",))

    def out(video: Video, viewer: Viewer) -> VideoOut:
        # The owner gets signed URLs for a private video, so a player can fetch it as is.
        query = ""
        if (
            signer is not None
            and video.visibility is Visibility.PRIVATE
            and video.state is VideoState.READY
            and viewer.owns(video)
        ):
            query = signer(f"/vod/{video.public_id}")
        return _video_out(video, query=query)

    @router.get(
        "/videos",
        summary="Public videos, or (mine=true) your own; search by title",
        query=VideoListQuery,
        response=Page[VideoOut],
        errors=(401,),
    )
    async def list_videos(ctx: ApiContext) -> Page[VideoOut]:
        query = ctx.query_as(VideoListQuery)
        viewer = await _viewer(ctx)
        if query.mine and viewer.user_id is None:
            raise ApiError(
                401,
                "sign in to list your videos",
                headers={"WWW-Authenticate": 'Bearer realm="ripplecast"'},
            )
        rows, total = await videos.list(
            viewer,
            mine=query.mine,
            state=VideoState(query.state) if query.state else None,
            search=query.q,
            limit=query.limit,
            offset=query.offset,
        )
        return Page[VideoOut](
            items=[out(v, viewer) for v in rows],
            total=total,
            limit=query.limit,
            offset=query.offset,
        )

    @router.post(
        "/videos",
        summary="Upload a video in one request (the body is the file)",
        query=SingleUploadQuery,
        raw_body="application/octet-stream",
        response=VideoOut,
        status=201,
        auth=Scope.PUBLISH,
        errors=(400, 413, 422),
    )
    async def upload_video(ctx: ApiContext) -> VideoOut:
        """The file is streamed to storage as it arrives; when it is complete it is probed and
        its transcoding job queued. A file that is not usable media is refused (422) and
        nothing is kept."""
        uploader = _me(ctx.principal)
        query = ctx.query_as(SingleUploadQuery)
        request = ctx.request
        try:
            video = await uploads.upload(
                uploader,
                _body(request),
                length=request.content_length,
                filename=query.filename,
                title=query.title,
                description=query.description,
                visibility=query.visibility,
            )
        except UploadError as exc:
            raise _upload_error(exc) from None
        viewer = Viewer(uploader.user_id, admin=uploader.admin)
        return out(await videos.get(video.public_id, viewer), viewer)

    @router.get(
        "/videos/{id}",
        summary="A video, with its transcoding progress",
        params=VideoId,
        response=VideoOut,
        errors=(404,),
    )
    async def get_video(ctx: ApiContext) -> VideoOut:
        viewer = await _viewer(ctx)
        try:
            video = await videos.get(ctx.params_as(VideoId).id, viewer)
        except VideoNotFound as exc:
            raise ApiError(404, str(exc)) from None
        return out(video, viewer)

    @router.patch(
        "/videos/{id}",
        summary="Change a video's title, description or visibility",
        params=VideoId,
        body=VideoPatch,
        response=VideoOut,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def update_video(ctx: ApiContext) -> VideoOut:
        body = ctx.body_as(VideoPatch)
        uploader = _me(ctx.principal)
        viewer = Viewer(uploader.user_id, admin=uploader.admin)
        try:
            video = await videos.update(
                ctx.params_as(VideoId).id,
                viewer,
                title=body.title,
                description=body.description,
                visibility=body.visibility,
            )
        except VideoNotFound as exc:
            raise ApiError(404, str(exc)) from None
        return out(video, viewer)

    @router.delete(
        "/videos/{id}",
        summary="Delete a video and every file of it",
        params=VideoId,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def delete_video(ctx: ApiContext) -> None:
        uploader = _me(ctx.principal)
        try:
            await videos.delete(
                ctx.params_as(VideoId).id, Viewer(uploader.user_id, admin=uploader.admin)
            )
        except VideoNotFound as exc:
            raise ApiError(404, str(exc)) from None

    @router.post(
        "/videos/{id}/retry",
        summary="Transcode a failed video again",
        params=VideoId,
        response=VideoOut,
        auth=Scope.PUBLISH,
        errors=(404, 409),
    )
    async def retry_video(ctx: ApiContext) -> VideoOut:
        uploader = _me(ctx.principal)
        viewer = Viewer(uploader.user_id, admin=uploader.admin)
        public_id = ctx.params_as(VideoId).id
        try:
            await videos.retry(public_id, viewer)
            video = await videos.get(public_id, viewer)
        except VideoNotFound as exc:
            raise ApiError(404, str(exc)) from None
        except VideoNotRetryable as exc:
            raise ApiError(409, str(exc)) from None
        return out(video, viewer)

    # ----------------------------------------------------------------------------------
    # tus

    @router.post(
        "/uploads",
        summary="Start a resumable upload (tus 1.0 creation)",
        headers=TusCreateHeaders,
        response=None,
        status=201,
        auth=Scope.PUBLISH,
        tags=("uploads",),
        errors=(412, 413, 422),
    )
    async def create_upload(ctx: ApiContext) -> None:
        """Metadata (base64 values): `filename`, `title`, `description`, `visibility`. The
        `Location` header of the answer is the upload's URL."""
        headers = ctx.headers_as(TusCreateHeaders)
        _check_tus(headers.tus_resumable)
        uploader = _me(ctx.principal)
        meta = _metadata(headers.upload_metadata)
        try:
            visibility = Visibility(meta.get("visibility", "public"))
        except ValueError:
            raise ApiError(422, "visibility must be public, unlisted or private") from None
        for name, limit in (("title", 200), ("description", 5000), ("filename", 255)):
            value = meta.get(name, "")
            if len(value) > limit or "\x00" in value:
                raise ApiError(422, f"the {name} is longer than {limit} characters or has NUL")
        try:
            upload = await uploads.create(
                uploader,
                headers.upload_length,
                filename=meta.get("filename", ""),
                title=meta.get("title", ""),
                description=meta.get("description", ""),
                visibility=visibility,
            )
        except UploadError as exc:
            raise _upload_error(exc) from None
        location = f"{ctx.request.path.rstrip('/')}/{upload.public_id}"

        def finish(response: web.StreamResponse) -> None:
            response.headers.update(TUS_HEADERS)
            response.headers["Location"] = location
            response.headers["Upload-Expires"] = upload.expires_at.strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            )

        ctx.finish.append(finish)

    @router.head(
        "/uploads/{id}",
        summary="Where a resumable upload stands (Upload-Offset)",
        params=UploadId,
        headers=TusHeaders,
        response=None,
        status=200,
        auth=Scope.PUBLISH,
        tags=("uploads",),
        errors=(404, 412),
    )
    async def upload_offset(ctx: ApiContext) -> None:
        _check_tus(ctx.headers_as(TusHeaders).tus_resumable)
        try:
            upload = await uploads.get(ctx.params_as(UploadId).id, _me(ctx.principal))
        except UploadError as exc:
            raise _upload_error(exc) from None

        def finish(response: web.StreamResponse) -> None:
            response.headers.update(TUS_HEADERS)
            response.headers["Upload-Offset"] = str(upload.received)
            response.headers["Upload-Length"] = str(upload.length)
            response.headers["Cache-Control"] = "no-store"

        ctx.finish.append(finish)

    @router.patch(
        "/uploads/{id}",
        summary="Append to a resumable upload at Upload-Offset",
        params=UploadId,
        headers=TusPatchHeaders,
        raw_body="application/offset+octet-stream",
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        tags=("uploads",),
        errors=(404, 409, 412, 413, 422),
    )
    async def append_upload(ctx: ApiContext) -> None:
        """When this brings the last byte, the file is probed and queued: the answer then
        carries `Ripplecast-Video` (the new video's id), or a 422 saying why the file is not
        usable (the upload is then gone)."""
        headers = ctx.headers_as(TusPatchHeaders)
        _check_tus(headers.tus_resumable)
        try:
            upload, video = await uploads.append(
                ctx.params_as(UploadId).id,
                _me(ctx.principal),
                headers.upload_offset,
                _body(ctx.request),
            )
        except UploadError as exc:
            raise _upload_error(exc) from None

        def finish(response: web.StreamResponse) -> None:
            response.headers.update(TUS_HEADERS)
            response.headers["Upload-Offset"] = str(upload.received)
            if video is not None:
                response.headers["Ripplecast-Video"] = video.public_id

        ctx.finish.append(finish)

    @router.delete(
        "/uploads/{id}",
        summary="Abandon a resumable upload (tus termination)",
        params=UploadId,
        headers=TusHeaders,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        tags=("uploads",),
        errors=(404, 412),
    )
    async def terminate_upload(ctx: ApiContext) -> None:
        _check_tus(ctx.headers_as(TusHeaders).tus_resumable)
        try:
            await uploads.terminate(ctx.params_as(UploadId).id, _me(ctx.principal))
        except UploadError as exc:
            raise _upload_error(exc) from None
        ctx.finish.append(lambda response: response.headers.update(TUS_HEADERS))

    return router
