"""Live HLS: packages one stream into MPEG-TS segments in memory and renders its playlist.

The packager is a packet listener of a `LiveStream`. Segments start on a keyframe (any audio
frame for an audio-only stream) and are cut at the first keyframe once `hls_segment_seconds` of
media have gone by, or when a segment reaches `hls_max_segment_bytes`.

Segment names come from the media clock, not a counter: segment N starts in the N-th target
interval of the stream's timeline (`start_ms // target_ms`), so two packagers fed the same stream
(an origin and an edge, or a replacement origin) name segments alike. EXT-X-MEDIA-SEQUENCE
starts at the first segment's number and counts up by one, so with keyframes aligned to the
target duration the two numbers are equal.

Everything is kept in memory: the playlist is rendered once per new segment and served as the
same bytes object to every player.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ripplecast.config import Settings
from ripplecast.errors import ProtocolError
from ripplecast.media.flv import parse_audio_tag_header, parse_video_tag_header
from ripplecast.media.mpegts import TsMuxer
from ripplecast.media.packet import AudioCodec, MediaPacket, PacketKind, VideoCodec

log = logging.getLogger("ripplecast.live.hls")

EXTRA_SEGMENTS_KEPT = 3
"""Segments kept after they leave the playlist, for players that fetch them late."""

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_CONTENT_TYPE = "video/mp2t"


@dataclass(frozen=True, slots=True)
class HlsSegment:
    """One finished MPEG-TS segment held in memory."""

    number: int
    """Media-clock number, used in the URI (`NUMBER.ts`)."""
    sequence: int
    """Media sequence number in the playlist."""
    start_ms: int
    """Decode time of its first packet on the stream timeline (ms)."""
    duration: float
    """Seconds of media."""
    program_date_time: float
    """Wall clock (epoch seconds) at which ingest received its first packet."""
    discontinuity: bool
    """True if a publisher change happened right before it."""
    data: bytes
    """The MPEG-TS bytes."""

    @property
    def uri(self) -> str:
        """The file name the playlist lists."""
        return f"{self.number}.ts"


def _format_pdt(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def render_playlist(
    segments: list[HlsSegment], *, target_duration: int, discontinuity_sequence: int
) -> bytes:
    """Return a sliding-window media playlist listing `segments` (oldest first)."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence if segments else 0}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    for segment in segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_format_pdt(segment.program_date_time)}")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(segment.uri)
    lines.append("")
    return "\n".join(lines).encode()


class HlsAudience:
    """Who has been fetching a stream's playlist lately: an estimate of its HLS viewers.

    HLS has no connection to count; a player reloads the live playlist about once a target
    duration, so a client seen within a few target durations is watching. Clients are told
    apart by a key the caller chooses (address and user agent), so viewers behind one address
    with the same browser count once. At most `max_clients` keys are kept."""

    def __init__(self, window_seconds: float, *, max_clients: int = 100_000) -> None:
        self._window = window_seconds
        self._max = max_clients
        self._seen: dict[str, float] = {}

    def seen(self, client: str, now: float) -> None:
        """`client` fetched the playlist at monotonic time `now`."""
        self._seen.pop(client, None)
        self._seen[client] = now  # insertion order is last-seen order
        if len(self._seen) > self._max:
            self._expire(now)
            while len(self._seen) > self._max:
                del self._seen[next(iter(self._seen))]

    def count(self, now: float) -> int:
        """Clients seen within the window before `now`."""
        self._expire(now)
        return len(self._seen)

    def _expire(self, now: float) -> None:
        horizon = now - self._window
        for client, when in list(self._seen.items()):
            if when >= horizon:
                break
            del self._seen[client]


