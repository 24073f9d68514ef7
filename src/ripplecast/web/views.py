"""What the templates show, built from the catalogue's rows; who the visitor is; the checks
of submitted forms; and the answers a page handler raises (an error page, a redirect).

Pure functions and frozen dataclasses: no HTTP, no database session, no clock. The page routes
(the `ripplecast.http.pages` package) fetch rows and hand them here; templates read only these
objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ripplecast.accounts.policy import Principal
from ripplecast.accounts.service import Actor
from ripplecast.db.models import (
    Channel,
    Job,
    JobState,
    Role,
    StreamKey,
    Video,
    VideoState,
    Visibility,
)
from ripplecast.errors import RipplecastError
from ripplecast.vod.service import Viewer

__all__ = [
    "NOTICES",
    "PASSWORD_MAX_LENGTH",
    "SEARCH_MAX_LENGTH",
    "VISIBILITIES",
    "ChannelCard",
    "Details",
    "FormError",
    "KeyRow",
    "LiveCard",
    "LoginRequired",
    "PageError",
    "Redirect",
    "RenditionView",
    "VideoCard",
    "Visitor",
    "channel_card",
    "channel_matches",
    "choice_field",
    "details_fields",
    "key_row",
    "notice_text",
    "password_field",
    "query_suffix",
    "safe_next",
    "search_text",
    "setting_text",
    "text_field",
    "video_card",
    "video_renditions",
]

NOTICES: dict[str, str] = {
    "channel-saved": "Channel saved.",
    "channel-deleted": "Channel deleted with its stream keys.",
    "key-revoked": "Stream key revoked: it no longer works, and a publisher live with it was"
    " disconnected.",
    "video-saved": "Video saved.",
    "video-deleted": "Video deleted with every file of it.",
    "video-retried": "Transcoding queued again.",
    "uploaded": "Upload complete: the video is being transcoded.",
    "user-saved": "Account saved.",
    "stream-kicked": "Stream ended and its publisher disconnected.",
    "job-retried": "Job queued again.",
    "password-changed": "Password changed; your other sessions have ended.",
}
"""Messages shown after a redirect (`?msg=KEY`): a fixed set, so a link cannot make the site say
anything else."""

PASSWORD_MAX_LENGTH = 1024
SEARCH_MAX_LENGTH = 200

_NEXT = re.compile(r"^/(?![/\\])[^\s]*$")


class FormError(RipplecastError):
    """A submitted form is not acceptable; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class LiveCard:
    """A channel that is live now, on the home page."""

    slug: str
    title: str
    viewers: int
    uptime_seconds: float
    resolution: str


@dataclass(frozen=True, slots=True)
class VideoCard:
    """A video in a list."""

    id: str
    title: str
    description: str
    state: str
    visibility: str
    duration_seconds: float | None
    poster: str
    """The poster URL ('' when the video has no picture yet)."""
    job_state: str
    job_percent: int
    error: str
    source_name: str
    source_bytes: int


@dataclass(frozen=True, slots=True)
class ChannelCard:
    """A channel in search results or the dashboard."""

    slug: str
    title: str
    description: str
    visibility: str
    live: bool


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A stream key as its owner sees it (never the key)."""

    id: int
    label: str
    hint: str
    created: str
    last_used: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class RenditionView:
    """One quality of a video, for the quality menu."""

    name: str
    width: int
    height: int
    bandwidth: int


class PageError(RipplecastError):
    """Answer with an error page: `status` and a message for the visitor."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class LoginRequired(RipplecastError):
    """The page needs a signed-in visitor: answer with the login form, coming back after."""


class Redirect(RipplecastError):
    """Answer 303 See Other to `location` (a path on this site)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is asking, and the CSRF token their forms carry."""

    principal: Principal | None
    session_id: str
    csrf_token: str
    new_form_cookie: str = ""
    """A pre-login cookie value to set with this answer ('' when none is needed)."""

    @property
    def user(self) -> Principal:
        """The signed-in user; raises `LoginRequired` for anonymous visitors."""
        if self.principal is None:
            raise LoginRequired()
        return self.principal

    @property
    def admin(self) -> bool:
        return self.principal is not None and self.principal.role == Role.ADMIN

    @property
    def viewer(self) -> Viewer:
        if self.principal is None:
            return Viewer()
        return Viewer(self.principal.user_id, admin=self.admin)

    @property
    def actor(self) -> Actor:
        return Actor(self.user.user_id, admin=self.admin)

    def owns(self, channel: Channel) -> bool:
        return self.principal is not None and (
            self.admin or channel.owner_id == self.principal.user_id
        )


def query_suffix(query: str) -> str:
    """`?query`, or '' when there is no query: what follows a media URL's path."""
    return f"?{query}" if query else ""


def notice_text(code: str | None) -> str:
    """The message for a redirect's `?msg=` code ('' for none or an unknown code)."""
    return NOTICES.get(code or "", "")


def _job_percent(job: Job | None, state: VideoState) -> int:
    if state is VideoState.READY:
        return 100
    if job is None:
        return 0
    return round(min(max(job.progress, 0.0), 1.0) * 100)


