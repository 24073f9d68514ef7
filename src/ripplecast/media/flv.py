"""FLV: the file header, audio/video tag headers, and an incremental FLV stream reader.

This module owns the FLV container (Adobe "Video File Format Specification" v10.1, annex E) and
the video tag headers of Enhanced RTMP (v1/v2): what a tag body says about its codec, frame type
and composition time, how an RTMP audio/video/data message becomes a `MediaPacket`, and how an
FLV byte stream (an .flv file or an HTTP-FLV response body) becomes `FlvHeader` and `FlvTag`
events.

Invariants:

- Sans-I/O: `FlvReader.feed` only buffers and `FlvReader.next_event` only parses what is
  buffered, so the reader yields the same events however its input is split; feeding a stream
  in 1-byte pieces costs O(n) overall.
- Malformed input raises `FlvError`; a tag larger than `max_tag_size` raises `LimitExceeded`
  (limit "flv_max_tag_size"); both are `ProtocolError` and nothing else escapes a parser.
- A mismatched PreviousTagSize is tolerated (as ffmpeg does) and only counted.
- `MediaPacket.keyframe` means a random access point: a coded video frame of FrameType 1. The
  sequence header that encoders also mark with FrameType 1 is `sequence_header`, not `keyframe`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.media.packet import AudioCodec, MediaPacket, PacketKind, VideoCodec

__all__ = [
    "FLV_SIGNATURE",
    "AudioTagInfo",
    "FlvError",
    "FlvHeader",
    "FlvReader",
    "FlvTag",
    "VideoTagInfo",
    "flv_file_header",
    "make_packet",
    "parse_audio_tag_header",
    "parse_video_tag_header",
]

FLV_SIGNATURE = b"FLV"
"""The three signature bytes that open every FLV file."""

FLV_HEADER_SIZE = 9
"""Size of the FLV header (the DataOffset of a version 1 file)."""
TAG_HEADER_SIZE = 11
"""Size of an FLV tag header (TagType, DataSize, Timestamp, TimestampExtended, StreamID)."""
PREVIOUS_TAG_SIZE_SIZE = 4

# Video FrameType values.
FRAME_TYPE_KEY = 1
FRAME_TYPE_INTER = 2
FRAME_TYPE_DISPOSABLE_INTER = 3
FRAME_TYPE_GENERATED_KEY = 4
FRAME_TYPE_COMMAND = 5

# Legacy video CodecID values with an AVCPacketType and CompositionTime.
CODEC_ID_AVC = 7
CODEC_ID_HEVC_LEGACY = 12  # not in the FLV spec: the id Chinese CDNs use for HEVC

# AVCPacketType (legacy) values.
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
AVC_END_OF_SEQUENCE = 2

# Enhanced RTMP VideoPacketType values.
PACKET_TYPE_SEQUENCE_START = 0
PACKET_TYPE_CODED_FRAMES = 1
PACKET_TYPE_SEQUENCE_END = 2
PACKET_TYPE_CODED_FRAMES_X = 3
PACKET_TYPE_METADATA = 4
PACKET_TYPE_MPEG2TS_SEQUENCE_START = 5
PACKET_TYPE_MULTITRACK = 6
PACKET_TYPE_MOD_EX = 7

IS_EX_VIDEO_HEADER = 0x80

_VIDEO_FOURCC = {
    b"avc1": VideoCodec.H264,
    b"hvc1": VideoCodec.HEVC,
    b"av01": VideoCodec.AV1,
}

# SoundFormat values.
SOUND_FORMAT_MP3 = 2
SOUND_FORMAT_EX_HEADER = 9
SOUND_FORMAT_AAC = 10
SOUND_FORMAT_MP3_8KHZ = 14

# AACPacketType values.
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1

_SOUND_RATES = (5512, 11025, 22050, 44100)

_TAG_TYPES = frozenset(kind.value for kind in PacketKind)


class FlvError(ProtocolError):
    """The peer sent FLV bytes (a file, a tag or a tag header) that are malformed."""


def flv_file_header(*, has_audio: bool, has_video: bool) -> bytes:
    """Return the 9-byte FLV header followed by PreviousTagSize0 (0): 13 bytes in all."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return FLV_SIGNATURE + bytes((1, flags)) + FLV_HEADER_SIZE.to_bytes(4, "big") + bytes(4)


