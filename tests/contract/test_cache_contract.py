"""One contract for every `Cache`: each test runs on `MemoryCache` and on `RedisCache` against
the real Redis at 127.0.0.1:6379 (skipped if it is down, failed under
RIPPLECAST_REQUIRE_SERVICES=1), plus a few tests of what only one implementation has.

Each Redis test uses a fresh random prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ripplecast.cache import (
    Cache,
    CacheError,
    CacheUnavailable,
    MemoryCache,
    RateCount,
    RedisCache,
    fenced_value,
    open_cache,
    parse_fenced_value,
)
from ripplecast.errors import UsageError
from support import reachable_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"

CacheFactory = Callable[..., Awaitable[Cache]]


@pytest.fixture(params=["memory", "redis"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[CacheFactory]:
    """A factory of caches of one kind, each with a fresh prefix unless one is given; all are
    closed, and their Redis keys deleted, at teardown."""
    kind: str = request.param
    admin = await reachable_redis() if kind == "redis" else None
    made: list[Cache] = []

    async def factory(*, prefix: str | None = None, **kwargs: object) -> Cache:
        prefix = prefix or f"rctest:{secrets.token_hex(6)}:"
        cache: Cache
        if kind == "memory":
            cache = MemoryCache(prefix=prefix, **kwargs)  # type: ignore[arg-type]
        else:
            cache = RedisCache(REDIS_URL, prefix=prefix, **kwargs)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    try:
        yield factory
    finally:
        for cache in made:
            await cache.close()
        if admin is not None:
            for cache in made:
                async for key in admin.scan_iter(match=cache.prefix + "*"):
                    await admin.delete(key)
            await admin.aclose()


@pytest.fixture
async def cache(make_cache: CacheFactory) -> Cache:
    return await make_cache()


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> float:
    """Poll until `predicate()` is true; return the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def subscriber_count(cache: Cache, channel: str) -> int:
    """How many subscribers the backend itself holds for `channel`."""
    if isinstance(cache, MemoryCache):
        return cache.subscriber_count(channel)
    admin = await reachable_redis()
    try:
        counts = await admin.pubsub_numsub(cache.prefix + channel)
        return int(counts[0][1])
    finally:
        await admin.aclose()


# -- key/value ---------------------------------------------------------------------------------


async def test_get_set_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"v1", ttl=None)
    assert await cache.get("k") == b"v1"
    await cache.set("k", b"\x00binary\xff" * 1000, ttl=None)
    assert await cache.get("k") == b"\x00binary\xff" * 1000
    assert await cache.delete("k") is True
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_ttl_expiry_on_real_time(cache: Cache) -> None:
    await cache.set("short", b"v", ttl=0.2)
    await cache.set("long", b"v", ttl=30)
    assert await cache.get("short") == b"v"
    took = await eventually(lambda: _is_missing(cache, "short"))
    assert took >= 0.1
    assert await cache.get("long") == b"v"
    assert await cache.ttl("short") is None


async def _is_missing(cache: Cache, key: str) -> bool:
    return await cache.get(key) is None


async def test_set_without_ttl_clears_old_ttl(cache: Cache) -> None:
    await cache.set("k", b"v", ttl=0.2)
    await cache.set("k", b"w", ttl=None)
    assert await cache.ttl("k") == math.inf
    await asyncio.sleep(0.3)
    assert await cache.get("k") == b"w"


async def test_invalid_ttl_is_a_usage_error(cache: Cache) -> None:
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(UsageError):
            await cache.set("k", b"v", ttl=bad)
    with pytest.raises(UsageError):
        await cache.incr_window("k", window=0)
    with pytest.raises(UsageError):
        await cache.expire("k", -0.5)
    assert await cache.get("k") is None


async def test_set_if_absent_only_once_then_again_after_expiry(cache: Cache) -> None:
    assert await cache.set_if_absent("lock", b"owner-1", ttl=0.2) is True
    assert await cache.set_if_absent("lock", b"owner-2", ttl=0.2) is False
    assert await cache.get("lock") == b"owner-1"
    await eventually(lambda: cache.set_if_absent("lock", b"owner-2", ttl=5))
    assert await cache.get("lock") == b"owner-2"
    assert 4 < (await cache.ttl("lock") or 0) <= 5


