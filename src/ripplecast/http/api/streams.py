"""Live stream operations: list, describe and kick the streams of this node's hub.

Visibility follows the access policy: a stream is listed or described only when the caller may
play it (`Action.PLAY` on `/live/NAME`), so private channels stay hidden from anonymous callers
and a refused stream answers the same 404 as an unknown one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Protocol

from ripplecast.accounts.policy import AccessRequest, Action, Scope, Via
from ripplecast.errors import ProtocolError
from ripplecast.http.api.framework import ApiContext, ApiRouter, Page, PageQuery
from ripplecast.http.api.models import (
    AudioTrack,
    StreamInfo,
    StreamName,
    VideoCodecName,
    VideoTrack,
    Viewers,
)
from ripplecast.http.api.problems import ApiError
from ripplecast.http.live import HTTP_FLV, request_credentials
from ripplecast.live.hls import HlsPackager
from ripplecast.live.names import InvalidStreamName, validate_stream_name
from ripplecast.live.stream import LiveStream, StreamState
from ripplecast.media.aac import parse_audio_specific_config
from ripplecast.media.avc import parse_avc_config
from ripplecast.media.flv import parse_audio_tag_header, parse_video_tag_header
from ripplecast.media.hevc import parse_hevc_config
from ripplecast.media.packet import AudioCodec, MediaPacket, VideoCodec

__all__ = ["LiveStreams", "Publishers", "describe_stream", "streams_router"]

log = logging.getLogger("ripplecast.api")

KICK_REASON = "kicked by admin"


class LiveStreams(Protocol):
    """What the operations need of the hub."""

    def get(self, name: str) -> LiveStream | None: ...

    def __iter__(self) -> Iterator[LiveStream]: ...


class Publishers(Protocol):
    """Disconnects the publisher of a stream (the RTMP server); optional."""

    def kick_stream(self, name: str, reason: str) -> int:
        """Close the connection(s) publishing `name`; return how many."""
        ...


_VIDEO_NAMES: dict[VideoCodec, VideoCodecName] = {
    VideoCodec.H264: "h264",
    VideoCodec.HEVC: "hevc",
    VideoCodec.AV1: "av1",
}


def _video(header: MediaPacket | None, frames: int, uptime: float) -> VideoTrack | None:
    if header is None:
        return None
    fps = round(frames / uptime, 2) if uptime > 0 else 0.0
    try:
        tag = parse_video_tag_header(header.payload)
    except ProtocolError:
        return VideoTrack(codec="unknown", fps=fps)
    codec = _VIDEO_NAMES.get(tag.codec, "unknown")
    track = VideoTrack(codec=codec, fps=fps)
    record = header.payload[tag.header_size :]
    try:
        if tag.codec is VideoCodec.H264:
            avc = parse_avc_config(record)
            return track.model_copy(
                update={"width": avc.width, "height": avc.height, "codecs": avc.codecs}
            )
        if tag.codec is VideoCodec.HEVC:
            hevc = parse_hevc_config(record)
            return track.model_copy(
                update={"width": hevc.width, "height": hevc.height, "codecs": hevc.codecs}
            )
    except ProtocolError:
        pass  # best effort: the codec name is still right
    return track


def _audio(header: MediaPacket | None) -> AudioTrack | None:
    if header is None:
        return None
    try:
        tag = parse_audio_tag_header(header.payload)
    except ProtocolError:
        return AudioTrack(codec="unknown")
    if tag.codec is AudioCodec.MP3:
        return AudioTrack(codec="mp3", sample_rate=tag.sound_rate, channels=2 if tag.stereo else 1)
    if tag.codec is not AudioCodec.AAC:
        return AudioTrack(codec="unknown")
    try:
        asc = parse_audio_specific_config(header.payload[tag.header_size :])
    except ProtocolError:
        return AudioTrack(codec="aac")
    rate = asc.extension_sampling_frequency or asc.sampling_frequency
    return AudioTrack(
        codec="aac", codecs=asc.codecs, sample_rate=rate, channels=asc.channel_configuration
    )


def describe_stream(stream: LiveStream, now: float) -> StreamInfo:
    """The API's view of `stream` at wall-clock time `now`."""
    uptime = max(0.0, now - stream.started_at)
    stats = stream.stats
    http_flv = stream.readers_of(HTTP_FLV)
    total = stream.reader_count
    hls = sum(
        listener.audience.count(time.monotonic())
        for listener in stream.listeners
        if isinstance(listener, HlsPackager)
    )
    return StreamInfo(
        name=stream.name,
        state="waiting" if stream.state is StreamState.WAITING else "live",
        started_at=datetime.fromtimestamp(stream.started_at, UTC),
        uptime_seconds=round(uptime, 3),
        ingest_bitrate=round(stats.bytes_in * 8 / uptime, 1) if uptime > 0 else 0.0,
        video=_video(stream.video_header, stats.video_frames, uptime),
        audio=_audio(stream.audio_header),
        # The hub has two reader formats: HTTP-FLV (one shared format) and RTMP (one per
        # message stream id), so every reader that is not HTTP-FLV is an RTMP player.
        viewers=Viewers(total=total + hls, http_flv=http_flv, rtmp=total - http_flv, hls=hls),
        publishes=stats.publishes,
    )