def _si24(payload: bytes, offset: int) -> int:
    value = (payload[offset] << 16) | (payload[offset + 1] << 8) | payload[offset + 2]
    return value - 0x1000000 if value & 0x800000 else value


# --------------------------------------------------------------------------------------------
# Tag headers


@dataclass(frozen=True, slots=True)
class VideoTagInfo:
    """What the header of a video tag body (legacy FLV or Enhanced RTMP) says."""

    codec: VideoCodec
    """The codec, from the legacy CodecID or the Enhanced RTMP FourCC (UNKNOWN if neither)."""
    keyframe: bool
    """FrameType is 1 (key frame); also true for the sequence header of most encoders."""
    sequence_header: bool
    """Codec configuration: AVCPacketType 0 or Enhanced RTMP PacketType SequenceStart."""
    end_of_sequence: bool
    """AVCPacketType 2 or Enhanced RTMP PacketType SequenceEnd."""
    composition_offset: int
    """CompositionTime (pts - dts) in milliseconds, a signed 24-bit value; 0 when absent."""
    enhanced: bool
    """The tag uses the Enhanced RTMP ExVideoTagHeader (IsExVideoHeader bit set)."""
    fourcc: bytes
    """The Enhanced RTMP video FourCC (e.g. b"hvc1"); b"" for a legacy header."""
    header_size: int
    """Bytes of tag header before the codec payload (e.g. 5 for legacy AVC)."""
    is_video_info_frame: bool
    """FrameType 5: a video info/command frame that carries no picture."""


def parse_video_tag_header(payload: bytes) -> VideoTagInfo:
    """Parse the header at the start of a video tag body (an RTMP video message).

    Returns a `VideoTagInfo`. Raises `FlvError` when the payload is empty or shorter than its
    header, or uses a reserved or not yet supported frame or packet type.
    """
    if not payload:
        raise FlvError("empty video tag")
    first = payload[0]
    if first & IS_EX_VIDEO_HEADER:
        return _parse_enhanced_video(payload)
    frame_type = first >> 4
    codec_id = first & 0x0F
    if not FRAME_TYPE_KEY <= frame_type <= FRAME_TYPE_COMMAND:
        raise FlvError(f"invalid video FrameType {frame_type}")
    if frame_type == FRAME_TYPE_COMMAND:
        # The body is a one-byte command, not AVCPacketType + CompositionTime (as SRS reads it).
        return VideoTagInfo(
            codec=_legacy_video_codec(codec_id),
            keyframe=False,
            sequence_header=False,
            end_of_sequence=False,
            composition_offset=0,
            enhanced=False,
            fourcc=b"",
            header_size=1,
            is_video_info_frame=True,
        )
    if codec_id not in (CODEC_ID_AVC, CODEC_ID_HEVC_LEGACY):
        return VideoTagInfo(
            codec=VideoCodec.UNKNOWN,
            keyframe=frame_type == FRAME_TYPE_KEY,
            sequence_header=False,
            end_of_sequence=False,
            composition_offset=0,
            enhanced=False,
            fourcc=b"",
            header_size=1,
            is_video_info_frame=False,
        )
    if len(payload) < 5:
        raise FlvError(f"truncated AVC video tag header: {len(payload)} bytes, need 5")
    packet_type = payload[1]
    if packet_type > AVC_END_OF_SEQUENCE:
        raise FlvError(f"invalid AVCPacketType {packet_type}")
    return VideoTagInfo(
        codec=_legacy_video_codec(codec_id),
        keyframe=frame_type == FRAME_TYPE_KEY,
        sequence_header=packet_type == AVC_SEQUENCE_HEADER,
        end_of_sequence=packet_type == AVC_END_OF_SEQUENCE,
        composition_offset=_si24(payload, 2),
        enhanced=False,
        fourcc=b"",
        header_size=5,
        is_video_info_frame=False,
    )


