"""H.265/HEVC codec configuration: the HEVCDecoderConfigurationRecord (ISO 14496-15 8.3.3.1) and
the picture size from the SPS (ITU-T H.265 7.3.2.2).

Invariants: parsers take whole structures as `bytes` and return frozen objects or raise
`CodecError` (from `avc`); nothing else escapes on malformed input. No state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from ripplecast.media.avc import BitReader, CodecError, remove_emulation_prevention

NAL_IRAP_FIRST = 16
NAL_IRAP_LAST = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_PREFIX_SEI = 39

AUD_NAL = b"\x46\x01\x50"
"""An access unit delimiter NAL (pic_type 2: any slice type), without start code."""

_HEADER_SIZE = 23


def nal_type(nal: bytes) -> int:
    """Return the nal_unit_type of an H.265 NAL unit: (byte0 >> 1) & 0x3F."""
    if not nal:
        raise CodecError("empty NAL unit")
    return (nal[0] >> 1) & 0x3F


def is_vcl(nal_unit_type: int) -> bool:
    """True for H.265 coded slice segment NAL types (0..31)."""
    return nal_unit_type < 32


def is_irap(nal_unit_type: int) -> bool:
    """True for intra random access point pictures (BLA, IDR, CRA: types 16..23)."""
    return NAL_IRAP_FIRST <= nal_unit_type <= NAL_IRAP_LAST


@dataclass(frozen=True, slots=True)
class HevcSps:
    """The fields of an H.265 sequence parameter set that packagers need."""

    chroma_format_idc: int
    """0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4."""
    width: int
    """Displayed width in luma samples, after the conformance window."""
    height: int
    """Displayed height in luma samples, after the conformance window."""


def parse_sps(nal: bytes) -> HevcSps:
    """Parse an H.265 SPS NAL unit (2-byte header included) up to the conformance window.

    Returns chroma format and cropped size; raises `CodecError` if it is not an SPS, is
    truncated, or holds out-of-range values.
    """
    if len(nal) < 2 or nal_type(nal) != NAL_SPS:
        raise CodecError("not an HEVC SPS NAL unit")
    r = BitReader(remove_emulation_prevention(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError("sps_max_sub_layers_minus1 out of range")
    r.skip(1)  # sps_temporal_id_nesting_flag
    # profile_tier_level(1, max_sub_layers_minus1): general part is 88 bits + 8 bits of level.
    r.skip(96)
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        r.skip(88 * profile_present + 8 * level_present)
    if r.ue() > 15:
        raise CodecError("sps_seq_parameter_set_id out of range")
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise CodecError(f"chroma_format_idc {chroma_format_idc} out of range")
    separate_colour_plane = chroma_format_idc == 3 and r.flag()
    width = r.ue()
    height = r.ue()
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if separate_colour_plane or chroma_format_idc in (0, 3):
            sub_w, sub_h = 1, 1
        else:
            sub_w, sub_h = 2, 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise CodecError(f"SPS gives an empty picture ({width}x{height})")
    return HevcSps(chroma_format_idc=chroma_format_idc, width=width, height=height)


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """A parsed HEVCDecoderConfigurationRecord (the HEVC sequence header body)."""

    nal_length_size: int
    """Bytes of the length prefix of each NAL unit in the samples (1, 2 or 4)."""
    general_profile_space: int
    """general_profile_space (0 in every deployed profile)."""
    general_tier_flag: bool
    """True for the High tier."""
    general_profile_idc: int
    """1 Main, 2 Main 10, 3 Main Still Picture, 4 range extensions..."""
    general_profile_compatibility_flags: int
    """The 32 compatibility flags, flag 0 in the most significant bit."""
    general_constraint_indicator_flags: int
    """The 48 constraint indicator bits (progressive_source_flag first)."""
    general_level_idc: int
    """30 times the level number (93 = level 3.1)."""
    vps: tuple[bytes, ...]
    """Video parameter set NAL units (header included)."""
    sps: tuple[bytes, ...]
    """Sequence parameter set NAL units (header included), at least one."""
    pps: tuple[bytes, ...]
    """Picture parameter set NAL units (header included)."""
    sps_info: HevcSps
    """The first SPS, decoded."""

    @property
    def width(self) -> int:
        """Displayed width in pixels (from the first SPS)."""
        return self.sps_info.width

    @property
    def height(self) -> int:
        """Displayed height in pixels (from the first SPS)."""
        return self.sps_info.height

    @property
    def parameter_sets(self) -> tuple[bytes, ...]:
        """VPS, SPS then PPS NAL units, in the order a decoder needs them before an IRAP."""
        return self.vps + self.sps + self.pps

    @property
    def codecs(self) -> str:
        """The RFC 6381 CODECS value per ISO 14496-15 Annex E, e.g. "hvc1.1.6.L93.B0"."""
        space = ("", "A", "B", "C")[self.general_profile_space]
        flags = self.general_profile_compatibility_flags
        reversed_flags = int(f"{flags:032b}"[::-1], 2)
        constraint = self.general_constraint_indicator_flags.to_bytes(6, "big").rstrip(b"\x00")
        parts = [
            "hvc1",
            f"{space}{self.general_profile_idc}",
            f"{reversed_flags:X}",
            f"{'H' if self.general_tier_flag else 'L'}{self.general_level_idc}",
            *(f"{b:X}" for b in constraint),
        ]
        return ".".join(parts)


def parse_hevc_config(data: bytes) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord.

    Profile, tier and level come from the record header (which mirrors the SPS); the picture
    size from the first SPS. Raises `CodecError` for a wrong version, a truncated record, a
    3-byte NAL length, no SPS, or a bad SPS.
    """
    if len(data) < _HEADER_SIZE:
        raise CodecError(f"HEVC decoder configuration record of {len(data)} bytes is too short")
    if data[0] != 1:
        raise CodecError(f"HEVC configurationVersion {data[0]} is not 1")
    nal_length_size = (data[21] & 0x03) + 1
    if nal_length_size == 3:
        raise CodecError("HEVC lengthSizeMinusOne of 2 is not allowed")
    arrays: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
    pos = _HEADER_SIZE
    size = len(data)
    for _ in range(data[22]):
        if pos + 3 > size:
            raise CodecError("HEVC NAL array header truncated", reason="truncated")
        count = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        for _ in range(count):
            if pos + 2 > size:
                raise CodecError("HEVC NAL length truncated", reason="truncated")
            length = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if length < 2 or pos + length > size:
                raise CodecError(f"HEVC NAL unit of {length} bytes does not fit the record")
            nal = data[pos : pos + length]
            pos += length
            # Classify by the NAL's own header, not the array's declared type: a unit filed
            # under the wrong array still reaches the decoder in the right role.
            kind = nal_type(nal)
            if kind in arrays:
                arrays[kind].append(nal)
    if not arrays[NAL_SPS]:
        raise CodecError("HEVC record carries no SPS")
    return HevcConfig(
        nal_length_size=nal_length_size,
        general_profile_space=data[1] >> 6,
        general_tier_flag=bool(data[1] & 0x20),
        general_profile_idc=data[1] & 0x1F,
        general_profile_compatibility_flags=int.from_bytes(data[2:6], "big"),
        general_constraint_indicator_flags=int.from_bytes(data[6:12], "big"),
        general_level_idc=data[12],
        vps=tuple(arrays[NAL_VPS]),
        sps=tuple(arrays[NAL_SPS]),
        pps=tuple(arrays[NAL_PPS]),
        sps_info=parse_sps(arrays[NAL_SPS][0]),
    )
