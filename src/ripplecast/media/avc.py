"""H.264/AVC codec configuration: the AVCDecoderConfigurationRecord and the SPS (ISO 14496-15,
ITU-T H.264 7.3.2.1).

Owns `CodecError` (malformed codec data from a publisher; `hevc` and `aac` raise it too), the
exp-Golomb `BitReader` shared with `hevc`, length-prefixed NAL splitting and NAL type helpers.

Invariants: every parser takes the whole structure as `bytes` and either returns a frozen object
or raises `CodecError`; no other exception escapes on malformed input (IndexError and struct.error
never do). Nothing here keeps state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from ripplecast.errors import ProtocolError

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

AUD_NAL = b"\x09\xf0"
"""An access unit delimiter NAL (primary_pic_type 7: any slice type), without start code."""

_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
_MAX_EXP_GOLOMB_ZEROS = 31


class CodecError(ProtocolError):
    """Malformed or unsupported codec data (decoder configuration, NAL units, AAC config)."""

    def __init__(self, message: str, *, reason: str = "codec") -> None:
        super().__init__(message, reason=reason)


def remove_emulation_prevention(data: bytes) -> bytes:
    """Return the RBSP of a NAL unit: every 0x03 of a 0x00 0x00 0x03 sequence removed."""
    # bytes.replace scans left to right without overlap, which is exactly the RBSP rule: the
    # zero count restarts after each removed 0x03.
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """Big-endian bit reader over an RBSP with Exp-Golomb codes (H.264 9.1 / H.265 9.2).

    Every read past the end raises `CodecError`.
    """

    __slots__ = ("_data", "_pos", "_size")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._size = len(data) * 8

    @property
    def bits_left(self) -> int:
        """Bits not yet read."""
        return self._size - self._pos

    def u(self, n: int) -> int:
        """Read an n-bit unsigned integer (n >= 0)."""
        if n == 0:
            return 0
        end = self._pos + n
        if end > self._size:
            raise CodecError("bitstream truncated", reason="truncated")
        first = self._pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        self._pos = end
        return (chunk >> (last * 8 - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        """Read one bit as a boolean."""
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        """Skip n bits."""
        if self._pos + n > self._size:
            raise CodecError("bitstream truncated", reason="truncated")
        self._pos += n

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code ue(v)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > _MAX_EXP_GOLOMB_ZEROS:
                raise CodecError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Read a signed Exp-Golomb code se(v)."""
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)


def nal_type(nal: bytes) -> int:
    """Return the nal_unit_type (low 5 bits of the first byte) of an H.264 NAL unit."""
    if not nal:
        raise CodecError("empty NAL unit")
    return nal[0] & 0x1F


def is_vcl(nal_unit_type: int) -> bool:
    """True for H.264 coded slice NAL types (1..5)."""
    return 1 <= nal_unit_type <= 5


def avcc_to_annexb(data: bytes, nal_length_size: int) -> list[bytes]:
    """Split length-prefixed NAL units (AVCC/HVCC sample format) into NAL payloads.

    Returns the NAL units without length prefix or start code, in order; zero-length units are
    skipped. Raises `CodecError` when a length runs past the end of `data`, and `ValueError` for a
    `nal_length_size` outside 1..4 (a caller bug: configs are validated when parsed).
    """
    if not 1 <= nal_length_size <= 4:
        raise ValueError(f"nal_length_size must be 1..4, got {nal_length_size}")
    nals: list[bytes] = []
    pos = 0
    size = len(data)
    from_bytes = int.from_bytes
    while pos < size:
        start = pos + nal_length_size
        if start > size:
            raise CodecError(f"NAL length prefix truncated at offset {pos}", reason="truncated")
        end = start + from_bytes(data[pos:start], "big")
        if end > size:
            raise CodecError(
                f"NAL unit at offset {pos} claims {end - start} bytes, {size - start} left",
                reason="truncated",
            )
        if end > start:
            nals.append(data[start:end])
        pos = end
    return nals