def _legacy_video_codec(codec_id: int) -> VideoCodec:
    if codec_id == CODEC_ID_AVC:
        return VideoCodec.H264
    if codec_id == CODEC_ID_HEVC_LEGACY:
        return VideoCodec.HEVC
    return VideoCodec.UNKNOWN


def _parse_enhanced_video(payload: bytes) -> VideoTagInfo:
    first = payload[0]
    frame_type = (first >> 4) & 0x07
    packet_type = first & 0x0F
    if not FRAME_TYPE_KEY <= frame_type <= FRAME_TYPE_COMMAND:
        raise FlvError(f"invalid Enhanced RTMP video FrameType {frame_type}")
    if packet_type == PACKET_TYPE_MOD_EX:
        raise FlvError(f"unsupported Enhanced RTMP packet type {packet_type}")
    if frame_type == FRAME_TYPE_COMMAND and packet_type != PACKET_TYPE_METADATA:
        # Enhanced RTMP: a command frame carries a VideoCommand byte and no FourCC.
        return VideoTagInfo(
            codec=VideoCodec.UNKNOWN,
            keyframe=False,
            sequence_header=False,
            end_of_sequence=False,
            composition_offset=0,
            enhanced=True,
            fourcc=b"",
            header_size=1,
            is_video_info_frame=True,
        )
    if packet_type == PACKET_TYPE_MULTITRACK:
        raise FlvError(f"unsupported Enhanced RTMP packet type {packet_type}")
    if packet_type > PACKET_TYPE_MOD_EX:
        raise FlvError(f"reserved Enhanced RTMP packet type {packet_type}")
    header_size = 8 if packet_type == PACKET_TYPE_CODED_FRAMES else 5
    if len(payload) < header_size:
        raise FlvError(
            f"truncated Enhanced RTMP video tag header: {len(payload)} bytes, need {header_size}"
        )
    fourcc = bytes(payload[1:5])
    return VideoTagInfo(
        codec=_VIDEO_FOURCC.get(fourcc, VideoCodec.UNKNOWN),
        keyframe=frame_type == FRAME_TYPE_KEY,
        sequence_header=packet_type == PACKET_TYPE_SEQUENCE_START,
        end_of_sequence=packet_type == PACKET_TYPE_SEQUENCE_END,
        composition_offset=_si24(payload, 5) if packet_type == PACKET_TYPE_CODED_FRAMES else 0,
        enhanced=True,
        fourcc=fourcc,
        header_size=header_size,
        is_video_info_frame=False,
    )


@dataclass(frozen=True, slots=True)
class AudioTagInfo:
    """What the header of an audio tag body says."""

    codec: AudioCodec
    """The codec from SoundFormat (UNKNOWN for formats the live path does not handle)."""
    sequence_header: bool
    """AACPacketType 0: the AudioSpecificConfig."""
    header_size: int
    """Bytes of tag header before the codec payload: 2 for AAC, 1 otherwise."""
    sound_rate: int
    """SoundRate in Hz (5512, 11025, 22050 or 44100); AAC always says 44100, see its config."""
    sound_size: int
    """SoundSize in bits per sample (8 or 16)."""
    stereo: bool
    """SoundType is stereo."""


def parse_audio_tag_header(payload: bytes) -> AudioTagInfo:
    """Parse the header at the start of an audio tag body (an RTMP audio message).

    Returns an `AudioTagInfo`. Raises `FlvError` when the payload is empty, an AAC payload lacks
    its AACPacketType, or it uses the Enhanced RTMP audio ExHeader (not supported yet).
    """
    if not payload:
        raise FlvError("empty audio tag")
    first = payload[0]
    sound_format = first >> 4
    sound_rate = _SOUND_RATES[(first >> 2) & 0x03]
    sound_size = 16 if first & 0x02 else 8
    stereo = bool(first & 0x01)
    if sound_format == SOUND_FORMAT_EX_HEADER:
        raise FlvError("unsupported enhanced audio (SoundFormat 9, ExHeader)")
    if sound_format == SOUND_FORMAT_AAC:
        if len(payload) < 2:
            raise FlvError("truncated AAC audio tag header: 1 byte, need 2")
        packet_type = payload[1]
        if packet_type > AAC_RAW:
            raise FlvError(f"invalid AACPacketType {packet_type}")
        return AudioTagInfo(
            codec=AudioCodec.AAC,
            sequence_header=packet_type == AAC_SEQUENCE_HEADER,
            header_size=2,
            sound_rate=sound_rate,
            sound_size=sound_size,
            stereo=stereo,
        )
    codec = (
        AudioCodec.MP3
        if sound_format in (SOUND_FORMAT_MP3, SOUND_FORMAT_MP3_8KHZ)
        else AudioCodec.UNKNOWN
    )
    return AudioTagInfo(
        codec=codec,
        sequence_header=False,
        header_size=1,
        sound_rate=sound_rate,
        sound_size=sound_size,
        stereo=stereo,
    )


