"""The HTTP requests of an upload: tus 1.0 creation, HEAD and PATCH, and the video's status.

One method per request; each answer is either a value or an exception that says what to do
next: `TransientFailure` (wait and ask the server again), `UploadGone` (start over or give
up), `UploadRefused` (stop, the detail says why) or `ServerMisbehaved`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin

import aiohttp

from ripplecast.errors import RipplecastError
from ripplecast.upload_client.wire import (
    TUS_VERSION,
    ServerMisbehaved,
    UploadRefused,
    http_date,
    phrase,
    problem_detail,
)

__all__ = ["OffsetConflict", "TransientFailure", "TusClient", "UploadGone", "VideoStatus"]


class TransientFailure(RipplecastError):
    """A failure worth retrying after a pause (network, timeout, 5xx, 408, 429); it never
    leaves the package (the loop retries, then raises ServerUnavailable)."""


class OffsetConflict(TransientFailure):
    """409: the server is elsewhere (or still busy with a cut request): ask it again."""


class UploadGone(RipplecastError):
    """404/410 for the upload URL: it expired, was finished or was never ours."""


@dataclass(frozen=True, slots=True)
class VideoStatus:
    """What `GET /api/v1/videos/ID` says about transcoding."""

    state: Literal["processing", "ready", "failed"]
    progress: float
    eta_seconds: float | None
    playlist: str | None
    error: str | None


class TusClient:
    """The tus 1.0 core requests and the video status request, one method each.

    Raises UploadRefused (4xx), TransientFailure (network, timeout, 5xx), UploadGone (404 or
    410 for an upload URL) and ServerMisbehaved."""

    def __init__(self, session: aiohttp.ClientSession, server: str, token: str) -> None:
        self._session = session
        self.server = server
        self._headers = {"Tus-Resumable": TUS_VERSION, "Authorization": f"Bearer {token}"}

    async def create(self, length: int, metadata: str) -> tuple[str, float | None]:
        """POST /uploads; returns the upload's absolute URL and when it expires."""
        headers = {**self._headers, "Upload-Length": str(length), "Upload-Metadata": metadata}
        async with self._request("POST", f"{self.server}/api/v1/uploads", headers) as response:
            await _check(response, 201)
            location = response.headers.get("Location")
            if not location:
                raise ServerMisbehaved("the server created an upload but sent no Location")
            url = urljoin(str(response.url), location)
            return url, http_date(response.headers.get("Upload-Expires"))

    async def offset(self, url: str, length: int) -> int:
        """HEAD: how many bytes the server holds."""
        async with self._request("HEAD", url, self._headers) as response:
            if response.status in (404, 410):
                raise UploadGone(url)
            await _check(response, 200)
            if _header_int(response, "Upload-Length") not in (None, length):
                raise UploadGone(url)  # someone else's upload at that URL: not ours to resume
            offset = _header_int(response, "Upload-Offset")
            if offset is None or not 0 <= offset <= length:
                raise ServerMisbehaved(f"HEAD {url} answered an invalid Upload-Offset")
            return offset

    async def append(
        self, url: str, offset: int, count: int, body: AsyncIterator[bytes] | None
    ) -> tuple[int, str | None]:
        """PATCH `count` bytes at `offset`; returns the new offset and, once the last byte is
        in, the id of the video the upload became."""
        headers = {
            **self._headers,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            # Sized, not chunked: the server knows at once what this request brings.
            "Content-Length": str(count),
        }
        data = b"" if body is None else body
        async with self._request("PATCH", url, headers, data=data) as response:
            if response.status in (404, 410):
                raise UploadGone(url)
            if response.status == 409:
                detail = problem_detail(await response.read(), 409)
                raise OffsetConflict(f"the server is not at offset {offset}: {detail}")
            await _check(response, 204)
            new_offset = _header_int(response, "Upload-Offset")
            if new_offset is None or not offset <= new_offset <= offset + count:
                raise ServerMisbehaved(f"PATCH {url} answered an invalid Upload-Offset")
            return new_offset, response.headers.get("Ripplecast-Video") or None

    async def video(self, video_id: str) -> VideoStatus:
        """GET /videos/ID: the transcoding state."""
        url = f"{self.server}/api/v1/videos/{video_id}"
        headers = {"Authorization": self._headers["Authorization"], "Accept": "application/json"}
        async with self._request("GET", url, headers) as response:
            await _check(response, 200)
            try:
                document = await response.json()
            except (ValueError, aiohttp.ContentTypeError):
                raise ServerMisbehaved(f"GET {url} did not answer JSON") from None
        return _video_status(document)

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], data: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self._session.request(
                method, url, headers=dict(headers), data=data, allow_redirects=False
            ) as response:
                yield response
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise TransientFailure(f"{method} failed: {_network_reason(exc)}") from None


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the server did not answer in time"
    return str(exc) or type(exc).__name__


def _header_int(response: aiohttp.ClientResponse, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


async def _check(response: aiohttp.ClientResponse, expected: int) -> None:
    status = response.status
    if status == expected:
        return
    if status >= 500 or status in (408, 429):
        raise TransientFailure(f"the server answered {status} {phrase(status)}")
    if 300 <= status < 400:
        target = response.headers.get("Location", "?")
        raise UploadRefused(status, f"redirected to {target}; give that address as --server")
    if 400 <= status < 500:
        raise UploadRefused(status, problem_detail(await response.read(), status))
    raise ServerMisbehaved(f"{response.method} {response.url} answered {status}, not {expected}")


def _video_status(document: Any) -> VideoStatus:
    if not isinstance(document, dict) or document.get("state") not in (
        "processing",
        "ready",
        "failed",
    ):
        raise ServerMisbehaved("the video's JSON has no valid state")
    job = document.get("job")
    progress = job.get("progress") if isinstance(job, dict) else None
    eta = job.get("eta_seconds") if isinstance(job, dict) else None
    playlist, error = document.get("playlist"), document.get("error")
    return VideoStatus(
        state=document["state"],
        progress=float(progress) if isinstance(progress, int | float) else 0.0,
        eta_seconds=float(eta) if isinstance(eta, int | float) else None,
        playlist=playlist if isinstance(playlist, str) else None,
        error=error if isinstance(error, str) else None,
    )
