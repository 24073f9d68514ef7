"""The creator's dashboard: `/dashboard` (channels, stream keys, OBS set-up, live stats) and
its forms under `/dashboard/channels/...`.

Invariants: a creator reaches only their own channels (an admin every channel), through the
accounts service's own check; a stream key is shown once, in the answer to the form that made
it, and never stored or shown again (the dashboard lists its last characters only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from aiohttp import web

from ripplecast.accounts.service import AccountError, Conflict, NotFound
from ripplecast.db.models import Channel
from ripplecast.http.api.streams import Publishers
from ripplecast.http.pages.base import LIST_LIMIT, PageContext, form_text, log
from ripplecast.web.views import (
    FormError,
    PageError,
    Redirect,
    Visitor,
    channel_card,
    details_fields,
    key_row,
    notice_text,
    text_field,
)

__all__ = ["DashboardPages", "RtmpPort", "RtmpsPort"]


@runtime_checkable
class RtmpPort(Protocol):
    """Something that knows the RTMP port actually bound (the RTMP server)."""

    @property
    def port(self) -> int: ...


@runtime_checkable
class RtmpsPort(Protocol):
    """Something that knows the RTMPS port actually bound (the RTMP server with TLS)."""

    @property
    def tls_port(self) -> int: ...


class DashboardPages:
    """A creator's channels and their stream keys."""

    def __init__(
        self,
        context: PageContext,
        *,
        publishers: Publishers | None,
        rtmp_port: Callable[[], int] | None,
    ) -> None:
        self._ctx = context
        self._publishers = publishers
        self._rtmp_port = rtmp_port

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        page = self._ctx.page
        router.add_get("/dashboard", page(self.dashboard))
        router.add_post("/dashboard/channels", page(self.create_channel))
        router.add_post("/dashboard/channels/{slug}/edit", page(self.edit_channel))
        router.add_post("/dashboard/channels/{slug}/delete", page(self.delete_channel))
        router.add_post("/dashboard/channels/{slug}/keys", page(self.create_key))
        key = r"/dashboard/channels/{slug}/keys/{id:\d{1,18}}"
        router.add_post(key + "/rotate", page(self.rotate_key))
        router.add_post(key + "/revoke", page(self.revoke_key))

    async def dashboard(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The creator's channels, keys, OBS set-up and live stats."""
        _ = visitor.user
        return await self._dashboard(
            visitor,
            selected=request.query.get("channel", ""),
            notice=notice_text(request.query.get("msg")),
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
        """The dashboard page, with `selected` open (else the first channel)."""
        accounts = self._ctx.accounts
        user = visitor.user
        rows, _ = await accounts.channels(owner_id=user.user_id, limit=LIST_LIMIT)
        live = await self._ctx.live_names([row.slug for row in rows])
        channels = []
        for row in rows:
            keys = await accounts.stream_keys(row.slug, visitor.actor)
            channels.append(
                (
                    channel_card(row, live=row.slug in live),
                    [key_row(k) for k in keys if k.revoked_at is None],
                    sum(1 for k in keys if k.revoked_at is not None),
                )
            )
        chosen = next((c for c, _, _ in channels if c.slug == selected), None)
        if chosen is None and channels:
            chosen = channels[0][0]
        return self._ctx.render(
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

    def _obs_server(self) -> str:
        """The server URL to type into OBS, with the RTMP port actually bound if known; with a
        certificate, the RTMPS one (the stream key then never crosses the network in clear)."""
        settings = self._ctx.settings
        if settings.tls_enabled:
            port = settings.rtmps_port
            if isinstance(self._publishers, RtmpsPort):
                with contextlib.suppress(RuntimeError):  # not listening yet: the setting
                    port = self._publishers.tls_port
            return f"rtmps://{settings.public_host}:{port}/live"
        port = settings.rtmp_port
        try:
            if self._rtmp_port is not None:
                port = self._rtmp_port()
            elif isinstance(self._publishers, RtmpPort):
                port = self._publishers.port  # the RTMP server knows the port it bound
        except RuntimeError:  # not listening yet: the configured port is the best answer
            pass
        return f"rtmp://{settings.public_host}:{port}/live"

    async def create_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Create a channel and its first stream key (shown once, in this answer)."""
        accounts = self._ctx.accounts
        user = visitor.user
        form = await self._ctx.form(request, visitor)
        values = {name: form_text(form, name)[:5000] for name in ("slug", "title", "description")}
        try:
            slug = text_field(form, "slug", label="Channel name", max_length=64, required=True)
            details = details_fields(form)
            await accounts.create_channel(
                user.username, slug, title=details.title, visibility=details.visibility
            )
        except (FormError, AccountError) as exc:
            status = 409 if isinstance(exc, Conflict) else 422
            return await self._dashboard(visitor, error=str(exc), status=status, values=values)
        if details.description:
            await accounts.update_channel(slug, visitor.actor, description=details.description)
        key = await accounts.create_stream_key(slug, label="made with the channel")
        log.info("web channel %s created by %s", slug, user.username)
        return await self._dashboard(
            visitor,
            selected=slug,
            new_key=key.key,
            notice=f"Channel {slug} created. Copy its stream key now: it is shown only once.",
        )

    async def _own_channel(self, request: web.Request, visitor: Visitor) -> Channel:
        """The channel of the path, if the visitor may manage it; else a 404 page."""
        slug = request.match_info["slug"]
        try:
            return await self._ctx.accounts.channel(slug, actor=visitor.actor)
        except NotFound:
            raise PageError(404, "There is no such channel.") from None

    async def edit_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change a channel's title, description or visibility."""
        channel = await self._own_channel(request, visitor)
        form = await self._ctx.form(request, visitor)
        try:
            details = details_fields(form)
        except FormError as exc:
            return await self._dashboard(visitor, selected=channel.slug, error=str(exc), status=422)
        await self._ctx.accounts.update_channel(
            channel.slug,
            visitor.actor,
            title=details.title or channel.slug,
            description=details.description,
            visibility=details.visibility,
        )
        raise Redirect(f"/dashboard?channel={channel.slug}&msg=channel-saved")

    async def delete_channel(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Delete a channel and its stream keys."""
        channel = await self._own_channel(request, visitor)
        await self._ctx.form(request, visitor)
        await self._ctx.accounts.delete_channel(channel.slug, visitor.actor)
        log.info("web channel %s deleted", channel.slug)
        raise Redirect("/dashboard?msg=channel-deleted")

    async def create_key(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Make another stream key for a channel (shown once, in this answer)."""
        channel = await self._own_channel(request, visitor)
        form = await self._ctx.form(request, visitor)
        try:
            label = text_field(form, "label", label="Label", max_length=100)
        except FormError as exc:
            return await self._dashboard(visitor, selected=channel.slug, error=str(exc), status=422)
        key = await self._ctx.accounts.create_stream_key(channel.slug, label=label)
        return await self._dashboard(
            visitor,
            selected=channel.slug,
            new_key=key.key,
            notice="New stream key made. Copy it now: it is shown only once.",
        )

    async def rotate_key(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Replace a key: make a new one (shown once), then revoke the old one."""
        accounts = self._ctx.accounts
        channel = await self._own_channel(request, visitor)
        await self._ctx.form(request, visitor)
        key_id = int(request.match_info["id"])
        keys = await accounts.stream_keys(channel.slug, visitor.actor)
        old = next((k for k in keys if k.id == key_id and k.revoked_at is None), None)
        if old is None:
            raise PageError(404, "There is no such stream key.")
        made = await accounts.create_stream_key(channel.slug, label=old.label)
        await accounts.revoke_stream_key(key_id, actor=visitor.actor, channel=channel.slug)
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
        await self._ctx.form(request, visitor)
        try:
            await self._ctx.accounts.revoke_stream_key(
                int(request.match_info["id"]), actor=visitor.actor, channel=channel.slug
            )
        except NotFound:
            raise PageError(404, "There is no such stream key.") from None
        raise Redirect(f"/dashboard?channel={channel.slug}&msg=key-revoked")
