"""`/vod/ID/...`: a video's playlists, segments, poster and thumbnails, from storage.

Every request asks the access policy (resource `/vod/ID`): a private video opens for its owner,
an admin, or a signed URL covering it; a video that is not ready, or not the caller's to see,
is a 404 like one that does not exist. A signed playlist passes its grant on to every URI in
it (child playlists, segments, sprite images), so hls.js can play a private video from one
signed master URL.

Responses carry ETag and Last-Modified (conditional requests answer 304), honour one byte range
(206, or 416 when it cannot be met), and long-lived Cache-Control: a ready video's objects never
change, so browsers keep them a year (`immutable`). Shared caches (a CDN) keep a public video's
objects `vod_cdn_max_age_seconds` before revalidating, which bounds how long a video made private
or deleted stays reachable through one. A video opened by a session or token is `private`; by a
signed URL, cacheable under that URL until the grant expires (`ripplecast.http.caching`). A
playlist rewritten for a grant has its own ETag. Errors are `no-store`. With presigned S3 GETs
enabled, segments and images redirect to the store instead of passing through the node.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import Counter
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import urlencode

from aiohttp import web

from ripplecast.accounts.policy import AccessRequest, Action, Via
from ripplecast.http.caching import etag_matches, media_cache_headers
from ripplecast.http.live import (
    CORS,
    ERROR_HEADERS,
    Authorize,
    request_credentials,
    signed_params,
)
from ripplecast.storage import InvalidKey, ObjectInfo, ObjectNotFound, Storage, check_key

__all__ = ["VodRoutes"]

_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_URI_ATTRIBUTE = re.compile(rb'URI="([^"?]+)"')
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
BROWSER_MAX_AGE = 31_536_000
"""A ready video's objects never change: a browser may keep them a year."""
PRIVATE_MAX_AGE = 3600
"""How long a browser keeps what it saw as the video's owner (access can be withdrawn)."""