async def test_set_if_absent_concurrently_has_one_winner(cache: Cache) -> None:
    results = await asyncio.gather(
        *(cache.set_if_absent("lock", str(i).encode(), ttl=5) for i in range(20))
    )
    assert results.count(True) == 1
    assert await cache.get("lock") == str(results.index(True)).encode()


async def test_pop_gets_and_deletes(cache: Cache) -> None:
    assert await cache.pop("once") is None
    await cache.set("once", b"token", ttl=10)
    assert await cache.pop("once") == b"token"
    assert await cache.pop("once") is None
    assert await cache.get("once") is None


async def test_pop_is_atomic_under_concurrency(cache: Cache) -> None:
    await cache.set("once", b"token", ttl=10)
    results = await asyncio.gather(*(cache.pop("once") for _ in range(20)))
    assert results.count(b"token") == 1
    assert results.count(None) == 19


async def test_compare_and_delete_only_matching_value(cache: Cache) -> None:
    await cache.set("lock", b"mine", ttl=10)
    assert await cache.compare_and_delete("lock", b"theirs") is False
    assert await cache.get("lock") == b"mine"
    assert await cache.compare_and_delete("lock", b"mine") is True
    assert await cache.get("lock") is None
    assert await cache.compare_and_delete("lock", b"mine") is False


async def test_expire_and_ttl(cache: Cache) -> None:
    assert await cache.ttl("k") is None
    assert await cache.expire("k", 5) is False
    await cache.set("k", b"v", ttl=None)
    assert await cache.ttl("k") == math.inf
    assert await cache.expire("k", 5) is True
    remaining = await cache.ttl("k")
    assert remaining is not None and 4 < remaining <= 5
    assert await cache.expire("k", 0.2) is True
    await eventually(lambda: _is_missing(cache, "k"))


async def test_expire_renews_a_sliding_session(cache: Cache) -> None:
    await cache.set("session", b"s", ttl=0.4)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await cache.expire("session", 0.4) is True
    assert await cache.get("session") == b"s"


async def test_prefix_isolation(make_cache: CacheFactory) -> None:
    one = await make_cache()
    two = await make_cache()
    await one.set("shared-name", b"one", ttl=None)
    assert await two.get("shared-name") is None
    await two.set("shared-name", b"two", ttl=None)
    assert await one.get("shared-name") == b"one"
    assert (await one.incr_window("hits", window=10)).count == 1
    assert (await two.incr_window("hits", window=10)).count == 1
    assert await two.delete("shared-name") is True
    assert await one.get("shared-name") == b"one"


async def test_closed_cache_refuses_use(make_cache: CacheFactory) -> None:
    cache = await make_cache()
    await cache.close()
    await cache.close()  # idempotent
    with pytest.raises(UsageError):
        await cache.get("k")


async def test_compare_and_expire_renews_only_the_matching_value(cache: Cache) -> None:
    await cache.set("lock", b"mine", ttl=10)
    assert await cache.compare_and_expire("lock", b"theirs", 30) is False
    remaining = await cache.ttl("lock")
    assert remaining is not None and remaining <= 10
    assert await cache.compare_and_expire("lock", b"mine", 30) is True
    remaining = await cache.ttl("lock")
    assert remaining is not None and 29 < remaining <= 30
    assert await cache.compare_and_expire("missing", b"mine", 30) is False
    assert await cache.get("missing") is None
    with pytest.raises(UsageError):
        await cache.compare_and_expire("lock", b"mine", 0)


async def test_get_many_reads_values_in_order(cache: Cache) -> None:
    assert await cache.get_many([]) == []
    await cache.set("a", b"1", ttl=None)
    await cache.set("c", b"\x00three", ttl=10)
    assert await cache.get_many(["a", "b", "c", "a"]) == [b"1", None, b"\x00three", b"1"]


# -- fenced locks ------------------------------------------------------------------------------


async def test_acquire_fenced_gives_increasing_tokens(cache: Cache) -> None:
    first = await cache.acquire_fenced("lock", b"node-a", ttl=10, counter="fence", counter_ttl=60)
    assert first == 1
    assert await cache.get("lock") == fenced_value(1, b"node-a") == b"1 node-a"
    assert parse_fenced_value(b"1 node-a") == (1, b"node-a")
    # held: a second acquisition changes nothing, not even the counter
    taken = await cache.acquire_fenced("lock", b"node-b", ttl=10, counter="fence", counter_ttl=60)
    assert taken is None
    assert await cache.get("fence") == b"1"
    assert await cache.compare_and_delete("lock", fenced_value(1, b"node-a")) is True
    second = await cache.acquire_fenced("lock", b"node-b", ttl=10, counter="fence", counter_ttl=60)
    assert second == 2
    assert await cache.get("lock") == b"2 node-b"
    remaining = await cache.ttl("fence")
    assert remaining is not None and 59 < remaining <= 60