def video_card(video: Video, *, query: str = "", job: Job | None = None) -> VideoCard:
    """The card of `video`; `query` (a signed grant) is added to its media URLs.

    `job` is the video's job when the caller loaded it (reading `video.job` unloaded raises)."""
    has_picture = video.state is VideoState.READY and video.width is not None
    poster = f"/vod/{video.public_id}/poster.jpg{query_suffix(query)}" if has_picture else ""
    return VideoCard(
        id=video.public_id,
        title=video.title or video.public_id,
        description=video.description,
        state=video.state.value,
        visibility=video.visibility.value,
        duration_seconds=video.duration_seconds,
        poster=poster,
        job_state=job.state.value if job is not None else "",
        job_percent=_job_percent(job, video.state),
        error=video.error or (job.last_error or "" if job is not None else ""),
        source_name=video.source_name,
        source_bytes=video.source_bytes,
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def video_renditions(video: Video) -> list[RenditionView]:
    """The renditions of a ready video, tallest first (as the ladder lists them)."""
    views = [
        RenditionView(
            name=str(r.get("name", "")) or f"{_int(r.get('height'))}p",
            width=_int(r.get("width")),
            height=_int(r.get("height")),
            bandwidth=_int(r.get("bandwidth")),
        )
        for r in (video.renditions or [])
    ]
    return sorted(views, key=lambda r: (r.height, r.bandwidth), reverse=True)


def channel_card(channel: Channel, *, live: bool) -> ChannelCard:
    """The card of `channel`."""
    return ChannelCard(
        slug=channel.slug,
        title=channel.title or channel.slug,
        description=channel.description,
        visibility=channel.visibility.value,
        live=live,
    )


def text_field(
    form: Mapping[str, object],
    name: str,
    *,
    label: str,
    max_length: int,
    required: bool = False,
    strip: bool = True,
) -> str:
    """The text field `name` of a submitted form, checked.

    Raises `FormError` when it is required and empty, too long, or holds a NUL character
    (which PostgreSQL cannot store)."""
    raw = form.get(name, "")
    if not isinstance(raw, str):
        raise FormError(f"{label}: expected text")
    value = raw.strip() if strip else raw
    if required and not value:
        raise FormError(f"{label} is required.")
    if len(value) > max_length:
        raise FormError(f"{label} is longer than {max_length} characters.")
    if "\x00" in value:
        raise FormError(f"{label} must not contain NUL characters.")
    return value


def choice_field(form: Mapping[str, object], name: str, *, label: str, choices: set[str]) -> str:
    """A field that must be one of `choices`; raises `FormError` otherwise."""
    value = form.get(name, "")
    if not isinstance(value, str) or value not in choices:
        raise FormError(f"{label} must be one of: {', '.join(sorted(choices))}.")
    return value


def password_field(
    form: Mapping[str, object], name: str, *, label: str, required: bool = False
) -> str:
    """A password field: kept exactly as typed (never stripped), at most `PASSWORD_MAX_LENGTH`
    characters; raises `FormError` as `text_field` does."""
    return text_field(
        form, name, label=label, max_length=PASSWORD_MAX_LENGTH, required=required, strip=False
    )


VISIBILITIES = {v.value for v in Visibility}
JOB_STATES = {s.value for s in JobState}


@dataclass(frozen=True, slots=True)
class Details:
    """What a creator says about a channel or a video."""

    title: str
    description: str
    visibility: Visibility


def details_fields(form: Mapping[str, object]) -> Details:
    """The title, description and visibility fields of a channel or video form, checked in that
    order; raises `FormError` for the first that is not acceptable."""
    title = text_field(form, "title", label="Title", max_length=200)
    description = text_field(form, "description", label="Description", max_length=5000)
    visibility = choice_field(form, "visibility", label="Visibility", choices=VISIBILITIES)
    return Details(title, description, Visibility(visibility))


def search_text(raw: str) -> str:
    """What a search looks for: the query without NUL characters or surrounding blanks, cut to
    `SEARCH_MAX_LENGTH` characters ('' means no search)."""
    return raw.replace("\x00", "").strip()[:SEARCH_MAX_LENGTH]


def channel_matches(channel: Channel, text: str) -> bool:
    """True if `text` occurs in the channel's title or name, ignoring case."""
    needle = text.casefold()
    return needle in channel.title.casefold() or needle in channel.slug.casefold()


def safe_next(target: str | None, default: str = "/dashboard") -> str:
    """`target` if it is a path on this site (no scheme, host or `//`), else `default`: a login
    form never sends anyone elsewhere."""
    if target and len(target) <= 2000 and _NEXT.match(target):
        return target
    return default


def key_row(key: StreamKey) -> KeyRow:
    """How a stream key is listed: never the key, only its last characters."""
    return KeyRow(
        id=key.id,
        label=key.label,
        hint=key.hint,
        created=key.created_at.strftime("%Y-%m-%d %H:%M UTC"),
        last_used=key.last_used_at.strftime("%Y-%m-%d %H:%M UTC") if key.last_used_at else "",
        revoked=key.revoked_at is not None,
    )


def setting_text(value: object) -> str:
    """A setting's value as one line of text (lists and tables joined)."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)
