"""Transcode one source into adaptive HLS: every rendition, the poster and the scrub previews
from ONE ffmpeg process, then the master playlist written from what was actually produced.

`build_command` is the pure part (a plan becomes an argv, checked by golden tests); `transcode`
runs it, reports progress and measures the result.

Invariants: every rendition has a keyframe at every multiple of the segment duration (fixed
GOP, no scene-cut keyframes, forced keyframes), so all renditions cut their segments at the
same times and a player can switch between them at any segment; the master playlist's
BANDWIDTH, AVERAGE-BANDWIDTH and CODECS describe the written bytes, not the ladder's wishes;
ffmpeg writes only inside `out_dir` (it runs there, with relative output names) and reads only
the source file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ripplecast.errors import UsageError
from ripplecast.vod.ffmpeg import Progress, TranscodeFailed, ffmpeg_version, run_ffmpeg
from ripplecast.vod.ladder import AUDIO_ONLY_NAME, Rendition
from ripplecast.vod.playlists import (
    PlaylistError,
    Variant,
    aac_codecs,
    avc_codecs,
    average_bitrate,
    parse_media_playlist,
    peak_segment_bitrate,
    render_master_playlist,
)
from ripplecast.vod.probe import MediaInfo
from ripplecast.vod.thumbnails import (
    FRAME_PATTERN,
    FRAMES_DIR,
    POSTER_NAME,
    SPRITE_DIR,
    VTT_NAME,
    ThumbnailPlan,
    frame_name,
    plan_thumbnails,
    poster_filter,
    render_vtt,
    sprite_command,
    sprite_name,
    thumbnail_filter,
)

logger = logging.getLogger("ripplecast.vod")

MASTER_NAME = "master.m3u8"
PLAYLIST_NAME = "index.m3u8"
SEGMENT_PATTERN = "seg_%05d.ts"
FALLBACK_FPS = 25.0
"""Frame rate assumed for the GOP length when the source does not state one."""
MAX_AUDIO_SAMPLE_RATE = 48000
PROGRESS_INTERVAL = 0.5
"""Seconds between two progress callbacks."""

ProgressCallback = Callable[[float, float | None], Awaitable[None]]
"""on_progress(fraction 0..1, estimated seconds left or None)."""


@dataclass(frozen=True)
class TranscodeOptions:
    """How to transcode (fed from Settings by the caller)."""

    ffmpeg: str
    """The ffmpeg program (see `find_ffmpeg`)."""
    segment_seconds: float = 4.0
    """HLS segment duration, and the keyframe interval of every rendition."""
    preset: str = "veryfast"
    """x264 preset."""
    thumbnail_interval: float = 5.0
    """Seconds between scrub-preview thumbnails."""
    thumbnail_width: int = 160
    """Width of a scrub-preview thumbnail."""
    timeout: float = 6 * 3600
    """Seconds ffmpeg may run before it is killed and the transcode fails."""


@dataclass(frozen=True)
class TranscodeResult:
    """What a transcode wrote."""

    renditions: list[dict[str, object]]
    """Per rendition, best first (JSON-able): name, width, height, bandwidth (peak segment
    bit/s), average_bandwidth, codecs, frame_rate (None for audio-only), playlist."""
    files: list[str]
    """Every file written, relative to out_dir, each rendition's segments before its playlist,
    master.m3u8 last."""
    ffmpeg_version: str
    """First line of `ffmpeg -version`."""


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def gop_frames(info: MediaInfo, segment_seconds: float) -> int:
    """Frames per GOP: one segment's worth at the source frame rate."""
    fps = info.video.fps if info.video is not None and info.video.fps > 0 else FALLBACK_FPS
    return max(1, round(segment_seconds * fps))