async def test_acquire_fenced_after_expiry_gets_a_larger_token(cache: Cache) -> None:
    assert await cache.acquire_fenced("lock", b"a", ttl=0.2, counter="fence", counter_ttl=60) == 1
    await eventually(lambda: _is_missing(cache, "lock"))
    assert await cache.acquire_fenced("lock", b"b", ttl=10, counter="fence", counter_ttl=60) == 2
    # the old holder can neither renew nor release the new holder's lock
    assert await cache.compare_and_expire("lock", fenced_value(1, b"a"), 10) is False
    assert await cache.compare_and_delete("lock", fenced_value(1, b"a")) is False
    assert await cache.get("lock") == b"2 b"


async def test_acquire_fenced_concurrently_has_one_winner(make_cache: CacheFactory) -> None:
    first = await make_cache()
    if isinstance(first, MemoryCache):  # one process: its tasks share one cache
        others = [first] * 3
    else:  # separate clients (connections) racing on one Redis, as separate nodes would
        others = [await make_cache(prefix=first.prefix) for _ in range(3)]
    caches = [first, *others] * 5
    tokens = await asyncio.gather(
        *(
            cache.acquire_fenced("lock", b"%d" % i, ttl=10, counter="fence", counter_ttl=60)
            for i, cache in enumerate(caches)
        )
    )
    winners = [i for i, token in enumerate(tokens) if token is not None]
    assert len(winners) == 1 and tokens[winners[0]] == 1
    assert await first.get("lock") == fenced_value(1, b"%d" % winners[0])
    assert await first.get("fence") == b"1"


async def test_acquire_fenced_with_a_non_counter_is_a_cache_error(cache: Cache) -> None:
    await cache.set("fence", b"not a number", ttl=None)
    with pytest.raises(CacheError):
        await cache.acquire_fenced("lock", b"a", ttl=10, counter="fence", counter_ttl=60)
    assert await cache.get("lock") is None
    with pytest.raises(UsageError):
        await cache.acquire_fenced("lock", b"a", ttl=10, counter="other", counter_ttl=0)


def test_parse_fenced_value_refuses_other_values() -> None:
    for value in (b"", b"7", b"x 7", b"-1 a", b" 1 a", b"99999999999999999999 a"):
        assert parse_fenced_value(value) is None
    assert parse_fenced_value(b"12 owner with spaces") == (12, b"owner with spaces")


# -- indexes -----------------------------------------------------------------------------------


async def test_index_add_list_remove(cache: Cache) -> None:
    assert await cache.index_members("nodes", limit=10) == []
    for member in ("b", "a", "c"):
        assert await cache.index_add("nodes", member, ttl=10, max_members=10) is True
    assert await cache.index_add("nodes", "a", ttl=10, max_members=10) is True  # refresh
    assert await cache.index_members("nodes", limit=10) == ["a", "b", "c"]
    assert len(await cache.index_members("nodes", limit=2)) == 2
    assert await cache.index_remove("nodes", "b") is True
    assert await cache.index_remove("nodes", "b") is False
    assert await cache.index_members("nodes", limit=10) == ["a", "c"]
    assert await cache.index_remove("nodes", "a") is True
    assert await cache.index_remove("nodes", "c") is True
    assert await cache.ttl("nodes") is None  # the empty index is gone


async def test_index_members_expire_one_by_one(cache: Cache) -> None:
    await cache.index_add("nodes", "short", ttl=0.5, max_members=10)
    await cache.index_add("nodes", "long", ttl=30, max_members=10)
    assert await cache.index_members("nodes", limit=10) == ["long", "short"]
    took = await eventually(lambda: _members_are(cache, "nodes", ["long"]))
    assert took >= 0.3
    assert await cache.index_remove("nodes", "short") is False
    remaining = await cache.ttl("nodes")  # the index lives as long as its last member
    assert remaining is not None and 29 < remaining <= 30
    # a refresh keeps a member past its first TTL
    await cache.index_add("nodes", "kept", ttl=1, max_members=10)
    for _ in range(3):
        await asyncio.sleep(0.4)
        assert await cache.index_add("nodes", "kept", ttl=1, max_members=10) is True
    assert await cache.index_members("nodes", limit=10) == ["kept", "long"]


