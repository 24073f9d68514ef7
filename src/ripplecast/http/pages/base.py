"""What every page shares: who the visitor is, the CSRF check of forms, rendering, and turning
what a handler raises (`Redirect`, `LoginRequired`, `PageError`) into an answer.

`PageContext` is handed to each route group (composition, not inheritance): the groups hold no
state of their own beyond the few collaborators only they use.

Invariants:
- the visitor comes from the session cookie only, checked by the one access policy;
- a form's CSRF token is bound to the session or, before login, to the `FORM_COOKIE` nonce;
  `PageContext.form` refuses a missing or wrong token with a 403 before anything is read;
- every answer `PageContext.page` makes carries the Content-Security-Policy and the other
  security headers, whatever the handler returned or raised.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from ripplecast.accounts.csrf import FORM_FIELD, check_csrf, csrf_token
from ripplecast.accounts.policy import AccessRequest, Action, Credentials, Scope, Via
from ripplecast.accounts.service import Accounts, NotFound
from ripplecast.config import Settings
from ripplecast.db.models import Channel
from ripplecast.http.api.models import StreamInfo
from ripplecast.http.api.streams import LiveView, LiveViewUnavailable
from ripplecast.http.live import SESSION_COOKIE, Authorize, request_credentials
from ripplecast.vod.service import VideoNotFound, VideoNotRetryable, Videos, Viewer
from ripplecast.vod.uploads import Uploads
from ripplecast.web import CONTENT_SECURITY_POLICY, make_environment
from ripplecast.web.views import LoginRequired, PageError, Redirect, Visitor

__all__ = [
    "FORM_COOKIE",
    "LIST_LIMIT",
    "Handler",
    "PageContext",
    "RouteGroup",
    "form_text",
    "log",
    "retry_transcoding",
    "see_other",
    "set_private_cookie",
    "video_id",
]

log = logging.getLogger("ripplecast.web")

FORM_COOKIE = "rc_form"
"""Before login, CSRF tokens are bound to this random cookie (login and register forms)."""
FORM_NONCE_MAX_LENGTH = 64
"""A longer `FORM_COOKIE` value is not one this site made: it is ignored."""
LIST_LIMIT = 100
"""Most rows any page lists."""
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

Handler = Callable[[web.Request, Visitor], Awaitable[web.StreamResponse]]
"""A page handler: the request and who asks; it answers, or raises one of the page answers."""


class RouteGroup(Protocol):
    """A set of related routes sharing one `PageContext`."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the group's routes to `router`."""


