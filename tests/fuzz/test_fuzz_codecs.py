"""Fuzz the codec parsers and the TS muxer: publisher bytes may only raise ProtocolError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from ripplecast.errors import ProtocolError
from ripplecast.media import aac, avc, hevc
from ripplecast.media.mpegts import TsMuxer
from ripplecast.media.packet import AudioCodec, VideoCodec

SPS = bytes.fromhex("6764000dacd94141fb011000000300100000030320f1429960")
PPS = bytes.fromhex("68ebe3cb22c0")
AVC_RECORD = (
    bytes((1, 0x64, 0x00, 0x0D, 0xFF, 0xE1))
    + len(SPS).to_bytes(2, "big")
    + SPS
    + b"\x01"
    + len(PPS).to_bytes(2, "big")
    + PPS
)
VPS = bytes.fromhex("40010c01ffff01600000030090000003000003003c959809")
HSPS = bytes.fromhex(
    "42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003210"
)
HPPS = bytes.fromhex("4401c172b46240")
HEVC_RECORD = (
    b"\x01"
    + HSPS.replace(b"\x00\x00\x03", b"\x00\x00")[3:15]  # profile_tier_level from the SPS
    + bytes((0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 3))
    + b"".join(
        bytes((0x80 | kind, 0, 1)) + len(nal).to_bytes(2, "big") + nal
        for kind, nal in ((32, VPS), (33, HSPS), (34, HPPS))
    )
)


FUZZ = settings(max_examples=300, deadline=None)


def _must_parse_or_reject(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse(data)


@FUZZ
@given(st.binary(max_size=300))
def test_avc_config_random(data: bytes) -> None:
    _must_parse_or_reject(avc.parse_avc_config, data)


@FUZZ
@given(st.binary(max_size=64))
def test_avc_config_mutated(data: bytes) -> None:
    """Valid record header, random tail: reaches deep into the SPS parser."""
    _must_parse_or_reject(avc.parse_avc_config, AVC_RECORD[:8] + data)


@FUZZ
@given(st.binary(max_size=64))
def test_avc_sps_random(data: bytes) -> None:
    _must_parse_or_reject(avc.parse_sps, b"\x67" + data)


@FUZZ
@given(st.binary(max_size=300))
def test_hevc_config_random(data: bytes) -> None:
    _must_parse_or_reject(hevc.parse_hevc_config, data)


@FUZZ
@given(st.binary(max_size=80))
def test_hevc_sps_random(data: bytes) -> None:
    _must_parse_or_reject(hevc.parse_sps, b"\x42\x01" + data)


@FUZZ
@given(st.binary(max_size=16))
def test_aac_config_random(data: bytes) -> None:
    try:
        config = aac.parse_audio_specific_config(data)
    except ProtocolError:
        return
    try:
        header = aac.adts_header(config, 100)
    except ProtocolError:
        return
    assert len(header) == 7


@FUZZ
@given(st.binary(max_size=2000), st.booleans(), st.sampled_from([VideoCodec.H264, VideoCodec.HEVC]))
def test_write_video_random_frames(frame: bytes, keyframe: bool, codec: VideoCodec) -> None:
    muxer = TsMuxer()
    muxer.set_video_config(codec, AVC_RECORD if codec is VideoCodec.H264 else HEVC_RECORD)
    muxer.start_segment()
    try:
        out = muxer.write_video(frame, dts_ms=0, pts_ms=0, keyframe=keyframe)
    except ProtocolError:
        return
    assert len(out) % 188 == 0


nal_units = st.lists(st.binary(min_size=1, max_size=400), max_size=8)


@FUZZ
@given(
    nal_units,
    st.booleans(),
    st.sampled_from([VideoCodec.H264, VideoCodec.HEVC]),
    st.integers(-(2**40), 2**40),
    st.integers(0, 1000),
)
def test_write_video_well_framed_nals(
    nals: list[bytes], keyframe: bool, codec: VideoCodec, dts: int, cts: int
) -> None:
    """Correct length prefixes with arbitrary NAL bodies always mux into whole packets."""
    muxer = TsMuxer()
    muxer.set_video_config(codec, AVC_RECORD if codec is VideoCodec.H264 else HEVC_RECORD)
    frame = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    out = muxer.write_video(frame, dts_ms=dts, pts_ms=dts + cts, keyframe=keyframe)
    assert len(out) % 188 == 0
    assert all(out[i] == 0x47 for i in range(0, len(out), 188))


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from([AudioCodec.AAC, AudioCodec.MP3]))
def test_write_audio_random_frames(frame: bytes, codec: AudioCodec) -> None:
    muxer = TsMuxer()
    muxer.set_audio_config(codec, b"\x12\x10" if codec is AudioCodec.AAC else b"")
    out = muxer.write_audio(frame, pts_ms=0)
    assert len(out) % 188 == 0


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([VideoCodec.H264, VideoCodec.HEVC]))
def test_set_video_config_random(record: bytes, codec: VideoCodec) -> None:
    _must_parse_or_reject(lambda data: TsMuxer().set_video_config(codec, data), record)
