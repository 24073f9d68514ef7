"""Channels and stream keys: ownership (no IDOR), listing, cascades, hostile text."""

from __future__ import annotations

import pytest

from ripplecast.accounts.credentials import PasswordPolicy, Passwords
from ripplecast.accounts.service import AccountError, Accounts, Actor, Conflict, NotFound
from ripplecast.db.engine import Database
from ripplecast.db.models import Visibility

FAST = PasswordPolicy(time_cost=1, memory_cost_kib=8 * 1024)
HOSTILE = [
    "'; DROP TABLE channels; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "%_\\\\ 😀 漢字",
]


@pytest.fixture
async def accounts(db: Database) -> Accounts:
    accounts = Accounts(db, Passwords(FAST), secret=b"s" * 32)
    await accounts.create_user("root", "root password")  # first user: admin
    await accounts.create_user("alice", "alice password")
    await accounts.create_user("bob", "bob's password")
    return accounts


async def actor(accounts: Accounts, name: str) -> Actor:
    user = await accounts.user(name)
    return Actor(user.id, admin=user.role == "admin")


async def test_only_owner_or_admin_manage_a_channel(accounts: Accounts) -> None:
    await accounts.create_channel("alice", "show")
    key = await accounts.create_stream_key("show")
    alice, bob, root = [await actor(accounts, n) for n in ("alice", "bob", "root")]
    for attempt in (
        accounts.update_channel("show", bob, title="pwned"),
        accounts.delete_channel("show", bob),
        accounts.stream_keys("show", bob),
        accounts.revoke_stream_key(key.id, actor=bob),
        accounts.channel("show", actor=bob),
    ):
        with pytest.raises(NotFound):  # not "forbidden": it does not even exist for bob
            await attempt
    channel = await accounts.channel("show")
    assert channel.title == "show"
    (row,) = await accounts.stream_keys("show", alice)
    assert row.revoked_at is None and row.hint == key.key[-4:]
    updated = await accounts.update_channel("show", root, visibility=Visibility.PRIVATE)
    assert updated.visibility is Visibility.PRIVATE
    await accounts.revoke_stream_key(key.id, actor=alice)
    (row,) = await accounts.stream_keys("show", alice)
    assert row.revoked_at is not None


async def test_listing_and_deleting(accounts: Accounts) -> None:
    alice = await actor(accounts, "alice")
    await accounts.create_channel("alice", "a1")
    await accounts.create_channel("alice", "a2", visibility=Visibility.UNLISTED)
    await accounts.create_channel("bob", "b1", visibility=Visibility.PRIVATE)
    mine, total = await accounts.channels(owner_id=alice.user_id)
    assert [c.slug for c in mine] == ["a1", "a2"] and total == 2
    listed, total = await accounts.channels(listed_only=True)
    assert [c.slug for c in listed] == ["a1"] and total == 1
    page, total = await accounts.channels(limit=1, offset=1)
    assert [c.slug for c in page] == ["a2"] and total == 3
    await accounts.create_stream_key("a1")
    await accounts.delete_channel("a1", alice)
    with pytest.raises(NotFound):
        await accounts.channel("a1")
    with pytest.raises(Conflict):
        await accounts.create_channel("bob", "b1")
    with pytest.raises(AccountError, match="slash"):
        await accounts.create_channel("bob", "../etc")


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_text_is_stored_verbatim(accounts: Accounts, text: str) -> None:
    await accounts.create_channel("alice", "safe", title=text)
    alice = await actor(accounts, "alice")
    await accounts.update_channel("safe", alice, description=text)
    channel = await accounts.channel("safe")
    assert (channel.title, channel.description) == (text, text)
    _, total = await accounts.channels()
    assert total == 1  # nothing was dropped or deleted
    with pytest.raises(AccountError):
        await accounts.create_user(text, "a long password")
