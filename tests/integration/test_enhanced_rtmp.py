"""Enhanced RTMP: HEVC and AV1 passed through to FLV and RTMP readers unchanged; HEVC in HLS."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from ripplecast.media.flv import FlvReader, FlvTag, parse_video_tag_header
from ripplecast.media.packet import PacketKind, VideoCodec
from support import Process, RunningNode, require_program, run, wait_until


def enhanced_rtmp_ffmpeg() -> str:
    """An ffmpeg whose FLV muxer speaks Enhanced RTMP (>= 6.1): the system's or the wheel's."""
    candidates = []
    system = require_program("ffmpeg")
    candidates.append(system)
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    for exe in candidates:
        banner = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False)
        match = re.search(r"ffmpeg version n?(\d+)\.(\d+)", banner.stdout)
        if match and (int(match[1]), int(match[2])) >= (6, 1):
            return exe
    pytest.skip("no ffmpeg >= 6.1 with an Enhanced RTMP muxer (pip install imageio-ffmpeg)")


def video_tags(path: Path) -> list[FlvTag]:
    reader = FlvReader()
    reader.feed(path.read_bytes())
    tags = []
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag) and event.kind == PacketKind.VIDEO:
            tags.append(event)
    return tags


async def test_hevc_passes_through_and_packages_to_hls(
    live_node: RunningNode, tmp_path: Path
) -> None:
    ffmpeg = enhanced_rtmp_ffmpeg()
    publish = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "8",
        "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-x265-params", "log-level=error:keyint=25:min-keyint=25:scenecut=0:bframes=0",
        "-c:a", "aac", "-f", "flv", f"{live_node.rtmp}/hevc",
    ]  # fmt: skip
    async with await Process.start(publish):
        await wait_until(
            lambda: (s := live_node.node.hub.get("hevc")) is not None and s.stats.keyframes >= 2,
            15,
            "HEVC stream to go live",
        )
        stream = live_node.node.hub.get("hevc")
        assert stream is not None and stream.video_header is not None
        published_header = stream.video_header.payload
        outputs = {
            "flv": (f"{live_node.http}/live/hevc.flv", tmp_path / "flv.flv"),
            "rtmp": (f"{live_node.rtmp}/hevc", tmp_path / "rtmp.flv"),
        }
        readers = [
            run(
                [
                    ffmpeg,
                    "-hide_banner",
                    "-nostdin",
                    "-v",
                    "error",
                    "-i",
                    url,
                    "-t",
                    "2",
                    "-c",
                    "copy",
                    "-y",
                    str(out),
                ],
                30,
            )
            for url, out in outputs.values()
        ]
        for code, _, err in await asyncio.gather(*readers):
            assert code == 0, err.decode()
        await asyncio.sleep(1.5)
        segment_names = []
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{live_node.http}/live/hevc/index.m3u8") as response:
                playlist = await response.text()
            segment_names = [line for line in playlist.splitlines() if line.endswith(".ts")]
            assert segment_names, playlist
            async with http.get(f"{live_node.http}/live/hevc/{segment_names[-1]}") as response:
                (tmp_path / "last.ts").write_bytes(await response.read())
    # FLV and RTMP readers got Enhanced RTMP hvc1 tags, the sequence header byte for byte.
    for _label, (_url, out) in outputs.items():
        tags = video_tags(out)
        assert tags
        infos = [parse_video_tag_header(tag.payload) for tag in tags]
        assert all(info.enhanced and info.fourcc == b"hvc1" for info in infos)
        assert tags[0].payload == published_header
        # The first coded frame (packet type CodedFrames or CodedFramesX) is a keyframe.
        coded = [tag.payload[0] for tag in tags if tag.payload[0] & 0x0F in (1, 3)]
        assert (coded[0] >> 4) & 0x07 == 1
    # HLS carries HEVC that the system's ffmpeg decodes without a single error.
    code, out_bytes, _ = await run(
        [
            require_program("ffprobe"),
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width",
            "-of",
            "csv=p=0",
            str(tmp_path / "last.ts"),
        ]
    )
    assert code == 0
    assert "hevc,320" in out_bytes.decode()
    code, _, err = await run(
        [
            require_program("ffmpeg"),
            "-v",
            "error",
            "-i",
            str(tmp_path / "last.ts"),
            "-f",
            "null",
            "-",
        ]
    )
    assert code == 0 and not err, err.decode()
    assert stream.video_header is not None
    assert parse_video_tag_header(stream.video_header.payload).codec is VideoCodec.HEVC


async def test_av1_passes_through_to_flv_and_rtmp(live_node: RunningNode, tmp_path: Path) -> None:
    ffmpeg = enhanced_rtmp_ffmpeg()
    publish = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "8",
        "-c:v", "libsvtav1", "-preset", "12", "-g", "25", "-pix_fmt", "yuv420p",
        "-svtav1-params", "lp=1",
        "-c:a", "aac", "-f", "flv", f"{live_node.rtmp}/av1",
    ]  # fmt: skip
    async with await Process.start(publish):
        await wait_until(
            lambda: (s := live_node.node.hub.get("av1")) is not None and s.stats.keyframes >= 1,
            20,
            "AV1 stream to go live",
        )
        stream = live_node.node.hub.get("av1")
        assert stream is not None and stream.video_header is not None
        outputs = {
            "flv": (f"{live_node.http}/live/av1.flv", tmp_path / "flv.flv"),
            "rtmp": (f"{live_node.rtmp}/av1", tmp_path / "rtmp.flv"),
        }
        for url, out in outputs.values():
            code, _, err = await run(
                [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", "2",
                 "-c", "copy", "-y", str(out)],
                30,
            )  # fmt: skip
            assert code == 0, err.decode()
    for url, out in outputs.values():
        tags = video_tags(out)
        infos = [parse_video_tag_header(tag.payload) for tag in tags]
        assert infos and all(info.fourcc == b"av01" for info in infos), url
        assert tags[0].payload == stream.video_header.payload
        code, _, err = await run([ffmpeg, "-v", "error", "-i", str(out), "-f", "null", "-"], 30)
        assert code == 0 and not err, err.decode()
