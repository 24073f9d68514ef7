"""The rendition ladder: which sizes and bitrates a video is transcoded to.

Pure functions, no I/O. Invariants of `plan_renditions`: never larger than the source (no
upscaling), the picture's aspect ratio kept, every width and height even (H.264 4:2:0 needs
it), no two renditions of the same size, best first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ripplecast.errors import RipplecastError
from ripplecast.vod.probe import MediaInfo

_RUNG = re.compile(r"^([1-9][0-9]*):([1-9][0-9]*)k:([1-9][0-9]*)k$")

AUDIO_ONLY_NAME = "audio"


class LadderError(RipplecastError, ValueError):
    """A ladder entry is not HEIGHT:VIDEO_KBPS k:AUDIO_KBPS k."""


@dataclass(frozen=True)
class Rung:
    """One entry of the configured ladder."""

    height: int
    """Target size of the picture's shorter side, in pixels (720 for "720p")."""
    video_kbps: int
    """Video bit rate in kbit/s."""
    audio_kbps: int
    """Audio bit rate in kbit/s."""


@dataclass(frozen=True)
class Rendition:
    """One output of a transcode: a size and bit rates."""

    name: str
    """Folder and label: "720p", or "audio" for the one rendition of an audio-only file."""
    width: int
    """Output width in pixels (even); 0 for audio-only."""
    height: int
    """Output height in pixels (even); 0 for audio-only."""
    video_kbps: int
    """Video bit rate in kbit/s; 0 for audio-only."""
    audio_kbps: int
    """Audio bit rate in kbit/s; 0 when the source has no sound."""

    @property
    def has_video(self) -> bool:
        """True unless this is the audio-only rendition."""
        return self.width > 0


def parse_ladder(spec: Sequence[str]) -> list[Rung]:
    """Parse "720:2800k:128k" entries, in the order given; raises `LadderError`."""
    rungs: list[Rung] = []
    for entry in spec:
        match = _RUNG.match(entry.strip())
        if match is None:
            raise LadderError(
                f"ladder entry {entry!r} is not HEIGHT:VIDEO_BITRATE:AUDIO_BITRATE (720:2800k:128k)"
            )
        height, video_kbps, audio_kbps = (int(group) for group in match.groups())
        rungs.append(Rung(height=height, video_kbps=video_kbps, audio_kbps=audio_kbps))
    if not rungs:
        raise LadderError("the ladder needs at least one rendition")
    return rungs


def _even_down(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _even_nearest(value: float) -> int:
    return max(2, round(value / 2) * 2)


def plan_renditions(info: MediaInfo, ladder: Sequence[Rung]) -> list[Rendition]:
    """The renditions to make of `info` from `ladder`, best first.

    A rung's height is compared with the shorter side of the displayed picture (a portrait
    1080x1920 video is "1080p"); rungs above it are left out. A source smaller than every rung
    gets one rendition at its own size (rounded down to even) with the smallest rung's bit
    rates. Audio-only sources get the single "audio" rendition at the ladder's best audio bit
    rate; sources without sound get renditions with `audio_kbps` 0.
    """
    if not ladder:
        raise LadderError("the ladder needs at least one rendition")
    if info.video is None:
        return [Rendition(AUDIO_ONLY_NAME, 0, 0, 0, max(r.audio_kbps for r in ladder))]
    has_audio = info.audio is not None
    width, height = info.video.display_width, info.video.display_height
    short, long = min(width, height), max(width, height)

    planned: list[Rendition] = []
    for rung in ladder:
        if rung.height > short:
            continue  # never upscale
        new_short = _even_down(rung.height)
        new_long = min(_even_nearest(long * rung.height / short), _even_down(long))
        planned.append(_rendition(f"{rung.height}p", new_short, new_long, width < height, rung))
    if not planned:
        smallest = min(ladder, key=lambda r: (r.height, r.video_kbps))
        new_short, new_long = _even_down(short), _even_down(long)
        planned.append(_rendition(f"{new_short}p", new_short, new_long, width < height, smallest))

    planned.sort(key=lambda r: (r.width * r.height, r.video_kbps, r.audio_kbps), reverse=True)
    unique: list[Rendition] = []
    for rendition in planned:
        if any(
            (r.width, r.height) == (rendition.width, rendition.height) or r.name == rendition.name
            for r in unique
        ):
            continue  # the same size twice: the better bit rate (sorted first) wins
        unique.append(rendition)
    if not has_audio:
        unique = [Rendition(r.name, r.width, r.height, r.video_kbps, audio_kbps=0) for r in unique]
    return unique


def _rendition(name: str, short: int, long: int, portrait: bool, rung: Rung) -> Rendition:
    width, height = (short, long) if portrait else (long, short)
    return Rendition(name, width, height, rung.video_kbps, rung.audio_kbps)
