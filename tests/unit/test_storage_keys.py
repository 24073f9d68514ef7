"""The storage key rules, content types, `open_storage`'s reading of storage_url and the cutting
of uploads into multipart parts (no I/O)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripplecast.config import Settings
from ripplecast.errors import UsageError
from ripplecast.storage import (
    InvalidKey,
    LocalStorage,
    S3Storage,
    check_key,
    check_prefix,
    content_type_for,
    open_storage,
)
from ripplecast.storage._parts import stream_parts
from ripplecast.storage.base import MAX_KEY_LENGTH

GOOD_KEYS = [
    "a",
    "vod/abc123/master.m3u8",
    "vod/abc/720p/seg_00001.ts",
    "uploads/u-1/source",
    "..a/b..",  # dots inside a segment are fine; only '.' and '..' segments are not
    ".hidden/x",
    "A.B-C_D/e",
    "x" * MAX_KEY_LENGTH,
]

BAD_KEYS = {
    "": "empty",
    "/abs": "empty segment",
    "a/": "empty segment",
    "a//b": "empty segment",
    "../x": "'..' segment",
    "a/../b": "'..' segment",
    "a/./b": "'.' segment",
    ".": "'.' segment",
    "a\\b": "characters",
    "a\x00b": "characters",
    "a\tb": "characters",
    "a\x7fb": "characters",
    "sp ace": "characters",
    "é": "characters",
    "a?b": "characters",
    "a%2Fb": "characters",
    "x" * (MAX_KEY_LENGTH + 1): "characters long",
    ".partial/x": "reserved",
    ".partial": "reserved",
}


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS.items())
def test_bad_keys_say_why(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        check_key(key)


def test_a_non_string_key() -> None:
    with pytest.raises(InvalidKey, match="str"):
        check_key(b"vod/x")  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_no_accepted_key_can_leave_its_root(key: str) -> None:
    try:
        check_key(key)
    except InvalidKey:
        return
    assert not os.path.isabs(key)
    assert os.path.normpath(os.path.join("/root", key)).startswith("/root/")
    assert all(32 < ord(c) < 127 for c in key)


def test_prefixes() -> None:
    assert check_prefix("") == ""
    assert check_prefix("vod/") == "vod/"
    assert check_prefix("vod/ab") == "vod/ab"
    for bad in ("/", "vod//", "../", "a\\b/", ".partial/"):
        with pytest.raises(InvalidKey, match="prefix"):
            check_prefix(bad)


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("vod/a/master.m3u8", "application/vnd.apple.mpegurl"),
        ("vod/a/720p/index.M3U8", "application/vnd.apple.mpegurl"),
        ("a/0.ts", "video/mp2t"),
        ("a/0.m4s", "video/iso.segment"),
        ("a/init.mp4", "video/mp4"),
        ("a/thumbs.vtt", "text/vtt"),
        ("a/poster.jpg", "image/jpeg"),
        ("a/sprite.png", "image/png"),
        ("a/meta.json", "application/json"),
        ("uploads/u/source", "application/octet-stream"),
        ("a.ts/source", "application/octet-stream"),  # a dot in a folder is no extension
        ("a/file.tar.gz", "application/octet-stream"),
    ],
)
def test_content_types(key: str, content_type: str) -> None:
    assert content_type_for(key) == content_type


# -- open_storage --------------------------------------------------------------------------------


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)  # type: ignore[arg-type]


def test_default_is_the_media_folder_in_the_data_dir(tmp_path: Path) -> None:
    storage = open_storage(settings(tmp_path))
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "data" / "media").resolve()


def test_a_path_or_file_url(tmp_path: Path) -> None:
    by_path = open_storage(settings(tmp_path, storage_url=str(tmp_path / "m1")))
    assert isinstance(by_path, LocalStorage) and by_path.root == (tmp_path / "m1").resolve()
    by_url = open_storage(settings(tmp_path, storage_url=f"file://{tmp_path}/m%202"))
    assert isinstance(by_url, LocalStorage) and by_url.root == (tmp_path / "m 2").resolve()
    with pytest.raises(UsageError, match="file:///PATH"):
        open_storage(settings(tmp_path, storage_url="file://elsewhere/srv/media"))


def test_an_s3_url(tmp_path: Path) -> None:
    storage = open_storage(
        settings(
            tmp_path,
            storage_url="s3://media-bucket/tenant/media/",
            s3_endpoint_url="http://127.0.0.1:9000",
            s3_access_key_id="AKID",
            s3_secret_access_key="SECRET",
        )
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("media-bucket", "tenant/media/")
    assert storage.endpoint_url == "http://127.0.0.1:9000"
    assert storage.local_path("k") is None
    plain = open_storage(settings(tmp_path, storage_url="s3://media-bucket"))
    assert isinstance(plain, S3Storage)
    assert (plain.prefix, plain.endpoint_url) == ("", None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/media", "unsupported scheme 'http'"),
        ("gs://bucket", "unsupported scheme 'gs'"),
        ("s3://", "no S3 bucket name"),
        ("s3://Upper_Case", "no S3 bucket name"),
        ("s3://ab", "no S3 bucket name"),
        ("s3://bucket/../x", "invalid S3 key prefix"),
        ("s3://key:hunter2@bucket/x", "credentials go in"),
        ("s3://bucket/x?region=eu", "s3://BUCKET"),
    ],
)
def test_bad_storage_urls(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        open_storage(settings(tmp_path, storage_url=url))
    assert "hunter2" not in str(caught.value)


# -- multipart parts -----------------------------------------------------------------------------


@given(
    st.lists(st.binary(max_size=40), max_size=20),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=1, max_value=16),
)
def test_stream_parts_are_exact_whatever_the_chunks(
    chunks: list[bytes], head_size: int, part_size: int
) -> None:
    data = b"".join(chunks)
    head, rest = data[:head_size], data[head_size:]

    async def source() -> AsyncIterator[bytes]:
        for offset in range(0, len(rest), 7):
            yield rest[offset : offset + 7]

    async def cut() -> list[bytes]:
        return [part async for part in stream_parts(bytearray(head), source(), part_size)]

    parts = asyncio.run(cut())
    assert b"".join(parts) == data
    assert all(len(part) == part_size for part in parts[:-1])
    assert all(0 < len(part) <= part_size for part in parts)
