"""One contract for every `Storage`: each test runs on `LocalStorage` (a folder in tmp_path) and
on `S3Storage` against a real moto S3 server subprocess (tests/s3server.py), each S3 test in a
fresh bucket, and on an edge's `CachingStorage` in front of each; then a few tests of what only
one implementation has.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

import s3server
from ripplecast.errors import UsageError
from ripplecast.storage import (
    CachingStorage,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    StorageError,
)
from s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, free_port, s3_storage_kwargs

s3_server = s3server.s3_server  # the session fixture, visible to this module's tests

MiB = 1024 * 1024
StorageFactory = Callable[..., Awaitable[Storage]]

BAD_KEYS = [
    "../x",
    "/abs",
    "a//b",
    "a\\b",
    "a\x00b",
    "",
    "a/./b",
    "x" * 600,
    "a/",
    "a/../b",
    "sp ace",
    "new\nline",
    ".partial/x",
]


@dataclass(frozen=True)
class Backend:
    kind: str
    s3_endpoint: str | None
    cached: bool = False
    """A `CachingStorage` (an edge's VOD cache) in front of the folder or the bucket."""


CACHE_MEMORY_BYTES = 1 * MiB
"""Bounds of the cached backends: objects up to 1 MiB are kept in memory and on disk, bigger
ones up to 16 MiB on disk only (read from the file), bigger ones still are passed through."""
CACHE_DISK_BYTES = 32 * MiB
CACHE_MAX_OBJECT_BYTES = 16 * MiB
NOT_FOR_THE_CACHE = {
    "test_presigned_url": "a cache has no URLs (tests/storage/test_edge_cache.py)",
    "test_local_path": "a cache has no object files (tests/storage/test_edge_cache.py)",
    "test_a_failing_stream_leaves_nothing": "leftovers are the inner backend's (run above)",
    "test_a_cancelled_stream_leaves_nothing": "leftovers are the inner backend's (run above)",
}
"""Contract tests that check what only `LocalStorage` or `S3Storage` has, by their class."""


@pytest.fixture(params=["local", "s3", "cached-local", "cached-s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    kind: str = request.param
    cached = kind.startswith("cached-")
    if cached and request.function.__name__ in NOT_FOR_THE_CACHE:
        pytest.skip(NOT_FOR_THE_CACHE[request.function.__name__])
    endpoint = request.getfixturevalue("s3_server") if kind.endswith("s3") else None
    return Backend(kind, endpoint, cached)


@pytest.fixture
async def make_storage(backend: Backend, tmp_path: Path) -> AsyncIterator[StorageFactory]:
    """A factory of started storages of one kind; keyword arguments are `S3Storage` options
    (ignored by the local folder). Each S3 storage gets a fresh bucket, each local one a fresh
    folder. All are closed at teardown."""
    made: list[Storage] = []

    async def factory(**s3_options: Any) -> Storage:
        storage: Storage
        if backend.s3_endpoint is None:
            storage = LocalStorage(tmp_path / f"media{len(made)}")
        else:
            storage = S3Storage(**s3_storage_kwargs(backend.s3_endpoint, **s3_options))
        if backend.cached:
            storage = CachingStorage(
                storage,
                memory_bytes=CACHE_MEMORY_BYTES,
                disk_dir=tmp_path / f"cache{len(made)}",
                disk_bytes=CACHE_DISK_BYTES,
                max_object_bytes=CACHE_MAX_OBJECT_BYTES,
            )
        made.append(storage)
        await storage.start()
        return storage

    try:
        yield factory
    finally:
        for storage in made:
            await storage.close()


@pytest.fixture
async def storage(make_storage: StorageFactory) -> Storage:
    return await make_storage()


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[offset : offset + size]


async def read_all(storage: Storage, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, **kwargs)])


def pattern(size: int) -> bytes:
    """`size` bytes that differ at every offset modulo a prime (a shifted range is caught)."""
    block = bytes(i % 251 for i in range(251 * 16))
    return (block * (size // len(block) + 1))[:size]


# -- round trips -------------------------------------------------------------------------------


async def test_put_bytes_round_trip(storage: Storage) -> None:
    data = pattern(10_000)
    before = time.time()
    info = await storage.put_bytes("vod/abc/720p/0001.ts", data)
    assert info.key == "vod/abc/720p/0001.ts"
    assert info.size == len(data)
    assert info.content_type == "video/mp2t"
    assert info.etag.startswith('"') and info.etag.endswith('"') and len(info.etag) > 2
    assert info.modified.tzinfo is not None and info.modified.utcoffset() == timedelta(0)
    assert abs(info.modified.timestamp() - before) < 5
    assert await storage.read_bytes("vod/abc/720p/0001.ts") == data
    assert await storage.stat("vod/abc/720p/0001.ts") == info


async def test_overwrite_replaces_content_and_etag(storage: Storage) -> None:
    first = await storage.put_bytes("k.bin", b"first")
    second = await storage.put_bytes("k.bin", b"second, longer")
    assert second.etag != first.etag
    assert second.size == 14
    assert await storage.read_bytes("k.bin") == b"second, longer"
    assert [o.key for o in await storage.list("")] == ["k.bin"]


async def test_empty_object(storage: Storage) -> None:
    info = await storage.put_bytes("empty", b"")
    assert info.size == 0
    assert await storage.read_bytes("empty") == b""
    assert await read_all(storage, "empty") == b""
    assert await read_all(storage, "empty", start=0, stop=10) == b""


async def test_put_file_and_download(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "source.mp4"
    source.write_bytes(pattern(300_000))
    info = await storage.put_file("uploads/v1/source", source)
    assert info.size == 300_000
    assert info.content_type == "application/octet-stream"
    target = tmp_path / "out" / "copy.mp4"
    target.parent.mkdir()
    await storage.download("uploads/v1/source", target)
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.mp4"]  # no temp left


async def test_download_replaces_an_existing_file(storage: Storage, tmp_path: Path) -> None:
    await storage.put_bytes("a.json", b'{"new": true}')
    target = tmp_path / "a.json"
    target.write_bytes(b"old content that is longer than the new one")
    await storage.download("a.json", target)
    assert target.read_bytes() == b'{"new": true}'


async def test_put_file_of_a_missing_file(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"missing\.mp4") as caught:
        await storage.put_file("x", tmp_path / "missing.mp4")
    assert not isinstance(caught.value, ObjectNotFound)
    assert await storage.list("") == []


async def test_put_stream_round_trip(storage: Storage) -> None:
    data = pattern(200_000)
    info = await storage.put_stream("live/rec/part.m4s", chunks_of(data, 7_000))
    assert info.size == len(data)
    assert info.content_type == "video/iso.segment"
    assert await storage.read_bytes("live/rec/part.m4s") == data


async def test_content_types(storage: Storage) -> None:
    expected = {
        "v/master.m3u8": "application/vnd.apple.mpegurl",
        "v/0.ts": "video/mp2t",
        "v/0.m4s": "video/iso.segment",
        "v/init.mp4": "video/mp4",
        "v/thumbs.vtt": "text/vtt",
        "v/poster.jpg": "image/jpeg",
        "v/sprite.png": "image/png",
        "v/info.json": "application/json",
        "v/source": "application/octet-stream",
        "v/x.weird": "application/octet-stream",
    }
    for key, content_type in expected.items():
        assert (await storage.put_bytes(key, b"x")).content_type == content_type
        assert (await storage.stat(key)).content_type == content_type
    assert {o.key: o.content_type for o in await storage.list("v/")} == expected


async def test_explicit_content_type_is_kept(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "upload"
    source.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    await storage.put_file("uploads/u1/source", source, content_type="video/quicktime")
    await storage.put_bytes("b", b"{}", content_type="application/json")
    await storage.put_stream("s", chunks_of(b"WEBVTT\n", 3), content_type="text/vtt")
    assert (await storage.stat("uploads/u1/source")).content_type == "video/quicktime"
    assert (await storage.stat("b")).content_type == "application/json"
    assert (await storage.stat("s")).content_type == "text/vtt"


# -- ranged reads ------------------------------------------------------------------------------


async def test_ranged_reads(storage: Storage) -> None:
    data = pattern(10_240)
    await storage.put_bytes("seg.ts", data)
    assert await read_all(storage, "seg.ts") == data
    assert await read_all(storage, "seg.ts", start=1000) == data[1000:]
    assert await read_all(storage, "seg.ts", start=1000, stop=3000) == data[1000:3000]
    assert await read_all(storage, "seg.ts", start=10_239) == data[-1:]
    assert await read_all(storage, "seg.ts", start=10_239, stop=10_240) == data[-1:]
    assert await read_all(storage, "seg.ts", start=0, stop=1) == data[:1]
    assert await read_all(storage, "seg.ts", start=500, stop=500) == b""
    assert await read_all(storage, "seg.ts", stop=20_000) == data  # clamped like a slice
    assert await read_all(storage, "seg.ts", start=10_240) == b""
    assert await read_all(storage, "seg.ts", start=50_000, stop=60_000) == b""


async def test_read_chunk_size(storage: Storage) -> None:
    data = pattern(100_000)
    await storage.put_bytes("big", data)
    chunks = [chunk async for chunk in storage.read("big", start=10, chunk_size=4096)]
    assert all(0 < len(chunk) <= 4096 for chunk in chunks)
    assert b"".join(chunks) == data[10:]


async def test_read_arguments_are_checked(storage: Storage) -> None:
    await storage.put_bytes("k", b"abc")
    with pytest.raises(UsageError):
        storage.read("k", start=-1)
    with pytest.raises(UsageError):
        storage.read("k", start=2, stop=1)
    with pytest.raises(UsageError):
        storage.read("k", chunk_size=0)


async def test_a_reader_stopping_early(storage: Storage) -> None:
    await storage.put_bytes("big", pattern(1 * MiB))
    reader = storage.read("big", chunk_size=1024)
    first = await anext(reader)
    assert first == pattern(1024)
    await reader.aclose()  # type: ignore[attr-defined]
    assert await storage.read_bytes("big") == pattern(1 * MiB)  # nothing left in a bad state


# -- missing objects -----------------------------------------------------------------------------


async def test_missing_object(storage: Storage, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    target = downloads / "out.ts"
    with pytest.raises(ObjectNotFound, match=r"nope/1\.ts"):
        await storage.stat("nope/1.ts")
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/1.ts")
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/1.ts", start=5, stop=5)
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/1.ts", start=100)
    with pytest.raises(ObjectNotFound):
        await storage.read_bytes("nope/1.ts")
    with pytest.raises(ObjectNotFound):
        await storage.download("nope/1.ts", target)
    assert os.listdir(downloads) == []  # no temp file either


async def test_a_folder_is_no_object(storage: Storage) -> None:
    await storage.put_bytes("vod/abc/master.m3u8", b"#EXTM3U\n")
    with pytest.raises(ObjectNotFound):
        await storage.stat("vod/abc")
    with pytest.raises(ObjectNotFound):
        await storage.read_bytes("vod")
    await storage.delete("vod/abc")  # no object there: nothing happens
    assert await storage.read_bytes("vod/abc/master.m3u8") == b"#EXTM3U\n"


# -- delete and list -----------------------------------------------------------------------------


async def test_delete_is_idempotent(storage: Storage) -> None:
    await storage.put_bytes("a/b/c.ts", b"x")
    await storage.delete("a/b/c.ts")
    with pytest.raises(ObjectNotFound):
        await storage.stat("a/b/c.ts")
    await storage.delete("a/b/c.ts")
    await storage.delete("never/was")
    assert await storage.list("") == []


async def test_list_and_delete_prefix(storage: Storage) -> None:
    keys = ["vod/a/1.ts", "vod/a/2/x.ts", "vod/a/master.m3u8", "vod/ab/y", "vod/b/z", "other"]
    for key in reversed(keys):
        await storage.put_bytes(key, key.encode())

    listed = await storage.list("vod/a/")
    assert [o.key for o in listed] == ["vod/a/1.ts", "vod/a/2/x.ts", "vod/a/master.m3u8"]
    assert [o.size for o in listed] == [
        len(k) for k in ("vod/a/1.ts", "vod/a/2/x.ts", "vod/a/master.m3u8")
    ]
    for info in listed:
        stat = await storage.stat(info.key)
        assert (info.size, info.etag) == (stat.size, stat.etag)
        assert abs((info.modified - stat.modified).total_seconds()) < 1
        assert info.modified.tzinfo is not None
    assert [o.key for o in await storage.list("vod/a")] == [
        "vod/a/1.ts",
        "vod/a/2/x.ts",
        "vod/a/master.m3u8",
        "vod/ab/y",
    ]
    assert [o.key for o in await storage.list("")] == sorted(keys)
    assert await storage.list("nothing/") == []

    assert await storage.delete_prefix("vod/a/") == 3
    assert [o.key for o in await storage.list("")] == ["other", "vod/ab/y", "vod/b/z"]
    assert await storage.delete_prefix("vod/a/") == 0
    assert await storage.delete_prefix("vod/") == 2
    assert [o.key for o in await storage.list("")] == ["other"]
    local = storage.local_path("other")
    if local is not None:  # the folder leaves no empty folders behind
        assert sorted(p.name for p in local.parent.iterdir()) == [".partial", "other"]


async def test_delete_prefix_needs_a_prefix(storage: Storage) -> None:
    await storage.put_bytes("keep", b"x")
    with pytest.raises(InvalidKey):
        await storage.delete_prefix("")
    assert await storage.read_bytes("keep") == b"x"


async def test_put_after_delete_prefix_of_its_folder(storage: Storage) -> None:
    await storage.put_bytes("vod/x/1.ts", b"1")
    assert await storage.delete_prefix("vod/x/") == 1
    await storage.put_bytes("vod/x/2.ts", b"2")
    assert [o.key for o in await storage.list("vod/")] == ["vod/x/2.ts"]


# -- key rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", BAD_KEYS)
async def test_invalid_keys_are_refused_everywhere(
    storage: Storage, bad_key: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.put_bytes(bad_key, b"x"),
        lambda: storage.put_file(bad_key, source),
        lambda: storage.put_stream(bad_key, chunks_of(b"x", 1)),
        lambda: storage.stat(bad_key),
        lambda: read_all(storage, bad_key),
        lambda: storage.read_bytes(bad_key),
        lambda: storage.download(bad_key, tmp_path / "out"),
        lambda: storage.delete(bad_key),
        lambda: storage.presigned_url(bad_key, expires_seconds=60),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidKey):
            await attempt()
    with pytest.raises(InvalidKey):
        storage.local_path(bad_key)
    if bad_key not in ("", "a/"):  # both are valid prefixes: everything, and the folder a
        with pytest.raises(InvalidKey):
            await storage.list(bad_key)
        with pytest.raises(InvalidKey):
            await storage.delete_prefix(bad_key)
    assert await storage.list("") == []
    assert not (tmp_path / "out").exists()


async def test_longest_key(storage: Storage) -> None:
    key = "/".join(["x" * 99] * 5) + "/" + "y" * 12  # 512 characters
    assert len(key) == 512
    await storage.put_bytes(key, b"deep")
    assert await storage.read_bytes(key) == b"deep"
    with pytest.raises(InvalidKey):
        await storage.put_bytes(key + "z", b"too long")


# -- big objects ---------------------------------------------------------------------------------


async def test_multipart_put_file(make_storage: StorageFactory, tmp_path: Path) -> None:
    storage = await make_storage(multipart_threshold=5 * MiB, part_size=5 * MiB)
    source = tmp_path / "big.mp4"
    source.write_bytes(os.urandom(12 * MiB))
    info = await storage.put_file("uploads/big/source", source)
    assert info.size == 12 * MiB
    if isinstance(storage, S3Storage):
        assert info.etag.endswith('-3"')  # three parts: 5 + 5 + 2 MiB
    target = tmp_path / "back.mp4"
    await storage.download("uploads/big/source", target)
    assert _digest(target.read_bytes()) == _digest(source.read_bytes())


async def test_put_stream_of_a_big_object(make_storage: StorageFactory) -> None:
    storage = await make_storage(multipart_threshold=5 * MiB, part_size=5 * MiB)
    block = os.urandom(64 * 1024)
    produced = hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        for i in range(192):  # 12 MiB in 64 KiB chunks
            chunk = bytes([i]) + block[1:]
            produced.update(chunk)
            yield chunk

    info = await storage.put_stream("vod/big/source", generate())
    assert info.size == 12 * MiB
    if isinstance(storage, S3Storage):
        assert info.etag.endswith('-3"')
    stored = hashlib.sha256()
    async for chunk in storage.read("vod/big/source", chunk_size=MiB):
        stored.update(chunk)
    assert stored.hexdigest() == produced.hexdigest()
    ranged = await read_all(storage, "vod/big/source", start=5 * MiB - 3, stop=5 * MiB + 3)
    assert ranged == block[-3:] + bytes([80]) + block[1:3]


class SourceFailed(Exception):
    pass


async def test_a_failing_stream_leaves_nothing(make_storage: StorageFactory) -> None:
    storage = await make_storage(multipart_threshold=5 * MiB, part_size=5 * MiB)
    block = os.urandom(256 * 1024)

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(4 * 6):  # 6 MiB: past the multipart threshold
            yield block
        raise SourceFailed("the uploader went away")

    with pytest.raises(SourceFailed):
        await storage.put_stream("uploads/u/source", failing())
    with pytest.raises(ObjectNotFound):
        await storage.stat("uploads/u/source")
    assert await storage.list("") == []
    await _assert_no_leftovers(storage)


async def test_a_cancelled_stream_leaves_nothing(make_storage: StorageFactory) -> None:
    storage = await make_storage(multipart_threshold=5 * MiB, part_size=5 * MiB)
    block = os.urandom(256 * 1024)
    sent = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for _ in range(4 * 6):
            yield block
        sent.set()
        await asyncio.sleep(3600)
        yield block

    task = asyncio.create_task(storage.put_stream("uploads/c/source", stalls()))
    async with asyncio.timeout(15):
        await sent.wait()
    await asyncio.sleep(0.2)  # let the first part reach the store
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ObjectNotFound):
        await storage.stat("uploads/c/source")
    await _assert_no_leftovers(storage)


async def test_nothing_visible_while_writing(storage: Storage) -> None:
    release = asyncio.Event()
    halfway = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first half, "
        halfway.set()
        await release.wait()
        yield b"second half"

    task = asyncio.create_task(storage.put_stream("vod/v/index.m3u8", slow()))
    async with asyncio.timeout(10):
        await halfway.wait()
    await asyncio.sleep(0.05)
    with pytest.raises(ObjectNotFound):
        await storage.stat("vod/v/index.m3u8")
    assert await storage.list("vod/") == []
    local = storage.local_path("vod/v/index.m3u8")
    if local is not None:
        assert not local.exists()
    release.set()
    info = await task
    assert info.size == len(b"first half, second half")
    assert await storage.read_bytes("vod/v/index.m3u8") == b"first half, second half"


async def test_concurrent_writers_of_one_key(storage: Storage) -> None:
    contents = [bytes([i]) * (50_000 + i) for i in range(8)]
    await asyncio.gather(*(storage.put_bytes("race", data) for data in contents))
    assert await storage.read_bytes("race") in contents
    assert [o.key for o in await storage.list("")] == ["race"]


# -- what differs by backend ---------------------------------------------------------------------


async def test_presigned_url(storage: Storage) -> None:
    data = pattern(5000)
    await storage.put_bytes("vod/p/0.ts", data)
    url = await storage.presigned_url("vod/p/0.ts", expires_seconds=300)
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    assert url is not None and url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "video/mp2t"
            assert await response.read() == data


async def test_local_path(storage: Storage) -> None:
    await storage.put_bytes("vod/l/0.ts", b"segment")
    path = storage.local_path("vod/l/0.ts")
    if isinstance(storage, S3Storage):
        assert path is None
        return
    assert path is not None and path.read_bytes() == b"segment"
    assert isinstance(storage, LocalStorage)
    assert path == storage.root / "vod" / "l" / "0.ts"


async def test_check_and_close(storage: Storage) -> None:
    await storage.check()
    await storage.close()
    await storage.close()  # idempotent


# -- local only ----------------------------------------------------------------------------------


async def test_local_refuses_symlinks_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "media")
    await storage.start()
    (storage.root / "vod").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey, match="outside"):
        await storage.read_bytes("vod/secret")
    with pytest.raises(InvalidKey, match="outside"):
        await storage.put_bytes("vod/planted", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert await storage.list("") == []  # symlinked folders are not followed


async def test_local_start_removes_stale_partial_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media", stale_partial_seconds=3600)
    await storage.start()
    stale = storage.root / ".partial" / "stale"
    fresh = storage.root / ".partial" / "fresh"
    stale.write_bytes(b"crashed write")
    fresh.write_bytes(b"write under way")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    await LocalStorage(tmp_path / "media", stale_partial_seconds=3600).start()
    assert not stale.exists()
    assert fresh.exists()


async def test_local_unusable_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    with pytest.raises(StorageError, match="start"):
        await LocalStorage(tmp_path / "file" / "media").start()
    with pytest.raises(StorageError, match="not a folder"):
        await LocalStorage(tmp_path / "missing").check()


async def test_local_key_under_an_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media")
    await storage.start()
    await storage.put_bytes("a", b"object a")
    with pytest.raises(StorageError) as caught:
        await storage.put_bytes("a/b", b"x")
    assert not isinstance(caught.value, ObjectNotFound)
    with pytest.raises(ObjectNotFound):
        await storage.stat("a/b")
    assert os.listdir(storage.root / ".partial") == []


# -- S3 only -------------------------------------------------------------------------------------


async def test_s3_pagination(s3_server: str) -> None:
    storage = S3Storage(**s3_storage_kwargs(s3_server, list_page_size=2, delete_batch_size=3))
    await storage.start()
    try:
        keys = [f"vod/p/{i:02d}.ts" for i in range(7)]
        for key in keys:
            await storage.put_bytes(key, b"x")
        assert [o.key for o in await storage.list("vod/")] == keys
        assert await storage.delete_prefix("vod/p/") == 7
        assert await storage.list("") == []
    finally:
        await storage.close()


async def test_s3_key_prefix_confines_every_operation(s3_server: str) -> None:
    kwargs = s3_storage_kwargs(s3_server)
    whole = S3Storage(**kwargs)
    tenant = S3Storage(**{**kwargs, "prefix": "/tenant/media/"})
    await whole.start()
    await tenant.start()
    try:
        assert tenant.prefix == "tenant/media/"
        await whole.put_bytes("vod/outside.ts", b"outside")
        await tenant.put_bytes("vod/inside.ts", b"inside")
        assert [o.key for o in await whole.list("")] == [
            "tenant/media/vod/inside.ts",
            "vod/outside.ts",
        ]
        assert [o.key for o in await tenant.list("")] == ["vod/inside.ts"]
        assert await tenant.read_bytes("vod/inside.ts") == b"inside"
        with pytest.raises(ObjectNotFound):
            await tenant.stat("vod/outside.ts")
        assert await tenant.delete_prefix("vod/") == 1
        assert [o.key for o in await whole.list("")] == ["vod/outside.ts"]
    finally:
        await tenant.close()
        await whole.close()


async def test_s3_start_creates_the_bucket_once(s3_server: str) -> None:
    kwargs = s3_storage_kwargs(s3_server)
    first, second = S3Storage(**kwargs), S3Storage(**kwargs)
    await first.start()
    await second.start()  # the bucket exists now: no error
    try:
        await first.put_bytes("k", b"shared")
        assert await second.read_bytes("k") == b"shared"
        await second.check()
    finally:
        await first.close()
        await second.close()


async def test_s3_missing_bucket(s3_server: str) -> None:
    storage = S3Storage(**s3_storage_kwargs(s3_server, create_bucket=False))
    await storage.start()
    try:
        with pytest.raises(StorageError, match="head_bucket"):
            await storage.check()
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await storage.put_bytes("k", b"x")
    finally:
        await storage.close()


async def test_s3_use_before_start(s3_server: str) -> None:
    storage = S3Storage(**s3_storage_kwargs(s3_server))
    with pytest.raises(UsageError, match="before start"):
        await storage.stat("k")


async def test_s3_unreachable_server_raises_storage_errors(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with pytest.raises(StorageError, match="head_bucket"):
        await S3Storage(**s3_storage_kwargs(endpoint, max_attempts=1)).start()

    storage = S3Storage(**s3_storage_kwargs(endpoint, max_attempts=1, create_bucket=False))
    await storage.start()
    source = tmp_path / "f"
    source.write_bytes(b"x")
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "check": storage.check,
        "put_bytes": lambda: storage.put_bytes("k", b"x"),
        "put_file": lambda: storage.put_file("k", source),
        "put_stream": lambda: storage.put_stream("k", chunks_of(b"xyz", 1)),
        "stat": lambda: storage.stat("k"),
        "read": lambda: read_all(storage, "k"),
        "read range": lambda: read_all(storage, "k", start=1, stop=2),
        "read_bytes": lambda: storage.read_bytes("k"),
        "download": lambda: storage.download("k", tmp_path / "out"),
        "delete": lambda: storage.delete("k"),
        "delete_prefix": lambda: storage.delete_prefix("vod/"),
        "list": lambda: storage.list(""),
    }
    try:
        for name, operation in operations.items():
            started = time.monotonic()
            with pytest.raises(StorageError) as caught:
                await operation()
            assert type(caught.value) is StorageError, name
            assert "127.0.0.1" in str(caught.value), name
            assert time.monotonic() - started < 3, name
    finally:
        await storage.close()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_attempts", [1, 2])
async def test_s3_max_attempts_counts_every_attempt(max_attempts: int) -> None:
    requests = 0

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """An overloaded S3: every request gets a 503, which botocore retries."""
        nonlocal requests
        async with asyncio.timeout(5):
            await reader.readuntil(b"\r\n\r\n")
        requests += 1
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n")
        writer.write(b"Connection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(unavailable, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = S3Storage(
        **s3_storage_kwargs(
            f"http://127.0.0.1:{port}", max_attempts=max_attempts, create_bucket=False
        )
    )
    await storage.start()
    try:
        with pytest.raises(StorageError, match="503"):
            await storage.stat("k")
    finally:
        await storage.close()
        server.close()
        await server.wait_closed()
    assert requests == max_attempts


# -- helpers -------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _assert_no_leftovers(storage: Storage) -> None:
    """No temp file (local) or unfinished multipart upload (S3) remains."""
    if isinstance(storage, LocalStorage):
        assert os.listdir(storage.root / ".partial") == []
        return
    assert isinstance(storage, S3Storage)
    async with get_session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=_endpoint_of(storage),
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        uploads = await client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []


def _endpoint_of(storage: S3Storage) -> str:
    endpoint = storage.endpoint_url
    assert endpoint is not None
    return endpoint