class HlsPackager:
    """Packet listener that keeps a live HLS window for one stream (see module docstring)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        muxer_factory: Callable[[], TsMuxer] = TsMuxer,
        on_segment: Callable[[HlsSegment], None] | None = None,
    ) -> None:
        self.name = name
        self._on_segment = on_segment
        """Told about each segment as it is cut (metrics); must not raise."""
        self._target_ms = int(settings.hls_segment_seconds * 1000)
        self._window = settings.hls_window_segments
        self._max_bytes = settings.hls_max_segment_bytes
        self._muxer_factory = muxer_factory
        self._muxer = muxer_factory()
        self._segments: deque[HlsSegment] = deque()
        self._by_number: dict[int, HlsSegment] = {}
        self._parts: list[bytes] = []
        self._size = 0
        self._start_ms: int | None = None
        self._start_wallclock = 0.0
        self._last_ms = 0
        self._frame_ms = 0
        self._next_sequence: int | None = None
        self._last_number = -1
        self._discontinuity_pending = False
        self._discontinuity_sequence = 0
        self._counted_upto = -1
        self._max_duration = settings.hls_segment_seconds
        self._playlist: bytes | None = None
        self._video_codec = VideoCodec.UNKNOWN
        self._warned: set[str] = set()
        self.ready = asyncio.Event()
        """Set once the first segment exists (a playlist request may wait for it)."""
        self.errors = 0
        self.audience = HlsAudience(3 * settings.hls_segment_seconds + 2)
        """Recent playlist readers, fed by the HTTP layer."""

    # --- what HTTP serves -----------------------------------------------------------------

    @property
    def playlist(self) -> bytes | None:
        """The current media playlist, or None before the first segment."""
        return self._playlist

    def segment(self, number: int) -> HlsSegment | None:
        """The segment named `number`, if still kept."""
        return self._by_number.get(number)

    @property
    def segments(self) -> list[HlsSegment]:
        """Segments currently listed in the playlist, oldest first."""
        return list(self._segments)[-self._window :]

    # --- packet listener --------------------------------------------------------------------

    def on_packet(self, packet: MediaPacket) -> None:
        """Mux one packet into the current segment, cutting segments on keyframes."""
        try:
            if packet.kind is PacketKind.VIDEO:
                self._video(packet)
            elif packet.kind is PacketKind.AUDIO:
                self._audio(packet)
        except ProtocolError as exc:
            # A bad frame from the publisher costs this frame only, not the stream.
            self.errors += 1
            self._warn_once(exc.reason, f"stream {self.name}: HLS skipped a packet: {exc}")

    def on_discontinuity(self) -> None:
        """The publisher changed: close the segment; the next one starts a discontinuity."""
        self._finish(self._last_ms + max(self._frame_ms, 1))
        self._discontinuity_pending = True
        self._muxer = self._muxer_factory()
        self._video_codec = VideoCodec.UNKNOWN

    def close(self) -> None:
        """Forget every segment (the stream ended)."""
        self._segments.clear()
        self._by_number.clear()
        self._parts.clear()
        self._playlist = None

    # --- internals --------------------------------------------------------------------------

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _video(self, packet: MediaPacket) -> None:
        info = parse_video_tag_header(packet.payload)
        body = packet.payload[info.header_size :]
        if packet.sequence_header:
            if info.codec in (VideoCodec.H264, VideoCodec.HEVC):
                self._muxer.set_video_config(info.codec, body)
                self._video_codec = info.codec
            else:
                self._warn_once(
                    "codec", f"stream {self.name}: {info.codec.name} video is not packaged to HLS"
                )
            return
        if self._video_codec is VideoCodec.UNKNOWN or info.end_of_sequence or not body:
            return
        if info.codec is not self._video_codec:
            return
        dts = packet.timestamp
        if dts > self._last_ms:
            self._frame_ms = dts - self._last_ms if self._last_ms else self._frame_ms
        if packet.keyframe:
            if self._start_ms is None:
                self._begin(packet)
            elif dts - self._start_ms >= self._target_ms or self._size >= self._max_bytes:
                self._finish(dts)
                self._begin(packet)
        elif self._start_ms is None:
            return  # wait for a keyframe to start the first segment
        elif self._size >= self._max_bytes:
            self._finish(dts)
            self._begin(packet)
        data = self._muxer.write_video(
            body, dts_ms=dts, pts_ms=dts + packet.composition_offset, keyframe=packet.keyframe
        )
        self._add(data, dts)

    def _audio(self, packet: MediaPacket) -> None:
        info = parse_audio_tag_header(packet.payload)
        body = packet.payload[info.header_size :]
        if info.codec is not AudioCodec.AAC:
            self._warn_once("audio", f"stream {self.name}: {info.codec.name} audio not in HLS")
            return
        if packet.sequence_header:
            self._muxer.set_audio_config(info.codec, body)
            return
        if not self._muxer.has_audio or not body:
            return
        ts = packet.timestamp
        if self._video_codec is VideoCodec.UNKNOWN and not self._muxer.has_video:
            # Audio-only stream: every frame is a random access point.
            if self._start_ms is None:
                self._begin(packet)
            elif ts - self._start_ms >= self._target_ms:
                self._finish(ts)
                self._begin(packet)
        elif self._start_ms is None:
            return
        self._add(self._muxer.write_audio(body, pts_ms=ts), ts)

    def _begin(self, packet: MediaPacket) -> None:
        self._start_ms = packet.timestamp
        self._start_wallclock = packet.received_at
        head = self._muxer.start_segment()
        self._parts = [head]
        self._size = len(head)

    def _add(self, data: bytes, ts: int) -> None:
        if data:
            self._parts.append(data)
            self._size += len(data)
        if ts > self._last_ms:
            self._last_ms = ts

    def _finish(self, end_ms: int) -> None:
        start = self._start_ms
        if start is None or not self._parts:
            return
        number = max(start // self._target_ms, self._last_number + 1)
        if self._next_sequence is None:
            self._next_sequence = number
        duration = max(end_ms - start, 1) / 1000.0
        segment = HlsSegment(
            number=number,
            sequence=self._next_sequence,
            start_ms=start,
            duration=duration,
            program_date_time=self._start_wallclock,
            discontinuity=self._discontinuity_pending,
            data=b"".join(self._parts),
        )
        self._discontinuity_pending = False
        self._next_sequence += 1
        self._last_number = number
        self._start_ms = None
        self._parts = []
        self._size = 0
        self._segments.append(segment)
        self._by_number[number] = segment
        if self._on_segment is not None:
            self._on_segment(segment)
        self._max_duration = max(self._max_duration, duration)
        while len(self._segments) > self._window + EXTRA_SEGMENTS_KEPT:
            old = self._segments.popleft()
            del self._by_number[old.number]
        listed = self.segments
        first_listed = listed[0].sequence
        for old in self._segments:
            if old.sequence >= first_listed:
                break
            if old.discontinuity and old.sequence > self._counted_upto:
                # EXT-X-DISCONTINUITY-SEQUENCE counts discontinuities no longer listed.
                self._discontinuity_sequence += 1
                self._counted_upto = old.sequence
        self._playlist = render_playlist(
            listed,
            target_duration=math.ceil(self._max_duration),
            discontinuity_sequence=self._discontinuity_sequence,
        )
        self.ready.set()