def streams_router(
    hub: LiveStreams,
    *,
    max_name_length: int = 64,
    publishers: Publishers | None = None,
    clock: Callable[[], float] = time.time,
) -> ApiRouter:
    """The /streams operations over `hub`."""
    router = ApiRouter(tags=("streams",))

    async def may_play(ctx: ApiContext, name: str) -> bool:
        resource = f"/live/{name}"
        request = ctx.request
        decision = await ctx.authorize(
            AccessRequest(
                Action.PLAY,
                resource,
                Via.API,
                request_credentials(request),
                request.remote or "",
                resource,
            )
        )
        return decision.allowed

    def find(ctx: ApiContext) -> LiveStream:
        raw = ctx.params_as(StreamName).name
        try:
            name = validate_stream_name(raw, max_length=max_name_length)
        except InvalidStreamName:
            raise ApiError(404, "no live stream by that name") from None
        stream = hub.get(name)
        if stream is None or stream.state is StreamState.ENDED:
            raise ApiError(404, f"no live stream named {name}")
        return stream

    @router.get("/streams", summary="List live streams", response=Page[StreamInfo], query=PageQuery)
    async def list_streams(ctx: ApiContext) -> Page[StreamInfo]:
        """Live streams the caller may play, by name. Private channels are listed only for
        their owner or an admin (session or API token with the read scope)."""
        page = ctx.query_as(PageQuery)
        now = clock()
        visible = [
            stream
            for stream in sorted(hub, key=lambda s: s.name)
            if stream.state is not StreamState.ENDED and await may_play(ctx, stream.name)
        ]
        return Page[StreamInfo].of([describe_stream(s, now) for s in visible], page)

    @router.get(
        "/streams/{name}", summary="Describe a live stream", response=StreamInfo, params=StreamName
    )
    async def get_stream(ctx: ApiContext) -> StreamInfo:
        """One live stream; 404 when it is not live or the caller may not play it."""
        stream = find(ctx)
        if not await may_play(ctx, stream.name):
            raise ApiError(404, f"no live stream named {stream.name}")
        return describe_stream(stream, clock())

    @router.post(
        "/streams/{name}/kick",
        summary="End a live stream and disconnect its publisher",
        response=None,
        status=204,
        params=StreamName,
        auth=Scope.ADMIN,
    )
    async def kick_stream(ctx: ApiContext) -> None:
        """Ends the stream at once (no reconnect grace period): viewers are told it ended."""
        stream = find(ctx)
        who = ctx.principal.username if ctx.principal is not None else "?"
        # End first, so the publisher's disconnect finds an ended stream and no grace period.
        stream.end(KICK_REASON)
        kicked = publishers.kick_stream(stream.name, KICK_REASON) if publishers else 0
        log.info("api stream %s kicked by %s (%d publisher(s) closed)", stream.name, who, kicked)

    return router