def make_packet(
    kind: int, timestamp: int, payload: bytes, *, received_at: float = 0.0
) -> MediaPacket:
    """Classify an audio, video or script data payload and return it as a `MediaPacket`.

    `kind` is the FLV tag type / RTMP message type id (8, 9 or 18) and `timestamp` the decode
    timestamp in milliseconds. `keyframe` is set only for coded video frames of FrameType 1,
    `sequence_header` for AVC/HEVC/AV1 configuration and the AAC AudioSpecificConfig.
    Raises `FlvError` for another `kind` or a malformed audio or video tag header (an empty
    audio or video payload included: callers that tolerate those must drop them first).
    """
    if kind == PacketKind.VIDEO:
        video = parse_video_tag_header(payload)
        return MediaPacket(
            kind=PacketKind.VIDEO,
            timestamp=timestamp,
            payload=payload,
            keyframe=_starts_gop(video, payload),
            sequence_header=video.sequence_header,
            composition_offset=video.composition_offset,
            received_at=received_at,
        )
    if kind == PacketKind.AUDIO:
        audio = parse_audio_tag_header(payload)
        return MediaPacket(
            kind=PacketKind.AUDIO,
            timestamp=timestamp,
            payload=payload,
            sequence_header=audio.sequence_header,
            received_at=received_at,
        )
    if kind == PacketKind.DATA:
        return MediaPacket(
            kind=PacketKind.DATA, timestamp=timestamp, payload=payload, received_at=received_at
        )
    raise FlvError(f"unsupported FLV tag type {kind}")


def _starts_gop(video: VideoTagInfo, payload: bytes) -> bool:
    """A coded frame of FrameType 1: not a sequence header/end, command or metadata."""
    if not video.keyframe or video.sequence_header or video.end_of_sequence:
        return False
    if video.enhanced:
        return (payload[0] & 0x0F) in (PACKET_TYPE_CODED_FRAMES, PACKET_TYPE_CODED_FRAMES_X)
    return True


# --------------------------------------------------------------------------------------------
# Stream reader


