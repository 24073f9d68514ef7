"""Transcoding to adaptive HLS with the real ffmpeg: every rendition checked with ffprobe,
keyframes aligned across renditions, the master playlist measured and played back by ffmpeg,
poster and scrub previews, progress, failures, timeout and cancellation."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import av
import pytest

from media import ffprobe, keyframe_times, make_audio_only, make_video
from ripplecast.vod.ffmpeg import FfmpegNotFound, TranscodeFailed, ffmpeg_version, find_ffmpeg
from ripplecast.vod.ladder import Rendition, parse_ladder, plan_renditions
from ripplecast.vod.playlists import parse_media_playlist
from ripplecast.vod.probe import MediaInfo, probe
from ripplecast.vod.transcode import TranscodeOptions, TranscodeResult, transcode
from support import require_program

pytestmark = pytest.mark.ffmpeg

SMALL_LADDER = ["360:600k:64k", "240:300k:48k"]
AVC_PROFILES = {"Constrained Baseline": 0x42, "Baseline": 0x42, "Main": 0x4D, "High": 0x64}


def options(ffmpeg: str | None = None, **overrides: Any) -> TranscodeOptions:
    values: dict[str, Any] = {
        "ffmpeg": ffmpeg or require_program("ffmpeg"),
        "segment_seconds": 2.0,
        "preset": "ultrafast",
        "thumbnail_interval": 1.0,
    }
    values.update(overrides)
    return TranscodeOptions(**values)


def probed(source: Path) -> MediaInfo:
    return probe(source, max_duration=3600.0, max_pixels=4096 * 4096)


async def run(
    source: Path,
    out: Path,
    *,
    ladder: list[str] = SMALL_LADDER,
    opts: TranscodeOptions | None = None,
) -> tuple[MediaInfo, list[Rendition], TranscodeResult]:
    info = probed(source)
    renditions = plan_renditions(info, parse_ladder(ladder))
    result = await transcode(source, out, info, renditions, opts or options())
    return info, renditions, result


def master_variants(out: Path) -> list[dict[str, str]]:
    """The EXT-X-STREAM-INF attributes of master.m3u8, with the URI under "uri"."""
    lines = (out / "master.m3u8").read_text().splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    variants = []
    for tag, uri in zip(lines[3::2], lines[4::2], strict=True):
        assert tag.startswith("#EXT-X-STREAM-INF:")
        attributes = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', tag.partition(":")[2]))
        variants.append({k: v.strip('"') for k, v in attributes.items()} | {"uri": uri})
    return variants


def assert_files_listed(out: Path, result: TranscodeResult) -> None:
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(result.files) == on_disk  # every file written is listed, nothing else is left
    assert result.files[-1] == "master.m3u8"
    assert len(set(result.files)) == len(result.files)


def assert_plays(out: Path) -> None:
    """ffmpeg reads the whole master playlist, every variant, without a single complaint."""
    completed = subprocess.run(
        [require_program("ffmpeg"), "-v", "error", "-nostdin", "-i", str(out / "master.m3u8"),
         "-map", "0", "-f", "null", "-"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0
    assert completed.stderr.decode() == ""


def assert_keyframes_aligned(out: Path, names: list[str], segment_seconds: float) -> None:
    durations = [
        [s.duration for s in parse_media_playlist((out / n / "index.m3u8").read_text()).segments]
        for n in names
    ]
    assert all(d == durations[0] for d in durations), durations
    assert all(d == pytest.approx(segment_seconds, abs=0.01) for d in durations[0][:-1])
    keyframes = [keyframe_times(out / n / "index.m3u8") for n in names]
    assert all(k == keyframes[0] for k in keyframes), keyframes
    starts = [round(k - keyframes[0][0], 3) for k in keyframes[0]]
    assert starts == [i * segment_seconds for i in range(len(durations[0]))]


def assert_codecs_match_stream(codecs: str, stream: dict[str, Any]) -> None:
    avc = next(c for c in codecs.split(",") if c.startswith("avc1."))
    assert int(avc[5:7], 16) == AVC_PROFILES[stream["profile"]]
    assert int(avc[9:11], 16) == stream["level"]


def vtt_cues(out: Path) -> list[tuple[float, float, str]]:
    text = (out / "thumbs.vtt").read_text()
    assert text.startswith("WEBVTT\n")

    def seconds(stamp: str) -> float:
        hours, minutes, secs = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)

    return [
        (seconds(a), seconds(b), ref) for a, b, ref in re.findall(r"(\S+) --> (\S+)\n(\S+)", text)
    ]


def picture_size(path: Path) -> tuple[int, int]:
    stream = ffprobe(path)["streams"][0]
    return stream["width"], stream["height"]


def ffmpeg_programs() -> list[Any]:
    programs: list[Any] = [pytest.param("system", id="system-ffmpeg")]
    programs.append(pytest.param("wheel", id="imageio-ffmpeg"))
    return programs


def wheel_ffmpeg() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]

    return str(imageio_ffmpeg.get_ffmpeg_exe())


# ---------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("which", ffmpeg_programs())
async def test_landscape_with_audio(tmp_path: Path, which: str) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=5, size="640x360")
    ffmpeg = require_program("ffmpeg") if which == "system" else wheel_ffmpeg()
    out = tmp_path / "out"
    info, _, result = await run(source, out, opts=options(ffmpeg))

    assert result.ffmpeg_version.startswith("ffmpeg version")
    assert [(r["name"], r["width"], r["height"], r["playlist"]) for r in result.renditions] == [
        ("360p", 640, 360, "360p/index.m3u8"),
        ("240p", 426, 240, "240p/index.m3u8"),
    ]
    for described in result.renditions:
        streams = ffprobe(out / str(described["playlist"]))["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        audio = next(s for s in streams if s["codec_type"] == "audio")
        assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
        assert (video["width"], video["height"]) == (described["width"], described["height"])
        assert audio["codec_name"] == "aac" and audio["sample_rate"] == "48000"
        assert_codecs_match_stream(str(described["codecs"]), video)
        assert described["frame_rate"] == 25.0
        bandwidth, average = described["bandwidth"], described["average_bandwidth"]
        assert isinstance(bandwidth, int) and isinstance(average, int)
        assert bandwidth >= average > 0

    variants = master_variants(out)
    assert [v["uri"] for v in variants] == ["360p/index.m3u8", "240p/index.m3u8"]
    for variant, described in zip(variants, result.renditions, strict=True):
        assert variant == {
            "BANDWIDTH": str(described["bandwidth"]),
            "AVERAGE-BANDWIDTH": str(described["average_bandwidth"]),
            "CODECS": described["codecs"],
            "RESOLUTION": f"{described['width']}x{described['height']}",
            "FRAME-RATE": "25.000",
            "uri": described["playlist"],
        }
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", variant["CODECS"])
    # The smaller rendition costs fewer bits.
    assert int(variants[1]["AVERAGE-BANDWIDTH"]) < int(variants[0]["AVERAGE-BANDWIDTH"])

    assert_keyframes_aligned(out, ["360p", "240p"], 2.0)
    assert_plays(out)
    assert_files_listed(out, result)

    assert picture_size(out / "poster.jpg") == (640, 360)
    assert picture_size(out / "thumbs" / "sprite_001.jpg") == (5 * 160, 90)
    cues = vtt_cues(out)
    assert cues[0] == (0.0, 1.0, "thumbs/sprite_001.jpg#xywh=0,0,160,90")
    assert cues[-1][1] == pytest.approx(info.duration, abs=0.05)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))
    assert [ref for _, _, ref in cues][4] == "thumbs/sprite_001.jpg#xywh=640,0,160,90"


async def test_portrait(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=3, size="360x640")
    out = tmp_path / "out"
    _, _, result = await run(source, out)
    assert [(r["name"], r["width"], r["height"]) for r in result.renditions] == [
        ("360p", 360, 640),
        ("240p", 240, 426),
    ]
    assert picture_size(out / "360p" / "seg_00000.ts") == (360, 640)
    assert picture_size(out / "240p" / "seg_00000.ts") == (240, 426)
    assert [v["RESOLUTION"] for v in master_variants(out)] == ["360x640", "240x426"]
    assert picture_size(out / "poster.jpg") == (360, 640)
    assert picture_size(out / "thumbs" / "sprite_001.jpg") == (3 * 160, 284)
    assert_plays(out)


async def test_odd_dimensions(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mkv", seconds=3, size="641x359")
    out = tmp_path / "out"
    _, renditions, result = await run(source, out)
    assert renditions == [Rendition("240p", 428, 240, 300, 48)]
    stream = ffprobe(out / "240p" / "index.m3u8")["streams"][0]
    assert (stream["width"], stream["height"], stream["pix_fmt"]) == (428, 240, "yuv420p")
    assert stream["sample_aspect_ratio"] == "1:1"
    assert_plays(out)
    assert_files_listed(out, result)


def _mean_luma(frame: av.VideoFrame, left: int, top: int, right: int, bottom: int) -> float:
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    data = bytes(plane)
    total = sum(
        sum(data[y * plane.line_size + left : y * plane.line_size + right])
        for y in range(top, bottom)
    )
    return total / ((right - left) * (bottom - top))


async def test_rotated_phone_video_comes_out_upright(tmp_path: Path) -> None:
    # Stored 320x240 landscape, top half white; shown rotated by 90 degrees: 240x320, and the
    # white half is then on the left or the right, never on top.
    source = make_video(tmp_path / "in.mp4", seconds=3, size="320x240", rotate=90, pattern="halves")
    out = tmp_path / "out"
    _, renditions, result = await run(source, out)
    assert renditions == [Rendition("240p", 240, 320, 300, 48)]
    stream = ffprobe(out / "240p" / "index.m3u8")["streams"][0]
    assert (stream["width"], stream["height"]) == (240, 320)
    assert not stream.get("side_data_list")  # no rotation left for a player to apply again
    assert picture_size(out / "poster.jpg") == (240, 320)

    with av.open(str(out / "240p" / "seg_00000.ts")) as container:
        frame = next(container.decode(video=0))
    left, right = _mean_luma(frame, 0, 0, 120, 320), _mean_luma(frame, 120, 0, 240, 320)
    top, bottom = _mean_luma(frame, 0, 0, 240, 160), _mean_luma(frame, 0, 160, 240, 320)
    assert abs(left - right) > 150  # one side white, the other black
    assert abs(top - bottom) < 20
    assert_plays(out)
    assert_files_listed(out, result)


async def test_source_smaller_than_every_rung(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=2, size="160x120")
    out = tmp_path / "out"
    _, _, result = await run(source, out)
    assert [(r["name"], r["width"], r["height"]) for r in result.renditions] == [("120p", 160, 120)]
    assert [v["RESOLUTION"] for v in master_variants(out)] == ["160x120"]
    assert_plays(out)


async def test_audio_only(tmp_path: Path) -> None:
    source = make_audio_only(tmp_path / "in.m4a", seconds=5)
    out = tmp_path / "out"
    _, renditions, result = await run(source, out)
    assert renditions == [Rendition("audio", 0, 0, 0, 64)]
    assert result.renditions == [
        {
            "name": "audio",
            "width": 0,
            "height": 0,
            "bandwidth": result.renditions[0]["bandwidth"],
            "average_bandwidth": result.renditions[0]["average_bandwidth"],
            "codecs": "mp4a.40.2",
            "frame_rate": None,
            "playlist": "audio/index.m3u8",
        }
    ]
    (variant,) = master_variants(out)
    assert variant["CODECS"] == "mp4a.40.2"
    assert "RESOLUTION" not in variant and "FRAME-RATE" not in variant
    assert [s["codec_name"] for s in ffprobe(out / "audio" / "index.m3u8")["streams"]] == ["aac"]
    assert not (out / "poster.jpg").exists() and not (out / "thumbs.vtt").exists()
    assert_plays(out)
    assert_files_listed(out, result)


async def test_video_only(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=3, size="640x360", audio=False)
    out = tmp_path / "out"
    _, _, result = await run(source, out)
    assert all(re.fullmatch(r"avc1\.[0-9a-f]{6}", str(r["codecs"])) for r in result.renditions)
    for name in ("360p", "240p"):
        streams = ffprobe(out / name / "index.m3u8")["streams"]
        assert [s["codec_type"] for s in streams] == ["video"]
    assert_keyframes_aligned(out, ["360p", "240p"], 2.0)
    assert (out / "poster.jpg").is_file() and vtt_cues(out)
    assert_plays(out)
    assert_files_listed(out, result)


async def test_5_1_audio_at_96_khz_becomes_stereo_at_48(tmp_path: Path) -> None:
    source = make_video(
        tmp_path / "in.mkv", seconds=2, size="320x180", sample_rate=96000, channels=6
    )
    out = tmp_path / "out"
    await run(source, out, ladder=["180:300k:96k"])
    audio = next(
        s for s in ffprobe(out / "180p" / "index.m3u8")["streams"] if s["codec_type"] == "audio"
    )
    assert (audio["channels"], audio["sample_rate"]) == (2, "48000")


# ------------------------------------------------------------------- progress and failures


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of busy picture: a few seconds of work for ffmpeg at the slower presets."""
    folder = tmp_path_factory.mktemp("long")
    return make_video(folder / "long.mp4", seconds=20, size="640x360", pattern="testsrc2")


