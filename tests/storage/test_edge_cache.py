"""The edge's VOD cache (`CachingStorage`) in front of a real `LocalStorage`.

The inner store is the real folder storage, subclassed only to count the calls that reach it,
to hold a fetch at a gate (so concurrent requests provably overlap) and to make a fetch fail
(a fault of the inner store, not of the cache under test). The storage contract suite runs on
the cache too (tests/contract/test_storage_contract.py); these are what only a cache has.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ripplecast.config import Settings
from ripplecast.errors import UsageError
from ripplecast.storage import (
    CachingStorage,
    InvalidKey,
    LocalStorage,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    open_edge_cache,
)
from ripplecast.storage.base import DEFAULT_CHUNK_SIZE

KEY = "vod/abc/720p/0001.ts"
WAIT = 10.0
"""Seconds any awaited event may take before the test fails."""


class CountingStore(LocalStorage):
    """The real folder storage, counting what reaches it; a fetch can wait at `gate` and fail
    with `fail_with` once past it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stats = 0
        self.fetches = 0
        """Calls that read an object's bytes: read_bytes, read and download."""
        self.fetching = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        return await super().stat(key)

    async def read_bytes(self, key: str) -> bytes:
        self.fetches += 1
        self.fetching.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await super().read_bytes(key)

    def read(
        self,
        key: str,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        self.fetches += 1
        return super().read(key, start=start, stop=stop, chunk_size=chunk_size)

    async def download(self, key: str, path: Path) -> None:
        self.fetches += 1
        await super().download(key, path)


CacheFactory = Callable[..., Awaitable[CachingStorage]]


@pytest.fixture
async def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path / "store")
    await store.start()
    return store


