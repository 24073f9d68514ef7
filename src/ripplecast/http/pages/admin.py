"""The administration page, `/admin`: accounts, live streams, transcoding jobs and the settings,
with the forms under `/admin/...`.

Invariants: every handler here refuses anyone but an administrator (403) before reading the
form; settings are shown masked, never with their secrets.
"""

from __future__ import annotations

from aiohttp import web

from ripplecast.accounts.policy import Principal
from ripplecast.accounts.service import AccountError, NotFound
from ripplecast.db.models import Role, VideoState
from ripplecast.http.api.streams import KICK_REASON, LiveViewUnavailable
from ripplecast.http.pages.base import (
    LIST_LIMIT,
    PageContext,
    log,
    retry_transcoding,
    video_id,
)
from ripplecast.web.views import (
    FormError,
    PageError,
    Redirect,
    VideoCard,
    Visitor,
    choice_field,
    notice_text,
    setting_text,
    video_card,
)

__all__ = ["AdminPages"]

ROLES = {r.value for r in Role}
JOB_LIST_STATES = (VideoState.FAILED, VideoState.PROCESSING)
"""The videos whose jobs the admin page lists: those that may need a hand."""


class AdminPages:
    """What administrators see and do."""

    def __init__(self, context: PageContext) -> None:
        self._ctx = context

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        page = self._ctx.page
        router.add_get("/admin", page(self.admin))
        router.add_post(r"/admin/users/{id:\d{1,18}}", page(self.admin_user))
        router.add_post("/admin/streams/{name}/kick", page(self.admin_kick))
        router.add_post("/admin/jobs/{id}/retry", page(self.admin_retry))

    async def admin(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Users, live streams, transcoding jobs and the settings (secrets masked)."""
        _need_admin(visitor)
        return await self._admin(visitor, notice=notice_text(request.query.get("msg")))

    async def _admin(
        self, visitor: Visitor, *, notice: str = "", error: str = "", status: int = 200
    ) -> web.Response:
        """The admin page, for a visitor known to be an administrator."""
        ctx = self._ctx
        users, user_total = await ctx.accounts.users(limit=LIST_LIMIT)
        streams = await ctx.active_streams()
        jobs: list[VideoCard] = []
        if ctx.videos is not None:
            for state in JOB_LIST_STATES:
                rows, _ = await ctx.videos.list(visitor.viewer, state=state, limit=LIST_LIMIT)
                jobs += [video_card(v, job=v.job) for v in rows]
        settings = sorted(ctx.settings.masked().items())
        return ctx.render(
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
        _need_admin(visitor)
        form = await self._ctx.form(request, visitor)
        try:
            role = Role(choice_field(form, "role", label="Role", choices=ROLES))
            await self._ctx.accounts.update_user(
                int(request.match_info["id"]),
                visitor.actor,
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
        admin = _need_admin(visitor)
        await self._ctx.form(request, visitor)
        name = request.match_info["name"]
        try:
            kicked = await self._ctx.live.kick(name, KICK_REASON)
        except LiveViewUnavailable as exc:
            raise PageError(503, "The live streams cannot be reached right now.") from exc
        if not kicked:
            raise PageError(404, "That stream is not live.")
        log.info("web stream %s kicked by %s", name, admin.username)
        raise Redirect("/admin?msg=stream-kicked")

    async def admin_retry(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Queue a failed job again."""
        _need_admin(visitor)
        videos, _ = self._ctx.need_vod()
        public_id = video_id(request)
        await self._ctx.form(request, visitor)
        await retry_transcoding(videos, public_id, visitor.viewer)
        raise Redirect("/admin?msg=job-retried")


def _need_admin(visitor: Visitor) -> Principal:
    """The administrator asking; `LoginRequired` for anonymous visitors, a 403 page for anyone
    else. Once it returns, `visitor.viewer` and `visitor.actor` act as an administrator."""
    user = visitor.user
    if not visitor.admin:
        raise PageError(403, "This page is for administrators.")
    return user
