"""Codec configuration parsers against real encoder output (x264, x265) and known AAC configs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ripplecast.errors import ProtocolError
from ripplecast.media import aac, avc, hevc
from ripplecast.media.avc import CodecError

HAVE_FFMPEG = shutil.which("ffmpeg") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not on PATH")


def _encoders() -> str:
    if not HAVE_FFMPEG:
        return ""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout


ENCODERS = _encoders()
needs_x265 = pytest.mark.skipif("libx265" not in ENCODERS, reason="ffmpeg has no libx265")


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (trailing zero bytes belong to the next start code)."""
    return [nal.rstrip(b"\x00") for nal in re.split(b"\x00\x00\x01", data)[1:]]


def encode(tmp_path: Path, codec: str, size: str, *extra: str, pix_fmt: str = "yuv420p") -> bytes:
    """One frame of testsrc encoded to a raw Annex B stream."""
    out = tmp_path / ("out.h264" if codec == "libx264" else "out.hevc")
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25"]
    cmd += ["-frames:v", "1", "-pix_fmt", pix_fmt, "-c:v", codec, *extra]
    if codec == "libx265":
        cmd += ["-x265-params", "log-level=error", "-f", "hevc"]
    else:
        cmd += ["-f", "h264"]
    subprocess.run([*cmd, str(out)], check=True, capture_output=True)
    return out.read_bytes()


def avc_record(sps: list[bytes], pps: list[bytes], length_size: int = 4) -> bytes:
    """An AVCDecoderConfigurationRecord built by hand from parameter sets."""
    out = bytearray((1, sps[0][1], sps[0][2], sps[0][3], 0xFC | (length_size - 1), 0xE0 | len(sps)))
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def hevc_record(vps: bytes, sps: bytes, pps: bytes) -> bytes:
    """An HEVCDecoderConfigurationRecord built by hand (profile_tier_level copied from the SPS)."""
    rbsp = sps.replace(b"\x00\x00\x03", b"\x00\x00")
    out = bytearray((1,)) + rbsp[3:15]  # profile space/tier/idc, compat flags, constraints, level
    out += bytes((0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 3))
    for kind, nal in ((32, vps), (33, sps), (34, pps)):
        out += bytes((0x80 | kind, 0, 1)) + len(nal).to_bytes(2, "big") + nal
    return bytes(out)


# -- AVC -----------------------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.ffmpeg
@pytest.mark.parametrize(
    ("size", "extra", "pix_fmt", "profile_idc", "chroma", "frame_mbs_only"),
    [
        ("1280x720", ("-profile:v", "high"), "yuv420p", 100, 1, True),
        ("854x480", ("-profile:v", "main"), "yuv420p", 77, 1, True),
        ("426x240", ("-profile:v", "baseline"), "yuv420p", 66, 1, True),
        ("1920x1080", ("-profile:v", "high", "-x264-params", "cqm=jvt"), "yuv420p", 100, 1, True),
        ("720x576", ("-flags", "+ildct+ilme", "-x264-params", "tff=1"), "yuv420p", 100, 1, False),
        ("642x362", ("-profile:v", "high444"), "yuv444p", 244, 3, True),
        ("650x364", ("-profile:v", "high422"), "yuv422p", 122, 2, True),
    ],
)
def test_sps_from_x264(
    tmp_path: Path,
    size: str,
    extra: tuple[str, ...],
    pix_fmt: str,
    profile_idc: int,
    chroma: int,
    frame_mbs_only: bool,
) -> None:
    nals = split_annexb(encode(tmp_path, "libx264", size, *extra, pix_fmt=pix_fmt))
    sps = [n for n in nals if avc.nal_type(n) == avc.NAL_SPS]
    pps = [n for n in nals if avc.nal_type(n) == avc.NAL_PPS]
    assert any(avc.nal_type(n) == avc.NAL_IDR for n in nals)
    config = avc.parse_avc_config(avc_record(sps, pps))
    width, height = (int(v) for v in size.split("x"))
    assert (config.width, config.height) == (width, height)
    assert config.sps_info.profile_idc == profile_idc
    assert config.sps_info.chroma_format_idc == chroma
    assert config.sps_info.frame_mbs_only is frame_mbs_only
    assert config.nal_length_size == 4
    assert config.sps == tuple(sps)
    assert config.pps == tuple(pps)
    assert config.parameter_sets == (*sps, *pps)
    s = config.sps_info
    assert config.codecs == f"avc1.{profile_idc:02x}{s.constraint_flags:02x}{s.level_idc:02x}"
    assert config.codecs == f"avc1.{sps[0][1:4].hex()}"