@dataclass(frozen=True, slots=True)
class FlvHeader:
    """The FLV file header, the first event of a stream."""

    version: int
    """The Version byte (1 for every FLV file in use)."""
    has_audio: bool
    """TypeFlagsAudio: the file says it has audio tags."""
    has_video: bool
    """TypeFlagsVideo: the file says it has video tags."""


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One FLV tag of a stream: its header fields and its body."""

    kind: int
    """TagType: 8 audio, 9 video, 18 script data (a `PacketKind`)."""
    timestamp: int
    """Timestamp in milliseconds, TimestampExtended as its high 8 bits."""
    stream_id: int
    """StreamID (always 0 in a conforming file)."""
    payload: bytes
    """The tag body (AUDIODATA, VIDEODATA or SCRIPTDATA), DataSize bytes."""


_COMPACT_THRESHOLD = 64 * 1024

_STATE_HEADER = 0
_STATE_SKIP = 1
_STATE_PREVIOUS_TAG_SIZE = 2
_STATE_TAG = 3


class FlvReader:
    """Incremental reader of an FLV byte stream: feed bytes, then take events until None.

    The first event is an `FlvHeader`, every later one an `FlvTag`. `next_event` returns None
    when it needs more data; a stream that stops in the middle of a tag simply stays there.
    Raises `FlvError` for a bad signature, DataOffset or tag type and `LimitExceeded` for a tag
    body larger than `max_tag_size`. After an error the reader must not be used further.
    """

    def __init__(self, *, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self.previous_tag_size_mismatches = 0
        """How many PreviousTagSize fields did not match the tag before them (tolerated)."""
        self._buffer = bytearray()
        self._pos = 0
        self._base = 0  # stream offset of self._buffer[0], for error messages
        self._state = _STATE_HEADER
        self._skip = 0
        self._last_tag_size = 0

    def feed(self, data: bytes) -> None:
        """Append `data` to the buffer; nothing is parsed until `next_event`."""
        self._buffer += data

    def next_event(self) -> FlvHeader | FlvTag | None:
        """Return the next `FlvHeader` or `FlvTag`, or None if more data is needed."""
        try:
            while True:
                available = len(self._buffer) - self._pos
                if self._state == _STATE_HEADER:
                    if available < FLV_HEADER_SIZE:
                        return None
                    return self._read_header()
                if self._state == _STATE_SKIP:
                    step = min(self._skip, available)
                    self._pos += step
                    self._skip -= step
                    if self._skip:
                        return None
                    self._state = _STATE_PREVIOUS_TAG_SIZE
                elif self._state == _STATE_PREVIOUS_TAG_SIZE:
                    if available < PREVIOUS_TAG_SIZE_SIZE:
                        return None
                    size = int.from_bytes(self._buffer[self._pos : self._pos + 4], "big")
                    if size != self._last_tag_size:
                        self.previous_tag_size_mismatches += 1
                    self._pos += PREVIOUS_TAG_SIZE_SIZE
                    self._state = _STATE_TAG
                else:
                    return self._read_tag(available)
        finally:
            self._compact()

    def _read_header(self) -> FlvHeader:
        buf, pos = self._buffer, self._pos
        if buf[pos : pos + 3] != FLV_SIGNATURE:
            raise FlvError(f"not an FLV stream: signature {bytes(buf[pos : pos + 3])!r}")
        flags = buf[pos + 4]
        data_offset = int.from_bytes(buf[pos + 5 : pos + 9], "big")
        if data_offset < FLV_HEADER_SIZE:
            raise FlvError(f"FLV DataOffset {data_offset} is smaller than the 9-byte header")
        self._pos += FLV_HEADER_SIZE
        self._skip = data_offset - FLV_HEADER_SIZE
        self._state = _STATE_SKIP
        return FlvHeader(
            version=buf[pos + 3], has_audio=bool(flags & 0x04), has_video=bool(flags & 0x01)
        )

    def _read_tag(self, available: int) -> FlvTag | None:
        if available < TAG_HEADER_SIZE:
            return None
        buf, pos = self._buffer, self._pos
        first = buf[pos]
        if first & 0x20:
            raise FlvError("encrypted FLV tag (Filter bit set) is not supported")
        kind = first & 0x1F
        if kind not in _TAG_TYPES:
            raise FlvError(f"unsupported FLV tag type {kind} at offset {self._base + pos}")
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        if size > self.max_tag_size:
            raise LimitExceeded(
                f"FLV tag of {size} bytes exceeds the {self.max_tag_size}-byte limit",
                limit="flv_max_tag_size",
            )
        if available < TAG_HEADER_SIZE + size:
            return None
        timestamp = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
        stream_id = int.from_bytes(buf[pos + 8 : pos + 11], "big")
        start = pos + TAG_HEADER_SIZE
        payload = bytes(buf[start : start + size])
        self._pos = start + size
        self._last_tag_size = TAG_HEADER_SIZE + size
        self._state = _STATE_PREVIOUS_TAG_SIZE
        return FlvTag(
            kind=PacketKind(kind), timestamp=timestamp, stream_id=stream_id, payload=payload
        )

    def _compact(self) -> None:
        # Dropping consumed bytes costs the size of what remains, so do it only once the consumed
        # part is at least as large: the total copying stays linear in the stream size.
        if self._pos == len(self._buffer):
            self._buffer.clear()
        elif self._pos >= _COMPACT_THRESHOLD and self._pos * 2 >= len(self._buffer):
            del self._buffer[: self._pos]
        else:
            return
        self._base += self._pos
        self._pos = 0