class PageContext:
    """The collaborators and plumbing every route group uses."""

    def __init__(
        self,
        settings: Settings,
        live: LiveView,
        authorize: Authorize,
        *,
        accounts: Accounts,
        secret: bytes,
        videos: Videos | None,
        uploads: Uploads | None,
    ) -> None:
        self.settings = settings
        self.live = live
        """Which streams are live: this node's hub, or the cluster's live directory."""
        self.accounts = accounts
        self.videos = videos
        """The video catalogue, or None when videos on demand are disabled."""
        self._authorize = authorize
        self._secret = secret
        self._uploads = uploads
        self._env = make_environment()

    # ------------------------------------------------------------------------------------
    # Answers

    def page(
        self, handler: Handler, *, form_cookie: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`handler` as an aiohttp handler: the visitor is found first, what it raises becomes
        an answer, and every answer gets the security headers. `form_cookie` issues the
        pre-login CSRF cookie to a visitor who has neither it nor a session."""

        async def handle(request: web.Request) -> web.StreamResponse:
            visitor = await self._visitor(request, form_cookie=form_cookie)
            try:
                response = await handler(request, visitor)
            except Redirect as exc:
                response = see_other(exc.location)
            except LoginRequired:
                back = request.path_qs if request.method == "GET" else "/dashboard"
                response = see_other("/login?" + urlencode({"next": back}))
            except PageError as exc:
                response = self.render(
                    visitor, "error.html", status=exc.status, message=exc.message
                )
                response.headers.update(exc.headers)
            if visitor.new_form_cookie:
                set_private_cookie(response, request, FORM_COOKIE, visitor.new_form_cookie)
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers["X-Frame-Options"] = "DENY"
            response.headers.setdefault(
                "Cache-Control", "no-store" if visitor.principal is not None else "no-cache"
            )
            return response

        return handle

    def render(
        self, visitor: Visitor, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        """The HTML page `template` for `visitor`, with `context` and what every page shows."""
        context.setdefault("notice", "")
        context.setdefault("error", "")
        html = self._env.get_template(template).render(
            visitor=visitor,
            user=visitor.principal,
            is_admin=visitor.admin,
            csrf_field=FORM_FIELD,
            registration_open=self.settings.registration_open,
            vod_enabled=self.videos is not None,
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    # ------------------------------------------------------------------------------------
    # Visitors and CSRF

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
        nonce = _form_nonce(request)
        new = ""
        if not session_id and not nonce and form_cookie:
            nonce = new = secrets.token_urlsafe(24)
        key = _csrf_key(session_id, nonce)
        token = csrf_token(self._secret, key) if key else ""
        return Visitor(principal, session_id, token, new)

    def csrf_ok(self, request: web.Request, visitor: Visitor, token: object) -> bool:
        """True if `token` is the CSRF token of `visitor` (session or pre-login cookie)."""
        key = _csrf_key(visitor.session_id, _form_nonce(request))
        return isinstance(token, str) and check_csrf(self._secret, key, token)

    async def form(self, request: web.Request, visitor: Visitor) -> Mapping[str, object]:
        """The submitted form, once its CSRF token is checked (else a 403 page)."""
        form = await request.post()
        if not self.csrf_ok(request, visitor, form.get(FORM_FIELD, "")):
            raise PageError(
                403,
                "This form has expired or did not come from this site: reload the page and"
                " submit it again.",
            )
        return form

    # ------------------------------------------------------------------------------------
    # Lookups several groups make

    async def may_play(self, request: web.Request, resource: str) -> bool:
        """True if the access policy lets this request play `resource` (as the media routes
        would decide)."""
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

    async def channel_or_none(self, slug: str) -> Channel | None:
        """The channel named `slug`, or None when there is none."""
        try:
            return await self.accounts.channel(slug)
        except NotFound:
            return None

    async def is_live(self, slug: str) -> bool:
        """True if the stream `slug` is live now (not waiting for its publisher)."""
        return slug in await self.live_names([slug])

    async def live_names(self, slugs: Sequence[str]) -> set[str]:
        """Those of `slugs` whose streams are live now (none when that cannot be read)."""
        try:
            found = await self.live.describe_many(slugs)
        except LiveViewUnavailable as exc:
            log.warning("web: live streams unknown, shown offline: %s", exc)
            return set()
        return {info.name for info in found if info.state == "live"}

    async def active_streams(self) -> list[StreamInfo]:
        """The streams that have not ended, by name (none when that cannot be read)."""
        try:
            return await self.live.describe_many(await self.live.names())
        except LiveViewUnavailable as exc:
            log.warning("web: live streams unknown, none listed: %s", exc)
            return []

    def need_vod(self) -> tuple[Videos, Uploads]:
        """The video catalogue and uploads; a 404 page when videos on demand are disabled."""
        if self.videos is None or self._uploads is None:
            raise PageError(404, "Videos on demand are disabled on this server.")
        return self.videos, self._uploads


def _form_nonce(request: web.Request) -> str:
    """The pre-login CSRF cookie's value ('' when absent or not one this site could make)."""
    nonce = request.cookies.get(FORM_COOKIE, "")
    return nonce if len(nonce) <= FORM_NONCE_MAX_LENGTH else ""


def _csrf_key(session_id: str, form_nonce: str) -> str:
    """What a visitor's CSRF token is bound to: the session when signed in, else the pre-login
    nonce ('' when there is neither: no token can match)."""
    return session_id or (f"form:{form_nonce}" if form_nonce else "")


def see_other(location: str) -> web.Response:
    """A 303 See Other answer to `location`."""
    return web.Response(status=303, headers={"Location": location})


def set_private_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    """Set a cookie scripts cannot read, sent on same-site navigation only (and only over
    HTTPS when the request came that way)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )


def form_text(form: Mapping[str, object], name: str) -> str:
    """The raw text of field `name` ('' when absent or a file), unchecked: for echoing back."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def video_id(request: web.Request) -> str:
    """The `{id}` of the path when it can be a video's public id; else a 404 page."""
    public_id = request.match_info["id"]
    if not _VIDEO_ID.match(public_id):
        raise PageError(404, "There is no such video.")
    return public_id


async def retry_transcoding(videos: Videos, public_id: str, viewer: Viewer) -> None:
    """Queue a failed video's transcoding again; a 404 or 409 page when that cannot be."""
    try:
        await videos.retry(public_id, viewer)
    except VideoNotFound:
        raise PageError(404, "There is no such video.") from None
    except VideoNotRetryable as exc:
        raise PageError(409, str(exc)) from None