def build_command(
    source: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    options: TranscodeOptions,
    thumbnails: ThumbnailPlan | None,
) -> list[str]:
    """The ffmpeg argv producing every rendition (and, for video, the poster and the single
    thumbnails) into the current directory: NAME/index.m3u8, NAME/seg_NNNNN.ts, poster.jpg,
    .thumbnails/NNNNNN.jpg. Pure: no file is touched."""
    _check_plan(info, renditions)
    video = [r for r in renditions if r.has_video]
    audio = info.audio
    argv = [
        options.ffmpeg,
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        "-progress", "pipe:1", "-y",
        # Only the source itself may be read, whatever it contains.
        "-protocol_whitelist", "file",
        "-i", f"file:{source.absolute()}",
    ]  # fmt: skip
    if video:
        outputs = [f"[s{i}]" for i in range(len(video))]
        if thumbnails is not None:
            outputs += ["[sp]", "[st]"]
        chains = [f"[0:V:0]split={len(outputs)}{''.join(outputs)}"]
        chains += [f"[s{i}]scale={r.width}:{r.height},setsar=1[v{i}]" for i, r in enumerate(video)]
        if thumbnails is not None:
            chains += [
                f"[sp]{poster_filter(thumbnails)}[poster]",
                f"[st]{thumbnail_filter(thumbnails)}[thumbs]",
            ]
        argv += ["-filter_complex", ";".join(chains)]

    stream_map: list[str] = []
    for i, rendition in enumerate(renditions):
        entry: list[str] = []
        if rendition.has_video:
            argv += ["-map", f"[v{i}]"]
            entry.append(f"v:{i}")
        if audio is not None:
            argv += ["-map", "0:a:0"]
            entry.append(f"a:{i}")
        stream_map.append(",".join([*entry, f"name:{rendition.name}"]))

    if video:
        gop = str(gop_frames(info, options.segment_seconds))
        argv += [
            "-c:v", "libx264", "-preset", options.preset, "-pix_fmt", "yuv420p",
            "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
            "-force_key_frames", f"expr:gte(t,n_forced*{_number(options.segment_seconds)})",
        ]  # fmt: skip
        for i, rendition in enumerate(video):
            kbps = rendition.video_kbps
            profile = "high" if min(rendition.width, rendition.height) >= 720 else "main"
            argv += [
                f"-b:v:{i}", f"{kbps}k",
                f"-maxrate:v:{i}", f"{kbps * 11 // 10}k",
                f"-bufsize:v:{i}", f"{kbps * 2}k",
                f"-profile:v:{i}", profile,
            ]  # fmt: skip
    if audio is not None:
        argv += ["-c:a", "aac"]
        for i, rendition in enumerate(renditions):
            argv += [f"-b:a:{i}", f"{rendition.audio_kbps}k"]
        if audio.channels > 2:
            argv += ["-ac", "2"]
        if audio.sample_rate > MAX_AUDIO_SAMPLE_RATE:
            argv += ["-ar", str(MAX_AUDIO_SAMPLE_RATE)]
    argv += [
        "-map_metadata", "-1", "-map_chapters", "-1",  # no GPS tags or titles from phones
        "-max_muxing_queue_size", "4096",
        "-f", "hls",
        "-hls_time", _number(options.segment_seconds),
        "-hls_playlist_type", "vod",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", f"%v/{SEGMENT_PATTERN}",
        "-var_stream_map", " ".join(stream_map),
        f"%v/{PLAYLIST_NAME}",
    ]  # fmt: skip
    if video and thumbnails is not None:
        # passthrough: one image per selected frame, none duplicated to fill a frame rate.
        argv += [
            "-map", "[poster]", "-fps_mode", "passthrough", "-update", "1", "-q:v", "3",
            POSTER_NAME,
            "-map", "[thumbs]", "-fps_mode", "passthrough", "-q:v", "2", "-start_number", "1",
            FRAME_PATTERN,
        ]  # fmt: skip
    return argv


def _check_plan(info: MediaInfo, renditions: Sequence[Rendition]) -> None:
    if not renditions:
        raise UsageError("transcode needs at least one rendition")
    names = [r.name for r in renditions]
    if len(set(names)) != len(names):
        raise UsageError(f"rendition names repeat: {names}")
    for rendition in renditions:
        if rendition.has_video != (info.video is not None):
            raise UsageError(f"rendition {rendition.name} does not match the source's streams")
        if rendition.has_video and (rendition.width % 2 or rendition.height % 2):
            raise UsageError(f"rendition {rendition.name} has odd dimensions")
        if (rendition.audio_kbps > 0) != (info.audio is not None):
            raise UsageError(f"rendition {rendition.name}: audio bit rate without audio, or none")


