"""The neutral media unit shared by every reader of a live stream.

A `MediaPacket` is built once per message from the publisher and never changed: the same object
(and the same `flv_tag` bytes) goes to every HTTP-FLV viewer, RTMP player and packager. Time is
explicit: `timestamp` is the FLV/RTMP decode timestamp in milliseconds (time base 1/1000) and
`composition_offset` the pts - dts of a video frame in the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

TIME_BASE_MS = 1000
"""Ticks per second of `MediaPacket.timestamp` (FLV and RTMP count milliseconds)."""


class PacketKind(IntEnum):
    """FLV tag type, equal to the RTMP message type id of the same payload."""

    AUDIO = 8
    VIDEO = 9
    DATA = 18


class VideoCodec(IntEnum):
    """Video codecs the live path understands (legacy FLV codec ids plus Enhanced RTMP)."""

    UNKNOWN = 0
    H264 = 7
    HEVC = 12
    AV1 = 13


class AudioCodec(IntEnum):
    """Audio codecs by their FLV SoundFormat id."""

    UNKNOWN = -1
    MP3 = 2
    AAC = 10


def build_flv_tag(kind: int, timestamp: int, payload: bytes) -> bytes:
    """Return one FLV tag: 11-byte header, `payload`, then the 4-byte PreviousTagSize.

    `timestamp` is in milliseconds; its low 24 bits and the extended byte are written as FLV
    requires. Stream id is always 0.
    """
    size = len(payload)
    ts = timestamp & 0xFFFFFFFF
    header = bytes(
        (
            kind,
            (size >> 16) & 0xFF,
            (size >> 8) & 0xFF,
            size & 0xFF,
            (ts >> 16) & 0xFF,
            (ts >> 8) & 0xFF,
            ts & 0xFF,
            (ts >> 24) & 0xFF,
            0,
            0,
            0,
        )
    )
    return b"".join((header, payload, (size + 11).to_bytes(4, "big")))


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One audio, video or data message of a live stream, immutable and shared by all readers."""

    kind: PacketKind
    """Audio, video or script data (the FLV tag type / RTMP message type id)."""
    timestamp: int
    """Decode timestamp in milliseconds on the stream's continuous timeline."""
    payload: bytes
    """The FLV tag body exactly as the publisher sent it (codec header bytes included)."""
    keyframe: bool = False
    """True for a video packet that starts a GOP (a random access point)."""
    sequence_header: bool = False
    """True for codec configuration (AVC/HEVC decoder record, AAC AudioSpecificConfig)."""
    composition_offset: int = 0
    """pts - dts in milliseconds for video frames; 0 otherwise."""
    received_at: float = 0.0
    """Wall-clock time (seconds since the epoch) at which ingest received it; for delay reports."""
    flv_tag: bytes = field(default=b"", compare=False)
    """The whole FLV tag (header + payload + PreviousTagSize), built once at creation."""

    def __post_init__(self) -> None:
        if not self.flv_tag:
            object.__setattr__(
                self, "flv_tag", build_flv_tag(self.kind, self.timestamp, self.payload)
            )

    @property
    def pts(self) -> int:
        """Presentation timestamp in milliseconds."""
        return self.timestamp + self.composition_offset

    def retimed(self, timestamp: int) -> MediaPacket:
        """Return a copy of this packet moved to `timestamp` (its FLV tag rebuilt once)."""
        return MediaPacket(
            kind=self.kind,
            timestamp=timestamp,
            payload=self.payload,
            keyframe=self.keyframe,
            sequence_header=self.sequence_header,
            composition_offset=self.composition_offset,
            received_at=self.received_at,
        )