SPS_320 = bytes.fromhex("6764000dacd94141fb011000000300100000030320f1429960")
PPS_320 = bytes.fromhex("68ebe3cb22c0")


def test_avc_record_fields_and_codecs() -> None:
    config = avc.parse_avc_config(avc_record([SPS_320], [PPS_320], length_size=2))
    assert (config.width, config.height) == (320, 240)
    assert config.codecs == "avc1.64000d"
    assert config.nal_length_size == 2
    # The high-profile extension after the PPS list is ignored.
    extended = avc_record([SPS_320], [PPS_320]) + b"\xfd\xf8\xf8\x00"
    assert avc.parse_avc_config(extended).width == 320


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01\x64\x00\x0d\xff",
        b"\x02" + avc_record([SPS_320], [PPS_320])[1:],  # version 2
        avc_record([SPS_320], [PPS_320])[:-3],  # PPS truncated
        avc_record([SPS_320], [PPS_320])[: 8 + len(SPS_320)],  # no PPS count
        bytes((1, 0x64, 0, 0x0D, 0xFE, 0xE0, 0)),  # 3-byte NAL length
        bytes((1, 0x64, 0, 0x0D, 0xFF, 0xE0, 0)),  # no SPS
        avc_record([PPS_320], [PPS_320]),  # a PPS in the SPS list
        avc_record([SPS_320[:6]], [PPS_320]),  # SPS truncated
    ],
)
def test_avc_record_malformed(record: bytes) -> None:
    with pytest.raises(CodecError):
        avc.parse_avc_config(record)


def test_codec_error_is_protocol_error() -> None:
    assert issubclass(CodecError, ProtocolError)
    assert CodecError("x").reason == "codec"


def test_avcc_to_annexb_splits_and_validates() -> None:
    data = b"\x00\x00\x00\x02\x09\xf0" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x03\x65\x88\x80"
    assert avc.avcc_to_annexb(data, 4) == [b"\x09\xf0", b"\x65\x88\x80"]
    assert avc.avcc_to_annexb(b"\x02\x09\xf0\x01\x41", 1) == [b"\x09\xf0", b"\x41"]
    assert avc.avcc_to_annexb(b"\x00\x01\x41", 2) == [b"\x41"]
    assert avc.avcc_to_annexb(b"", 4) == []
    with pytest.raises(CodecError):
        avc.avcc_to_annexb(b"\x00\x00\x00\x05\x65\x88", 4)  # overrun
    with pytest.raises(CodecError):
        avc.avcc_to_annexb(b"\x00\x00\x00\x01\x65\x00\x00", 4)  # truncated prefix
    with pytest.raises(ValueError, match="nal_length_size"):
        avc.avcc_to_annexb(b"", 5)


def test_nal_type_helpers() -> None:
    assert avc.nal_type(b"\x65") == avc.NAL_IDR
    assert avc.nal_type(b"\x67") == avc.NAL_SPS
    assert avc.nal_type(b"\x68") == avc.NAL_PPS
    assert avc.nal_type(b"\x09") == avc.NAL_AUD
    assert avc.nal_type(b"\x06") == avc.NAL_SEI
    assert avc.is_vcl(5)
    assert avc.is_vcl(1)
    assert not avc.is_vcl(6)
    assert hevc.nal_type(b"\x40\x01") == hevc.NAL_VPS
    assert hevc.nal_type(b"\x42\x01") == hevc.NAL_SPS
    assert hevc.nal_type(b"\x44\x01") == hevc.NAL_PPS
    assert hevc.nal_type(hevc.AUD_NAL) == hevc.NAL_AUD
    assert hevc.nal_type(b"\x26\x01") == 19  # IDR_W_RADL
    assert hevc.is_irap(19)
    assert hevc.is_irap(21)
    assert not hevc.is_irap(1)
    with pytest.raises(CodecError):
        avc.nal_type(b"")