async def test_index_expires_with_its_last_member(cache: Cache) -> None:
    await cache.index_add("nodes", "a", ttl=0.5, max_members=10)
    remaining = await cache.ttl("nodes")
    assert remaining is not None and remaining <= 0.5
    await eventually(lambda: _members_are(cache, "nodes", []))
    await eventually(lambda: _ttl_is_none(cache, "nodes"))


async def test_index_is_bounded(cache: Cache) -> None:
    assert await cache.index_add("nodes", "a", ttl=1, max_members=2) is True
    assert await cache.index_add("nodes", "b", ttl=30, max_members=2) is True
    assert await cache.index_add("nodes", "c", ttl=30, max_members=2) is False
    assert await cache.index_add("nodes", "a", ttl=1, max_members=2) is True  # a refresh fits
    assert await cache.index_members("nodes", limit=10) == ["a", "b"]
    # an expired member makes room
    await eventually(lambda: cache.index_add("nodes", "c", ttl=30, max_members=2))
    assert await cache.index_members("nodes", limit=10) == ["b", "c"]
    with pytest.raises(UsageError):
        await cache.index_add("nodes", "d", ttl=30, max_members=0)
    with pytest.raises(UsageError):
        await cache.index_members("nodes", limit=0)


async def test_index_concurrent_adds_respect_the_bound(cache: Cache) -> None:
    results = await asyncio.gather(
        *(cache.index_add("nodes", f"n{i:02}", ttl=10, max_members=5) for i in range(30))
    )
    assert results.count(True) == 5
    assert len(await cache.index_members("nodes", limit=100)) == 5


async def test_index_and_value_keys_do_not_mix(cache: Cache) -> None:
    await cache.index_add("nodes", "a", ttl=10, max_members=10)
    await cache.set("value", b"v", ttl=None)
    with pytest.raises(CacheError):
        await cache.get("nodes")
    with pytest.raises(CacheError):
        await cache.index_add("value", "a", ttl=10, max_members=10)
    with pytest.raises(CacheError):
        await cache.index_members("value", limit=10)
    assert await cache.get_many(["nodes", "value"]) == [None, b"v"]
    assert await cache.index_members("nodes", limit=10) == ["a"]


async def _members_are(cache: Cache, index: str, expected: list[str]) -> bool:
    return await cache.index_members(index, limit=100) == expected


async def _ttl_is_none(cache: Cache, key: str) -> bool:
    return await cache.ttl(key) is None


# -- rate counters ----------------------------------------------------------------------------


async def test_incr_window_counts_and_reports_reset(cache: Cache) -> None:
    first = await cache.incr_window("login:alice", window=10)
    assert first.count == 1 and 9 < first.reset_after <= 10
    second = await cache.incr_window("login:alice", window=10)
    assert second.count == 2 and second.reset_after <= first.reset_after
    third = await cache.incr_window("login:alice", window=10)
    assert isinstance(third, RateCount) and third.count == 3
    assert await cache.get("login:alice") == b"3"
    assert (await cache.incr_window("login:bob", window=10)).count == 1


async def test_incr_window_resets_after_the_window(cache: Cache) -> None:
    assert (await cache.incr_window("ip:1", window=0.2)).count == 1
    assert (await cache.incr_window("ip:1", window=0.2)).count == 2
    await eventually(lambda: _is_missing(cache, "ip:1"))
    again = await cache.incr_window("ip:1", window=0.2)
    assert again.count == 1 and 0 < again.reset_after <= 0.2


async def test_incr_window_gives_a_ttl_to_a_counter_without_one(cache: Cache) -> None:
    await cache.set("n", b"41", ttl=None)
    hit = await cache.incr_window("n", window=5)
    assert hit.count == 42 and 4 < hit.reset_after <= 5
    remaining = await cache.ttl("n")
    assert remaining is not None and remaining <= 5


