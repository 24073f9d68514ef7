"""Live media over HTTP: HTTP-FLV (`/live/NAME.flv`) and HLS (`/live/NAME/index.m3u8`, `N.ts`).

HTTP-FLV viewers are hub readers. After aiohttp has sent the response head and the FLV file
header, the hub writes pre-framed HTTP chunks (`HttpFlvFormat`) straight to the transport: one
shared bytes object per batch for every viewer, no per-viewer task, queue or re-framing.

HLS is served from the packager's memory: the playlist and segments are bytes objects built once.
Both carry an ETag and answer If-None-Match with 304, and say how long a cache may keep them
(`ripplecast.http.caching`): a playlist half a segment, a segment as long as it stays fetchable;
HTTP-FLV and every error are `no-store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlencode

from aiohttp import web

from ripplecast.accounts.cluster_tokens import HEADER as CLUSTER_HEADER
from ripplecast.accounts.policy import AccessRequest, Action, Credentials, Decision, Via
from ripplecast.accounts.signed_urls import PARAMS
from ripplecast.config import Settings
from ripplecast.http.caching import (
    NO_STORE,
    etag_matches,
    live_playlist_max_age,
    live_segment_max_age,
    media_cache_headers,
)
from ripplecast.live.hls import (
    EXTRA_SEGMENTS_KEPT,
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CONTENT_TYPE,
    HlsPackager,
    HlsSegment,
)
from ripplecast.live.hub import Hub
from ripplecast.live.names import InvalidStreamName, printable, validate_stream_name
from ripplecast.live.sockets import limit_send_buffer
from ripplecast.live.stream import LiveStream, StreamEvent
from ripplecast.media.flv import flv_file_header
from ripplecast.media.packet import MediaPacket

log = logging.getLogger("ripplecast.http")

Authorize = Callable[[AccessRequest], Awaitable[Decision]]

Notify = Callable[[str, Mapping[str, object]], None]
"""Tell the outside world about an event (the webhook dispatcher's `emit`): never blocks or
raises. HTTP-FLV viewers cause on_play and on_stop; HLS is per request and causes none."""


def ignore_event(event: str, payload: Mapping[str, object]) -> None:
    """The default `Notify`: nobody listens."""


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Content-Length"}
"""The same for every request (no `Vary: Origin` needed): media is fetched cross-origin by
players embedded anywhere, and access is decided by credentials, not by the page's origin."""

ERROR_HEADERS = {**CORS, "Cache-Control": NO_STORE}
"""Headers of every error answer of the media routes: nobody may cache a refusal or a miss."""


SESSION_COOKIE = "rc_session"
_SEGMENT_LINE = re.compile(rb"(?m)^\d+\.ts$")


def signed_params(request: web.Request) -> dict[str, str]:
    """The signed-URL parameters of a request's query (empty when it carries none)."""
    return {k: v for k, v in request.query.items() if k in PARAMS}


def request_credentials(request: web.Request) -> Credentials:
    """Every credential an HTTP request carries: session cookie, bearer token, signed URL."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return Credentials(
        session_id=request.cookies.get(SESSION_COOKIE, ""),
        api_token=token,
        signed=signed_params(request),
        cluster_token=request.headers.get(CLUSTER_HEADER, ""),
    )


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

    def __init__(
        self, settings: Settings, hub: Hub, authorize: Authorize, *, notify: Notify = ignore_event
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.authorize = authorize
        self.notify = notify
        self.viewers = 0
        self.draining = False
        """Set when the node drains: new HTTP-FLV viewers are refused (HLS requests, which
        belong to viewers already watching as often as to new ones, are still served)."""
        self.refused: Counter[str] = Counter()
        """Requests refused, by reason (for logs and metrics)."""
        self.served: Counter[str] = Counter()
        """HLS requests answered, by kind: `playlist`, `segment`, and `playlist_not_modified`,
        `segment_not_modified` for 304s (behind a CDN: what reaches this node)."""
        self._playlist_max_age = live_playlist_max_age(settings.hls_segment_seconds)
        self._segment_max_age = live_segment_max_age(
            settings.hls_segment_seconds, settings.hls_window_segments + EXTRA_SEGMENTS_KEPT
        )

    def register(self, app: web.Application) -> None:
        """Add the routes to `app`."""
        app.router.add_get("/live/{name}.flv", self.http_flv)
        app.router.add_get("/live/{name}/index.m3u8", self.hls_playlist)
        app.router.add_get(r"/live/{name}/{number:\d{1,12}}.ts", self.hls_segment)

    def _refuse(self, request: web.Request, reason: str, message: str) -> None:
        self.refused[reason] += 1
        path = printable(request.path, 128)
        log.info("http peer=%s %s refused: %s (%s)", request.remote, path, message, reason)

    async def _stream(self, request: web.Request, via: Via) -> tuple[LiveStream, Decision]:
        """The stream a request names and the policy's decision, once the policy allows it.

        400 for a malformed name; the policy's status (403 for a bad signature, 404 otherwise)
        when refused; 404 when the stream is not live. Refused and unknown look alike.
        """
        raw = request.match_info["name"]
        try:
            name = validate_stream_name(raw, max_length=self.settings.stream_name_max_length)
        except InvalidStreamName as exc:
            self._refuse(request, "bad_name", str(exc))
            raise web.HTTPBadRequest(text=f"{exc}\n", headers=ERROR_HEADERS) from None
        resource = f"/live/{name}"
        decision = await self.authorize(
            AccessRequest(
                Action.PLAY, resource, via, request_credentials(request), request.remote or "",
                request.path,
            )
        )  # fmt: skip
        if not decision.allowed:
            self._refuse(request, decision.reason, "access refused")
            if decision.status == 403:
                raise web.HTTPForbidden(text="access refused\n", headers=ERROR_HEADERS)
            raise web.HTTPNotFound(text=f"no live stream named {name}\n", headers=ERROR_HEADERS)
        stream = await self.hub.find(name)
        if stream is None:
            self._refuse(request, "not_found", f"no live stream named {name}")
            raise web.HTTPNotFound(text=f"no live stream named {name}\n", headers=ERROR_HEADERS)
        return stream, decision

    async def http_flv(self, request: web.Request) -> web.StreamResponse:
        """Stream the live stream as FLV over chunked HTTP until it ends or the viewer leaves."""
        if self.draining:
            self._refuse(request, "draining", "the node is draining")
            raise web.HTTPServiceUnavailable(
                text="this node is shutting down; try again\n",
                headers={**ERROR_HEADERS, "Retry-After": "1"},
            )
        stream, _decision = await self._stream(request, Via.HTTP_FLV)
        if self.viewers >= self.settings.http_max_viewers:
            self._refuse(request, "http_max_viewers", "too many viewers")
            raise web.HTTPServiceUnavailable(text="too many viewers\n", headers=ERROR_HEADERS)
        # An endless body: a cache could only hold it back from the viewer.
        response = web.StreamResponse(
            headers={"Content-Type": "video/x-flv", "Cache-Control": NO_STORE, **CORS}
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
        data: dict[str, object] = {
            "stream": stream.name,
            "protocol": "http-flv",
            "client_ip": peer or "",
            "user_agent": printable(request.headers.get("User-Agent", ""), 255),
        }
        self.notify("on_play", data)
        reason = "viewer left"
        try:
            reason = await done
        finally:
            self.viewers -= 1
            stream.remove_reader(reader)
            log.info("http-flv peer=%s play stop stream=%s: %s", peer, stream.name, reason)
            self.notify("on_stop", {**data, "reason": reason})
        return response

    def _packager(self, stream: LiveStream) -> HlsPackager:
        for listener in stream.listeners:
            if isinstance(listener, HlsPackager):
                return listener
        raise web.HTTPNotFound(text="HLS is not enabled\n", headers=ERROR_HEADERS)

    def _answer(
        self,
        request: web.Request,
        kind: str,
        body: bytes,
        etag: str,
        headers: dict[str, str],
    ) -> web.Response:
        """200 with `body`, or 304 when the request already holds `etag` (a cache revalidating);
        both carry the same validators and caching headers."""
        headers = {**headers, "ETag": etag, **CORS}
        match = request.headers.get("If-None-Match")
        if match is not None and etag_matches(match, etag):
            self.served[f"{kind}_not_modified"] += 1
            return web.Response(status=304, headers=headers)
        self.served[kind] += 1
        return web.Response(body=body, headers=headers)

    async def hls_playlist(self, request: web.Request) -> web.Response:
        """The live media playlist; waits for the first segment of a stream that just began.

        Fresh for half a segment (`live_playlist_max_age`), with an ETag derived from its bytes,
        so a cache revalidates it often and mostly hears 304 until the next segment."""
        stream, decision = await self._stream(request, Via.HLS)
        packager = self._packager(stream)
        client = f"{request.remote}|{request.headers.get('User-Agent', '')[:200]}"
        packager.audience.seen(client, time.monotonic())
        if packager.playlist is None:
            wait = 2 * self.settings.hls_segment_seconds + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(packager.ready.wait(), wait)
        playlist = packager.playlist
        if playlist is None:
            raise web.HTTPNotFound(text="no segment yet\n", headers=ERROR_HEADERS)
        signed = signed_params(request)
        if signed:
            # Segments inherit the playlist's grant, so hls.js can fetch them.
            suffix = ("?" + urlencode(signed)).encode()
            playlist = _SEGMENT_LINE.sub(lambda m: m.group(0) + suffix, playlist)
        # A few hundred bytes: hashing them costs less than remembering which hash is whose.
        etag = '"' + hashlib.blake2b(playlist, digest_size=12).hexdigest() + '"'
        caching = media_cache_headers(
            decision, signed, now=time.time(), max_age=self._playlist_max_age
        )
        headers = {"Content-Type": PLAYLIST_CONTENT_TYPE, **caching}
        return self._answer(request, "playlist", playlist, etag, headers)

    async def hls_segment(self, request: web.Request) -> web.Response:
        """One MPEG-TS segment from memory, fresh for as long as the packager keeps it."""
        stream, decision = await self._stream(request, Via.HLS)
        segment = self._packager(stream).segment(int(request.match_info["number"]))
        if segment is None:
            raise web.HTTPNotFound(text="no such segment\n", headers=ERROR_HEADERS)
        caching = media_cache_headers(
            decision, signed_params(request), now=time.time(), max_age=self._segment_max_age
        )
        headers = {"Content-Type": SEGMENT_CONTENT_TYPE, **caching}
        return self._answer(request, "segment", segment.data, segment_etag(segment), headers)


def segment_etag(segment: HlsSegment) -> str:
    """A live segment's ETag, without hashing its bytes: its number, the wall-clock time its
    first packet arrived and its size tell it apart from a segment of the same number made by
    an earlier run of the stream (numbers restart when a stream is published anew)."""
    arrived_ms = round(segment.program_date_time * 1000)
    return f'"{segment.number:x}-{arrived_ms:x}-{len(segment.data):x}"'