def test_emulation_prevention_removed() -> None:
    assert avc.remove_emulation_prevention(b"\x00\x00\x03\x00\x00\x03\x01") == b"\x00" * 4 + b"\x01"
    assert avc.remove_emulation_prevention(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


def test_bit_reader_exp_golomb() -> None:
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3; se of 4 is -2
    r = avc.BitReader(bytes((0b10100110, 0b01000010, 0b10000000)))
    assert [r.ue(), r.ue(), r.ue(), r.ue()] == [0, 1, 2, 3]
    assert r.se() == -2
    with pytest.raises(CodecError):
        avc.BitReader(b"\x00\x00\x00\x00\x00").ue()


# -- HEVC ----------------------------------------------------------------------------------------


@needs_ffmpeg
@needs_x265
@pytest.mark.ffmpeg
@pytest.mark.parametrize(
    ("size", "pix_fmt", "extra", "profile_idc", "chroma"),
    [
        ("1280x720", "yuv420p", (), 1, 1),
        ("854x480", "yuv420p", (), 1, 1),
        ("640x360", "yuv420p10le", (), 2, 1),
        ("642x362", "yuv444p", (), 4, 3),
    ],
)
def test_hevc_record_from_x265(
    tmp_path: Path,
    size: str,
    pix_fmt: str,
    extra: tuple[str, ...],
    profile_idc: int,
    chroma: int,
) -> None:
    nals = split_annexb(encode(tmp_path, "libx265", size, *extra, pix_fmt=pix_fmt))
    by_type = {hevc.nal_type(n): n for n in reversed(nals)}
    vps, sps, pps = by_type[32], by_type[33], by_type[34]
    assert any(hevc.is_irap(hevc.nal_type(n)) for n in nals)
    config = hevc.parse_hevc_config(hevc_record(vps, sps, pps))
    width, height = (int(v) for v in size.split("x"))
    assert (config.width, config.height) == (width, height)
    assert config.vps == (vps,)
    assert config.sps == (sps,)
    assert config.pps == (pps,)
    assert config.parameter_sets == (vps, sps, pps)
    assert config.nal_length_size == 4
    assert config.general_profile_idc == profile_idc
    assert config.sps_info.chroma_format_idc == chroma
    assert not config.general_tier_flag
    assert config.codecs.startswith(f"hvc1.{profile_idc}.")
    assert f".L{config.general_level_idc}" in config.codecs


VPS_320 = bytes.fromhex("40010c01ffff01600000030090000003000003003c959809")
HSPS_320 = bytes.fromhex(
    "42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003210"
)
HPPS_320 = bytes.fromhex("4401c172b46240")


def test_hevc_codecs_string() -> None:
    config = hevc.parse_hevc_config(hevc_record(VPS_320, HSPS_320, HPPS_320))
    assert (config.width, config.height) == (320, 240)
    # Main profile, compatibility flags 1 and 2 (0x60000000 reversed = 0x6), level 2, 0x90.
    assert config.codecs == "hvc1.1.6.L60.90"
    header = bytearray(hevc_record(VPS_320, HSPS_320, HPPS_320))
    header[6:12] = b"\xb0\x00\x00\x00\x00\x00"
    header[12] = 93
    assert hevc.parse_hevc_config(bytes(header)).codecs == "hvc1.1.6.L93.B0"
    header[1] = 0x20 | 2  # High tier, Main 10
    header[2:6] = b"\x20\x00\x00\x00"
    assert hevc.parse_hevc_config(bytes(header)).codecs == "hvc1.2.4.H93.B0"


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01" * 22,
        b"\x00" + hevc_record(VPS_320, HSPS_320, HPPS_320)[1:],
        hevc_record(VPS_320, HSPS_320, HPPS_320)[:-2],
        hevc_record(VPS_320, HSPS_320, HPPS_320)[:21] + b"\x0e\x00",  # 3-byte lengths
        hevc_record(VPS_320, HSPS_320, HPPS_320)[:22] + b"\x00",  # no arrays: no SPS
        hevc_record(VPS_320, HSPS_320[:12], HPPS_320),  # SPS truncated
    ],
)
def test_hevc_record_malformed(record: bytes) -> None:
    with pytest.raises(CodecError):
        hevc.parse_hevc_config(record)