@pytest.fixture
async def make_cache(store: CountingStore, tmp_path: Path) -> AsyncIterator[CacheFactory]:
    """Started caches in front of `store` (keyword arguments override the bounds: 1 MiB memory,
    4 MiB disk in tmp_path/cache, 2 MiB objects); closed at teardown."""
    made: list[CachingStorage] = []

    async def factory(**overrides: Any) -> CachingStorage:
        options: dict[str, Any] = {
            "memory_bytes": 1024 * 1024,
            "disk_dir": tmp_path / "cache",
            "disk_bytes": 4 * 1024 * 1024,
            "max_object_bytes": 2 * 1024 * 1024,
            **overrides,
        }
        cache = CachingStorage(store, **options)
        made.append(cache)
        await cache.start()
        return cache

    try:
        yield factory
    finally:
        for cache in made:
            await cache.close()


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ at every offset modulo a prime, shifted by `seed`."""
    block = bytes((i + seed) % 251 for i in range(251 * 16))
    return (block * (size // len(block) + 1))[:size]


async def read_all(storage: Any, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, **kwargs)])


def disk_files(folder: Path) -> set[Path]:
    """The cache files under `folder` (not the temp folder)."""
    return {p for p in folder.rglob("*") if p.is_file() and ".tmp" not in p.parts}


# -- coalescing -----------------------------------------------------------------------------------


async def test_200_concurrent_reads_cause_one_inner_fetch(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(300_000)
    await store.put_bytes(KEY, data)
    cache = await make_cache()
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(read_all(cache, KEY)) for _ in range(200)]
    async with asyncio.timeout(WAIT):
        await store.fetching.wait()
    # The fetch is held: every reader has asked by now and waits for the one fetch.
    assert (cache.misses, cache.coalesced, cache.hits_memory) == (1, 199, 0)
    store.gate.set()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*readers)
    assert all(result == data for result in results)
    assert (store.stats, store.fetches) == (1, 1)
    assert cache.bytes_fetched == len(data)
    assert await read_all(cache, KEY) == data
    assert (store.stats, store.fetches, cache.hits_memory) == (1, 1, 1)


async def test_a_burst_of_stat_then_read_costs_one_stat_and_one_fetch(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    """What `http.vod` does per request: stat, then read a range."""
    data = pattern(100_000)
    await store.put_bytes(KEY, data)
    cache = await make_cache()

    async def request() -> bytes:
        info = await cache.stat(KEY)
        return await read_all(cache, KEY, start=10, stop=info.size)

    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(request() for _ in range(100)))
    assert all(result == data[10:] for result in results)
    assert (store.stats, store.fetches) == (1, 1)
    assert cache.misses == 1 and cache.coalesced + cache.hits_memory == 199


async def test_a_failed_fetch_fails_every_waiter_and_a_later_read_retries(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    cache = await make_cache()
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(read_all(cache, KEY)) for _ in range(20)]
    async with asyncio.timeout(WAIT):
        await store.fetching.wait()
    assert cache.coalesced == 19
    store.fail_with = StorageError("injected: the store is unreachable")
    store.gate.set()
    async with asyncio.timeout(WAIT):
        outcomes = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(o, StorageError) and "unreachable" in str(o) for o in outcomes)
    assert store.fetches == 1
    assert cache.memory_used == 0 and cache.disk_used == 0
    await cache.wait_for_disk_writes()
    assert disk_files(cache_dir(cache)) == set()

    store.fail_with = None
    assert await read_all(cache, KEY) == data
    assert store.fetches == 2


async def test_a_cancelled_waiter_does_not_cancel_the_fetch(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    cache = await make_cache()
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(read_all(cache, KEY)) for _ in range(10)]
    async with asyncio.timeout(WAIT):
        await store.fetching.wait()
    readers[0].cancel()  # the one whose miss started the fetch
    readers[5].cancel()
    store.gate.set()
    async with asyncio.timeout(WAIT):
        outcomes = await asyncio.gather(*readers, return_exceptions=True)
    for index, outcome in enumerate(outcomes):
        if index in (0, 5):
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert outcome == data
    assert store.fetches == 1
    assert await read_all(cache, KEY) == data
    assert store.fetches == 1


async def test_a_fetch_whose_waiters_all_left_still_fills_the_cache(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    cache = await make_cache()
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(read_all(cache, KEY)) for _ in range(5)]
    async with asyncio.timeout(WAIT):
        await store.fetching.wait()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    store.gate.set()
    async with asyncio.timeout(WAIT):
        assert await read_all(cache, KEY) == data  # joins the fetch, or finds its result
    assert store.fetches == 1


# -- the memory tier ------------------------------------------------------------------------------


async def test_memory_is_an_lru_bounded_in_bytes(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    objects = {name: pattern(100, seed) for seed, name in enumerate("abcd")}
    for name, data in objects.items():
        await store.put_bytes(name, data)
    cache = await make_cache(memory_bytes=300, disk_bytes=0, disk_dir=None)
    for name in "abc":
        assert await cache.read_bytes(name) == objects[name]
    assert await cache.read_bytes("a") == objects["a"]  # a is now the most recently used
    assert (store.fetches, cache.memory_used, cache.evictions) == (3, 300, 0)
    assert await cache.read_bytes("d") == objects["d"]  # b, least recently used, goes
    assert (store.fetches, cache.memory_used, cache.evictions) == (4, 300, 1)
    for name in "acd":
        assert await read_all(cache, name) == objects[name]
    assert store.fetches == 4
    assert await read_all(cache, "b") == objects["b"]
    assert store.fetches == 5
    assert cache.hits_memory == 4


async def test_objects_bigger_than_every_tier_are_passed_through(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    cache = await make_cache(memory_bytes=4096, disk_bytes=8192, max_object_bytes=1000)
    assert await read_all(cache, KEY) == data
    assert await read_all(cache, KEY, start=100, stop=200) == data[100:200]
    assert await cache.read_bytes(KEY) == data
    await cache.download(KEY, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    assert store.fetches == 4 and cache.passthroughs == 4
    assert cache.bytes_fetched == 3 * len(data) + 100
    await cache.wait_for_disk_writes()
    assert cache.memory_used == 0 and disk_files(tmp_path / "cache") == set()

    # Bigger than memory with no disk tier: nothing could hold it either.
    small = await make_cache(memory_bytes=1000, disk_bytes=0, disk_dir=None)
    assert await small.read_bytes(KEY) == data
    assert await small.read_bytes(KEY) == data
    assert small.passthroughs == 2 and small.memory_used == 0


async def test_missing_objects_are_not_remembered(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    cache = await make_cache()
    with pytest.raises(ObjectNotFound):
        await cache.stat(KEY)
    with pytest.raises(ObjectNotFound):
        await read_all(cache, KEY)
    await store.put_bytes(KEY, b"now it exists")  # behind the cache's back
    assert await cache.read_bytes(KEY) == b"now it exists"


async def test_stat_is_answered_from_the_cache(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    written = await store.put_bytes(KEY, pattern(2000), content_type="video/x-test")
    cache = await make_cache()
    assert await cache.stat(KEY) == written
    assert await read_all(cache, KEY) == pattern(2000)
    for _ in range(3):
        assert await cache.stat(KEY) == written
    assert (store.stats, store.fetches) == (1, 1)


@pytest.mark.parametrize("tier", ["memory", "disk"])
async def test_range_reads_from_a_cached_object(
    store: CountingStore, make_cache: CacheFactory, tier: str
) -> None:
    data = pattern(10_240)
    await store.put_bytes(KEY, data)
    # memory_bytes 0: the object lives on disk only and each range is read from its file.
    cache = await make_cache(memory_bytes=0 if tier == "disk" else 1024 * 1024)
    assert await cache.read_bytes(KEY) == data
    await cache.wait_for_disk_writes()
    ranges = [(0, None), (1000, 3000), (10_239, None), (500, 500), (0, 20_000), (50_000, None)]
    for start, stop in ranges:
        assert await read_all(cache, KEY, start=start, stop=stop) == data[start:stop]
    chunks = [chunk async for chunk in cache.read(KEY, start=10, chunk_size=4096)]
    assert all(0 < len(chunk) <= 4096 for chunk in chunks)
    assert b"".join(chunks) == data[10:]
    assert store.fetches == 1
    if tier == "disk":
        assert cache.memory_used == 0 and cache.hits_disk == len(ranges) + 1


async def test_download_from_the_cache(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    data = pattern(3 * 1024 * 1024 // 2)
    await store.put_bytes(KEY, data)
    cache = await make_cache(memory_bytes=1024 * 1024)  # too big for memory: from disk
    target_folder = tmp_path / "out"
    target_folder.mkdir()
    await cache.download(KEY, target_folder / "a.ts")
    await cache.wait_for_disk_writes()
    await cache.download(KEY, target_folder / "b.ts")
    assert (target_folder / "a.ts").read_bytes() == data
    assert (target_folder / "b.ts").read_bytes() == data
    assert store.fetches == 1 and cache.hits_disk == 1
    with pytest.raises(ObjectNotFound):
        await cache.download("vod/missing.ts", target_folder / "c.ts")
    assert sorted(os.listdir(target_folder)) == ["a.ts", "b.ts"]


# -- the disk tier --------------------------------------------------------------------------------


def cache_dir(cache: CachingStorage) -> Path:
    folder = cache._disk_dir
    assert folder is not None
    return folder


async def test_disk_is_an_lru_bounded_in_bytes(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    objects = {name: pattern(100, seed) for seed, name in enumerate("abcd")}
    for name, data in objects.items():
        await store.put_bytes(name, data)
    cache = await make_cache(memory_bytes=0, disk_bytes=300)
    for name in "abc":
        assert await cache.read_bytes(name) == objects[name]
        await cache.wait_for_disk_writes()  # indexed in the order their copies are written
    assert len(disk_files(cache_dir(cache))) == 3 and cache.disk_used == 300
    assert await cache.read_bytes("a") == objects["a"]  # from disk; now most recently used
    assert (store.fetches, cache.hits_disk) == (3, 1)
    assert await cache.read_bytes("d") == objects["d"]
    await cache.wait_for_disk_writes()  # d is written, b (least recently used) removed
    assert len(disk_files(cache_dir(cache))) == 3 and cache.disk_used == 300
    assert cache.evictions == 1
    for name in "acd":
        assert await cache.read_bytes(name) == objects[name]
    assert (store.fetches, cache.hits_disk) == (4, 4)
    assert await cache.read_bytes("b") == objects["b"]
    assert store.fetches == 5


async def test_objects_bigger_than_memory_are_cached_on_disk(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(200_000)
    await store.put_bytes(KEY, data)
    cache = await make_cache(memory_bytes=100_000)
    assert await cache.read_bytes(KEY) == data
    await cache.wait_for_disk_writes()
    assert cache.memory_used == 0 and cache.disk_used == len(data)
    assert await read_all(cache, KEY, start=150_000) == data[150_000:]
    assert await cache.read_bytes(KEY) == data
    assert store.fetches == 1 and cache.hits_disk == 2


async def test_a_restart_finds_the_disk_tier(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    keys = [f"vod/v/720p/{i:04d}.ts" for i in range(5)]
    written = {key: await store.put_bytes(key, pattern(1000 + i, i)) for i, key in enumerate(keys)}
    first = await make_cache()
    for key in keys:
        await first.read_bytes(key)
    await first.wait_for_disk_writes()
    await first.close()
    assert (store.stats, store.fetches) == (5, 5)

    second = await make_cache()
    assert second.disk_used == sum(info.size for info in written.values())
    for i, key in enumerate(keys):
        assert await second.stat(key) == written[key]
        assert await read_all(second, key) == pattern(1000 + i, i)
    assert (store.stats, store.fetches) == (5, 5)
    assert second.hits_disk == 5 and second.hits_memory == 5


async def test_a_restart_over_the_bound_drops_the_oldest(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    first = await make_cache()
    file_of: dict[str, Path] = {}
    for name in "abc":
        await store.put_bytes(name, pattern(100))
        before = disk_files(tmp_path / "cache")
        await first.read_bytes(name)
        await first.wait_for_disk_writes()
        (file_of[name],) = disk_files(tmp_path / "cache") - before
    await first.close()
    for age, name in ((300, "b"), (200, "a"), (100, "c")):  # b is the oldest, c the newest
        os.utime(file_of[name], (1_700_000_000 - age, 1_700_000_000 - age))

    second = await make_cache(disk_bytes=200)
    assert second.disk_used == 200 and second.evictions == 1
    assert not file_of["b"].exists() and file_of["a"].exists() and file_of["c"].exists()
    fetched = store.fetches
    assert await second.read_bytes("a") == pattern(100)
    assert await second.read_bytes("c") == pattern(100)
    assert store.fetches == fetched
    assert await second.read_bytes("b") == pattern(100)
    assert store.fetches == fetched + 1


async def test_a_truncated_disk_file_is_dropped_at_start_and_fetched_again(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    first = await make_cache()
    await first.read_bytes(KEY)
    await first.wait_for_disk_writes()
    await first.close()
    (path,) = disk_files(tmp_path / "cache")
    os.truncate(path, path.stat().st_size - 1)
    (tmp_path / "cache" / "zz").mkdir()
    (tmp_path / "cache" / "zz" / "junk").write_bytes(b"not a cache file")

    second = await make_cache()
    assert second.damaged == 2 and second.disk_used == 0
    assert disk_files(tmp_path / "cache") == set()
    assert await second.read_bytes(KEY) == data
    assert store.fetches == 2


async def test_a_disk_file_damaged_while_running_is_fetched_again(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    cache = await make_cache(memory_bytes=0)  # every read opens the file
    await cache.read_bytes(KEY)
    await cache.wait_for_disk_writes()
    (path,) = disk_files(cache_dir(cache))
    with path.open("ab") as file:
        file.write(b"trailing garbage")
    assert await read_all(cache, KEY, start=100) == data[100:]
    assert cache.damaged == 1 and store.fetches == 2
    assert not path.exists()
    await cache.wait_for_disk_writes()  # the fresh copy
    assert await read_all(cache, KEY) == data
    assert store.fetches == 2 and cache.damaged == 1


async def test_a_disk_file_with_flipped_bytes_is_not_served(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    """Same size, other bytes: caught by the checksum when the object is read into memory."""
    data = pattern(5000)
    await store.put_bytes(KEY, data)
    first = await make_cache()
    await first.read_bytes(KEY)
    await first.wait_for_disk_writes()
    await first.close()
    (path,) = disk_files(tmp_path / "cache")
    content = bytearray(path.read_bytes())
    content[-10] ^= 0xFF
    path.write_bytes(bytes(content))

    second = await make_cache()
    assert second.disk_used == len(data)  # the size agrees: indexed
    assert await second.read_bytes(KEY) == data
    assert second.damaged == 1 and second.hits_disk == 0 and store.fetches == 2


# -- writes and deletes ---------------------------------------------------------------------------


async def test_writes_and_deletes_through_the_cache_invalidate_it(
    store: CountingStore, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = await make_cache()
    folder = tmp_path / "cache"
    await cache.put_bytes(KEY, b"first")
    assert await cache.read_bytes(KEY) == b"first"
    await cache.wait_for_disk_writes()
    assert len(disk_files(folder)) == 1

    await cache.put_bytes(KEY, b"second")
    assert disk_files(folder) == set()
    assert await cache.read_bytes(KEY) == b"second"
    source = tmp_path / "source"
    source.write_bytes(b"third")
    await cache.put_file(KEY, source)
    assert await cache.read_bytes(KEY) == b"third"

    async def fourth() -> AsyncIterator[bytes]:
        yield b"fou"
        yield b"rth"

    info = await cache.put_stream(KEY, fourth())
    assert await cache.read_bytes(KEY) == b"fourth"
    assert await cache.stat(KEY) == info
    await cache.wait_for_disk_writes()

    await cache.delete(KEY)
    with pytest.raises(ObjectNotFound):
        await cache.read_bytes(KEY)
    assert disk_files(folder) == set() and cache.memory_used == 0


async def test_delete_prefix_invalidates_only_its_keys(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    keys = ["vod/a/1.ts", "vod/a/2.ts", "vod/ab/1.ts", "vod/b/1.ts"]
    for key in keys:
        await store.put_bytes(key, key.encode())
    cache = await make_cache()
    for key in keys:
        await cache.read_bytes(key)
    await cache.wait_for_disk_writes()
    assert await cache.delete_prefix("vod/a/") == 2
    for key in keys[:2]:
        with pytest.raises(ObjectNotFound):
            await cache.read_bytes(key)
    fetched = store.fetches
    assert await cache.read_bytes("vod/ab/1.ts") == b"vod/ab/1.ts"
    assert await cache.read_bytes("vod/b/1.ts") == b"vod/b/1.ts"
    assert store.fetches == fetched  # still cached
    assert len(disk_files(cache_dir(cache))) == 2


async def test_a_write_during_a_fetch_is_not_hidden_by_it(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    await store.put_bytes(KEY, b"old content")
    cache = await make_cache()
    store.gate = asyncio.Event()
    reader = asyncio.create_task(cache.read_bytes(KEY))
    async with asyncio.timeout(WAIT):
        await store.fetching.wait()
    new = await cache.put_bytes(KEY, b"new content")  # same size: only the etag tells
    store.gate.set()
    async with asyncio.timeout(WAIT):
        await reader  # whichever it read, it must not stay cached
    store.gate = None
    await cache.wait_for_disk_writes()
    assert await cache.read_bytes(KEY) == b"new content"
    assert await cache.stat(KEY) == new
    assert store.fetches == 2


class OneWorker(ThreadPoolExecutor):
    """A one-thread executor that counts what it is given: jobs run in submission order."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0
        self.handed = asyncio.Event()
        """Set at each submission (made on the event loop's thread by run_in_executor)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        self.handed.set()
        return super().submit(fn, *args, **kwargs)


async def submitted(executor: OneWorker, count: int) -> None:
    """Return once `count` jobs were handed to `executor`."""
    async with asyncio.timeout(WAIT):
        while executor.submitted < count:
            executor.handed.clear()
            await executor.handed.wait()


async def test_a_write_while_the_disk_copy_is_written_is_not_hidden_by_it(
    store: CountingStore, make_cache: CacheFactory
) -> None:
    """The disk copy of a fetched object is written in a worker thread after the fetch ends.
    With one worker thread the steps run in this order: the fetch's read, a write through the
    cache, the disk copy of the old bytes; that copy must be thrown away, not indexed."""
    await store.put_bytes(KEY, b"old content")
    cache = await make_cache()
    executor = OneWorker()
    asyncio.get_running_loop().set_default_executor(executor)
    hold = threading.Event()
    try:
        store.gate = asyncio.Event()
        reader = asyncio.create_task(cache.read_bytes(KEY))
        async with asyncio.timeout(WAIT):
            await store.fetching.wait()
        held = asyncio.get_running_loop().run_in_executor(None, hold.wait)
        store.gate.set()
        await submitted(executor, 2)  # the fetch's read waits behind `hold`
        writer = asyncio.create_task(cache.put_bytes(KEY, b"new content"))
        await submitted(executor, 3)  # the write's too, before any disk copy
    finally:
        hold.set()
    async with asyncio.timeout(WAIT):
        await held
        assert await reader == b"old content"
        new = await writer
        await cache.wait_for_disk_writes()
    assert disk_files(cache_dir(cache)) == set() and cache.disk_used == 0
    assert await cache.read_bytes(KEY) == b"new content"
    assert await cache.stat(KEY) == new


# -- the rest of the interface --------------------------------------------------------------------


async def test_no_urls_and_no_local_paths(store: CountingStore, make_cache: CacheFactory) -> None:
    await store.put_bytes(KEY, b"x")
    cache = await make_cache()
    assert await cache.presigned_url(KEY, expires_seconds=60) is None
    assert cache.local_path(KEY) is None
    with pytest.raises(InvalidKey):
        cache.local_path("../x")
    with pytest.raises(InvalidKey):
        await cache.presigned_url("../x", expires_seconds=60)


async def test_bounds_are_checked(store: CountingStore, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="disk_dir"):
        CachingStorage(store, memory_bytes=1, disk_dir=None, disk_bytes=1, max_object_bytes=1)
    with pytest.raises(UsageError, match="memory_bytes"):
        CachingStorage(store, memory_bytes=-1, disk_dir=None, disk_bytes=0, max_object_bytes=1)
    with pytest.raises(UsageError, match="max_object_bytes"):
        CachingStorage(store, memory_bytes=1, disk_dir=tmp_path, disk_bytes=0, max_object_bytes=-1)


async def test_an_unusable_disk_folder_fails_at_start(store: CountingStore, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    cache = CachingStorage(
        store, memory_bytes=1, disk_dir=tmp_path / "file", disk_bytes=1, max_object_bytes=1
    )
    with pytest.raises(StorageError, match="edge cache start"):
        await cache.start()


async def test_open_edge_cache_follows_the_settings(store: CountingStore, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        vod_edge_cache_memory_bytes=1000,
        vod_edge_cache_disk_bytes=100_000,
        vod_edge_cache_max_object_bytes=50_000,
    )
    cache = open_edge_cache(store, settings)
    await cache.start()
    try:
        assert (tmp_path / "data" / "vod-cache").is_dir()
        await store.put_bytes("big", pattern(20_000))
        await store.put_bytes("huge", pattern(60_000))
        assert await cache.read_bytes("big") == pattern(20_000)
        assert await cache.read_bytes("huge") == pattern(60_000)
        await cache.wait_for_disk_writes()
        assert cache.disk_used == 20_000 and cache.passthroughs == 1
    finally:
        await cache.close()
