"""ffmpeg publishes over RTMP; ffprobe, ffmpeg and rtmpdump read back over RTMP, HTTP-FLV, HLS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from ripplecast.media.flv import FlvHeader, FlvReader, FlvTag, make_packet
from ripplecast.media.packet import PacketKind
from support import (
    NodeFactory,
    Process,
    RunningNode,
    ffmpeg_publish_args,
    require_program,
    run,
    start_publisher,
    wait_until,
)

pytestmark = pytest.mark.ffmpeg


async def ffprobe(url: str, *extra: str, timeout: float = 20) -> dict[str, object]:
    argv = [
        require_program("ffprobe"), "-v", "error", "-rw_timeout", "5000000",
        "-show_streams", "-show_format", "-of", "json", *extra, url,
    ]  # fmt: skip
    code, out, err = await run(argv, timeout)
    assert code == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


def codecs(probe: dict[str, object]) -> dict[str, dict[str, object]]:
    streams = probe["streams"]
    assert isinstance(streams, list)
    return {str(s["codec_type"]): s for s in streams if s.get("codec_type") in ("video", "audio")}


async def test_ffprobe_reads_every_output(live_node: RunningNode) -> None:
    async with await start_publisher(live_node, "cam", seconds=10):
        await asyncio.sleep(2.5)  # let HLS finish a couple of 1 s segments
        for url in (
            f"{live_node.rtmp}/cam",
            f"{live_node.http}/live/cam.flv",
            f"{live_node.http}/live/cam/index.m3u8",
        ):
            found = codecs(await ffprobe(url))
            assert found["video"]["codec_name"] == "h264", url
            assert (found["video"]["width"], found["video"]["height"]) == (320, 240), url
            assert found["audio"]["codec_name"] == "aac", url
            assert int(str(found["audio"]["sample_rate"])) == 44100, url


async def test_rtmp_and_http_flv_read_back_whole_duration(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """Readers that join at the start get the whole stream: duration ~ what was published."""
    async with make_node(reconnect_grace_seconds=0.5) as node:
        await _read_back_whole_duration(node, tmp_path)


async def _read_back_whole_duration(live_node: RunningNode, tmp_path: Path) -> None:
    ffmpeg = require_program("ffmpeg")
    publisher = await start_publisher(live_node, "dur", seconds=5)
    async with publisher:
        outputs = {}
        readers = []
        for label, url in (
            ("rtmp", f"{live_node.rtmp}/dur"),
            ("flv", f"{live_node.http}/live/dur.flv"),
        ):
            out = tmp_path / f"{label}.flv"
            outputs[label] = out
            argv = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-rw_timeout", "8000000",
                    "-i", url, "-c", "copy", "-f", "flv", str(out)]  # fmt: skip
            readers.append(await Process.start(argv))
        code, _, err = await publisher.wait(30)
        assert code == 0, err.decode()
        # The stream ends after the grace period; readers stop with it.
        for reader in readers:
            await reader.wait(30)
    for label, out in outputs.items():
        found = await ffprobe(str(out))
        fmt = found["format"]
        assert isinstance(fmt, dict)
        duration = float(fmt["duration"])
        assert 4.0 <= duration <= 5.6, (label, duration)
        assert codecs(found)["video"]["codec_name"] == "h264"


async def test_rtmpdump_plays(live_node: RunningNode, tmp_path: Path) -> None:
    """librtmp (the library OBS uses) plays the stream."""
    rtmpdump = require_program("rtmpdump")
    out = tmp_path / "dump.flv"
    async with await start_publisher(live_node, "lib", seconds=8):
        async with await Process.start(
            [rtmpdump, "-q", "-r", f"{live_node.rtmp}/lib", "-o", str(out), "--live"]
        ):
            await asyncio.sleep(3)
    found = codecs(await ffprobe(str(out)))
    assert found["video"]["codec_name"] == "h264"
    assert found["audio"]["codec_name"] == "aac"
    reader = FlvReader()
    reader.feed(out.read_bytes())
    video = 0
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag) and event.kind == PacketKind.VIDEO:
            video += 1
    assert video >= 40  # ~3 s at 25 fps, first picture from the GOP cache


async def test_hls_segments_decode_and_timestamps_are_continuous(
    live_node: RunningNode, tmp_path: Path
) -> None:
    ffmpeg = require_program("ffmpeg")
    async with await start_publisher(live_node, "hls", seconds=8):
        await asyncio.sleep(5)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{live_node.http}/live/hls/index.m3u8") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
                assert "max-age=1" in response.headers["Cache-Control"]
                playlist = await response.text()
            names = [line for line in playlist.splitlines() if line.endswith(".ts")]
            assert len(names) >= 3, playlist
            assert "#EXT-X-PROGRAM-DATE-TIME:" in playlist
            sequence = int(playlist.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
            assert names[0] == f"{sequence}.ts"  # media-clock names match sequence numbers
            files = []
            for name in names:
                async with http.get(f"{live_node.http}/live/hls/{name}") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "video/mp2t"
                    data = await response.read()
                path = tmp_path / name
                path.write_bytes(data)
                files.append(path)
    previous_end = None
    for path in files:
        code, _, err = await run([ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"])
        assert code == 0 and not err, (path.name, err.decode())
        found = await ffprobe(
            str(path), "-show_entries", "packet=pts_time,duration_time,stream_index"
        )
        packets = found.get("packets", [])
        assert isinstance(packets, list)
        video_pts = sorted(float(p["pts_time"]) for p in packets if p["stream_index"] == 0)
        start, end = video_pts[0], video_pts[-1] + 0.04
        if previous_end is not None:
            assert abs(start - previous_end) < 0.05, (path.name, start, previous_end)
        previous_end = end


async def test_two_streams_stay_isolated(live_node: RunningNode) -> None:
    async with await start_publisher(live_node, "one", seconds=8, size="320x240"):
        async with await start_publisher(live_node, "two", seconds=8, size="160x120"):
            one = codecs(await ffprobe(f"{live_node.http}/live/one.flv"))["video"]
            two = codecs(await ffprobe(f"{live_node.rtmp}/two"))["video"]
            assert (one["width"], one["height"]) == (320, 240)
            assert (two["width"], two["height"]) == (160, 120)
            hub = live_node.node.hub
            first, second = hub.get("one"), hub.get("two")
            assert first is not None and second is not None
            assert first.video_header != second.video_header


async def test_duplicate_publish_is_refused(live_node: RunningNode) -> None:
    async with await start_publisher(live_node, "dup", seconds=8):
        code, _, _err = await run(ffmpeg_publish_args(f"{live_node.rtmp}/dup", seconds=2), 20)
        assert code != 0
        assert live_node.node.rtmp.refused["publish_stream_busy"] == 1
        # The first publisher is unharmed.
        found = codecs(await ffprobe(f"{live_node.http}/live/dup.flv"))
        assert found["video"]["codec_name"] == "h264"


async def test_unknown_stream_is_404_and_not_found(live_node: RunningNode) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/live/nothing.flv", "/live/nothing/index.m3u8", "/live/nothing/3.ts"):
            async with http.get(live_node.http + path) as response:
                assert response.status == 404, path
    code, _, _err = await run(
        [
            require_program("ffprobe"),
            "-v",
            "error",
            "-rw_timeout",
            "3000000",
            f"{live_node.rtmp}/nothing",
        ],
        20,
    )
    assert code != 0
    assert live_node.node.rtmp.refused["play_not_found"] == 1


async def test_http_flv_headers_and_head(live_node: RunningNode) -> None:
    async with await start_publisher(live_node, "head", seconds=6):
        async with aiohttp.ClientSession() as http:
            async with http.head(f"{live_node.http}/live/head.flv") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "video/x-flv"
                assert response.headers["Access-Control-Allow-Origin"] == "*"
            async with http.get(f"{live_node.http}/live/head.flv") as response:
                assert response.headers["Transfer-Encoding"] == "chunked"
                reader = FlvReader()
                header = None
                first_video = None
                while first_video is None:
                    reader.feed(await response.content.readany())
                    while (event := reader.next_event()) is not None:
                        if isinstance(event, FlvHeader):
                            header = event
                        elif isinstance(event, FlvTag) and event.kind == PacketKind.VIDEO:
                            packet = make_packet(event.kind, event.timestamp, event.payload)
                            if not packet.sequence_header:
                                first_video = packet
                                break
                assert header is not None and header.has_audio and header.has_video
                # A new viewer's first picture is a keyframe, straight from the GOP cache.
                assert first_video.keyframe


async def test_health_endpoints(make_node: NodeFactory) -> None:
    async with make_node() as node:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.http}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "alive"
            async with http.get(f"{node.http}/readyz") as response:
                assert response.status == 200
                assert (await response.json()) == {"status": "ready", "role": "all", "streams": 0}
            # The node serves its REST API and the OpenAPI document describing it.
            async with http.get(f"{node.http}/api/v1/openapi.json") as response:
                assert response.status == 200
                document = await response.json()
                assert document["openapi"].startswith("3.1")
                assert "/api/v1/streams" in document["paths"]
            async with http.get(f"{node.http}/api/v1/streams") as response:
                assert response.status == 200
                assert (await response.json())["total"] == 0
            async with http.post(f"{node.http}/api/v1/streams/x/kick") as response:
                assert response.status == 401
                assert response.content_type == "application/problem+json"


async def test_audio_only_stream_plays_everywhere(live_node: RunningNode) -> None:
    argv = [
        require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-re",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "30",
        "-c:a", "aac", "-f", "flv", f"{live_node.rtmp}/radio",
    ]  # fmt: skip
    async with await Process.start(argv):
        await wait_until(
            lambda: (s := live_node.node.hub.get("radio")) is not None and s.stats.packets_in > 20,
            10,
            "audio stream to go live",
        )
        await asyncio.sleep(2.5)
        for url in (
            f"{live_node.http}/live/radio.flv",
            f"{live_node.rtmp}/radio",
            f"{live_node.http}/live/radio/index.m3u8",
        ):
            found = codecs(await ffprobe(url))
            assert list(found) == ["audio"], url
            assert found["audio"]["codec_name"] == "aac", url