_versions: dict[str, str] = {}
"""ffmpeg version per program path, asked (and logged) once per process."""


async def _version_of(ffmpeg: str) -> str:
    if ffmpeg not in _versions:
        _versions[ffmpeg] = await asyncio.to_thread(ffmpeg_version, ffmpeg)
        logger.info("transcoding with %s (%s)", ffmpeg, _versions[ffmpeg])
    return _versions[ffmpeg]


class _ProgressReporter:
    """Turns ffmpeg reports into rate-limited, increasing (fraction, eta) callbacks."""

    def __init__(self, callback: ProgressCallback, duration: float) -> None:
        self._callback = callback
        self._duration = duration
        self._loop = asyncio.get_running_loop()
        self._last_at: float | None = None
        self._last_fraction = -1.0

    async def ffmpeg_progress(self, report: Progress) -> None:
        # 1.0 is kept for the very end, when every file is written.
        fraction = min(0.999, report.out_time_seconds / self._duration)
        now = self._loop.time()
        if fraction <= self._last_fraction:
            return
        if self._last_at is not None and now - self._last_at < PROGRESS_INTERVAL:
            return
        eta = None
        if report.speed is not None:
            eta = max(0.0, self._duration - report.out_time_seconds) / report.speed
        self._last_at, self._last_fraction = now, fraction
        await self._callback(fraction, eta)

    async def finished(self) -> None:
        await self._callback(1.0, 0.0)


async def transcode(
    source: Path,
    out_dir: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    options: TranscodeOptions,
    on_progress: ProgressCallback | None = None,
) -> TranscodeResult:
    """Transcode `source` (probed as `info`) into `out_dir`, which should be empty.

    Writes NAME/index.m3u8 and NAME/seg_NNNNN.ts per rendition, and for video poster.jpg,
    thumbs/sprite_NNN.jpg and thumbs.vtt, then master.m3u8 (a second, short ffmpeg run tiles
    the sheets; `options.timeout` bounds both runs together). `on_progress(fraction, eta)` is
    awaited about twice a second with increasing fractions, the last call being (1.0, 0.0).
    Raises `TranscodeFailed` (ffmpeg failed, ran longer than `options.timeout`, or wrote
    something unusable); on cancellation ffmpeg is killed before CancelledError propagates.
    """
    version = await _version_of(options.ffmpeg)
    best = renditions[0] if renditions else None
    thumbnails = None
    if best is not None and best.has_video:
        thumbnails = plan_thumbnails(
            info.duration,
            best,
            interval=options.thumbnail_interval,
            width=options.thumbnail_width,
        )
    argv = build_command(source, info, renditions, options, thumbnails)
    folders = [out_dir / r.name for r in renditions]
    if thumbnails is not None:
        folders += [out_dir / SPRITE_DIR, out_dir / FRAMES_DIR]
    await asyncio.to_thread(_make_folders, folders)

    reporter = _ProgressReporter(on_progress, info.duration) if on_progress else None
    names = ", ".join(r.name for r in renditions)
    logger.info("transcoding %s (%.1f s) to %s", source, info.duration, names)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout
    await run_ffmpeg(
        argv,
        cwd=out_dir,
        time_limit=options.timeout,
        on_progress=reporter.ffmpeg_progress if reporter else None,
    )
    frames = 0
    if thumbnails is not None:
        frames = await asyncio.to_thread(_count_frames, out_dir)
        if frames:
            await run_ffmpeg(
                sprite_command(options.ffmpeg, thumbnails),
                cwd=out_dir,
                time_limit=max(0.001, deadline - loop.time()),
            )
    try:
        result = await asyncio.to_thread(
            _finish, out_dir, info, renditions, thumbnails, frames, version
        )
    except (PlaylistError, OSError, av.error.FFmpegError) as error:
        raise TranscodeFailed(
            f"ffmpeg exited cleanly but its output is unusable: {error}",
            exit_code=0,
            stderr_tail="",
        ) from error
    if reporter is not None:
        await reporter.finished()
    return result


