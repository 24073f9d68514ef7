"""What every media response tells a cache (see docs/cdn.md): a real node, a real ffmpeg
publisher, a real transcoded video, and each kind of response checked for Cache-Control, ETag,
Vary and its conditional 304."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from media import make_video
from support import NodeFactory, Process, ffmpeg_publish_args, require_program, wait_until
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

pytestmark = pytest.mark.usefixtures("ffmpeg_tools")

NO_STORE = "no-store"


@pytest.fixture
def ffmpeg_tools() -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


def max_age(cache_control: str, directive: str = "max-age") -> int:
    found = re.search(rf"(?:^|[ ,]){directive}=(\d+)", cache_control)
    assert found is not None, (directive, cache_control)
    return int(found.group(1))


async def get(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with http.get(url, headers=headers) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


async def assert_not_modified(http: aiohttp.ClientSession, url: str, **headers: str) -> None:
    """The response's own ETag brings a 304 that repeats its validators and caching headers."""
    status, first, _ = await get(http, url, **headers)
    assert status == 200, url
    status, again, body = await get(http, url, **headers, **{"If-None-Match": first["ETag"]})
    assert (status, body) == (304, b""), url
    for name in ("ETag", "Cache-Control", "Access-Control-Allow-Origin"):
        assert again[name] == first[name], (url, name)
    assert again.get("Vary") == first.get("Vary"), url
    status, _, body = await get(http, url, **headers, **{"If-None-Match": '"other"'})
    assert status == 200 and body, url


async def test_live_responses_tell_caches_what_to_keep(make_node: NodeFactory) -> None:
    # 1 s segments and a 6-segment window (+3 kept): segments stay fetchable about 9 s.
    async with make_node(hls_segment_seconds=1.0, hls_window_segments=6) as running:
        node, base = running.node, f"{running.http}/live"
        owner = await token_for(node, "dave")
        await node.accounts.create_channel("dave", "hidden", visibility="private")  # type: ignore[arg-type]
        key = (await node.accounts.create_stream_key("hidden")).key
        publishers = [
            await Process.start(ffmpeg_publish_args(f"{running.rtmp}/{name}", seconds=30))
            for name in ("open", key)
        ]
        try:
            for name in ("open", "hidden"):
                await wait_until(
                    lambda n=name: (s := node.hub.get(n)) is not None and s.stats.keyframes >= 3,  # type: ignore[misc]
                    15,
                    f"segments of {name}",
                )
            async with aiohttp.ClientSession() as http:
                await check_live_open(http, base)
                await check_live_private(http, base, node, owner)
                await check_live_errors(http, base, node)
        finally:
            for publisher in publishers:
                await publisher.kill()


async def check_live_open(http: aiohttp.ClientSession, base: str) -> None:
    status, headers, body = await get(http, f"{base}/open/index.m3u8")
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=1"  # half a 1 s segment, at least 1 s
    assert headers["ETag"].startswith('"') and "Vary" not in headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    segments = [line for line in body.decode().splitlines() if line.endswith(".ts")]
    assert segments

    # The playlist changes once a segment: an unchanged one is a 304, a changed one a new tag.
    not_modified = 0
    for _ in range(20):
        status, again, body = await get(http, f"{base}/open/index.m3u8")
        status, conditional, rest = await get(
            http, f"{base}/open/index.m3u8", **{"If-None-Match": again["ETag"]}
        )
        if status == 304:
            assert rest == b"" and conditional["ETag"] == again["ETag"]
            assert conditional["Cache-Control"] == "public, max-age=1"
            not_modified += 1
        else:  # a segment was cut in between
            assert status == 200 and conditional["ETag"] != again["ETag"] and rest != body
    assert not_modified >= 10

    segment = f"{base}/open/{segments[-1]}"
    status, headers, data = await get(http, segment)
    assert status == 200 and data[0] == 0x47
    assert headers["Cache-Control"] == "public, max-age=9"  # (6 listed + 3 kept) x 1 s
    assert headers["Content-Type"] == "video/mp2t" and "Vary" not in headers
    await assert_not_modified(http, segment)
    status, _, body = await get(http, segment, **{"If-None-Match": "*"})
    assert (status, body) == (304, b"")

    async with http.get(f"{base}/open.flv") as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == NO_STORE


async def check_live_private(
    http: aiohttp.ClientSession, base: str, node: Any, owner: dict[str, str]
) -> None:
    # The owner's own view is for the owner only.
    status, headers, body = await get(http, f"{base}/hidden/index.m3u8", **owner)
    assert status == 200
    assert headers["Cache-Control"] == "private, max-age=1"
    assert headers["Vary"] == "Cookie, Authorization"
    segment = next(line for line in body.decode().splitlines() if line.endswith(".ts"))
    status, headers, _ = await get(http, f"{base}/hidden/{segment}", **owner)
    assert status == 200 and headers["Cache-Control"] == "private, max-age=9"
    await assert_not_modified(http, f"{base}/hidden/{segment}", **owner)

    # A signed URL: cacheable under that URL (query string included), within the grant.
    grant = node.signed_query("/live/hidden", ttl=300)
    status, headers, body = await get(http, f"{base}/hidden/index.m3u8?{grant}")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=1"
    signed_segment = next(line for line in body.decode().splitlines() if ".ts?" in line)
    assert signed_segment.endswith(grant)
    status, headers, _ = await get(http, f"{base}/hidden/{signed_segment}")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=9"
    await assert_not_modified(http, f"{base}/hidden/{signed_segment}")
    # A grant about to expire caps freshness to what is left of it.
    short = node.signed_query("/live/hidden", ttl=5)
    status, headers, _ = await get(http, f"{base}/hidden/{segment}?{short}")
    assert status == 200 and max_age(headers["Cache-Control"]) <= 5
    # Bound to the client's address: no shared cache may keep it.
    bound = node.signed_query("/live/hidden", ttl=300, ip="127.0.0.1")
    status, headers, _ = await get(http, f"{base}/hidden/{segment}?{bound}")
    assert status == 200 and headers["Cache-Control"] == "private, max-age=9"


