"""HLS playlists of a transcoded video: reading ffmpeg's media playlists, measuring bit rates the
way RFC 8216 defines them, the CODECS attribute from the produced bytes, and the master
playlist.

Sans-I/O: text and bytes in, values and text out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ripplecast.errors import RipplecastError
from ripplecast.media.avc import NAL_SPS, CodecError, parse_sps

AAC_LC_CODECS = "mp4a.40.2"
"""RFC 6381 CODECS value of AAC-LC, the profile ffmpeg's aac encoder writes."""

_AAC_OBJECT_TYPES = {"LC": 2, "HE-AAC": 5, "HE-AACv2": 29}


class PlaylistError(RipplecastError):
    """A playlist or segment is not what the transcoder should have produced."""


@dataclass(frozen=True, slots=True)
class MediaSegment:
    """One entry of a media playlist."""

    duration: float
    """Seconds, from EXTINF."""
    uri: str
    """As written in the playlist (relative to it)."""


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """The parts of a VOD media playlist that the master playlist and the checks need."""

    target_duration: int
    """EXT-X-TARGETDURATION, seconds."""
    segments: tuple[MediaSegment, ...]
    """In playback order."""
    ended: bool
    """True when EXT-X-ENDLIST is present (a complete VOD playlist)."""

    @property
    def duration(self) -> float:
        """Total seconds of all segments."""
        return sum(segment.duration for segment in self.segments)


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse a media playlist; raises `PlaylistError` if it is not one."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("the playlist does not start with #EXTM3U")
    target: int | None = None
    segments: list[MediaSegment] = []
    pending: float | None = None
    ended = False
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = round(_number(line.partition(":")[2], line))
        elif line.startswith("#EXTINF:"):
            pending = _number(line.partition(":")[2].partition(",")[0], line)
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#"):
            if pending is None:
                raise PlaylistError(f"segment {line!r} has no #EXTINF before it")
            segments.append(MediaSegment(duration=pending, uri=line))
            pending = None
    if target is None:
        raise PlaylistError("the playlist has no #EXT-X-TARGETDURATION")
    return MediaPlaylist(target_duration=target, segments=tuple(segments), ended=ended)


def _number(text: str, line: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise PlaylistError(f"unreadable number in {line!r}") from None


def peak_segment_bitrate(segments: Sequence[tuple[float, int]], target_duration: float) -> int:
    """BANDWIDTH of RFC 8216 4.3.4.2: the largest bit rate of any run of contiguous segments
    lasting 0.5 to 1.5 times the target duration. `segments` are (seconds, bytes).

    A stream shorter than half the target duration has one possible run: all of it.
    """
    low, high = 0.5 * target_duration, 1.5 * target_duration
    peak = 0.0
    for start in range(len(segments)):
        seconds = 0.0
        bits = 0
        for duration, size in segments[start:]:
            seconds += duration
            bits += size * 8
            if seconds > high:
                break
            if seconds >= low:
                peak = max(peak, bits / seconds)
    if peak == 0.0:
        peak = average_bitrate(segments)
    return round(peak)


def average_bitrate(segments: Sequence[tuple[float, int]]) -> int:
    """AVERAGE-BANDWIDTH: all bits over all seconds (0 for an empty or zero-length stream)."""
    seconds = sum(duration for duration, _ in segments)
    bits = sum(size for _, size in segments) * 8
    return round(bits / seconds) if seconds > 0 else 0


def annexb_nal_units(data: bytes) -> list[bytes]:
    """Split an H.264 Annex B byte stream (as in MPEG-TS) into NAL units without start codes."""
    units: list[bytes] = []
    start = -1
    position = 0
    while True:
        found = data.find(b"\x00\x00\x01", position)
        if found < 0:
            break
        if start >= 0:
            end = found
            while end > start and data[end - 1] == 0:  # a 4-byte start code's leading zero
                end -= 1
            units.append(data[start:end])
        start = found + 3
        position = start
    if start >= 0 and start < len(data):
        units.append(data[start:])
    return [unit for unit in units if unit]


def avc_codecs(access_unit: bytes) -> str:
    """The RFC 6381 "avc1.PPCCLL" value from the SPS in an Annex B access unit (a keyframe).

    Raises `PlaylistError` when it holds no readable SPS.
    """
    for unit in annexb_nal_units(access_unit):
        if unit[0] & 0x1F == NAL_SPS:
            try:
                sps = parse_sps(unit)
            except CodecError as error:
                raise PlaylistError(f"unreadable H.264 SPS: {error}") from None
            return f"avc1.{sps.profile_idc:02x}{sps.constraint_flags:02x}{sps.level_idc:02x}"
    raise PlaylistError("no H.264 SPS in the first video packet")


def aac_codecs(profile: str | None) -> str:
    """The RFC 6381 "mp4a.40.N" value for an AAC profile name as libavcodec spells it."""
    return f"mp4a.40.{_AAC_OBJECT_TYPES.get(profile or 'LC', 2)}"


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF entry of a master playlist."""

    uri: str
    """The media playlist, relative to the master ("720p/index.m3u8")."""
    bandwidth: int
    """Peak segment bit rate, bit/s."""
    average_bandwidth: int
    """Average bit rate, bit/s."""
    codecs: str
    """RFC 6381 list, e.g. "avc1.64001f,mp4a.40.2"."""
    resolution: tuple[int, int] | None
    """Width and height; None for audio-only."""
    frame_rate: float | None
    """Frames per second; None for audio-only."""


def render_master_playlist(variants: Sequence[Variant]) -> str:
    """The master playlist text, variants in the order given (best first)."""
    if not variants:
        raise PlaylistError("a master playlist needs at least one variant")
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = [
            f"BANDWIDTH={variant.bandwidth}",
            f"AVERAGE-BANDWIDTH={variant.average_bandwidth}",
            f'CODECS="{variant.codecs}"',
        ]
        if variant.resolution is not None:
            attributes.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
        if variant.frame_rate is not None:
            attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), variant.uri]
    return "\n".join(lines) + "\n"
