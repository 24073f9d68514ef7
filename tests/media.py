"""Test media made on the spot with ffmpeg's lavfi sources (nothing is committed).

Every function writes the file it is asked for, checks ffmpeg succeeded and returns the path.
They block (a few hundred milliseconds each); call them from sync fixtures or directly in tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from support import require_program

Size = str | tuple[int, int]
"""A picture size: "640x360" or (640, 360)."""


def _size(size: Size) -> tuple[int, int]:
    if isinstance(size, tuple):
        return size
    width, _, height = size.partition("x")
    return int(width), int(height)


def run_ffmpeg(*args: str, timeout: float = 60) -> None:
    """Run the system ffmpeg quietly; fail with its stderr if it fails."""
    argv = [require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-y", *args]
    completed = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise AssertionError(
            f"ffmpeg failed ({completed.returncode}): {' '.join(argv)}\n"
            + completed.stderr.decode("utf-8", "replace")
        )


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    """`ffprobe -of json` of `path` (streams and format unless `args` ask for something else)."""
    argv = [require_program("ffprobe"), "-v", "error", "-of", "json"]
    argv += list(args) or ["-show_streams", "-show_format"]
    completed = subprocess.run([*argv, str(path)], capture_output=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def keyframe_times(path: Path) -> list[float]:
    """Presentation times (seconds) of the video keyframes of `path` (a file or a playlist)."""
    packets = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")[
        "packets"
    ]
    return [float(p["pts_time"]) for p in packets if "K" in p.get("flags", "")]


def make_video(
    path: Path,
    *,
    seconds: float,
    size: Size,
    rate: float = 25,
    audio: bool = True,
    rotate: int | None = None,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    pattern: str = "testsrc",
    sample_rate: int = 48000,
    channels: int = 2,
) -> Path:
    """A test-pattern video (with a 440 Hz tone unless `audio` is False).

    `pattern` is a lavfi video source (testsrc, testsrc2, smptebars...) or "halves": the top half
    white, the bottom half black (to see which way up a picture came out). The container follows
    the suffix (an .mp4 keeps its index at the end, as cameras write it). Odd sizes get 4:4:4
    chroma unless `pix_fmt` says otherwise (4:2:0 needs even sizes). `rotate` (90, 180, 270)
    stores a display rotation, as phones do.
    """
    width, height = _size(size)
    if pattern == "halves":
        half = f"s={width}x{height // 2}:r={rate}"
        source = f"color=c=white:{half}[top];color=c=black:{half}[bottom];[top][bottom]vstack"
    else:
        source = f"{pattern}=size={width}x{height}:rate={rate}"
    if pix_fmt is None:
        pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
    args = ["-f", "lavfi", "-i", source]
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
        args += ["-af", f"aformat=channel_layouts={layout}"]
    args += ["-t", str(seconds), "-c:v", codec, "-pix_fmt", pix_fmt]
    if codec == "libx264":
        args += ["-preset", "ultrafast"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    target = path if rotate is None else path.with_name(f"unrotated-{path.name}")
    run_ffmpeg(*args, str(target))
    if rotate is not None:
        # Stream copy keeps the "rotate" tag as a display matrix (ffmpeg 5.1 honours it there).
        run_ffmpeg(
            "-i", str(target), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", str(path)
        )
        target.unlink()
        side_data = ffprobe(path)["streams"][0].get("side_data_list", [])
        assert any(d.get("side_data_type") == "Display Matrix" for d in side_data), side_data
    return path


def make_audio_only(
    path: Path, *, seconds: float, sample_rate: int = 48000, codec: str = "aac"
) -> Path:
    """A 440 Hz tone, no picture (m4a, mp3, ts... by suffix)."""
    run_ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}",
        "-t", str(seconds), "-c:a", codec, str(path),
    )  # fmt: skip
    return path


def make_audio_with_cover(path: Path, *, seconds: float) -> Path:
    """An MP3 with a cover picture (an attached-picture video stream): sound only."""
    cover = path.with_name(f"cover-{path.stem}.png")
    make_still_image(cover, size="64x64")
    run_ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-i", str(cover),
        "-map", "0", "-map", "1", "-t", str(seconds), "-c:a", "libmp3lame", "-c:v", "png",
        "-disposition:v", "attached_pic", str(path),
    )  # fmt: skip
    return path


def make_still_image(path: Path, *, size: Size = "64x48") -> Path:
    """One test-pattern picture (PNG, JPEG... by suffix)."""
    width, height = _size(size)
    run_ffmpeg("-f", "lavfi", "-i", f"testsrc=size={width}x{height}", "-frames:v", "1", str(path))
    return path


def make_subtitle_only(path: Path) -> Path:
    """A Matroska file holding one subtitle stream and nothing else."""
    srt = path.with_name(f"{path.stem}.srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n\n", "utf-8")
    run_ffmpeg("-i", str(srt), "-c:s", "copy", str(path))
    return path


def make_unknown_codec(path: Path, *, seconds: float = 1) -> Path:
    """A Matroska file whose tracks name codecs nobody knows (the CodecID strings are replaced
    in place, so the file stays well-formed)."""
    good = path.with_name(f"known-{path.stem}.mkv")
    make_video(good, seconds=seconds, size="160x120")
    data = good.read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data and b"A_AAC" in data
    path.write_bytes(
        data.replace(b"V_MPEG4/ISO/AVC", b"V_ZZZZZ/ISO/ZZZ").replace(b"A_AAC", b"A_ZZZ")
    )
    return path


def make_oversized(path: Path, *, width: int, height: int = 2) -> Path:
    """A tiny raw-video Matroska file with a very wide picture (no encoder limits apply)."""
    run_ffmpeg(
        "-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:r=5", "-t", "0.6",
        "-c:v", "rawvideo", "-pix_fmt", "gray", str(path),
    )  # fmt: skip
    return path


def truncated_copy(
    source: Path, path: Path, *, fraction: float | None = None, size: int | None = None
) -> Path:
    """The first `fraction` of `source` (or its first `size` bytes) written to `path`."""
    data = source.read_bytes()
    keep = size if size is not None else int(len(data) * (fraction or 0))
    path.write_bytes(data[:keep])
    return path