async def test_progress_increases_and_ends_at_one(long_source: Path, tmp_path: Path) -> None:
    info = probed(long_source)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    loop = asyncio.get_running_loop()
    calls: list[tuple[float, float, float | None]] = []

    async def on_progress(fraction: float, eta: float | None) -> None:
        calls.append((loop.time(), fraction, eta))

    # veryfast: a few seconds of work, so several reports arrive even on a fast machine.
    await transcode(
        long_source, tmp_path / "out", info, renditions, options(preset="veryfast"), on_progress
    )
    fractions = [fraction for _, fraction, _ in calls]
    assert len(fractions) >= 3, calls
    assert fractions == sorted(set(fractions))  # strictly increasing
    assert fractions[-1] == 1.0 and calls[-1][2] == 0.0
    assert all(0.0 <= f < 1.0 for f in fractions[:-1])
    assert any(eta is not None and eta > 0 for _, _, eta in calls[:-1])
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls[:-1])]
    assert all(gap >= 0.45 for gap in gaps), gaps  # about two a second at most


async def test_a_bad_option_fails_with_ffmpegs_own_words(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=1, size="320x180")
    with pytest.raises(TranscodeFailed) as caught:
        await run(source, tmp_path / "out", opts=options(preset="no-such-preset"))
    assert caught.value.exit_code not in (None, 0)
    assert f"ffmpeg exited with code {caught.value.exit_code}:" in str(caught.value)
    assert "no-such-preset" in caught.value.stderr_tail or "preset" in caught.value.stderr_tail
    assert caught.value.stderr_tail in str(caught.value)