async def test_incr_window_concurrent_hits_all_count(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.incr_window("burst", window=10) for _ in range(50)))
    assert sorted(r.count for r in results) == list(range(1, 51))
    assert await cache.get("burst") == b"50"


async def test_incr_window_on_a_non_counter_is_a_cache_error(cache: Cache) -> None:
    await cache.set("text", b"not a number", ttl=None)
    with pytest.raises(CacheError):
        await cache.incr_window("text", window=1)
    assert await cache.get("text") == b"not a number"


# -- pub/sub -----------------------------------------------------------------------------------


async def test_subscriber_receives_messages_in_order(cache: Cache) -> None:
    await cache.publish("events", b"before")  # nobody listens: lost, and not an error
    async with cache.subscribe("events") as sub:
        assert sub.channel == "events"
        for i in range(20):
            await cache.publish("events", b"m%d" % i)
        received = [await asyncio.wait_for(sub.get(), 3) for _ in range(20)]
        assert received == [b"m%d" % i for i in range(20)]
        assert sub.dropped == 0


async def test_two_subscribers_both_receive(cache: Cache) -> None:
    async with cache.subscribe("events") as a, cache.subscribe("events") as b:
        await cache.publish("events", b"hello")
        await cache.publish("events", b"world")
        for sub in (a, b):
            async with asyncio.timeout(3):
                assert [await anext(sub), await anext(sub)] == [b"hello", b"world"]


async def test_other_channel_is_not_received(cache: Cache) -> None:
    async with cache.subscribe("events") as sub:
        await cache.publish("other", b"not for you")
        await cache.publish("events", b"for you")
        assert await asyncio.wait_for(sub.get(), 3) == b"for you"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.2)
        # a read cut short by a timeout loses nothing
        await cache.publish("events", b"after the timeout")
        assert await asyncio.wait_for(sub.get(), 3) == b"after the timeout"


async def test_pubsub_prefix_isolation(make_cache: CacheFactory) -> None:
    one = await make_cache()
    two = await make_cache()
    async with one.subscribe("events") as sub:
        await two.publish("events", b"from two")
        await one.publish("events", b"from one")
        assert await asyncio.wait_for(sub.get(), 3) == b"from one"


async def test_closing_a_subscription_cleans_up(cache: Cache) -> None:
    async with cache.subscribe("events") as sub:
        assert await subscriber_count(cache, "events") == 1
        received: list[bytes] = []

        async def read_all() -> None:
            async for message in sub:
                received.append(message)

        reader = asyncio.create_task(read_all())
        await cache.publish("events", b"one")
        await eventually(lambda: _truthy(received))
    # leaving the context ended the reader's iteration and unsubscribed
    await asyncio.wait_for(reader, 3)
    assert received == [b"one"]
    assert await sub.get() is None
    await eventually(lambda: _count_is(cache, "events", 0))
    await cache.publish("events", b"nobody listens")


async def test_aclose_ends_iteration_and_closing_the_cache_ends_subscriptions(
    cache: Cache,
) -> None:
    async with cache.subscribe("a") as a, cache.subscribe("b") as b:
        reader = asyncio.create_task(anext(a, None))
        await asyncio.sleep(0.05)
        await a.aclose()
        await a.aclose()  # idempotent
        assert await asyncio.wait_for(reader, 3) is None
        await cache.close()
        assert await asyncio.wait_for(b.get(), 3) is None


async def _truthy(items: list[bytes]) -> bool:
    return bool(items)


async def _count_is(cache: Cache, channel: str, expected: int) -> bool:
    return await subscriber_count(cache, channel) == expected


# -- MemoryCache only --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_expiry_is_exact_with_a_fake_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    await cache.set("k", b"v", ttl=2)
    first = await cache.incr_window("n", window=10)
    assert first == RateCount(1, 10.0)
    clock.now += 1.999
    assert await cache.get("k") == b"v"
    assert await cache.ttl("k") == pytest.approx(0.001)
    second = await cache.incr_window("n", window=10)
    assert second.count == 2 and second.reset_after == pytest.approx(8.001)
    clock.now += 0.001
    assert await cache.get("k") is None
    clock.now += 8
    assert await cache.incr_window("n", window=10) == RateCount(1, 10.0)
    await cache.close()


