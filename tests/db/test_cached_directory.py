"""The edge's policy cache in front of the real database directory (SQLite, PostgreSQL,
MariaDB): one query per channel per period for any number of lookups, ready videos only,
credentials never, changes seen once the period is over."""

from __future__ import annotations

import asyncio
from typing import Any

from ripplecast.accounts.cached_directory import CachedDirectory
from ripplecast.accounts.credentials import PasswordPolicy, Passwords
from ripplecast.accounts.directory import DatabaseDirectory
from ripplecast.accounts.policy import ChannelInfo, VideoInfo
from ripplecast.accounts.service import Accounts, Actor
from ripplecast.db import Database
from ripplecast.db.models import Visibility


class Counting(DatabaseDirectory):
    """The real directory, counting the queries it answers."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.calls: dict[str, int] = {}

    async def channel(self, slug: str) -> ChannelInfo | None:
        self.calls["channel"] = self.calls.get("channel", 0) + 1
        return await super().channel(slug)

    async def video(self, public_id: str) -> VideoInfo | None:
        self.calls["video"] = self.calls.get("video", 0) + 1
        return await super().video(public_id)

    async def stream_key(self, key_hash: str) -> Any:
        self.calls["stream_key"] = self.calls.get("stream_key", 0) + 1
        return await super().stream_key(key_hash)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_lookups_are_shared_and_expire(db: Database) -> None:
    accounts = Accounts(
        db, Passwords(PasswordPolicy(time_cost=1, memory_cost_kib=8192)), secret=b"s" * 32
    )
    user = await accounts.create_user("uma", "uma's password")
    await accounts.create_channel("uma", "umas")
    inner = Counting(db)
    clock = Clock()
    cached = CachedDirectory(inner, ttl_seconds=2.0, max_entries=100, clock=clock)

    found = await asyncio.gather(*(cached.channel("umas") for _ in range(200)))
    assert {info.visibility for info in found if info is not None} == {Visibility.PUBLIC}
    assert inner.calls["channel"] == 1  # 200 concurrent lookups, one query
    await cached.channel("umas")
    assert inner.calls["channel"] == 1 and cached.hits == 200
    # A change is seen once the period is over.
    await accounts.update_channel("umas", Actor(user.id), visibility=Visibility.PRIVATE)
    assert (await cached.channel("umas")).visibility is Visibility.PUBLIC  # type: ignore[union-attr]
    clock.now += 2.5
    assert (await cached.channel("umas")).visibility is Visibility.PRIVATE  # type: ignore[union-attr]
    assert inner.calls["channel"] == 2
    # An absent channel is remembered too; credentials never are.
    assert await cached.channel("nobody") is None
    assert await cached.channel("nobody") is None
    assert inner.calls["channel"] == 3
    for _ in range(3):
        assert await cached.stream_key("no such hash") is None
    assert inner.calls["stream_key"] == 3
    # A video that is not there (or not ready) is asked for every time.
    for _ in range(3):
        assert await cached.video("AAAAAAAAAAAAAAAA") is None
    assert inner.calls["video"] == 3


async def test_the_oldest_entries_go_first(db: Database) -> None:
    inner = Counting(db)
    cached = CachedDirectory(inner, ttl_seconds=60, max_entries=2, clock=Clock())
    for name in ("a1", "b2", "c3", "a1"):
        await cached.channel(name)
    assert inner.calls["channel"] == 4  # a1 was evicted by c3


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_remembered(
    db: Database,
) -> None:
    class Failing(Counting):
        async def channel(self, slug: str) -> ChannelInfo | None:
            await asyncio.sleep(0.01)
            self.calls["channel"] = self.calls.get("channel", 0) + 1
            raise ConnectionError("database went away")

    inner = Failing(db)
    cached = CachedDirectory(inner, ttl_seconds=60, max_entries=10, clock=Clock())
    results = await asyncio.gather(
        *(cached.channel("umas") for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert inner.calls["channel"] == 1
    await asyncio.gather(cached.channel("umas"), return_exceptions=True)
    assert inner.calls["channel"] == 2
