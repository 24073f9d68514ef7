"""Live stream operations: list, describe and kick live streams, and the `LiveView` they (and
the pages) read them from.

A `LiveView` says which streams are live and describes them as `StreamInfo`: `HubView` reads
this node's hub (a single box, an origin, an edge); `DirectoryView` reads the cluster's
`LiveDirectory` (a web node, whose hub is empty), and kicks by announcing it to the stream's
origin. `info_from_summary` and `summary_of` convert between `StreamInfo` and the directory's
`StreamSummary`.

Visibility follows the access policy: a stream is listed or described only when the caller may
play it (`Action.PLAY` on `/live/NAME`), so private channels stay hidden from anonymous callers
and a refused stream answers the same 404 as an unknown one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from ripplecast.accounts.policy import AccessRequest, Action, Scope, Via
from ripplecast.cache import CacheError
from ripplecast.cluster.live import (
    AudioSummary,
    LiveDirectory,
    StreamSummary,
    VideoSummary,
    ViewerCount,
)
from ripplecast.errors import ProtocolError, RipplecastError
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

__all__ = [
    "KICK_REASON",
    "DirectoryView",
    "HubView",
    "LiveStreams",
    "LiveView",
    "LiveViewUnavailable",
    "Publishers",
    "describe_stream",
    "info_from_summary",
    "streams_router",
    "summary_of",
]

log = logging.getLogger("ripplecast.api")

KICK_REASON = "kicked by admin"
_T = TypeVar("_T")


class LiveStreams(Protocol):
    """What the operations need of the hub."""

    def get(self, name: str) -> LiveStream | None: ...

    def __iter__(self) -> Iterator[LiveStream]: ...


class Publishers(Protocol):
    """Disconnects the publisher of a stream (the RTMP server); optional."""

    def kick_stream(self, name: str, reason: str) -> int:
        """Close the connection(s) publishing `name`; return how many."""
        ...


class LiveViewUnavailable(RipplecastError):
    """The live streams cannot be read right now (the cluster's cache is unreachable)."""


class LiveView(Protocol):
    """Which streams are live, as the streams API and the pages see them."""

    async def names(self) -> list[str]:
        """The names of the streams that have not ended, sorted."""
        ...

    async def describe(self, name: str) -> StreamInfo | None:
        """Stream `name`, or None when it is not live (or waiting for its publisher)."""
        ...

    async def describe_many(self, names: Sequence[str]) -> list[StreamInfo]:
        """Those of `names` that are live, in the order given."""
        ...

    async def kick(self, name: str, reason: str) -> bool:
        """End stream `name` and disconnect its publisher; False if it is not live."""
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


class HubView:
    """The `LiveView` of this node's own hub; a kick ends the stream here and closes its
    publisher (through `publishers`, the RTMP server, if given)."""

    def __init__(
        self,
        hub: LiveStreams,
        *,
        publishers: Publishers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._publishers = publishers
        self._clock = clock

    def _live(self, name: str) -> LiveStream | None:
        stream = self._hub.get(name)
        return None if stream is None or stream.state is StreamState.ENDED else stream

    async def names(self) -> list[str]:
        return sorted(s.name for s in self._hub if s.state is not StreamState.ENDED)

    async def describe(self, name: str) -> StreamInfo | None:
        stream = self._live(name)
        return None if stream is None else describe_stream(stream, self._clock())

    async def describe_many(self, names: Sequence[str]) -> list[StreamInfo]:
        now = self._clock()
        streams = (self._live(name) for name in names)
        return [describe_stream(s, now) for s in streams if s is not None]

    async def kick(self, name: str, reason: str) -> bool:
        stream = self._live(name)
        if stream is None:
            return False
        # End first, so the publisher's disconnect finds an ended stream and no grace period.
        stream.end(reason)
        kicked = self._publishers.kick_stream(name, reason) if self._publishers else 0
        log.info("stream %s ended: %s (%d publisher(s) closed)", name, reason, kicked)
        return True


class DirectoryView:
    """The `LiveView` of the cluster's live directory (a web node): streams as their origins
    last published them. A kick is announced with `announce_kick(NAME, reason)`, which the
    owning origin acts on; cache failures raise `LiveViewUnavailable`."""

    def __init__(
        self,
        directory: LiveDirectory,
        *,
        announce_kick: Callable[[str, str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._announce_kick = announce_kick
        self._clock = clock

    async def names(self) -> list[str]:
        try:
            return await self._directory.names()
        except CacheError as exc:
            raise LiveViewUnavailable(f"the live directory cannot be read: {exc}") from exc

    async def describe(self, name: str) -> StreamInfo | None:
        found = await self.describe_many([name])
        return found[0] if found else None

    async def describe_many(self, names: Sequence[str]) -> list[StreamInfo]:
        try:
            summaries = await self._directory.summaries(names)
        except CacheError as exc:
            raise LiveViewUnavailable(f"the live directory cannot be read: {exc}") from exc
        now = self._clock()
        return [info_from_summary(summary, now) for summary in summaries]

    async def kick(self, name: str, reason: str) -> bool:
        if await self.describe(name) is None:
            return False
        try:
            await self._announce_kick(name, reason)
        except CacheError as exc:
            raise LiveViewUnavailable(f"the kick cannot be sent: {exc}") from exc
        log.info("stream %s: kick sent to its origin: %s", name, reason)
        return True


def _video_codec(name: str) -> VideoCodecName:
    for known in _VIDEO_NAMES.values():
        if name == known:
            return known
    return "unknown"


def info_from_summary(summary: StreamSummary, now: float) -> StreamInfo:
    """The API's view, at wall-clock time `now`, of a stream the cluster's directory lists: the
    viewers are the origin's and the edges' together."""
    video = summary.video
    audio = summary.audio
    viewers = summary.total_viewers
    return StreamInfo(
        name=summary.name,
        state=summary.state,
        started_at=datetime.fromtimestamp(summary.started_at, UTC),
        uptime_seconds=round(max(0.0, now - summary.started_at), 3),
        ingest_bitrate=summary.ingest_bitrate,
        video=None
        if video is None
        else VideoTrack(
            codec=_video_codec(video.codec),
            codecs=video.codecs,
            width=video.width or None,
            height=video.height or None,
            fps=video.fps,
        ),
        audio=None
        if audio is None
        else AudioTrack(
            codec="aac" if audio.codec == "aac" else "mp3" if audio.codec == "mp3" else "unknown",
            codecs=audio.codecs,
            sample_rate=audio.sample_rate or None,
            channels=audio.channels,
        ),
        viewers=Viewers(
            total=viewers.total, http_flv=viewers.http_flv, rtmp=viewers.rtmp, hls=viewers.hls
        ),
        publishes=max(1, summary.publishes),
        origin=summary.origin,
    )


def summary_of(info: StreamInfo, origin: str) -> StreamSummary:
    """What origin `origin` publishes to the cluster's directory about the stream `info`
    describes (its viewers there, edges' upstreams included: the directory takes them off).

    Raises `ClusterInputError` for a value the directory cannot hold."""
    video = info.video
    audio = info.audio
    viewers = info.viewers
    return StreamSummary(
        name=info.name,
        origin=origin,
        state=info.state,
        started_at=info.started_at.timestamp(),
        ingest_bitrate=info.ingest_bitrate,
        publishes=info.publishes,
        video=None
        if video is None
        else VideoSummary(video.codec, video.codecs, video.width, video.height, video.fps),
        audio=None
        if audio is None
        else AudioSummary(audio.codec, audio.codecs, audio.sample_rate, audio.channels),
        viewers=ViewerCount(viewers.http_flv, viewers.rtmp, viewers.hls),
    )


def streams_router(
    hub: LiveStreams,
    *,
    max_name_length: int = 64,
    publishers: Publishers | None = None,
    clock: Callable[[], float] = time.time,
    live: LiveView | None = None,
) -> ApiRouter:
    """The /streams operations over `live`, else over `hub` (a `HubView` of it, kicking
    through `publishers`)."""
    router = ApiRouter(tags=("streams",))
    view = live if live is not None else HubView(hub, publishers=publishers, clock=clock)

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

    async def find(ctx: ApiContext) -> StreamInfo:
        raw = ctx.params_as(StreamName).name
        try:
            name = validate_stream_name(raw, max_length=max_name_length)
        except InvalidStreamName:
            raise ApiError(404, "no live stream by that name") from None
        info = await _readable(view.describe(name))
        if info is None:
            raise ApiError(404, f"no live stream named {name}")
        return info

    @router.get(
        "/streams",
        summary="List live streams",
        response=Page[StreamInfo],
        query=PageQuery,
        errors=(503,),
    )
    async def list_streams(ctx: ApiContext) -> Page[StreamInfo]:
        """Live streams the caller may play, by name. Private channels are listed only for
        their owner or an admin (session or API token with the read scope). In a cluster, the
        streams of every origin, with the viewers of the edges counted in; 503 when the
        cluster's cache cannot be read."""
        page = ctx.query_as(PageQuery)
        streams = await _readable(view.describe_many(await _readable(view.names())))
        visible = [info for info in streams if await may_play(ctx, info.name)]
        return Page[StreamInfo].of(visible, page)

    @router.get(
        "/streams/{name}",
        summary="Describe a live stream",
        response=StreamInfo,
        params=StreamName,
        errors=(503,),
    )
    async def get_stream(ctx: ApiContext) -> StreamInfo:
        """One live stream; 404 when it is not live or the caller may not play it."""
        info = await find(ctx)
        if not await may_play(ctx, info.name):
            raise ApiError(404, f"no live stream named {info.name}")
        return info

    @router.post(
        "/streams/{name}/kick",
        summary="End a live stream and disconnect its publisher",
        response=None,
        status=204,
        params=StreamName,
        auth=Scope.ADMIN,
    )
    async def kick_stream(ctx: ApiContext) -> None:
        """Ends the stream at once (no reconnect grace period): viewers are told it ended. In a
        cluster, the stream's origin does so as soon as it hears of the kick."""
        info = await find(ctx)
        who = ctx.principal.username if ctx.principal is not None else "?"
        if not await _readable(view.kick(info.name, KICK_REASON)):
            raise ApiError(404, f"no live stream named {info.name}")
        log.info("api stream %s kicked by %s", info.name, who)

    return router


async def _readable(pending: Awaitable[_T]) -> _T:
    """The result of a `LiveView` call; a 503 problem when the view cannot be read."""
    try:
        return await pending
    except LiveViewUnavailable as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
