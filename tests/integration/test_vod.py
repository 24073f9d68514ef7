"""Video on demand end to end: upload -> probe -> job -> ladder -> storage -> /vod/ playback.

Real pieces only: ffmpeg makes the media, the node's own worker runs ffmpeg, ffprobe/ffmpeg read
the result back over HTTP, tuspy (the reference tus client) does the resumable upload.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from media import make_video
from ripplecast.db.models import Job, Upload, Video
from support import NodeFactory, require_program, run
from vod_support import CHUNK, VOD_SETTINGS, token_for, upload_file, wait_ready

pytestmark = pytest.mark.usefixtures("ffmpeg_tools")


@pytest.fixture
def ffmpeg_tools() -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


async def ffprobe_json(url: str) -> dict[str, Any]:
    code, out, err = await run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            url,
        ],
        timeout=30,
    )
    assert code == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def row_counts(node: Any) -> tuple[int, int, int]:
    async with node.db.session() as session:
        videos = (await session.execute(select(func.count()).select_from(Video))).scalar_one()
        jobs = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
        uploads = (await session.execute(select(func.count()).select_from(Upload))).scalar_one()
    return int(videos), int(jobs), int(uploads)


async def test_upload_transcode_and_play_back(make_node: NodeFactory, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=4, size="640x360")
    async with make_node(**VOD_SETTINGS) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(http, api, jill, source, title="A clip")
            assert status == 201, video
            assert video["state"] == "processing" and video["title"] == "A clip"
            assert video["width"] == 640 and video["height"] == 360
            assert abs(video["duration_seconds"] - 4) < 0.3
            ready = await wait_ready(http, api, jill, video["id"], 90)
            assert ready["state"] == "ready", ready
            assert ready["job"]["state"] == "done" and ready["job"]["progress"] == 1
            progress = ready["seen_progress"]
            assert progress == sorted(progress), "progress never goes back"
            assert [r["name"] for r in ready["renditions"]] == ["360p", "240p"]
            assert [(r["width"], r["height"]) for r in ready["renditions"]] == [
                (640, 360),
                (426, 240),
            ]

            master_url = running.http + ready["playlist"]
            async with http.get(master_url) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
                master = await r.text()
            for attribute in (
                "BANDWIDTH=",
                "AVERAGE-BANDWIDTH=",
                "RESOLUTION=640x360",
                "CODECS=",
                "FRAME-RATE=",
            ):
                assert attribute in master, (attribute, master)
            for rendition in ready["renditions"]:
                probed = await ffprobe_json(running.http + rendition["playlist"])
                kinds = {s["codec_type"]: s for s in probed["streams"]}
                assert kinds["video"]["codec_name"] == "h264"
                assert (kinds["video"]["width"], kinds["video"]["height"]) == (
                    rendition["width"],
                    rendition["height"],
                )
                assert kinds["audio"]["codec_name"] == "aac"
            # The whole master plays back without a decoding error.
            code, _, err = await run(
                ["ffmpeg", "-v", "error", "-i", master_url, "-map", "0", "-f", "null", "-"],
                timeout=60,
            )
            assert code == 0 and err == b"", err.decode()

            # Segments: ranges, validators and long caching.
            async with http.get(running.http + ready["renditions"][0]["playlist"]) as r:
                media_playlist = await r.text()
            segment = next(line for line in media_playlist.splitlines() if line.endswith(".ts"))
            base = running.http + ready["renditions"][0]["playlist"].rsplit("/", 1)[0]
            async with http.get(f"{base}/{segment}") as r:
                assert r.status == 200
                whole = await r.read()
                etag = r.headers["ETag"]
                assert "immutable" in r.headers["Cache-Control"]
                assert r.headers["Content-Type"] == "video/mp2t"
            assert whole[0] == 0x47  # MPEG-TS sync byte
            async with http.get(f"{base}/{segment}", headers={"Range": "bytes=188-375"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 188-375/{len(whole)}"
                assert await r.read() == whole[188:376]
            async with http.get(f"{base}/{segment}", headers={"Range": "bytes=-188"}) as r:
                assert r.status == 206 and await r.read() == whole[-188:]
            async with http.get(
                f"{base}/{segment}", headers={"Range": f"bytes={len(whole)}-"}
            ) as r:
                assert r.status == 416
            async with http.get(f"{base}/{segment}", headers={"If-None-Match": etag}) as r:
                assert r.status == 304
            for path in ("../../sources/" + video["id"], "%2e%2e/x", "a/../../b"):
                async with http.get(f"{running.http}/vod/{video['id']}/{path}") as r:
                    assert r.status in (400, 404), (path, r.status)

            # Poster and scrub previews.
            async with http.get(running.http + ready["poster"]) as r:
                assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"
            async with http.get(running.http + ready["thumbnails"]) as r:
                vtt = await r.text()
            assert vtt.startswith("WEBVTT")
            sprite = re.search(r"^(\S+\.jpg)#xywh=\d+,\d+,\d+,\d+$", vtt, re.M)
            assert sprite is not None
            async with http.get(f"{running.http}/vod/{video['id']}/{sprite.group(1)}") as r:
                assert r.status == 200

            # Listed publicly; searchable; deleting removes every object and row.
            async with http.get(f"{api}/videos", params={"q": "CLIP"}) as r:
                assert [v["id"] for v in (await r.json())["items"]] == [video["id"]]
            async with http.get(f"{api}/videos", params={"q": "nothing like it"}) as r:
                assert (await r.json())["total"] == 0
            assert await node.storage.list(f"vod/{video['id']}/")
            kate = await token_for(node, "kate")
            async with http.delete(f"{api}/videos/{video['id']}", headers=kate) as r:
                assert r.status == 404  # not hers
            async with http.delete(f"{api}/videos/{video['id']}", headers=jill) as r:
                assert r.status == 204
            assert await node.storage.list("") == []
            assert await row_counts(node) == (0, 0, 0)
            async with http.get(master_url) as r:
                assert r.status == 404


async def test_resumable_upload_with_the_tus_reference_client(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    from tusclient import client as tus_client  # type: ignore[import-untyped]

    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=3, size="320x240")
    size = source.stat().st_size
    assert size > 4 * CHUNK, size
    async with make_node(**{**VOD_SETTINGS, "worker_enabled": False}) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        metadata = {"filename": "clip.mp4", "title": "Resumed", "visibility": "unlisted"}

        def first_half() -> str:
            client = tus_client.TusClient(f"{api}/uploads", headers=jill)
            with source.open("rb") as stream:
                uploader = client.uploader(file_stream=stream, chunk_size=CHUNK, metadata=metadata)
                for _ in range(3):  # then the connection "drops"
                    uploader.upload_chunk()
                assert uploader.offset == 3 * CHUNK
                return str(uploader.url)

        url = await asyncio.to_thread(first_half)
        async with node.db.session() as session:
            row = (await session.execute(select(Upload))).scalar_one()
        assert (row.received, row.length, row.title) == (3 * CHUNK, size, "Resumed")

        def resume() -> int:
            client = tus_client.TusClient(f"{api}/uploads", headers=jill)
            with source.open("rb") as stream:
                uploader = client.uploader(
                    file_stream=stream, chunk_size=CHUNK, metadata=metadata, url=url
                )
                start = int(uploader.offset)  # asked with HEAD
                uploader.upload()
                return start

        assert await asyncio.to_thread(resume) == 3 * CHUNK
        videos, jobs, uploads = await row_counts(node)
        assert (videos, jobs, uploads) == (1, 1, 0)
        async with node.db.session() as session:
            video = (await session.execute(select(Video))).scalar_one()
        stored = await node.storage.read_bytes(f"sources/{video.public_id}")
        assert stored == source.read_bytes()
        assert (video.title, video.visibility.value) == ("Resumed", "unlisted")

        # Protocol errors are precise and change nothing.
        async with aiohttp.ClientSession() as http:
            tus = {**jill, "Tus-Resumable": "1.0.0"}
            async with http.post(
                f"{api}/uploads", headers={**tus, "Upload-Length": str(10**6)}
            ) as r:
                assert r.status == 201
                location = running.http + r.headers["Location"]
            patch = {**tus, "Content-Type": "application/offset+octet-stream"}
            async with http.patch(
                location, data=b"x" * 10, headers={**patch, "Upload-Offset": "5"}
            ) as r:
                assert r.status == 409
            async with http.patch(
                location, data=b"x" * 10, headers={**tus, "Upload-Offset": "0"}
            ) as r:
                assert r.status == 415
            async with http.head(location, headers={**jill, "Tus-Resumable": "0.2.2"}) as r:
                assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
            kate = await token_for(node, "kate")
            async with http.head(location, headers={**kate, "Tus-Resumable": "1.0.0"}) as r:
                assert r.status == 404  # not hers
            async with http.delete(location, headers=tus) as r:
                assert r.status == 204
            async with http.head(location, headers=tus) as r:
                assert r.status == 404
        assert await row_counts(node) == (1, 1, 0)


@pytest.mark.parametrize(
    "kind",
    ["truncated", "empty", "text", "too_long", "too_big"],
)
async def test_unusable_uploads_are_refused_and_leave_nothing(
    make_node: NodeFactory, tmp_path: Path, kind: str
) -> None:
    good = tmp_path / "good.mp4"
    await asyncio.to_thread(make_video, good, seconds=3, size="320x240")
    bad = tmp_path / "bad.bin"
    overrides: dict[str, Any] = {}
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("this is not a video\n" * 100)
    elif kind == "too_long":
        bad.write_bytes(good.read_bytes())
        overrides["probe_max_duration_seconds"] = 1.0
    else:
        bad.write_bytes(good.read_bytes())
        overrides["upload_max_bytes"] = 4096
    async with make_node(**{**VOD_SETTINGS, **overrides}) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            status, problem = await upload_file(http, api, jill, bad)
        assert 400 <= status < 500, (status, problem)
        assert problem["detail"], problem
        if kind == "too_big":
            assert status == 413
        elif kind != "empty":
            assert status == 422
        assert await row_counts(node) == (0, 0, 0)
        assert await node.storage.list("") == []
        staging = node.settings.data_dir / "uploads"
        assert not staging.exists() or list(staging.iterdir()) == []


async def test_quota_counts_stored_and_pending_bytes(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=2, size="320x240")
    size = source.stat().st_size
    quota = size + size // 2
    async with make_node(
        **{**VOD_SETTINGS, "worker_enabled": False, "upload_quota_bytes": quota}
    ) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            status, _ = await upload_file(http, api, jill, source)
            assert status == 201
            status, problem = await upload_file(http, api, jill, source)
            assert status == 413 and "quota" in problem["detail"]
            tus = {**jill, "Tus-Resumable": "1.0.0", "Upload-Length": str(size)}
            async with http.post(f"{api}/uploads", headers=tus) as r:
                assert r.status == 413
        assert await row_counts(node) == (1, 1, 0)


async def test_private_video_plays_for_owner_and_signed_url_only(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=3, size="320x240")
    async with make_node(**VOD_SETTINGS) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        kate = await token_for(node, "kate")
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(
                http, api, jill, source, visibility="private", title="Mine"
            )
            assert status == 201
            ready = await wait_ready(http, api, jill, video["id"], 90)
            assert ready["state"] == "ready"
            signed_master = running.http + ready["playlist"]
            assert "rc_sig=" in signed_master  # the owner is handed a signed URL
            plain = f"{running.http}/vod/{video['id']}/master.m3u8"
            async with http.get(plain) as r:
                assert r.status == 404  # anonymous: as if it did not exist
            async with http.get(plain, headers=kate) as r:
                assert r.status == 404
            async with http.get(f"{api}/videos/{video['id']}", headers=kate) as r:
                assert r.status == 404
            async with http.get(f"{api}/videos") as r:
                assert (await r.json())["total"] == 0
            async with http.get(plain, headers=jill) as r:
                assert r.status == 200
                assert "private" in r.headers["Cache-Control"]
            # One signed master URL plays the whole ladder: the grant reaches every URI.
            code, _, err = await run(
                ["ffmpeg", "-v", "error", "-i", signed_master, "-map", "0", "-f", "null", "-"],
                timeout=60,
            )
            assert code == 0 and err == b"", err.decode()
            forged = re.sub(r"rc_sig=[^&]+", "rc_sig=AAAA", signed_master)
            async with http.get(forged) as r:
                assert r.status == 403
            segment_url = f"{running.http}/vod/{video['id']}/360p/seg_00000.ts"
            async with http.get(segment_url) as r:
                assert r.status == 404
            # Visibility changes take effect at once.
            async with http.patch(
                f"{api}/videos/{video['id']}", json={"visibility": "public"}, headers=jill
            ) as r:
                assert r.status == 200
            async with http.get(plain) as r:
                assert r.status == 200


async def test_audio_only_upload_becomes_an_audio_rendition(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    from media import make_audio_only

    source = tmp_path / "talk.m4a"
    await asyncio.to_thread(make_audio_only, source, seconds=3)
    async with make_node(**VOD_SETTINGS) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(http, api, jill, source)
            assert status == 201, video
            ready = await wait_ready(http, api, jill, video["id"], 60)
            assert ready["state"] == "ready"
            assert [r["name"] for r in ready["renditions"]] == ["audio"]
            assert ready["poster"] is None
            probed = await ffprobe_json(running.http + ready["playlist"])
            assert [s["codec_name"] for s in probed["streams"]] == ["aac"]
    async with make_node(**{**VOD_SETTINGS, "vod_accept_audio_only": False}) as running:
        jill = await token_for(running.node, "jane")
        async with aiohttp.ClientSession() as http:
            status, problem = await upload_file(http, f"{running.http}/api/v1", jill, source)
        assert status == 422 and "video" in problem["detail"]


async def test_unfinished_uploads_expire_with_their_bytes(make_node: NodeFactory) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    async with make_node(**{**VOD_SETTINGS, "worker_enabled": False}) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        tus = {**jill, "Tus-Resumable": "1.0.0"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api}/uploads", headers={**tus, "Upload-Length": "1000"}) as r:
                assert r.status == 201
                location = running.http + r.headers["Location"]
            patch = {**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
            async with http.patch(location, data=b"x" * 400, headers=patch) as r:
                assert r.status == 204 and r.headers["Upload-Offset"] == "400"
            staged = list((node.settings.data_dir / "uploads").iterdir())
            assert len(staged) == 1 and staged[0].stat().st_size == 400
            assert await node.uploads.expire() == 0  # not yet
            async with node.db.transaction() as session:
                past = datetime.now(UTC) - timedelta(seconds=1)
                await session.execute(update(Upload).values(expires_at=past))
            async with http.head(location, headers=tus) as r:
                assert r.status == 404  # expired uploads are gone for the client at once
            assert await node.uploads.expire() == 1
            assert not staged[0].exists()
        assert await row_counts(node) == (0, 0, 0)


async def test_a_patch_cut_off_midway_keeps_the_bytes_that_arrived(make_node: NodeFactory) -> None:
    async with make_node(**{**VOD_SETTINGS, "worker_enabled": False}) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        tus = {**jill, "Tus-Resumable": "1.0.0"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api}/uploads", headers={**tus, "Upload-Length": "100000"}) as r:
                location = r.headers["Location"]
            # A raw client: headers for 100,000 bytes, half of them, then the connection drops.
            _reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
            head = (
                f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {jill['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                "Content-Length: 100000\r\n\r\n"
            )
            writer.write(head.encode() + b"y" * 50_000)
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()
            await writer.wait_closed()
            offset = "0"
            for _ in range(50):
                async with http.head(running.http + location, headers=tus) as r:
                    offset = r.headers["Upload-Offset"]
                if offset == "50000":
                    break
                await asyncio.sleep(0.1)
            assert offset == "50000"
            # The client resumes from there and finishes.
            patch = {**tus, "Content-Type": "application/offset+octet-stream"}
            async with http.patch(
                running.http + location,
                data=b"y" * 50_000,
                headers={**patch, "Upload-Offset": "50000"},
            ) as r:
                assert r.status == 422  # all 100,000 bytes arrived: "y"s are not a video
        assert await row_counts(node) == (0, 0, 0)