# -- AAC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "frequency", "channels"),
    [(b"\x12\x10", 44100, 2), (b"\x11\x90", 48000, 2), (b"\x11\x88", 48000, 1)],
)
def test_aac_lc_configs(config: bytes, frequency: int, channels: int) -> None:
    asc = aac.parse_audio_specific_config(config)
    assert asc.object_type == 2
    assert asc.core_object_type == 2
    assert asc.sampling_frequency == frequency
    assert asc.channel_configuration == channels
    assert asc.codecs == "mp4a.40.2"


def _bits(*fields: tuple[int, int]) -> bytes:
    value = 0
    count = 0
    for width, v in fields:
        value = (value << width) | v
        count += width
    pad = -count % 8
    return (value << pad).to_bytes((count + pad) // 8, "big")


def test_aac_explicit_frequency_and_escape() -> None:
    asc = aac.parse_audio_specific_config(_bits((5, 2), (4, 15), (24, 44100), (4, 2)))
    assert asc.sampling_frequency == 44100
    assert asc.sampling_frequency_index == 15
    assert asc.channel_configuration == 2
    # ADTS maps an explicit standard frequency back to its index.
    assert aac.adts_header(asc, 100) == bytes.fromhex("fff150800d7ffc")
    odd = aac.parse_audio_specific_config(_bits((5, 2), (4, 15), (24, 44000), (4, 2)))
    assert odd.sampling_frequency == 44000
    with pytest.raises(CodecError):
        aac.adts_header(odd, 100)
    escaped = aac.parse_audio_specific_config(_bits((5, 31), (6, 10), (4, 3), (4, 1)))
    assert escaped.object_type == 42
    assert escaped.sampling_frequency == 48000
    assert escaped.codecs == "mp4a.40.42"
    with pytest.raises(CodecError):
        aac.adts_header(escaped, 100)


def test_aac_explicit_sbr() -> None:
    # HE-AAC, explicit hierarchical signalling: AOT 5, 24 kHz core, 48 kHz output, core AAC-LC.
    asc = aac.parse_audio_specific_config(_bits((5, 5), (4, 6), (4, 2), (4, 3), (5, 2)))
    assert asc.object_type == 5
    assert asc.core_object_type == 2
    assert asc.sampling_frequency == 24000
    assert asc.extension_sampling_frequency == 48000
    assert asc.codecs == "mp4a.40.5"
    assert aac.adts_header(asc, 10)[2] >> 6 == 1  # ADTS profile = core AAC-LC


def test_adts_header_fields() -> None:
    asc = aac.parse_audio_specific_config(b"\x12\x10")
    assert aac.adts_header(asc, 100) == bytes.fromhex("fff150800d7ffc")
    header = aac.adts_header(asc, 8184)
    assert ((header[3] & 3) << 11) | (header[4] << 3) | (header[5] >> 5) == 8191
    with pytest.raises(CodecError):
        aac.adts_header(asc, 8185)
    six_ch = aac.parse_audio_specific_config(_bits((5, 2), (4, 3), (4, 6)))
    header = aac.adts_header(six_ch, 0)
    assert ((header[2] & 1) << 2) | (header[3] >> 6) == 6
    pce = aac.parse_audio_specific_config(_bits((5, 2), (4, 3), (4, 0)))
    with pytest.raises(CodecError):
        aac.adts_header(pce, 10)


@pytest.mark.parametrize("config", [b"", b"\x12", b"\x00\x00", b"\x16\x90", b"\x17\x80\x00"])
def test_aac_malformed(config: bytes) -> None:
    with pytest.raises(CodecError):
        aac.parse_audio_specific_config(config)
