"""Channel operations: list, create, read, update, delete; stream keys: list, create, revoke.

Anyone may list public channels; the rest needs credentials, and a channel is only ever shown
to or changed by its owner or an admin: anybody else gets the 404 an unknown channel gets
(the business rules, including that check, are in `accounts.service`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ripplecast.accounts.policy import Principal, Scope
from ripplecast.accounts.service import AccountError, Accounts, Actor, Conflict, NotFound
from ripplecast.db.models import Channel, Visibility
from ripplecast.http.api.framework import ApiContext, ApiRouter, Page, PageQuery
from ripplecast.http.api.models import Text
from ripplecast.http.api.problems import ApiError

__all__ = ["channels_router"]

SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ChannelOut(BaseModel):
    """A channel; `slug` is the stream name in play URLs."""

    slug: str
    title: str
    description: str
    visibility: Visibility
    owner_id: int
    created_at: datetime


class ChannelIn(BaseModel):
    """A channel to create."""

    slug: str = Field(pattern=SLUG)
    title: Text = Field(default="", max_length=200)
    description: Text = Field(default="", max_length=5000)
    visibility: Visibility = Visibility.PUBLIC


class ChannelPatch(BaseModel):
    """Fields to change (absent ones stay)."""

    title: Text | None = Field(default=None, max_length=200)
    description: Text | None = Field(default=None, max_length=5000)
    visibility: Visibility | None = None


class ChannelSlug(BaseModel):
    """Path parameter: a channel."""

    slug: str = Field(pattern=SLUG)


class KeyPath(BaseModel):
    """Path parameters: a channel and one of its keys."""

    slug: str = Field(pattern=SLUG)
    id: int = Field(ge=1, le=2**62)


class ListQuery(PageQuery):
    """Paging, and whether to list only the caller's channels."""

    mine: bool = False


class KeyIn(BaseModel):
    """A stream key to make."""

    label: Text = Field(default="", max_length=100)


class KeyOut(BaseModel):
    """A stream key as listed: never the key, only its last characters."""

    id: int
    label: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class NewKeyOut(BaseModel):
    """A stream key just made: `key` is shown this once."""

    id: int
    key: str
    label: str
    hint: str


class KeyList(BaseModel):
    """A channel's stream keys."""

    items: list[KeyOut]


def _out(channel: Channel) -> ChannelOut:
    return ChannelOut(
        slug=channel.slug,
        title=channel.title,
        description=channel.description,
        visibility=channel.visibility,
        owner_id=channel.owner_id,
        created_at=channel.created_at,
    )


def _actor(principal: Principal | None) -> Actor:
    if principal is None:
        raise ApiError(401, "authentication required")
    return Actor(principal.user_id, admin=principal.role == "admin")


def channels_router(accounts: Accounts) -> ApiRouter:
    """The /channels operations."""
    router = ApiRouter(tags=("channels",))

    @router.get(
        "/channels",
        summary="Public channels, or (mine=true, signed in) your own",
        query=ListQuery,
        response=Page[ChannelOut],
        errors=(401,),
    )
    async def list_channels(ctx: ApiContext) -> Page[ChannelOut]:
        query = ctx.query_as(ListQuery)
        owner = None
        if query.mine:
            principal = await ctx.caller()
            if principal is None:
                raise ApiError(
                    401,
                    "sign in to list your channels",
                    headers={"WWW-Authenticate": 'Bearer realm="ripplecast"'},
                )
            owner = principal.user_id
        rows, total = await accounts.channels(
            owner_id=owner, listed_only=owner is None, limit=query.limit, offset=query.offset
        )
        return Page[ChannelOut](
            items=[_out(c) for c in rows], total=total, limit=query.limit, offset=query.offset
        )

    @router.post(
        "/channels",
        summary="Create a channel",
        body=ChannelIn,
        response=ChannelOut,
        status=201,
        auth=Scope.PUBLISH,
        errors=(409,),
    )
    async def create_channel(ctx: ApiContext) -> ChannelOut:
        body = ctx.body_as(ChannelIn)
        principal = ctx.principal
        assert principal is not None
        try:
            channel = await accounts.create_channel(
                principal.username, body.slug, title=body.title, visibility=body.visibility
            )
            if body.description:
                channel = await accounts.update_channel(
                    body.slug, _actor(principal), description=body.description
                )
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        except AccountError as exc:
            raise ApiError(422, str(exc)) from None
        return _out(channel)

    @router.get(
        "/channels/{slug}",
        summary="One of your channels",
        params=ChannelSlug,
        response=ChannelOut,
        auth=Scope.READ,
        errors=(404,),
    )
    async def get_channel(ctx: ApiContext) -> ChannelOut:
        slug = ctx.params_as(ChannelSlug).slug
        try:
            return _out(await accounts.channel(slug, actor=_actor(ctx.principal)))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None

    @router.patch(
        "/channels/{slug}",
        summary="Change a channel's title, description or visibility",
        params=ChannelSlug,
        body=ChannelPatch,
        response=ChannelOut,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def update_channel(ctx: ApiContext) -> ChannelOut:
        slug = ctx.params_as(ChannelSlug).slug
        body = ctx.body_as(ChannelPatch)
        try:
            channel = await accounts.update_channel(
                slug,
                _actor(ctx.principal),
                title=body.title,
                description=body.description,
                visibility=body.visibility,
            )
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return _out(channel)

    @router.delete(
        "/channels/{slug}",
        summary="Delete a channel and its stream keys",
        params=ChannelSlug,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def delete_channel(ctx: ApiContext) -> None:
        try:
            await accounts.delete_channel(ctx.params_as(ChannelSlug).slug, _actor(ctx.principal))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None

    @router.get(
        "/channels/{slug}/keys",
        summary="A channel's stream keys (never the keys themselves)",
        params=ChannelSlug,
        response=KeyList,
        auth=Scope.READ,
        errors=(404,),
    )
    async def list_keys(ctx: ApiContext) -> KeyList:
        try:
            rows = await accounts.stream_keys(
                ctx.params_as(ChannelSlug).slug, _actor(ctx.principal)
            )
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return KeyList(
            items=[
                KeyOut(
                    id=r.id,
                    label=r.label,
                    hint=r.hint,
                    created_at=r.created_at,
                    last_used_at=r.last_used_at,
                    revoked=r.revoked_at is not None,
                )
                for r in rows
            ]
        )

    @router.post(
        "/channels/{slug}/keys",
        summary="Make a stream key (shown once)",
        params=ChannelSlug,
        body=KeyIn,
        response=NewKeyOut,
        status=201,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def create_key(ctx: ApiContext) -> NewKeyOut:
        slug = ctx.params_as(ChannelSlug).slug
        try:
            await accounts.channel(slug, actor=_actor(ctx.principal))
            label = ctx.body_as(KeyIn).label
            made = await accounts.create_stream_key(slug, label=label)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return NewKeyOut(id=made.id, key=made.key, label=label, hint=made.hint)

    @router.delete(
        "/channels/{slug}/keys/{id}",
        summary="Revoke a stream key (a publisher live with it is disconnected)",
        params=KeyPath,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def revoke_key(ctx: ApiContext) -> None:
        path = ctx.params_as(KeyPath)
        try:
            await accounts.revoke_stream_key(
                path.id, actor=_actor(ctx.principal), channel=path.slug
            )
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None

    return router