async def test_memory_index_expiry_is_exact_with_a_fake_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    await cache.index_add("nodes", "a", ttl=2, max_members=10)
    await cache.index_add("nodes", "b", ttl=5, max_members=10)
    assert await cache.ttl("nodes") == pytest.approx(5)
    clock.now += 1.999
    assert await cache.index_members("nodes", limit=10) == ["a", "b"]
    clock.now += 0.001
    assert await cache.index_members("nodes", limit=10) == ["b"]
    assert await cache.index_remove("nodes", "b") is True
    assert len(cache) == 0
    assert await cache.acquire_fenced("lock", b"a", ttl=1, counter="f", counter_ttl=3) == 1
    clock.now += 1
    assert await cache.acquire_fenced("lock", b"b", ttl=1, counter="f", counter_ttl=3) == 2
    clock.now += 3
    # the counter lapsed with no acquisition for counter_ttl: tokens start again
    assert await cache.acquire_fenced("lock", b"c", ttl=1, counter="f", counter_ttl=3) == 1
    await cache.close()


async def test_memory_evicts_soonest_to_expire_when_full() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock, max_entries=3)
    await cache.set("a", b"a", ttl=100)
    await cache.set("b", b"b", ttl=5)
    await cache.set("c", b"c", ttl=None)
    await cache.set("a", b"a2", ttl=100)  # overwriting an existing key evicts nothing
    assert cache.evictions == 0
    await cache.set("d", b"d", ttl=50)
    assert len(cache) == 3 and cache.evictions == 1
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in "acd"] == [b"a2", b"c", b"d"]
    # expired entries make room first, and are not counted as evictions
    clock.now += 60
    await cache.set("e", b"e", ttl=None)
    assert cache.evictions == 1
    assert await cache.get("a") == b"a2" and await cache.get("e") == b"e"
    await cache.close()


async def test_memory_evicts_oldest_when_nothing_expires() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", b"a", ttl=None)
    await cache.set("b", b"b", ttl=None)
    await cache.set("c", b"c", ttl=None)
    assert await cache.get("a") is None
    assert await cache.get("b") == b"b" and await cache.get("c") == b"c"
    assert cache.evictions == 1
    await cache.close()


async def test_memory_flood_of_keys_stays_bounded() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock, max_entries=100)
    for i in range(10_000):
        await cache.set(f"flood:{i}", b"x", ttl=1 + (i % 7))
        await cache.expire(f"flood:{i}", 2 + (i % 5))  # leaves stale heap items behind
        if i % 1000 == 0:
            clock.now += 3
    assert len(cache) <= 100
    assert len(cache._heap) <= 2 * 100 + 1024 + 1
    await cache.close()


async def test_memory_slow_subscriber_drops_and_counts() -> None:
    cache = MemoryCache(max_queued_messages=3)
    async with cache.subscribe("events") as slow, cache.subscribe("events") as fast:
        for i in range(5):
            await cache.publish("events", b"%d" % i)
            assert await fast.get() == b"%d" % i
        assert slow.dropped == 2 and fast.dropped == 0
        assert cache.dropped_messages == 2
        assert [await slow.get() for _ in range(3)] == [b"0", b"1", b"2"]
    await cache.close()


# -- RedisCache only ---------------------------------------------------------------------------


async def test_redis_unreachable_raises_cache_unavailable_on_first_use() -> None:
    cache = RedisCache("redis://:s3cret@127.0.0.1:1/0", prefix="rctest:")
    try:
        with pytest.raises(CacheUnavailable) as caught:
            await cache.get("k")
        message = str(caught.value)
        assert "127.0.0.1:1" in message and "s3cret" not in message
        with pytest.raises(CacheUnavailable):
            await cache.incr_window("k", window=1)
        with pytest.raises(CacheUnavailable):
            async with cache.subscribe("events"):
                pass
    finally:
        await cache.close()


# -- factory -----------------------------------------------------------------------------------


async def test_open_cache_picks_the_implementation() -> None:
    memory = open_cache("memory://", prefix="x:")
    assert isinstance(memory, MemoryCache) and memory.prefix == "x:"
    await memory.close()
    for url in (REDIS_URL, "rediss://127.0.0.1:6380/0"):
        remote = open_cache(url, prefix="x:")
        assert isinstance(remote, RedisCache)
        await remote.close()
    with pytest.raises(ValueError, match="'memcached'"):
        open_cache("memcached://127.0.0.1:11211", prefix="x:")