async def test_a_corrupt_source_fails(tmp_path: Path) -> None:
    source = make_video(tmp_path / "in.mp4", seconds=2, size="320x180")
    info = probed(source)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    source.write_bytes(os.urandom(source.stat().st_size))  # replaced after probing
    with pytest.raises(TranscodeFailed) as caught:
        await transcode(source, tmp_path / "out", info, renditions, options())
    assert caught.value.exit_code not in (None, 0)
    assert caught.value.stderr_tail  # ffmpeg said why


def ffmpeg_children() -> list[int]:
    """Process ids of ffmpeg processes whose parent is this test process (zombies included)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == os.getpid() and name.startswith("ffmpeg"):
            children.append(int(entry.name))
    return children


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_timeout_kills_ffmpeg(long_source: Path, tmp_path: Path) -> None:
    info = probed(long_source)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    slow = options(preset="medium", timeout=0.5)
    before = set(ffmpeg_children())
    started = asyncio.get_running_loop().time()
    with pytest.raises(TranscodeFailed, match=r"ran longer than the limit of 0.5 s") as caught:
        await transcode(long_source, tmp_path / "out", info, renditions, slow)
    assert asyncio.get_running_loop().time() - started < 5
    assert caught.value.exit_code is None
    assert set(ffmpeg_children()) == before


async def test_cancellation_kills_ffmpeg(long_source: Path, tmp_path: Path) -> None:
    info = probed(long_source)
    renditions = plan_renditions(info, parse_ladder(SMALL_LADDER))
    running = asyncio.Event()
    fractions: list[float] = []

    async def on_progress(fraction: float, eta: float | None) -> None:
        fractions.append(fraction)
        running.set()

    before = set(ffmpeg_children())
    task = asyncio.create_task(
        transcode(
            long_source, tmp_path / "out", info, renditions, options(preset="medium"), on_progress
        )
    )
    await asyncio.wait_for(running.wait(), 20)
    (child,) = set(ffmpeg_children()) - before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fractions and max(fractions) < 1.0  # it really was stopped midway
    assert not process_exists(child)  # killed and reaped, not even a zombie
    assert set(ffmpeg_children()) == before


# ---------------------------------------------------------------------------- the program


def test_find_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_ffmpeg() == require_program("ffmpeg")
    assert find_ffmpeg(require_program("ffmpeg")) == require_program("ffmpeg")
    with pytest.raises(FfmpegNotFound, match="not an executable"):
        find_ffmpeg("/nonexistent/ffmpeg")
    monkeypatch.setenv("PATH", "")
    assert find_ffmpeg() == wheel_ffmpeg()  # nothing on PATH: the wheel's binary
    assert ffmpeg_version(find_ffmpeg()).startswith("ffmpeg version")
