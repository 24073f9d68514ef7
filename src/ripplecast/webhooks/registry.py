"""Registering webhooks: the rules for who may see and change which webhook, and what is valid.

A user manages only their own webhooks; another user's ids are simply not found. URLs are
checked as the dispatcher will call them and events must be ones the node emits. The signing
secret is made here and returned once (it is stored as given: deliveries are signed with it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import select

from ripplecast.db.engine import Database
from ripplecast.db.models import Webhook
from ripplecast.webhooks.dispatcher import EVENTS
from ripplecast.webhooks.net import WebhookError, check_url

SECRET_PREFIX = "whsec_"


class InvalidWebhook(WebhookError):
    """The URL or the events are not acceptable; the message says why."""


class WebhookNotFound(WebhookError):
    """No such webhook among the caller's."""


class WebhookRegistry:
    """Users' webhooks in the database (see module docstring)."""

    def __init__(self, db: Database, *, allow_private: bool) -> None:
        self._db = db
        self._allow_private = allow_private

    def _check(self, url: str | None, events: Iterable[str] | None) -> None:
        if url is not None and (problem := check_url(url, allow_private=self._allow_private)):
            raise InvalidWebhook(problem)
        if events is not None and (unknown := sorted(set(events) - EVENTS)):
            raise InvalidWebhook(f"unknown events {unknown}; known: {sorted(EVENTS)}")

    async def list(self, owner_id: int) -> list[Webhook]:
        """The owner's webhooks, oldest first."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(Webhook).where(Webhook.owner_id == owner_id).order_by(Webhook.id)
            )
            return list(rows.scalars())

    async def create(self, owner_id: int, url: str, events: Iterable[str]) -> tuple[Webhook, str]:
        """Register a webhook; returns it and its signing secret (shown to the user once)."""
        wanted = tuple(sorted(set(events)))
        self._check(url, wanted)
        secret = SECRET_PREFIX + secrets.token_urlsafe(24)
        hook = Webhook(owner_id=owner_id, url=url, events=wanted, secret=secret)
        async with self._db.transaction() as session:
            session.add(hook)
            await session.flush()
        return hook, secret

    async def update(
        self,
        owner_id: int,
        hook_id: int,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        enabled: bool | None = None,
    ) -> Webhook:
        """Change one of the owner's webhooks."""
        wanted = tuple(sorted(set(events))) if events is not None else None
        self._check(url, wanted)
        async with self._db.transaction() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is None or hook.owner_id != owner_id:
                raise WebhookNotFound(f"no webhook {hook_id}")
            if url is not None:
                hook.url = url
            if wanted is not None:
                hook.events = wanted
            if enabled is not None:
                hook.enabled = enabled
            await session.flush()
            return hook

    async def delete(self, owner_id: int, hook_id: int) -> None:
        """Delete one of the owner's webhooks."""
        async with self._db.transaction() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is None or hook.owner_id != owner_id:
                raise WebhookNotFound(f"no webhook {hook_id}")
            await session.delete(hook)