@dataclass(frozen=True, slots=True)
class AvcSps:
    """The fields of an H.264 sequence parameter set that packagers need."""

    profile_idc: int
    """profile_idc (66 Baseline, 77 Main, 100 High, 244 High 4:4:4 Predictive...)."""
    constraint_flags: int
    """The byte of constraint_set0..5 flags and reserved bits that follows profile_idc."""
    level_idc: int
    """level_idc, ten times the level number (31 = level 3.1)."""
    chroma_format_idc: int
    """0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4."""
    width: int
    """Displayed width in luma samples, after frame cropping."""
    height: int
    """Displayed height in luma samples, after frame cropping."""
    frame_mbs_only: bool
    """False when the stream may hold field pictures (interlaced coding)."""


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last_scale = 8
    next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last_scale + reader.se() + 256) % 256
        if next_scale != 0:
            last_scale = next_scale


def parse_sps(nal: bytes) -> AvcSps:
    """Parse an H.264 SPS NAL unit (header byte included, emulation prevention allowed).

    Returns the profile, level and cropped picture size; raises `CodecError` if it is not an SPS
    or is truncated or out of range.
    """
    if not nal or nal[0] & 0x1F != NAL_SPS:
        raise CodecError("not an SPS NAL unit")
    r = BitReader(remove_emulation_prevention(nal[1:]))
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    if r.ue() > 31:
        raise CodecError("seq_parameter_set_id out of range")
    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise CodecError(f"chroma_format_idc {chroma_format_idc} out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        if r.ue() > 6 or r.ue() > 6:
            raise CodecError("bit depth out of range")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    if r.ue() > 12:
        raise CodecError("log2_max_frame_num_minus4 out of range")
    poc_type = r.ue()
    if poc_type == 0:
        if r.ue() > 12:
            raise CodecError("log2_max_pic_order_cnt_lsb_minus4 out of range")
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise CodecError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise CodecError(f"pic_order_cnt_type {poc_type} out of range")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            crop_x = 1 if chroma_array_type == 3 else 2
            crop_y = (2 if chroma_array_type == 1 else 1) * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise CodecError(f"SPS gives an empty picture ({width}x{height})")
    return AvcSps(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        width=width,
        height=height,
        frame_mbs_only=frame_mbs_only,
    )


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """A parsed AVCDecoderConfigurationRecord (the FLV/RTMP AVC sequence header body)."""

    nal_length_size: int
    """Bytes of the length prefix of each NAL unit in the samples (1, 2 or 4)."""
    sps: tuple[bytes, ...]
    """Sequence parameter set NAL units (header byte included), at least one."""
    pps: tuple[bytes, ...]
    """Picture parameter set NAL units (header byte included)."""
    sps_info: AvcSps
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
        """SPS then PPS NAL units, in the order a decoder needs them before an IDR picture."""
        return self.sps + self.pps

    @property
    def codecs(self) -> str:
        """The RFC 6381 CODECS value, e.g. "avc1.64001f"."""
        s = self.sps_info
        return f"avc1.{s.profile_idc:02x}{s.constraint_flags:02x}{s.level_idc:02x}"


def _read_nal_list(data: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    nals: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise CodecError(f"{what} length truncated", reason="truncated")
        length = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if length == 0 or pos + length > len(data):
            raise CodecError(f"{what} of {length} bytes does not fit the record")
        nals.append(data[pos : pos + length])
        pos += length
    return nals, pos


def parse_avc_config(data: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1).

    Trailing bytes (the high-profile chroma/bit-depth extension) are ignored. Raises `CodecError`
    for a wrong version, a truncated record, a 3-byte NAL length, a missing SPS or a bad SPS.
    """
    if len(data) < 7:
        raise CodecError(f"AVC decoder configuration record of {len(data)} bytes is too short")
    if data[0] != 1:
        raise CodecError(f"AVC configurationVersion {data[0]} is not 1")
    nal_length_size = (data[4] & 0x03) + 1
    if nal_length_size == 3:
        raise CodecError("AVC lengthSizeMinusOne of 2 is not allowed")
    sps, pos = _read_nal_list(data, 6, data[5] & 0x1F, "SPS")
    if pos >= len(data):
        raise CodecError("AVC record truncated before numOfPictureParameterSets")
    pps, _ = _read_nal_list(data, pos + 1, data[pos], "PPS")
    if not sps:
        raise CodecError("AVC record carries no SPS")
    if any(nal[0] & 0x1F != NAL_SPS for nal in sps) or any(nal[0] & 0x1F != NAL_PPS for nal in pps):
        raise CodecError("AVC record lists a NAL unit of the wrong type")
    return AvcConfig(
        nal_length_size=nal_length_size,
        sps=tuple(sps),
        pps=tuple(pps),
        sps_info=parse_sps(sps[0]),
    )
