"""The web interface: server-rendered pages (Jinja2) for viewers, creators and administrators.

Pages: `/` (live now, recent videos), `/c/SLUG` (a channel and its live player), `/v/ID` (a
video), `/search`, `/login`, `/register`, `/logout`, `/account/password`, `/dashboard`
(channels, stream keys, OBS set-up, live stats), `/dashboard/upload`, `/dashboard/videos`,
`/admin`; `/static/...` serves the interface's CSS and JavaScript and, under `/static/vendor/`,
the player libraries installed by npm.

Invariants:
- Who the visitor is comes from the session cookie only (the API's `rc_session`), checked by
  the one access policy; pages that show media ask that policy exactly as the media routes do,
  so a private channel or video is a 404 for anyone it does not open for.
- Every POST carries a CSRF token bound to the session (`accounts.csrf`) or, before login, to
  a random HttpOnly cookie; a missing or wrong token is a 403 and changes nothing.
- Everything but playback works without JavaScript: every action is a plain form. Pages carry
  no inline script, and every page answer has a Content-Security-Policy allowing this origin's
  scripts only.
- Stream keys are shown once, in the answer to the form that made them, and never stored.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web

from ripplecast.accounts.csrf import FORM_FIELD, check_csrf, csrf_token
from ripplecast.accounts.logins import LoginRefused, Logins
from ripplecast.accounts.policy import AccessRequest, Action, Credentials, Principal, Scope, Via
from ripplecast.accounts.service import AccountError, Accounts, Actor, Conflict, NotFound
from ripplecast.config import Settings
from ripplecast.db.models import Channel, Role, Video, VideoState, Visibility
from ripplecast.http.api.streams import KICK_REASON, Publishers, describe_stream
from ripplecast.http.api.videos import Signer
from ripplecast.http.live import SESSION_COOKIE, Authorize, request_credentials, signed_params
from ripplecast.live.hub import Hub
from ripplecast.live.names import InvalidStreamName, validate_stream_name
from ripplecast.live.stream import StreamState
from ripplecast.vod.service import VideoNotFound, VideoNotRetryable, Videos, Viewer
from ripplecast.vod.uploads import Uploader, UploadError, Uploads
from ripplecast.web import (
    CONTENT_SECURITY_POLICY,
    VENDOR_FILES,
    default_vendor_dir,
    make_environment,
    static_files,
)
from ripplecast.web.views import (
    NOTICES,
    VISIBILITIES,
    ChannelCard,
    FormError,
    LiveCard,
    LoginRequired,
    PageError,
    Redirect,
    Visitor,
    channel_card,
    choice_field,
    key_row,
    safe_next,
    setting_text,
    text_field,
    video_card,
    video_renditions,
)

__all__ = ["FORM_COOKIE", "PageRoutes", "RtmpPort", "Visitor"]

log = logging.getLogger("ripplecast.web")

FORM_COOKIE = "rc_form"
"""Before login, CSRF tokens are bound to this random cookie (login and register forms)."""

HOME_VIDEOS = 24
LIST_LIMIT = 100
SEARCH_SCAN = 1000
"""Search looks at most at this many public channels (titles are matched here, not in SQL)."""
FIELD_MAX_BYTES = 64 * 1024
"""Largest plain field of the multipart upload form."""
UPLOAD_CHUNK = 256 * 1024
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

Handler = Callable[[web.Request, Visitor], Awaitable[web.StreamResponse]]


@runtime_checkable
class RtmpPort(Protocol):
    """Something that knows the RTMP port actually bound (the RTMP server)."""

    @property
    def port(self) -> int: ...


class PageRoutes:
    """The page handlers of a node; `register(app)` adds them."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        authorize: Authorize,
        *,
        accounts: Accounts,
        logins: Logins,
        secret: bytes,
        videos: Videos | None = None,
        uploads: Uploads | None = None,
        signer: Signer | None = None,
        publishers: Publishers | None = None,
        rtmp_port: Callable[[], int] | None = None,
        vendor_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._authorize = authorize
        self._accounts = accounts
        self._logins = logins
        self._secret = secret
        self._videos = videos
        self._uploads = uploads
        self._signer = signer
        self._publishers = publishers
        self._rtmp_port = rtmp_port
        self._vendor_dir = vendor_dir if vendor_dir is not None else default_vendor_dir()
        self._clock = clock
        self._env = make_environment()
        self._static = static_files()

    def register(self, app: web.Application) -> None:
        """Add the page routes and the static files to `app`."""
        page, router = self._page, app.router
        router.add_get("/", page(self.home))
        router.add_get("/c/{slug}", page(self.channel))
        router.add_get("/v/{id}", page(self.video))
        router.add_get("/search", page(self.search))
        router.add_get("/login", page(self.login_form, form_cookie=True))
        router.add_post("/login", page(self.login))
        router.add_get("/register", page(self.register_form, form_cookie=True))
        router.add_post("/register", page(self.register_account))
        router.add_post("/logout", page(self.logout))
        router.add_get("/account/password", page(self.password_form))
        router.add_post("/account/password", page(self.change_password))
        router.add_get("/dashboard", page(self.dashboard))
        router.add_post("/dashboard/channels", page(self.create_channel))
        router.add_post("/dashboard/channels/{slug}/edit", page(self.edit_channel))
        router.add_post("/dashboard/channels/{slug}/delete", page(self.delete_channel))
        router.add_post("/dashboard/channels/{slug}/keys", page(self.create_key))
        key = r"/dashboard/channels/{slug}/keys/{id:\d{1,18}}"
        router.add_post(key + "/rotate", page(self.rotate_key))
        router.add_post(key + "/revoke", page(self.revoke_key))
        router.add_get("/dashboard/upload", page(self.upload_form))
        router.add_post("/dashboard/upload", page(self.upload))
        router.add_get("/dashboard/videos", page(self.my_videos))
        router.add_post("/dashboard/videos/{id}/edit", page(self.edit_video))
        router.add_post("/dashboard/videos/{id}/delete", page(self.delete_video))
        router.add_post("/dashboard/videos/{id}/retry", page(self.retry_video))
        router.add_get("/admin", page(self.admin))
        router.add_post(r"/admin/users/{id:\d{1,18}}", page(self.admin_user))
        router.add_post("/admin/streams/{name}/kick", page(self.admin_kick))
        router.add_post("/admin/jobs/{id}/retry", page(self.admin_retry))
        router.add_get("/static/vendor/{name}", self.vendor_file)
        router.add_get("/static/{name}", self.static_file)

    # ------------------------------------------------------------------------------------
    # Plumbing: visitors, CSRF, rendering, errors

    def _page(
        self, handler: Handler, *, form_cookie: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            visitor = await self._visitor(request, form_cookie=form_cookie)
            try:
                response = await handler(request, visitor)
            except Redirect as exc:
                response = _see_other(exc.location)
            except LoginRequired:
                back = request.path_qs if request.method == "GET" else "/dashboard"
                response = _see_other("/login?" + urlencode({"next": back}))
            except PageError as exc:
                response = self._render(
                    visitor, "error.html", status=exc.status, message=exc.message
                )
                response.headers.update(exc.headers)
            if visitor.new_form_cookie:
                response.set_cookie(
                    FORM_COOKIE,
                    visitor.new_form_cookie,
                    path="/",
                    httponly=True,
                    samesite="Lax",
                    secure=request.secure,
                )
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers["X-Frame-Options"] = "DENY"
            response.headers.setdefault(
                "Cache-Control", "no-store" if visitor.principal is not None else "no-cache"
            )
            return response

        return handle

    async def _visitor(self, request: web.Request, *, form_cookie: bool) -> Visitor:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        principal = None
        if session_id:
            decision = await self._authorize(
                AccessRequest(
                    Action.API,
                    request.path,
                    Via.API,
                    Credentials(session_id=session_id),
                    request.remote or "",
                    request.path,
                    scope=Scope.READ,
                )
            )
            principal = decision.principal if decision.allowed else None
        if principal is None:
            session_id = ""
        nonce = request.cookies.get(FORM_COOKIE, "")
        if len(nonce) > 64:
            nonce = ""
        new = ""
        if not session_id and not nonce and form_cookie:
            nonce = new = secrets.token_urlsafe(24)
        key = session_id or (f"form:{nonce}" if nonce else "")
        token = csrf_token(self._secret, key) if key else ""
        return Visitor(principal, session_id, token, new)

    async def _form(self, request: web.Request, visitor: Visitor) -> Mapping[str, object]:
        """The submitted form, once its CSRF token is checked (else a 403 page)."""
        form = await request.post()
        token = form.get(FORM_FIELD, "")
        nonce = request.cookies.get(FORM_COOKIE, "")
        key = visitor.session_id or (f"form:{nonce}" if nonce and len(nonce) <= 64 else "")
        if not isinstance(token, str) or not check_csrf(self._secret, key, token):
            raise PageError(
                403,
                "This form has expired or did not come from this site: reload the page and"
                " submit it again.",
            )
        return form

    def _render(
        self, visitor: Visitor, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        context.setdefault("notice", "")
        context.setdefault("error", "")
        html = self._env.get_template(template).render(
            visitor=visitor,
            user=visitor.principal,
            is_admin=visitor.admin,
            csrf_field=FORM_FIELD,
            registration_open=self._settings.registration_open,
            vod_enabled=self._videos is not None,
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    async def _may_play(self, request: web.Request, resource: str) -> bool:
        decision = await self._authorize(
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

    async def _channel_or_none(self, slug: str) -> Channel | None:
        try:
            return await self._accounts.channel(slug)
        except NotFound:
            return None

    def _stream_name(self, raw: str) -> str:
        try:
            return validate_stream_name(raw, max_length=self._settings.stream_name_max_length)
        except InvalidStreamName:
            raise PageError(404, "There is no such channel.") from None

    def _is_live(self, slug: str) -> bool:
        stream = self._hub.get(slug)
        return stream is not None and stream.state is StreamState.LIVE

    def _need_videos(self) -> tuple[Videos, Uploads]:
        if self._videos is None or self._uploads is None:
            raise PageError(404, "Videos on demand are disabled on this server.")
        return self._videos, self._uploads

    def _obs_server(self) -> str:
        port = self._settings.rtmp_port
        try:
            if self._rtmp_port is not None:
                port = self._rtmp_port()
            elif isinstance(self._publishers, RtmpPort):
                port = self._publishers.port  # the RTMP server knows the port it bound
        except RuntimeError:  # not listening yet: the configured port is the best answer
            pass
        return f"rtmp://{self._settings.public_host}:{port}/live"

    # ------------------------------------------------------------------------------------
    # Static files

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        """The interface's own CSS and JavaScript (a fixed set of names)."""
        path = self._static.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such file\n")
        return web.FileResponse(path, headers=_ASSET_HEADERS)

    async def vendor_file(self, request: web.Request) -> web.StreamResponse:
        """The player libraries, from `web/node_modules` (installed by `npm ci --prefix web`)."""
        relative = VENDOR_FILES.get(request.match_info["name"])
        if relative is None:
            raise web.HTTPNotFound(text="no such file\n")
        path = self._vendor_dir / relative
        if not path.is_file():
            log.warning("web: %s is missing: run `npm ci --prefix web` (make does)", path)
            raise web.HTTPNotFound(
                text=f"{request.match_info['name']} is not installed: run `npm ci --prefix web`\n"
            )
        return web.FileResponse(path, headers=_ASSET_HEADERS)

    # ------------------------------------------------------------------------------------
    # Watching

    async def home(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Live channels now, with their viewers, and the newest public videos."""
        live = await self._live_cards(request, visitor)
        videos = []
        if self._videos is not None:
            rows, _ = await self._videos.list(Viewer(), limit=HOME_VIDEOS)
            videos = [video_card(v) for v in rows]
        return self._render(visitor, "home.html", live=live, videos=videos)

    async def _live_cards(self, request: web.Request, visitor: Visitor) -> list[LiveCard]:
        now = self._clock()
        cards: list[LiveCard] = []
        for stream in sorted(self._hub, key=lambda s: s.name):
            if stream.state is StreamState.ENDED or len(cards) >= LIST_LIMIT:
                continue
            channel = await self._channel_or_none(stream.name)
            # Listed: public channels (and, in open mode, streams without a channel); the
            # visitor's own channels whatever their visibility.
            hidden = channel is not None and channel.visibility is not Visibility.PUBLIC
            if hidden and channel is not None and not visitor.owns(channel):
                continue
            if not await self._may_play(request, f"/live/{stream.name}"):
                continue
            info = describe_stream(stream, now)
            video = info.video
            resolution = f"{video.width}x{video.height}" if video and video.width else ""
            cards.append(
                LiveCard(
                    slug=stream.name,
                    title=(channel.title if channel is not None else "") or stream.name,
                    viewers=info.viewers.total,
                    uptime_seconds=info.uptime_seconds,
                    resolution=resolution,
                )
            )
        return cards

    async def channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """A channel's page with its live player (or the offline slate) and its videos."""
        slug = self._stream_name(request.match_info["slug"])
        if not await self._may_play(request, f"/live/{slug}"):
            raise PageError(404, "There is no such channel.")
        channel = await self._channel_or_none(slug)
        query = ""
        if channel is not None and channel.visibility is Visibility.PRIVATE and self._signer:
            query = self._signer(f"/live/{slug}")
        elif signed := signed_params(request):
            query = urlencode(signed)
        suffix = f"?{query}" if query else ""
        videos = []
        if channel is not None and self._videos is not None:
            rows, _ = await self._videos.list(Viewer(), owner_id=channel.owner_id, limit=12)
            videos = [video_card(v) for v in rows]
        return self._render(
            visitor,
            "channel.html",
            slug=slug,
            channel=channel_card(channel, live=self._is_live(slug)) if channel else None,
            title=(channel.title if channel is not None else "") or slug,
            live=self._is_live(slug),
            owner=channel is not None and visitor.owns(channel),
            protocol="flv" if request.query.get("p") == "flv" else "hls",
            hls_url=f"/live/{slug}/index.m3u8{suffix}",
            flv_url=f"/live/{slug}.flv{suffix}",
            status_url=f"/api/v1/streams/{slug}{suffix}",
            videos=videos,
        )

    async def video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """A video's page: the player when it is ready, its progress while it is not."""
        videos, _ = self._need_videos()
        public_id = request.match_info["id"]
        if not _VIDEO_ID.match(public_id):
            raise PageError(404, "There is no such video.")
        try:
            # Looked up as an admin; who may see it is decided below, by the access policy.
            video = await videos.get(public_id, Viewer(admin=True))
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        mine = visitor.viewer.owns(video)
        if video.state is VideoState.READY:
            if not await self._may_play(request, f"/vod/{public_id}"):
                raise PageError(404, "There is no such video.")
        elif not mine:
            raise PageError(404, "There is no such video.")
        query = ""
        if video.visibility is Visibility.PRIVATE and mine and self._signer is not None:
            query = self._signer(f"/vod/{public_id}")
        elif signed := signed_params(request):
            query = urlencode(signed)
        suffix = f"?{query}" if query else ""
        ready = video.state is VideoState.READY
        has_picture = ready and video.width is not None
        return self._render(
            visitor,
            "video.html",
            video=video_card(video, query=query, job=video.job),
            created=video.created_at,
            ready=ready,
            mine=mine,
            renditions=video_renditions(video) if ready else [],
            master_url=f"/vod/{public_id}/master.m3u8{suffix}" if ready else "",
            thumbnails_url=f"/vod/{public_id}/thumbs.vtt{suffix}" if has_picture else "",
        )

    async def search(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Public videos and channels whose title holds the words asked for."""
        query = request.query.get("q", "").replace("\x00", "").strip()[:200]
        videos = []
        channels: list[ChannelCard] = []
        if query:
            if self._videos is not None:
                rows, _ = await self._videos.list(Viewer(), search=query, limit=LIST_LIMIT)
                videos = [video_card(v) for v in rows]
            found, _ = await self._accounts.channels(listed_only=True, limit=SEARCH_SCAN)
            needle = query.casefold()
            channels = [
                channel_card(c, live=self._is_live(c.slug))
                for c in found
                if needle in c.title.casefold() or needle in c.slug.casefold()
            ][:LIST_LIMIT]
        return self._render(visitor, "search.html", q=query, videos=videos, channels=channels)

    # ------------------------------------------------------------------------------------
    # Accounts

    async def login_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The login form."""
        registered = request.query.get("registered", "")[:64]
        notice = "Account created: log in." if registered else ""
        return self._render(
            visitor,
            "login.html",
            username=registered,
            next=safe_next(request.query.get("next")),
            notice=notice,
        )

    async def login(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Check the credentials, open a session (cookie) and go on to `next`."""
        form = await self._form(request, visitor)
        target = safe_next(_str(form, "next"))
        try:
            username = text_field(form, "username", label="User name", max_length=64)
            password = text_field(form, "password", label="Password", max_length=1024, strip=False)
        except FormError as exc:
            return self._render(
                visitor, "login.html", status=422, error=str(exc), username="", next=target
            )
        try:
            session = await self._logins.login(
                username,
                password,
                ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", ""),
            )
        except LoginRefused as exc:
            if exc.retry_after:
                wait = int(exc.retry_after)
                response = self._render(
                    visitor,
                    "login.html",
                    status=429,
                    error=f"Too many failed logins: try again in {wait} s",
                    username=username,
                    next=target,
                )
                response.headers["Retry-After"] = str(wait)
                return response
            return self._render(
                visitor,
                "login.html",
                status=422,
                error="Invalid user name or password.",
                username=username,
                next=target,
            )
        response = _see_other(target)
        max_age = int((session.expires_at - datetime.now(UTC)).total_seconds())
        response.set_cookie(
            SESSION_COOKIE,
            session.session_id,
            max_age=max(max_age, 0),
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        log.info("web login user=%s", session.username)
        return response

    async def logout(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """End the session."""
        await self._form(request, visitor)
        if visitor.session_id:
            await self._logins.logout(visitor.session_id)
        response = _see_other("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def register_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form to create an account."""
        if not self._settings.registration_open:
            raise PageError(403, "Registration is closed on this server.")
        return self._render(visitor, "register.html", username="")

    async def register_account(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Create an account, then on to the login form."""
        if not self._settings.registration_open:
            raise PageError(403, "Registration is closed on this server.")
        form = await self._form(request, visitor)
        username = _str(form, "username").strip()[:64]
        try:
            username = text_field(form, "username", label="User name", max_length=64, required=True)
            password = text_field(
                form, "password", label="Password", max_length=1024, required=True, strip=False
            )
            if password != _str(form, "confirm"):
                raise FormError("The two passwords differ.")
            await self._accounts.create_user(username, password)
        except Conflict as exc:
            return self._render(
                visitor, "register.html", status=409, error=str(exc), username=username
            )
        except (FormError, AccountError) as exc:
            return self._render(
                visitor, "register.html", status=422, error=str(exc), username=username
            )
        log.info("web account created user=%s", username)
        raise Redirect("/login?" + urlencode({"registered": username}))

    async def password_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form to change one's password."""
        _ = visitor.user
        notice = NOTICES.get(request.query.get("msg", ""), "")
        return self._render(visitor, "password.html", notice=notice)

    async def change_password(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change the password; every other session of the account ends."""
        user = visitor.user
        form = await self._form(request, visitor)
        try:
            current = text_field(
                form, "current", label="Current password", max_length=1024, strip=False
            )
            new = text_field(
                form, "new", label="New password", max_length=1024, required=True, strip=False
            )
            if new != _str(form, "confirm"):
                raise FormError("The two new passwords differ.")
            await self._logins.change_password(
                user.user_id, current, new, keep_session=visitor.session_id
            )
        except (FormError, AccountError) as exc:
            return self._render(visitor, "password.html", status=422, error=str(exc))
        raise Redirect("/account/password?msg=password-changed")

    # ------------------------------------------------------------------------------------
    # Creator dashboard: channels and stream keys

    async def dashboard(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The creator's channels, keys, OBS set-up and live stats."""
        _ = visitor.user
        return await self._dashboard(
            visitor,
            selected=request.query.get("channel", ""),
            notice=NOTICES.get(request.query.get("msg", ""), ""),
        )

    async def _dashboard(
        self,
        visitor: Visitor,
        *,
        selected: str = "",
        new_key: str = "",
        notice: str = "",
        error: str = "",
        status: int = 200,
        values: Mapping[str, str] | None = None,
    ) -> web.Response:
        user = visitor.user
        rows, _ = await self._accounts.channels(owner_id=user.user_id, limit=LIST_LIMIT)
        channels = []
        for row in rows:
            keys = await self._accounts.stream_keys(row.slug, visitor.actor)
            channels.append(
                (
                    channel_card(row, live=self._is_live(row.slug)),
                    [key_row(k) for k in keys if k.revoked_at is None],
                    sum(1 for k in keys if k.revoked_at is not None),
                )
            )
        chosen = next((c for c, _, _ in channels if c.slug == selected), None)
        if chosen is None and channels:
            chosen = channels[0][0]
        return self._render(
            visitor,
            "dashboard.html",
            status=status,
            channels=channels,
            selected=chosen,
            new_key=new_key,
            obs_server=self._obs_server(),
            notice=notice,
            error=error,
            values=values or {},
        )

    async def create_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Create a channel and its first stream key (shown once, in this answer)."""
        user = visitor.user
        form = await self._form(request, visitor)
        values = {name: _str(form, name)[:5000] for name in ("slug", "title", "description")}
        try:
            slug = text_field(form, "slug", label="Channel name", max_length=64, required=True)
            title = text_field(form, "title", label="Title", max_length=200)
            description = text_field(form, "description", label="Description", max_length=5000)
            visibility = Visibility(
                choice_field(form, "visibility", label="Visibility", choices=VISIBILITIES)
            )
            await self._accounts.create_channel(
                user.username, slug, title=title, visibility=visibility
            )
        except Conflict as exc:
            return await self._dashboard(visitor, error=str(exc), status=409, values=values)
        except (FormError, AccountError) as exc:
            return await self._dashboard(visitor, error=str(exc), status=422, values=values)
        if description:
            await self._accounts.update_channel(slug, visitor.actor, description=description)
        key = await self._accounts.create_stream_key(slug, label="made with the channel")
        log.info("web channel %s created by %s", slug, user.username)
        return await self._dashboard(
            visitor,
            selected=slug,
            new_key=key.key,
            notice=f"Channel {slug} created. Copy its stream key now: it is shown only once.",
        )

    async def _own_channel(self, request: web.Request, visitor: Visitor) -> Channel:
        slug = request.match_info["slug"]
        try:
            return await self._accounts.channel(slug, actor=visitor.actor)
        except NotFound:
            raise PageError(404, "There is no such channel.") from None

    async def edit_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change a channel's title, description or visibility."""
        channel = await self._own_channel(request, visitor)
        form = await self._form(request, visitor)
        try:
            title = text_field(form, "title", label="Title", max_length=200)
            description = text_field(form, "description", label="Description", max_length=5000)
            visibility = Visibility(
                choice_field(form, "visibility", label="Visibility", choices=VISIBILITIES)
            )
        except FormError as exc:
            return await self._dashboard(visitor, selected=channel.slug, error=str(exc), status=422)
        await self._accounts.update_channel(
            channel.slug,
            visitor.actor,
            title=title or channel.slug,
            description=description,
            visibility=visibility,
        )
        raise Redirect(f"/dashboard?channel={channel.slug}&msg=channel-saved")

    async def delete_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Delete a channel and its stream keys."""
        channel = await self._own_channel(request, visitor)
        await self._form(request, visitor)
        await self._accounts.delete_channel(channel.slug, visitor.actor)
        log.info("web channel %s deleted", channel.slug)
        raise Redirect("/dashboard?msg=channel-deleted")

    async def create_key(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Make another stream key for a channel (shown once, in this answer)."""
        channel = await self._own_channel(request, visitor)
        form = await self._form(request, visitor)
        try:
            label = text_field(form, "label", label="Label", max_length=100)
        except FormError as exc:
            return await self._dashboard(visitor, selected=channel.slug, error=str(exc), status=422)
        key = await self._accounts.create_stream_key(channel.slug, label=label)
        return await self._dashboard(
            visitor,
            selected=channel.slug,
            new_key=key.key,
            notice="New stream key made. Copy it now: it is shown only once.",
        )

    async def rotate_key(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Replace a key: make a new one (shown once), then revoke the old one."""
        channel = await self._own_channel(request, visitor)
        await self._form(request, visitor)
        key_id = int(request.match_info["id"])
        keys = await self._accounts.stream_keys(channel.slug, visitor.actor)
        old = next((k for k in keys if k.id == key_id and k.revoked_at is None), None)
        if old is None:
            raise PageError(404, "There is no such stream key.")
        made = await self._accounts.create_stream_key(channel.slug, label=old.label)
        await self._accounts.revoke_stream_key(key_id, actor=visitor.actor, channel=channel.slug)
        return await self._dashboard(
            visitor,
            selected=channel.slug,
            new_key=made.key,
            notice=f"Key …{old.hint} replaced: it no longer works. Copy the new key now: it is"
            " shown only once.",
        )

    async def revoke_key(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Revoke a key (a publisher live with it is disconnected)."""
        channel = await self._own_channel(request, visitor)
        await self._form(request, visitor)
        try:
            await self._accounts.revoke_stream_key(
                int(request.match_info["id"]), actor=visitor.actor, channel=channel.slug
            )
        except NotFound:
            raise PageError(404, "There is no such stream key.") from None
        raise Redirect(f"/dashboard?channel={channel.slug}&msg=key-revoked")

    # ------------------------------------------------------------------------------------
    # Creator dashboard: videos

    async def upload_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The upload form (tus from JavaScript, one multipart request without)."""
        _ = visitor.user
        self._need_videos()
        return self._render(visitor, "upload.html", **self._upload_context())

    def _upload_context(self) -> dict[str, Any]:
        settings = self._settings
        return {
            "max_bytes": settings.upload_max_bytes,
            "chunk_bytes": min(settings.upload_chunk_max_bytes, 8 * 1024 * 1024),
        }

    async def upload(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form without JavaScript: one multipart request, streamed to the staging folder.

        The CSRF token and the text fields must come before the file (browsers send fields in
        the form's order), so nothing is stored for a forged request."""
        user = visitor.user
        _, uploads = self._need_videos()
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
                        if not check_csrf(self._secret, visitor.session_id, fields[FORM_FIELD]):
                            raise PageError(403, "This form has expired: reload the page.")
                        checked = True
                    continue
                if not checked:
                    raise PageError(403, "This form has no valid CSRF token before the file.")
                title = text_field(fields, "title", label="Title", max_length=200)
                description = text_field(
                    fields, "description", label="Description", max_length=5000
                )
                visibility = Visibility(
                    choice_field(fields, "visibility", label="Visibility", choices=VISIBILITIES)
                )
                filename = (part.filename or "")[:255].replace("\x00", "")
                if not filename:
                    raise FormError("Choose a file to upload.")
                video = await uploads.upload(
                    Uploader(user.user_id, admin=visitor.admin),
                    _part_chunks(part),
                    filename=filename,
                    title=title,
                    description=description,
                    visibility=visibility,
                )
        except (FormError, UploadError) as exc:
            status = exc.status if isinstance(exc, UploadError) else 422
            return self._render(
                visitor, "upload.html", status=status, error=str(exc), **self._upload_context()
            )
        if video is None:
            if not checked:
                raise PageError(403, "This form has no valid CSRF token.")
            return self._render(
                visitor,
                "upload.html",
                status=422,
                error="Choose a file to upload.",
                **self._upload_context(),
            )
        log.info("web upload video=%s user=%s", video.public_id, user.username)
        raise Redirect("/dashboard/videos?msg=uploaded")

    async def my_videos(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The creator's videos in every state, with transcoding progress."""
        user = visitor.user
        videos, _ = self._need_videos()
        rows, total = await videos.list(
            Viewer(user.user_id, admin=visitor.admin), mine=True, limit=LIST_LIMIT
        )
        return self._render(
            visitor,
            "videos.html",
            videos=[video_card(v, job=v.job) for v in rows],
            total=total,
            notice=NOTICES.get(request.query.get("msg", ""), ""),
        )

    def _video_id(self, request: web.Request) -> str:
        public_id = request.match_info["id"]
        if not _VIDEO_ID.match(public_id):
            raise PageError(404, "There is no such video.")
        return public_id

    async def edit_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change a video's title, description or visibility."""
        videos, _ = self._need_videos()
        public_id = self._video_id(request)
        _ = visitor.user
        form = await self._form(request, visitor)
        try:
            title = text_field(form, "title", label="Title", max_length=200)
            description = text_field(form, "description", label="Description", max_length=5000)
            visibility = Visibility(
                choice_field(form, "visibility", label="Visibility", choices=VISIBILITIES)
            )
            await videos.update(
                public_id,
                visitor.viewer,
                title=title,
                description=description,
                visibility=visibility,
            )
        except FormError as exc:
            raise PageError(422, str(exc)) from None
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        raise Redirect("/dashboard/videos?msg=video-saved")

    async def delete_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Delete a video and every file of it."""
        videos, _ = self._need_videos()
        public_id = self._video_id(request)
        _ = visitor.user
        await self._form(request, visitor)
        try:
            await videos.delete(public_id, visitor.viewer)
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        raise Redirect("/dashboard/videos?msg=video-deleted")

    async def retry_video(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Queue a failed video's transcoding again."""
        videos, _ = self._need_videos()
        public_id = self._video_id(request)
        _ = visitor.user
        await self._form(request, visitor)
        await self._retry(videos, public_id, visitor.viewer)
        raise Redirect("/dashboard/videos?msg=video-retried")

    @staticmethod
    async def _retry(videos: Videos, public_id: str, viewer: Viewer) -> None:
        try:
            await videos.retry(public_id, viewer)
        except VideoNotFound:
            raise PageError(404, "There is no such video.") from None
        except VideoNotRetryable as exc:
            raise PageError(409, str(exc)) from None

    # ------------------------------------------------------------------------------------
    # Administration

    def _need_admin(self, visitor: Visitor) -> Principal:
        user = visitor.user
        if not visitor.admin:
            raise PageError(403, "This page is for administrators.")
        return user

    async def admin(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Users, live streams, transcoding jobs and the settings (secrets masked)."""
        self._need_admin(visitor)
        return await self._admin(visitor, notice=NOTICES.get(request.query.get("msg", ""), ""))

    async def _admin(
        self, visitor: Visitor, *, notice: str = "", error: str = "", status: int = 200
    ) -> web.Response:
        users, user_total = await self._accounts.users(limit=LIST_LIMIT)
        now = self._clock()
        streams = [
            describe_stream(s, now)
            for s in sorted(self._hub, key=lambda s: s.name)
            if s.state is not StreamState.ENDED
        ]
        jobs = []
        if self._videos is not None:
            admin = Viewer(visitor.user.user_id, admin=True)
            for state in (VideoState.FAILED, VideoState.PROCESSING):
                rows, _ = await self._videos.list(admin, state=state, limit=LIST_LIMIT)
                jobs += [video_card(v, job=v.job) for v in rows]
        settings = sorted(self._settings.masked().items())
        return self._render(
            visitor,
            "admin.html",
            status=status,
            users=users,
            user_total=user_total,
            roles=[r.value for r in Role],
            streams=streams,
            jobs=jobs,
            settings=[(name, setting_text(value)) for name, value in settings],
            notice=notice,
            error=error,
        )

    async def admin_user(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change an account's role, or disable or enable it."""
        admin = self._need_admin(visitor)
        form = await self._form(request, visitor)
        try:
            role = Role(choice_field(form, "role", label="Role", choices={r.value for r in Role}))
            await self._accounts.update_user(
                int(request.match_info["id"]),
                Actor(admin.user_id, admin=True),
                role=role,
                disabled=form.get("disabled") == "1",
            )
        except NotFound:
            raise PageError(404, "There is no such account.") from None
        except (FormError, AccountError) as exc:
            return await self._admin(visitor, error=str(exc), status=422)
        raise Redirect("/admin?msg=user-saved")

    async def admin_kick(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """End a live stream and disconnect its publisher."""
        admin = self._need_admin(visitor)
        await self._form(request, visitor)
        stream = self._hub.get(request.match_info["name"])
        if stream is None or stream.state is StreamState.ENDED:
            raise PageError(404, "That stream is not live.")
        stream.end(KICK_REASON)
        kicked = self._publishers.kick_stream(stream.name, KICK_REASON) if self._publishers else 0
        log.info(
            "web stream %s kicked by %s (%d publisher(s))", stream.name, admin.username, kicked
        )
        raise Redirect("/admin?msg=stream-kicked")

    async def admin_retry(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Queue a failed job again."""
        admin = self._need_admin(visitor)
        videos, _ = self._need_videos()
        public_id = self._video_id(request)
        await self._form(request, visitor)
        await self._retry(videos, public_id, Viewer(admin.user_id, admin=True))
        raise Redirect("/admin?msg=job-retried")


_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _str(form: Mapping[str, object], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


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
