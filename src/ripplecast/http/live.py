"""Live media over HTTP: HTTP-FLV (`/live/NAME.flv`) and HLS (`/live/NAME/index.m3u8`, `N.ts`).

HTTP-FLV viewers are hub readers. After aiohttp has sent the response head and the FLV file
header, the hub writes pre-framed HTTP chunks (`HttpFlvFormat`) straight to the transport: one
shared bytes object per batch for every viewer, no per-viewer task, queue or re-framing.

HLS is served from the packager's memory: the playlist and segments are bytes objects built once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

from aiohttp import web

from ripplecast.config import Settings
from ripplecast.live.hls import PLAYLIST_CONTENT_TYPE, SEGMENT_CONTENT_TYPE, HlsPackager
from ripplecast.live.hub import Hub
from ripplecast.live.names import InvalidStreamName, printable, validate_stream_name
from ripplecast.live.sockets import limit_send_buffer
from ripplecast.live.stream import LiveStream, StreamEvent
from ripplecast.media.flv import flv_file_header
from ripplecast.media.packet import MediaPacket

log = logging.getLogger("ripplecast.http")

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Content-Length"}


class HttpFlvFormat:
    """Frames a batch of FLV tags as one HTTP/1.1 chunk, shared by every HTTP-FLV viewer."""

    name = "http-flv"

    def frame(self, packets: Sequence[MediaPacket]) -> bytes:
        body = b"".join([p.flv_tag for p in packets])
        return b"%X\r\n%s\r\n" % (len(body), body)


HTTP_FLV = HttpFlvFormat()


class _TransportSink:
    """A hub reader writing to an aiohttp request's transport."""

    def __init__(self, transport: asyncio.Transport, done: asyncio.Future[str]) -> None:
        self._transport = transport
        self._done = done

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            self._finish("client went away")
            return
        self._transport.write(data)

    def buffered_bytes(self) -> int:
        return self._transport.get_write_buffer_size()

    def close(self, reason: str) -> None:
        if reason == "reader too slow":
            self._transport.abort()
        self._finish(reason)

    def stream_event(self, event: StreamEvent) -> None:
        """HTTP-FLV has no way to tell the player; it just keeps the connection."""

    def _finish(self, reason: str) -> None:
        if not self._done.done():
            self._done.set_result(reason)


class LiveRoutes:
    """Handlers for live media; registered on the node's aiohttp application."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.viewers = 0
        self.refused: Counter[str] = Counter()
        """Requests refused, by reason (for logs and metrics)."""

    def register(self, app: web.Application) -> None:
        """Add the routes to `app`."""
        app.router.add_get("/live/{name}.flv", self.http_flv)
        app.router.add_get("/live/{name}/index.m3u8", self.hls_playlist)
        app.router.add_get(r"/live/{name}/{number:\d{1,12}}.ts", self.hls_segment)

    def _refuse(self, request: web.Request, reason: str, message: str) -> None:
        self.refused[reason] += 1
        path = printable(request.path, 128)
        log.info("http peer=%s %s refused: %s (%s)", request.remote, path, message, reason)

    def _stream(self, request: web.Request) -> LiveStream:
        raw = request.match_info["name"]
        try:
            name = validate_stream_name(raw, max_length=self.settings.stream_name_max_length)
        except InvalidStreamName as exc:
            self._refuse(request, "bad_name", str(exc))
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        stream = self.hub.get(name)
        if stream is None:
            self._refuse(request, "not_found", f"no live stream named {name}")
            raise web.HTTPNotFound(text=f"no live stream named {name}\n", headers=CORS)
        return stream

    async def http_flv(self, request: web.Request) -> web.StreamResponse:
        """Stream the live stream as FLV over chunked HTTP until it ends or the viewer leaves."""
        stream = self._stream(request)
        if self.viewers >= self.settings.http_max_viewers:
            self._refuse(request, "http_max_viewers", "too many viewers")
            raise web.HTTPServiceUnavailable(text="too many viewers\n")
        response = web.StreamResponse(
            headers={
                "Content-Type": "video/x-flv",
                "Cache-Control": "no-cache, no-store",
                **CORS,
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        has_video = stream.video_header is not None
        has_audio = stream.audio_header is not None
        if not has_video and not has_audio:
            has_video = has_audio = True  # not known yet: announce both, as players expect
        await response.write(flv_file_header(has_audio=has_audio, has_video=has_video))
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        limit_send_buffer(transport, self.settings.viewer_send_buffer_bytes)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        sink = _TransportSink(transport, done)
        reader = stream.add_reader(sink, HTTP_FLV)
        self.viewers += 1
        peer = request.remote
        log.info("http-flv peer=%s play start stream=%s", peer, stream.name)
        reason = "viewer left"
        try:
            reason = await done
        finally:
            self.viewers -= 1
            stream.remove_reader(reader)
            log.info("http-flv peer=%s play stop stream=%s: %s", peer, stream.name, reason)
        return response

    def _packager(self, stream: LiveStream) -> HlsPackager:
        for listener in stream.listeners:
            if isinstance(listener, HlsPackager):
                return listener
        raise web.HTTPNotFound(text="HLS is not enabled\n", headers=CORS)

    async def hls_playlist(self, request: web.Request) -> web.Response:
        """The live media playlist; waits for the first segment of a stream that just began."""
        packager = self._packager(self._stream(request))
        if packager.playlist is None:
            wait = 2 * self.settings.hls_segment_seconds + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(packager.ready.wait(), wait)
        playlist = packager.playlist
        if playlist is None:
            raise web.HTTPNotFound(text="no segment yet\n", headers=CORS)
        return web.Response(
            body=playlist,
            headers={
                "Content-Type": PLAYLIST_CONTENT_TYPE,
                "Cache-Control": "max-age=1",
                **CORS,
            },
        )

    async def hls_segment(self, request: web.Request) -> web.Response:
        """One MPEG-TS segment from memory."""
        packager = self._packager(self._stream(request))
        segment = packager.segment(int(request.match_info["number"]))
        if segment is None:
            raise web.HTTPNotFound(text="no such segment\n", headers=CORS)
        return web.Response(
            body=segment.data,
            headers={
                "Content-Type": SEGMENT_CONTENT_TYPE,
                "Cache-Control": "public, max-age=60",
                **CORS,
            },
        )
