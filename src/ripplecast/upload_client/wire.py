"""The pure parts of the upload client: no I/O, no clock, no event loop.

The Upload-Metadata header, the resume key and the state file's text, problem+json details,
retry delays, token masking and the command's last line; and the errors every part raises.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ripplecast.errors import RipplecastError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EXIT_INTERRUPTED",
    "READ_BLOCK",
    "TUS_VERSION",
    "VISIBILITIES",
    "OutcomeUnknown",
    "SavedUpload",
    "ServerMisbehaved",
    "ServerUnavailable",
    "UploadClientError",
    "UploadOutcome",
    "UploadRefused",
    "UploadUsageError",
    "default_state_file",
    "describe_refusal",
    "drop_expired",
    "encode_metadata",
    "final_line",
    "http_date",
    "mask",
    "parse_state",
    "phrase",
    "problem_detail",
    "render_state",
    "resume_key",
    "retry_delay",
    "server_base",
]

TUS_VERSION = "1.0.0"
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
READ_BLOCK = 64 * 1024
"""The file is read and sent in blocks of this size inside one PATCH (progress granularity)."""
STATE_VERSION = 1
EXIT_INTERRUPTED = 130

VISIBILITIES = ("public", "unlisted", "private")


# ------------------------------------------------------------------------------------------
# Errors


class UploadClientError(RipplecastError):
    """The upload did not happen; `exit_code` is how the command ends."""

    exit_code = 1


class UploadUsageError(UploadClientError):
    """The command was given something unusable (a missing file, a malformed server URL)."""

    exit_code = 2


class UploadRefused(UploadClientError):
    """The server answered 4xx; `detail` is its problem's explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(describe_refusal(status, detail))
        self.status = status
        self.detail = detail


class ServerMisbehaved(UploadClientError):
    """The server's answer breaks the tus protocol (a missing or impossible header)."""


class ServerUnavailable(UploadClientError):
    """Transient failures went on past the retry limit; the next run resumes."""


class OutcomeUnknown(UploadClientError):
    """The last byte was sent but its answer was lost, and the upload is gone from the server:
    it most likely became a video, which only a look at the account's videos can tell."""


# ------------------------------------------------------------------------------------------
# Pure parts


def encode_metadata(fields: Mapping[str, str]) -> str:
    """tus Upload-Metadata: `key base64(value)` pairs joined by commas (empty values kept)."""
    pairs = []
    for key, value in fields.items():
        if not key or any(c in key for c in " ,") or not key.isascii():
            raise UploadUsageError(f"invalid tus metadata key {key!r}")
        encoded = base64.b64encode(value.encode()).decode("ascii")
        pairs.append(f"{key} {encoded}" if encoded else key)
    return ",".join(pairs)


def server_base(server: str) -> str:
    """The server URL without a trailing slash; raises UploadUsageError unless http(s)://HOST."""
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadUsageError(
            f"the server must be http://HOST[:PORT] or https://…, not {server!r}"
        )
    if parts.query or parts.fragment:
        raise UploadUsageError("the server URL must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def resume_key(server: str, path: Path, size: int, mtime_ns: int) -> str:
    """The state file's key of one file's upload to one server: a changed file starts over."""
    return json.dumps([server, str(path), size, mtime_ns], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SavedUpload:
    """A state file entry."""

    url: str
    """The absolute upload URL (the server's `Location`)."""
    created_at: float
    """Unix time the upload was created."""
    expires_at: float | None
    """Unix time of the server's `Upload-Expires`, if it said."""


def parse_state(text: str) -> dict[str, SavedUpload]:
    """The entries of a state file; an unreadable or foreign file counts as empty (it only
    costs a fresh start, never a wrong resume)."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
        return {}
    uploads = document.get("uploads")
    if not isinstance(uploads, dict):
        return {}
    found: dict[str, SavedUpload] = {}
    for key, entry in uploads.items():
        if not isinstance(entry, dict):
            continue
        url, created, expires = entry.get("url"), entry.get("created_at"), entry.get("expires_at")
        if not isinstance(url, str) or not isinstance(created, int | float):
            continue
        if expires is not None and not isinstance(expires, int | float):
            continue
        found[key] = SavedUpload(url, float(created), None if expires is None else float(expires))
    return found


def render_state(entries: Mapping[str, SavedUpload]) -> str:
    """The state file's text for `entries`."""
    uploads = {
        key: {"url": e.url, "created_at": e.created_at, "expires_at": e.expires_at}
        for key, e in sorted(entries.items())
    }
    return json.dumps({"version": STATE_VERSION, "uploads": uploads}, indent=1) + "\n"


def drop_expired(entries: Mapping[str, SavedUpload], now: float) -> dict[str, SavedUpload]:
    """`entries` without those the server has certainly forgotten."""
    return {k: e for k, e in entries.items() if e.expires_at is None or e.expires_at > now}


def http_date(value: str | None) -> float | None:
    """Unix time of an HTTP date header, or None if absent or malformed."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def problem_detail(body: bytes, status: int) -> str:
    """The `detail` of an RFC 9457 problem body, else its `title`, else the status phrase."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        problem = json.loads(body)
        if isinstance(problem, dict):
            for field in ("detail", "title"):
                if isinstance(problem.get(field), str) and problem[field]:
                    return str(problem[field])
    return phrase(status)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def describe_refusal(status: int, detail: str) -> str:
    """A refusal in words for the person at the terminal."""
    if status == 401:
        return f"the server does not accept this token (401): {detail}"
    if status == 403:
        return f"the token may not upload videos (403): {detail}"
    return f"the server refused the upload ({status} {phrase(status)}): {detail}"


def retry_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th consecutive failure: doubling from `base`."""
    return float(min(cap, base * 2 ** max(failures - 1, 0)))


MASK_MIN_LENGTH = 6
"""Shorter "secrets" are not masked: they would mangle every word and hide nothing."""


def mask(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced by `***`."""
    return text.replace(secret, "***") if len(secret) >= MASK_MIN_LENGTH else text


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """How an upload ended."""

    video_id: str
    state: Literal["queued", "ready", "failed"]
    playlist_url: str | None = None
    error: str | None = None


def final_line(outcome: UploadOutcome) -> str:
    """The command's last line on stdout, for scripts: `video ID STATE [PLAYLIST_URL]`."""
    line = f"video {outcome.video_id} {outcome.state}"
    return f"{line} {outcome.playlist_url}" if outcome.playlist_url else line


def default_state_file(environ: Mapping[str, str] | None = None) -> Path:
    """RIPPLECAST_UPLOAD_STATE, else $XDG_CACHE_HOME (or ~/.cache)/ripplecast/uploads.json."""
    environ = os.environ if environ is None else environ
    if environ.get("RIPPLECAST_UPLOAD_STATE"):
        return Path(environ["RIPPLECAST_UPLOAD_STATE"])
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ripplecast" / "uploads.json"