async def check_live_errors(http: aiohttp.ClientSession, base: str, node: Any) -> None:
    forged = node.signed_query("/live/hidden").replace("rc_sig=", "rc_sig=A")
    for path, expected in [
        ("hidden/index.m3u8", 404),  # private, no credentials: as if it did not exist
        ("hidden.flv", 404),
        ("nosuch/index.m3u8", 404),
        ("nosuch/1.ts", 404),
        ("open/999999999.ts", 404),  # a segment not made yet
        ("bad!name/index.m3u8", 400),
        (f"hidden/index.m3u8?{forged}", 403),
    ]:
        status, headers, _ = await get(http, f"{base}/{path}")
        assert status == expected, path
        assert headers["Cache-Control"] == NO_STORE, path
        assert headers["Access-Control-Allow-Origin"] == "*", path


async def test_vod_responses_tell_caches_what_to_keep(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=2, size="320x240")
    settings = {**VOD_SETTINGS, "vod_ladder": ["240:250k:48k"], "vod_cdn_max_age_seconds": 120}
    async with make_node(**settings) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            uploads = [
                await upload_file(http, api, jill, source, visibility=visibility)
                for visibility in ("public", "private")
            ]
            assert [status for status, _ in uploads] == [201, 201]
            public, private = [
                await wait_ready(http, api, jill, video["id"], 90) for _, video in uploads
            ]
            assert public["state"] == private["state"] == "ready"
            await check_vod_public(http, running.http + public["playlist"])
            await check_vod_private(http, running.http, private, jill, node)


async def check_vod_public(http: aiohttp.ClientSession, master: str) -> None:
    forever = "public, max-age=31536000, s-maxage=120, immutable"
    status, headers, body = await get(http, master)
    assert status == 200
    assert headers["Cache-Control"] == forever
    assert "Vary" not in headers and "Accept-Ranges" not in headers  # text is sent whole
    assert headers["ETag"] and headers["Last-Modified"]
    await assert_not_modified(http, master)
    rendition = master.rsplit("/", 1)[0] + "/" + body.decode().splitlines()[-1]
    _, _, media_playlist = await get(http, rendition)
    name = next(line for line in media_playlist.decode().splitlines() if line.endswith(".ts"))
    segment = rendition.rsplit("/", 1)[0] + "/" + name
    status, headers, data = await get(http, segment)
    assert status == 200 and headers["Cache-Control"] == forever
    assert headers["Accept-Ranges"] == "bytes" and "Vary" not in headers
    await assert_not_modified(http, segment)
    status, headers, _ = await get(http, segment, Range=f"bytes={len(data)}-")
    assert status == 416 and headers["Cache-Control"] == NO_STORE
    status, headers, _ = await get(http, segment.replace(name, "seg_99999.ts"))
    assert status == 404 and headers["Cache-Control"] == NO_STORE


async def check_vod_private(
    http: aiohttp.ClientSession,
    origin: str,
    video: dict[str, Any],
    owner: dict[str, str],
    node: Any,
) -> None:
    signed_master = origin + video["playlist"]
    assert "rc_sig=" in signed_master
    plain = f"{origin}/vod/{video['id']}/master.m3u8"

    status, headers, _ = await get(http, plain)
    assert status == 404 and headers["Cache-Control"] == NO_STORE
    status, headers, _ = await get(http, plain, **owner)
    assert status == 200
    assert headers["Cache-Control"] == "private, max-age=3600"
    assert headers["Vary"] == "Cookie, Authorization"
    owner_etag = headers["ETag"]
    await assert_not_modified(http, plain, **owner)

    status, headers, body = await get(http, signed_master)
    assert status == 200
    cache_control = headers["Cache-Control"]
    assert cache_control.startswith("public, ") and cache_control.endswith(", immutable")
    # The grant lasts signed_url_ttl_seconds (3600): no cache keeps it longer.
    assert 3500 < max_age(cache_control) <= 3600
    assert 0 < max_age(cache_control, "s-maxage") <= 120
    assert headers["ETag"] != owner_etag  # rewritten with the grant: another representation
    await assert_not_modified(http, signed_master)
    child = next(line for line in body.decode().splitlines() if "rc_sig=" in line)
    assert child.endswith(signed_master.split("?", 1)[1])

    bound = node.signed_query(f"/vod/{video['id']}", ttl=600, ip="127.0.0.1")
    status, headers, _ = await get(http, f"{plain}?{bound}")
    assert status == 200 and headers["Cache-Control"].startswith("private, max-age=")
    assert 590 <= max_age(headers["Cache-Control"]) <= 600  # the grant's time left

    forged = re.sub(r"rc_sig=[^&]+", "rc_sig=AAAA", signed_master)
    status, headers, _ = await get(http, forged)
    assert status == 403 and headers["Cache-Control"] == NO_STORE
