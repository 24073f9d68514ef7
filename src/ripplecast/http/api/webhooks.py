"""Webhook registration: list, create (the signing secret is shown once), change, delete.

A user manages only their own webhooks; another user's ids answer 404. URLs are checked as the
dispatcher will call them (http(s) only; private and loopback addresses refused unless the
node allows them), and events must be ones the node emits.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select

from ripplecast.accounts.policy import Principal, Scope
from ripplecast.db.engine import Database
from ripplecast.db.models import Webhook
from ripplecast.http.api.framework import ApiContext, ApiRouter
from ripplecast.http.api.problems import ApiError
from ripplecast.webhooks import EVENTS, check_url

__all__ = ["webhooks_router"]


class WebhookIn(BaseModel):
    """A webhook to register."""

    url: str = Field(min_length=8, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=16)


class WebhookPatch(BaseModel):
    """What may change."""

    url: str | None = Field(default=None, min_length=8, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=16)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    """A webhook as its owner sees it (never its secret)."""

    id: int
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime
    last_delivery_at: datetime | None
    last_status: int | None
    last_error: str | None


class NewWebhookOut(WebhookOut):
    """A webhook just registered: `secret` verifies its signatures and is shown this once."""

    secret: str


class WebhookList(BaseModel):
    """The caller's webhooks."""

    items: list[WebhookOut]


class WebhookId(BaseModel):
    """Path parameter: a webhook id."""

    id: int = Field(ge=1, le=2**62)


def _fields(hook: Webhook) -> dict[str, object]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "enabled": hook.enabled,
        "created_at": hook.created_at,
        "last_delivery_at": hook.last_delivery_at,
        "last_status": hook.last_status,
        "last_error": hook.last_error,
    }


def webhooks_router(db: Database, *, allow_private: bool) -> ApiRouter:
    """The /webhooks operations."""
    router = ApiRouter(tags=("webhooks",))

    def check(url: str | None, events: list[str] | None) -> None:
        if url is not None and (problem := check_url(url, allow_private=allow_private)):
            raise ApiError(422, problem)
        if events is not None and (unknown := sorted(set(events) - EVENTS)):
            raise ApiError(422, f"unknown events {unknown}; known: {sorted(EVENTS)}")

    def me(ctx: ApiContext) -> Principal:
        if ctx.principal is None:
            raise ApiError(401, "authentication required")
        return ctx.principal

    @router.get("/webhooks", summary="Your webhooks", response=WebhookList, auth=Scope.READ)
    async def list_webhooks(ctx: ApiContext) -> WebhookList:
        owner = me(ctx).user_id
        async with db.session() as session:
            rows = await session.execute(
                select(Webhook).where(Webhook.owner_id == owner).order_by(Webhook.id)
            )
            return WebhookList(
                items=[WebhookOut.model_validate(_fields(h)) for h in rows.scalars()]
            )

    @router.post(
        "/webhooks",
        summary="Register a webhook (its signing secret is shown once)",
        body=WebhookIn,
        response=NewWebhookOut,
        status=201,
        auth=Scope.PUBLISH,
    )
    async def create_webhook(ctx: ApiContext) -> NewWebhookOut:
        body = ctx.body_as(WebhookIn)
        check(body.url, body.events)
        secret = "whsec_" + secrets.token_urlsafe(24)
        hook = Webhook(
            owner_id=me(ctx).user_id, url=body.url, events=tuple(sorted(set(body.events))),
            secret=secret,
        )  # fmt: skip
        async with db.transaction() as session:
            session.add(hook)
            await session.flush()
        return NewWebhookOut.model_validate({**_fields(hook), "secret": secret})

    @router.patch(
        "/webhooks/{id}",
        summary="Change a webhook's URL, events, or turn it on or off",
        params=WebhookId,
        body=WebhookPatch,
        response=WebhookOut,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def update_webhook(ctx: ApiContext) -> WebhookOut:
        body = ctx.body_as(WebhookPatch)
        check(body.url, body.events)
        hook_id, owner = ctx.params_as(WebhookId).id, me(ctx).user_id
        async with db.transaction() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is None or hook.owner_id != owner:
                raise ApiError(404, f"no webhook {hook_id}")
            if body.url is not None:
                hook.url = body.url
            if body.events is not None:
                hook.events = tuple(sorted(set(body.events)))
            if body.enabled is not None:
                hook.enabled = body.enabled
            await session.flush()
            return WebhookOut.model_validate(_fields(hook))

    @router.delete(
        "/webhooks/{id}",
        summary="Delete a webhook",
        params=WebhookId,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def delete_webhook(ctx: ApiContext) -> None:
        hook_id, owner = ctx.params_as(WebhookId).id, me(ctx).user_id
        async with db.transaction() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is None or hook.owner_id != owner:
                raise ApiError(404, f"no webhook {hook_id}")
            await session.delete(hook)

    return router
