"""The poster and the scrub previews of a video: sprite sheets of small thumbnails and the WebVTT
file that maps each stretch of time to its tile ("thumbs/sprite_001.jpg#xywh=160,0,160,90").

Pure functions, no I/O. The poster and the thumbnails come out of the transcode's own ffmpeg
process (the video is decoded once), through the filter chains built here; a second, tiny
ffmpeg run then tiles the thumbnails into sheets. (Tiling inside the main process would hold
back ffmpeg's first progress report until the first sheet is full, and a sheet is 500 s of
video.)

- thumbnail k is the first frame at or after k * interval (`select` with `selected_n`), so
  thumbnail k shows the start of the stretch its cue covers;
- the poster is the last frame at or before the poster time; the first frame is always a
  candidate, so a poster is written even when the file is shorter than it said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ripplecast.vod.ladder import Rendition

POSTER_NAME = "poster.jpg"
VTT_NAME = "thumbs.vtt"
SPRITE_DIR = "thumbs"
SPRITE_PATTERN = f"{SPRITE_DIR}/sprite_%03d.jpg"
"""ffmpeg image2 pattern of the sheets, numbered from 1."""
FRAMES_DIR = ".thumbnails"
"""Work folder of the single thumbnails, removed once they are tiled."""
FRAME_PATTERN = f"{FRAMES_DIR}/%06d.jpg"
"""ffmpeg image2 pattern of the single thumbnails, numbered from 1."""
SPRITE_COLUMNS = 10
SPRITE_ROWS = 10
POSTER_LATEST = 60.0
"""The poster is never taken later than this many seconds in."""
POSTER_WINDOW = 0.2
"""Every frame this close before the poster time is a poster candidate (the last one wins)."""


@dataclass(frozen=True)
class ThumbnailPlan:
    """Sizes and times of the poster and the sprite sheets of one video."""

    interval: float
    """Seconds between thumbnails."""
    tile_width: int
    """Thumbnail width in pixels (even)."""
    tile_height: int
    """Thumbnail height in pixels (even, aspect ratio of the video)."""
    columns: int
    """Tiles per row of a sheet."""
    rows: int
    """Rows of a sheet."""
    poster_time: float
    """Seconds into the video of the poster frame."""
    poster_width: int
    """Poster width: the best rendition's."""
    poster_height: int
    """Poster height: the best rendition's."""

    @property
    def per_sheet(self) -> int:
        """Thumbnails on one sheet."""
        return self.columns * self.rows


def sprite_name(number: int) -> str:
    """The sheet file for 1-based `number`, as `SPRITE_PATTERN` names it."""
    return SPRITE_PATTERN % number


def frame_name(number: int) -> str:
    """The single thumbnail for 1-based `number`, as `FRAME_PATTERN` names it."""
    return FRAME_PATTERN % number


def poster_time(duration: float) -> float:
    """When to take the poster: at 10 % of the video (at most `POSTER_LATEST` s in), or at
    1 s (the middle of a video shorter than 2 s) when 10 % is earlier than that."""
    tenth = duration * 0.1
    if tenth >= 1.0:
        return min(tenth, POSTER_LATEST)
    return min(1.0, duration / 2)


def thumbnail_count(duration: float, interval: float) -> int:
    """How many thumbnails cover `duration` seconds at one per `interval` seconds."""
    if duration <= 0:
        return 0
    return max(1, math.ceil(duration / interval - 1e-6))


def plan_thumbnails(
    duration: float, best: Rendition, *, interval: float, width: int
) -> ThumbnailPlan:
    """The plan for a video of `duration` seconds whose best rendition is `best`.

    Thumbnails are `width` wide (never wider than `best`); a video with few thumbnails gets a
    smaller sheet (5 thumbnails: one row of 5), never more than 10x10.
    """
    tile_width = max(2, min(width, best.width) // 2 * 2)
    tile_height = max(2, round(tile_width * best.height / best.width / 2) * 2)
    expected = thumbnail_count(duration, interval)
    columns = max(1, min(SPRITE_COLUMNS, expected))
    rows = max(1, min(SPRITE_ROWS, math.ceil(expected / columns)))
    return ThumbnailPlan(
        interval=interval,
        tile_width=tile_width,
        tile_height=tile_height,
        columns=columns,
        rows=rows,
        poster_time=poster_time(duration),
        poster_width=best.width,
        poster_height=best.height,
    )


def _number(value: float) -> str:
    """A decimal without exponent for ffmpeg expressions ("0.5", "12")."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def poster_filter(plan: ThumbnailPlan) -> str:
    """Filter chain (after a split) that yields the poster frames; the last one written wins."""
    # Frames up to the poster time: the first one, one every `step` seconds, and every frame
    # of the last POSTER_WINDOW seconds, so the last one written is at the poster time if the
    # video gets there, and never more than a few dozen are encoded.
    step = max(0.5, plan.poster_time / 10)
    time = plan.poster_time
    return (
        f"select='lte(t,{_number(time)})*(isnan(prev_selected_t)"
        f"+gte(t-prev_selected_t,{_number(step)})+gte(t,{_number(time - POSTER_WINDOW)}))',"
        f"scale={plan.poster_width}:{plan.poster_height},setsar=1"
    )


def thumbnail_filter(plan: ThumbnailPlan) -> str:
    """Filter chain (after a split) that yields one small frame per thumbnail."""
    return (
        f"select='gte(t,selected_n*{_number(plan.interval)})',"
        f"scale={plan.tile_width}:{plan.tile_height},setsar=1"
    )


def sprite_command(ffmpeg: str, plan: ThumbnailPlan) -> list[str]:
    """argv tiling the single thumbnails (FRAME_PATTERN) into sheets (SPRITE_PATTERN), run in
    the output folder. The last sheet is padded with black."""
    return [
        ffmpeg,
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
        "-f", "image2", "-framerate", "1", "-start_number", "1", "-i", FRAME_PATTERN,
        "-vf", f"tile={plan.columns}x{plan.rows}",
        "-fps_mode", "passthrough", "-q:v", "5", "-start_number", "1",
        SPRITE_PATTERN,
    ]  # fmt: skip


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def render_vtt(plan: ThumbnailPlan, duration: float, count: int) -> str:
    """The WebVTT scrub-preview track for `count` thumbnails: one cue each, together covering
    0..duration (the last cue stretches to the end)."""
    count = min(count, thumbnail_count(duration, plan.interval))
    lines = ["WEBVTT", ""]
    for index in range(count):
        start = index * plan.interval
        end = duration if index == count - 1 else min(duration, start + plan.interval)
        sheet, slot = divmod(index, plan.per_sheet)
        row, column = divmod(slot, plan.columns)
        x, y = column * plan.tile_width, row * plan.tile_height
        lines += [
            f"{_timestamp(start)} --> {_timestamp(end)}",
            f"{sprite_name(sheet + 1)}#xywh={x},{y},{plan.tile_width},{plan.tile_height}",
            "",
        ]
    return "\n".join(lines)