def _with_grant(body: bytes, suffix: bytes, *, vtt: bool) -> bytes:
    """Append the signed query to each URI of an HLS playlist or a WebVTT sprite map."""
    lines = body.split(b"\n")
    out = []
    for line in lines:
        stripped = line.rstrip(b"\r")
        if vtt:
            # Cue payloads look like `thumbs/sprite_001.jpg#xywh=0,0,160,90`.
            if stripped.endswith(b".jpg") or b".jpg#" in stripped:
                path, hash_mark, fragment = stripped.partition(b"#")
                stripped = path + suffix + hash_mark + fragment
        elif stripped and not stripped.startswith(b"#"):
            stripped += suffix
        elif stripped.startswith(b"#EXT"):
            stripped = _URI_ATTRIBUTE.sub(lambda m: b'URI="' + m.group(1) + suffix + b'"', stripped)
        out.append(stripped)
    return b"\n".join(out)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class VodRoutes:
    """The `/vod/` routes of a node."""

    def __init__(
        self,
        storage: Storage,
        authorize: Authorize,
        *,
        presigned_get: bool,
        shared_max_age: int = 3600,
    ) -> None:
        """`shared_max_age` is how long a shared cache may keep a public video's object before
        revalidating (the `vod_cdn_max_age_seconds` setting)."""
        self._storage = storage
        self._authorize = authorize
        self._presigned = presigned_get
        self._shared_max_age = shared_max_age
        self.refused: dict[str, int] = {}
        self.served: Counter[str] = Counter()
        """Requests answered, by kind: `text` (playlists, thumbnail maps), `file`,
        `not_modified`, `redirect` (behind a CDN: what reaches this node)."""

    def register(self, app: web.Application) -> None:
        app.router.add_get("/vod/{video}/{path:.+}", self.serve)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    async def serve(self, request: web.Request) -> web.StreamResponse:
        video, path = request.match_info["video"], request.match_info["path"]
        if not _VIDEO_ID.match(video):
            self._refuse("bad_path")
            raise web.HTTPNotFound(text="no such video\n", headers=ERROR_HEADERS)
        try:
            key = check_key(f"vod/{video}/{path}")
        except InvalidKey:
            self._refuse("bad_path")
            raise web.HTTPBadRequest(text="invalid path\n", headers=ERROR_HEADERS) from None
        decision = await self._authorize(
            AccessRequest(
                Action.PLAY,
                f"/vod/{video}",
                Via.VOD,
                request_credentials(request),
                request.remote or "",
                request.path,
            )
        )
        if not decision.allowed:
            self._refuse(decision.reason)
            if decision.status == 403:
                raise web.HTTPForbidden(text="forbidden\n", headers=ERROR_HEADERS)
            raise web.HTTPNotFound(text="no such video\n", headers=ERROR_HEADERS)
        try:
            info = await self._storage.stat(key)
        except ObjectNotFound:
            raise web.HTTPNotFound(text="no such file\n", headers=ERROR_HEADERS) from None
        signed = signed_params(request)
        text = key.endswith((".m3u8", ".vtt"))
        etag = info.etag
        if text and signed:
            # The body is rewritten with the grant: another representation, another tag.
            etag = '"' + _digest(info.etag.encode() + urlencode(signed).encode()) + '"'
        headers = {
            **CORS,
            **media_cache_headers(
                decision,
                signed,
                now=time.time(),
                max_age=BROWSER_MAX_AGE,
                private_max_age=PRIVATE_MAX_AGE,
                shared_max_age=self._shared_max_age,
                immutable=True,
            ),
            "ETag": etag,
            "Last-Modified": format_datetime(info.modified, usegmt=True),
        }
        if not text:
            headers["Accept-Ranges"] = "bytes"
        if self._not_modified(request, etag, info):
            self.served["not_modified"] += 1
            return web.Response(status=304, headers=headers)
        if text:
            self.served["text"] += 1
            return await self._text(request, key, headers)
        if self._presigned:
            url = await self._storage.presigned_url(key, expires_seconds=3600)
            if url is not None:
                self.served["redirect"] += 1
                raise web.HTTPFound(url, headers={**CORS, "Cache-Control": "private, max-age=60"})
        self.served["file"] += 1
        return await self._bytes(request, key, info, headers)

    @staticmethod
    def _not_modified(request: web.Request, etag: str, info: ObjectInfo) -> bool:
        match = request.headers.get("If-None-Match")
        if match is not None:
            return etag_matches(match, etag)
        since = request.headers.get("If-Modified-Since")
        if since:
            try:
                return info.modified.replace(microsecond=0) <= parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
        return False

    async def _text(self, request: web.Request, key: str, headers: dict[str, str]) -> web.Response:
        body = await self._storage.read_bytes(key)
        signed = signed_params(request)
        if signed:
            suffix = ("?" + urlencode(signed)).encode()
            body = _with_grant(body, suffix, vtt=key.endswith(".vtt"))
        content_type = PLAYLIST_TYPE if key.endswith(".m3u8") else "text/vtt"
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    async def _bytes(
        self, request: web.Request, key: str, info: ObjectInfo, headers: dict[str, str]
    ) -> web.StreamResponse:
        size = info.size
        start, stop, status = 0, size, 200
        wanted = request.headers.get("Range", "")
        if wanted:
            parsed = _RANGE.match(wanted.strip())
            if parsed is not None and (parsed.group(1) or parsed.group(2)):
                first, last = parsed.group(1), parsed.group(2)
                if first:
                    start = int(first)
                    stop = min(int(last) + 1, size) if last else size
                else:  # the last N bytes
                    start, stop = max(size - int(last), 0), size
                if start >= size or start >= stop:
                    raise web.HTTPRequestRangeNotSatisfiable(
                        headers={**ERROR_HEADERS, "Content-Range": f"bytes */{size}"}
                    )
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{stop - 1}/{size}"}
            # Several ranges or a malformed header: the whole object (RFC 9110 allows it).
        response = web.StreamResponse(
            status=status, headers={**headers, "Content-Type": info.content_type}
        )
        response.content_length = stop - start
        await response.prepare(request)
        if request.method != "HEAD":
            # aclosing: a client that goes away mid-body must not leave the object open.
            async with contextlib.aclosing(self._storage.read(key, start=start, stop=stop)) as body:
                async for chunk in body:
                    await response.write(chunk)
        await response.write_eof()
        return response
