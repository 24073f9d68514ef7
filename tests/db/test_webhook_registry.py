"""Webhook registration rules on every engine: owners only, valid URLs and events."""

from __future__ import annotations

import pytest

from ripplecast.accounts.credentials import PasswordPolicy, Passwords
from ripplecast.accounts.service import Accounts
from ripplecast.db.engine import Database
from ripplecast.webhooks.registry import InvalidWebhook, WebhookNotFound, WebhookRegistry


async def test_registry_rules(db: Database) -> None:
    accounts = Accounts(
        db, Passwords(PasswordPolicy(time_cost=1, memory_cost_kib=8192)), secret=b"s"
    )
    pia = await accounts.create_user("pia", "pia's password")
    quin = await accounts.create_user("quin", "quin's password")
    registry = WebhookRegistry(db, allow_private=False)
    for url, events in (
        ("ftp://example.com/hook", ["on_publish"]),
        ("http://127.0.0.1/hook", ["on_publish"]),
        ("http://10.0.0.1/hook", ["on_publish"]),
        ("https://example.com/hook", ["on_nothing"]),
    ):
        with pytest.raises(InvalidWebhook):
            await registry.create(pia.id, url, events)
    hook, secret = await registry.create(pia.id, "https://example.com/hook", ["on_stop", "on_play"])
    assert secret.startswith("whsec_") and hook.events == ("on_play", "on_stop")
    for attempt in (
        registry.update(quin.id, hook.id, enabled=False),
        registry.delete(quin.id, hook.id),
    ):
        with pytest.raises(WebhookNotFound):
            await attempt
    assert await registry.list(quin.id) == []
    (mine,) = await registry.list(pia.id)
    assert mine.enabled
    updated = await registry.update(pia.id, hook.id, enabled=False, events=["on_publish"])
    assert (updated.enabled, updated.events) == (False, ("on_publish",))
    await registry.delete(pia.id, hook.id)
    assert await registry.list(pia.id) == []
