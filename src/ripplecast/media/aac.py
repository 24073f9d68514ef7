"""AAC configuration: the AudioSpecificConfig (ISO 14496-3 1.6.2.1) and ADTS headers (1.A.2).

Invariants: `parse_audio_specific_config` takes the whole config (the FLV AAC sequence header
body) and returns a frozen object or raises `CodecError`; `adts_header` is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

from ripplecast.media.avc import BitReader, CodecError

SAMPLING_FREQUENCIES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
"""Sampling frequency by samplingFrequencyIndex 0..12."""

AOT_AAC_LC = 2
AOT_SBR = 5
AOT_PS = 29
ADTS_HEADER_SIZE = 7
_MAX_ADTS_FRAME = (1 << 13) - 1


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """A parsed AudioSpecificConfig."""

    object_type: int
    """audioObjectType as signalled (2 AAC-LC, 5 SBR/HE-AAC, 29 PS/HE-AACv2; escape 31 decoded)."""
    sampling_frequency: int
    """Sampling frequency in Hz of the signalled (core) stream."""
    sampling_frequency_index: int
    """samplingFrequencyIndex 0..12, or 15 when the frequency was written explicitly."""
    channel_configuration: int
    """channelConfiguration (0 means a program_config_element defines the channels)."""
    core_object_type: int
    """The underlying object type: equals `object_type` except for explicit SBR/PS (5, 29)."""
    extension_sampling_frequency: int | None = None
    """Output sampling frequency with explicit SBR/PS signalling, else None."""

    @property
    def codecs(self) -> str:
        """The RFC 6381 CODECS value, e.g. "mp4a.40.2"."""
        return f"mp4a.40.{self.object_type}"


def _object_type(r: BitReader) -> int:
    aot = r.u(5)
    return 32 + r.u(6) if aot == 31 else aot


def _frequency(r: BitReader) -> tuple[int, int]:
    index = r.u(4)
    if index == 0xF:
        frequency = r.u(24)
        if frequency == 0:
            raise CodecError("explicit AAC sampling frequency of 0 Hz")
        return index, frequency
    if index >= len(SAMPLING_FREQUENCIES):
        raise CodecError(f"reserved AAC samplingFrequencyIndex {index}")
    return index, SAMPLING_FREQUENCIES[index]


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse the head of an AudioSpecificConfig (object type, frequency, channels, SBR/PS).

    The GASpecificConfig and anything after it are not needed for packaging and are ignored.
    Raises `CodecError` when truncated, for object type 0, or for a reserved frequency index.
    """
    r = BitReader(data)
    object_type = _object_type(r)
    if object_type == 0:
        raise CodecError("AAC audioObjectType 0 (null) is not valid")
    index, frequency = _frequency(r)
    channels = r.u(4)
    core = object_type
    extension: int | None = None
    if object_type in (AOT_SBR, AOT_PS):
        _, extension = _frequency(r)
        core = _object_type(r)
        if core in (0, AOT_SBR, AOT_PS):
            raise CodecError(f"AAC core audioObjectType {core} is not valid under SBR/PS")
    return AudioSpecificConfig(
        object_type=object_type,
        sampling_frequency=frequency,
        sampling_frequency_index=index,
        channel_configuration=channels,
        core_object_type=core,
        extension_sampling_frequency=extension,
    )


def adts_header(config: AudioSpecificConfig, frame_length: int) -> bytes:
    """Return the 7-byte ADTS header (MPEG-4, no CRC) for one raw AAC frame.

    `frame_length` is the length of the raw frame that follows, WITHOUT the header; the header's
    aac_frame_length field is `frame_length + 7`. Raises `CodecError` when ADTS cannot express
    the config (object type outside 1..4, a frequency with no index, channel configuration 0 or
    above 7) or the frame is longer than 8184 bytes.
    """
    profile = config.core_object_type - 1
    if not 0 <= profile <= 3:
        raise CodecError(
            f"AAC object type {config.core_object_type} cannot be carried in ADTS",
            reason="unsupported",
        )
    index = config.sampling_frequency_index
    if index == 0xF:
        try:
            index = SAMPLING_FREQUENCIES.index(config.sampling_frequency)
        except ValueError:
            raise CodecError(
                f"AAC frequency {config.sampling_frequency} Hz has no ADTS index",
                reason="unsupported",
            ) from None
    channels = config.channel_configuration
    if not 1 <= channels <= 7:
        raise CodecError(
            f"AAC channel configuration {channels} cannot be carried in ADTS", reason="unsupported"
        )
    total = frame_length + ADTS_HEADER_SIZE
    if frame_length < 0 or total > _MAX_ADTS_FRAME:
        raise CodecError(f"AAC frame of {frame_length} bytes does not fit an ADTS frame")
    return bytes(
        (
            0xFF,
            0xF1,  # syncword end, MPEG-4, layer 0, protection_absent
            (profile << 6) | (index << 2) | (channels >> 2),
            ((channels & 0x03) << 6) | (total >> 11),
            (total >> 3) & 0xFF,
            ((total & 0x07) << 5) | 0x1F,  # buffer fullness 0x7FF (VBR)
            0xFC,  # buffer fullness end, one raw data block
        )
    )
