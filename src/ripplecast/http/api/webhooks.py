"""Webhook registration over HTTP: list, create (the signing secret is shown once), change,
delete. The rules (ownership, valid URLs and events) are in `webhooks.registry`; another
user's ids answer 404."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ripplecast.accounts.policy import Principal, Scope
from ripplecast.db.models import Webhook
from ripplecast.http.api.framework import ApiContext, ApiRouter
from ripplecast.http.api.models import Text
from ripplecast.http.api.problems import ApiError
from ripplecast.webhooks.registry import InvalidWebhook, WebhookNotFound, WebhookRegistry

__all__ = ["webhooks_router"]


class WebhookIn(BaseModel):
    """A webhook to register."""

    url: Text = Field(min_length=8, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=16)


class WebhookPatch(BaseModel):
    """What may change."""

    url: Text | None = Field(default=None, min_length=8, max_length=2048)
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


def webhooks_router(registry: WebhookRegistry) -> ApiRouter:
    """The /webhooks operations (the rules are in `WebhookRegistry`)."""
    router = ApiRouter(tags=("webhooks",))

    def me(ctx: ApiContext) -> Principal:
        if ctx.principal is None:
            raise ApiError(401, "authentication required")
        return ctx.principal

    @router.get("/webhooks", summary="Your webhooks", response=WebhookList, auth=Scope.READ)
    async def list_webhooks(ctx: ApiContext) -> WebhookList:
        hooks = await registry.list(me(ctx).user_id)
        return WebhookList(items=[WebhookOut.model_validate(_fields(h)) for h in hooks])

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
        try:
            hook, secret = await registry.create(me(ctx).user_id, body.url, body.events)
        except InvalidWebhook as exc:
            raise ApiError(422, str(exc)) from None
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
        try:
            hook = await registry.update(
                me(ctx).user_id,
                ctx.params_as(WebhookId).id,
                url=body.url,
                events=body.events,
                enabled=body.enabled,
            )
        except InvalidWebhook as exc:
            raise ApiError(422, str(exc)) from None
        except WebhookNotFound as exc:
            raise ApiError(404, str(exc)) from None
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
        try:
            await registry.delete(me(ctx).user_id, ctx.params_as(WebhookId).id)
        except WebhookNotFound as exc:
            raise ApiError(404, str(exc)) from None

    return router