def _finish(
    out_dir: Path,
    info: MediaInfo,
    renditions: Sequence[Rendition],
    thumbnails: ThumbnailPlan | None,
    frames: int,
    version: str,
) -> TranscodeResult:
    """Measure what ffmpeg wrote; write thumbs.vtt and master.m3u8 (blocking)."""
    files: list[str] = []
    described: list[dict[str, object]] = []
    variants: list[Variant] = []
    durations: list[float] = []
    for rendition in renditions:
        playlist_path = out_dir / rendition.name / PLAYLIST_NAME
        if not playlist_path.is_file():
            raise PlaylistError(f"no playlist for rendition {rendition.name}")
        playlist = parse_media_playlist(playlist_path.read_text("utf-8"))
        if not playlist.segments or not playlist.ended:
            raise PlaylistError(f"rendition {rendition.name}'s playlist is empty or unfinished")
        measured = [
            (segment.duration, (out_dir / rendition.name / segment.uri).stat().st_size)
            for segment in playlist.segments
        ]
        codecs, frame_rate = _stream_facts(out_dir / rendition.name / playlist.segments[0].uri)
        if not rendition.has_video:
            frame_rate = None
        elif frame_rate is None and info.video is not None and info.video.fps > 0:
            frame_rate = info.video.fps
        variant = Variant(
            uri=f"{rendition.name}/{PLAYLIST_NAME}",
            bandwidth=peak_segment_bitrate(measured, playlist.target_duration),
            average_bandwidth=average_bitrate(measured),
            codecs=codecs,
            resolution=(rendition.width, rendition.height) if rendition.has_video else None,
            frame_rate=round(frame_rate, 3) if frame_rate is not None else None,
        )
        variants.append(variant)
        durations.append(playlist.duration)
        described.append(
            {
                "name": rendition.name,
                "width": rendition.width,
                "height": rendition.height,
                "bandwidth": variant.bandwidth,
                "average_bandwidth": variant.average_bandwidth,
                "codecs": variant.codecs,
                "frame_rate": variant.frame_rate,
                "playlist": variant.uri,
            }
        )
        files += [f"{rendition.name}/{segment.uri}" for segment in playlist.segments]
        files.append(variant.uri)

    if thumbnails is not None:
        if not (out_dir / POSTER_NAME).is_file():
            raise PlaylistError("no poster was written")
        files.append(POSTER_NAME)
        shutil.rmtree(out_dir / FRAMES_DIR)
        sheets = 0
        while (out_dir / sprite_name(sheets + 1)).is_file():
            sheets += 1
        if sheets != -(-frames // thumbnails.per_sheet):
            raise PlaylistError(f"{frames} thumbnails were tiled into {sheets} sheets")
        files += [sprite_name(number) for number in range(1, sheets + 1)]
        _write_atomically(out_dir / VTT_NAME, render_vtt(thumbnails, durations[0], frames))
        files.append(VTT_NAME)

    _write_atomically(out_dir / MASTER_NAME, render_master_playlist(variants))
    files.append(MASTER_NAME)
    return TranscodeResult(renditions=described, files=files, ffmpeg_version=version)


def _stream_facts(segment: Path) -> tuple[str, float | None]:
    """CODECS of a produced segment (from its SPS and AAC profile) and its video frame rate."""
    codecs: list[str] = []
    frame_rate: float | None = None
    with av.open(str(segment), options={"protocol_whitelist": "file"}) as container:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is not None:
            packet = next((p for p in container.demux(video) if p.size > 0 and p.is_keyframe), None)
            if packet is None:
                raise PlaylistError(f"{segment.name} has no video keyframe")
            codecs.append(avc_codecs(bytes(packet)))
            rate = video.average_rate or video.guessed_rate
            if isinstance(rate, Fraction) and rate > 0:
                frame_rate = float(rate)
        if audio is not None:
            codecs.append(aac_codecs(audio.codec_context.profile))
    if not codecs:
        raise PlaylistError(f"{segment.name} has neither video nor audio")
    return ",".join(codecs), frame_rate


def _count_frames(out_dir: Path) -> int:
    count = 0
    while (out_dir / frame_name(count + 1)).is_file():
        count += 1
    return count


def _make_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)


__all__ = [
    "AUDIO_ONLY_NAME",
    "MASTER_NAME",
    "ProgressCallback",
    "TranscodeFailed",
    "TranscodeOptions",
    "TranscodeResult",
    "build_command",
    "transcode",
]
