"""FLV: tag headers (legacy and Enhanced RTMP), make_packet, and FlvReader under any split."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ripplecast.errors import LimitExceeded
from ripplecast.media.amf0 import EcmaArray, decode_values, encode_values
from ripplecast.media.flv import (
    FLV_SIGNATURE,
    AudioTagInfo,
    FlvError,
    FlvHeader,
    FlvReader,
    FlvTag,
    VideoTagInfo,
    flv_file_header,
    make_packet,
    parse_audio_tag_header,
    parse_video_tag_header,
)
from ripplecast.media.packet import AudioCodec, PacketKind, VideoCodec, build_flv_tag

AVCC = bytes.fromhex("01 64 00 1e ff e1 00 04 67 64 00 1e 01 00 04 68 eb ec b2")
AUDIO_SPECIFIC_CONFIG = bytes.fromhex("1210")


def _si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


# ------------------------------------------------------------------------------ file header


def test_flv_file_header() -> None:
    assert flv_file_header(has_audio=True, has_video=True) == (
        b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    )
    assert flv_file_header(has_audio=True, has_video=False)[4] == 0x04
    assert flv_file_header(has_audio=False, has_video=True)[4] == 0x01
    assert len(flv_file_header(has_audio=False, has_video=False)) == 13
    assert FLV_SIGNATURE == b"FLV"


# ------------------------------------------------------------------------------ video headers


def test_legacy_avc_keyframe_sequence_header() -> None:
    info = parse_video_tag_header(b"\x17\x00\x00\x00\x00" + AVCC)
    assert info == VideoTagInfo(
        codec=VideoCodec.H264,
        keyframe=True,
        sequence_header=True,
        end_of_sequence=False,
        composition_offset=0,
        enhanced=False,
        fourcc=b"",
        header_size=5,
        is_video_info_frame=False,
    )


def test_legacy_avc_inter_frame_negative_composition_time() -> None:
    info = parse_video_tag_header(b"\x27\x01" + _si24(-40) + b"\x00\x00\x00\x05\x41\x9a")
    assert info.codec == VideoCodec.H264
    assert not info.keyframe
    assert not info.sequence_header
    assert info.composition_offset == -40
    assert info.header_size == 5


def test_legacy_avc_keyframe_positive_composition_time_and_eos() -> None:
    info = parse_video_tag_header(b"\x17\x01" + _si24(80) + b"\x00\x00\x00\x01\x65")
    assert info.keyframe
    assert info.composition_offset == 80
    eos = parse_video_tag_header(b"\x17\x02\x00\x00\x00")
    assert eos.end_of_sequence
    assert not eos.sequence_header


def test_legacy_hevc_codec_id_12() -> None:
    info = parse_video_tag_header(b"\x1c\x00\x00\x00\x00\x01")
    assert info.codec == VideoCodec.HEVC
    assert info.sequence_header
    assert info.header_size == 5


def test_legacy_other_codec_has_one_byte_header() -> None:
    info = parse_video_tag_header(b"\x22\x00\x01")  # Sorenson H.263 inter frame
    assert info.codec == VideoCodec.UNKNOWN
    assert info.header_size == 1
    assert not info.keyframe


def test_legacy_video_info_frame() -> None:
    info = parse_video_tag_header(b"\x57\x00")
    assert info.is_video_info_frame
    assert not info.keyframe
    assert info.header_size == 1


def test_enhanced_hvc1_sequence_start() -> None:
    info = parse_video_tag_header(b"\x90hvc1" + b"\x01\x02\x03")
    assert info == VideoTagInfo(
        codec=VideoCodec.HEVC,
        keyframe=True,
        sequence_header=True,
        end_of_sequence=False,
        composition_offset=0,
        enhanced=True,
        fourcc=b"hvc1",
        header_size=5,
        is_video_info_frame=False,
    )


def test_enhanced_hvc1_coded_frames_with_composition_time() -> None:
    info = parse_video_tag_header(b"\x91hvc1" + _si24(-33) + b"\x00\x00\x00\x02\x26\x01")
    assert info.codec == VideoCodec.HEVC
    assert info.keyframe
    assert not info.sequence_header
    assert info.composition_offset == -33
    assert info.header_size == 8
    inter = parse_video_tag_header(b"\xa1hvc1" + _si24(66))
    assert not inter.keyframe
    assert inter.composition_offset == 66


def test_enhanced_hvc1_coded_frames_x() -> None:
    info = parse_video_tag_header(b"\xa3hvc1\x00\x00\x00\x02\x02\x01")
    assert info.codec == VideoCodec.HEVC
    assert not info.keyframe
    assert info.composition_offset == 0
    assert info.header_size == 5
    assert parse_video_tag_header(b"\x93hvc1").keyframe


def test_enhanced_av01_and_avc1_and_vp09() -> None:
    av1 = parse_video_tag_header(b"\x90av01\x81\x00\x0c\x00")
    assert av1.codec == VideoCodec.AV1
    assert av1.sequence_header
    assert parse_video_tag_header(b"\x93av01\x12\x00").codec == VideoCodec.AV1
    assert parse_video_tag_header(b"\x91avc1\x00\x00\x00").codec == VideoCodec.H264
    vp9 = parse_video_tag_header(b"\x93vp09\x00")
    assert vp9.codec == VideoCodec.UNKNOWN
    assert vp9.fourcc == b"vp09"
    assert vp9.header_size == 5


def test_enhanced_sequence_end_metadata_and_ts_sequence_start() -> None:
    end = parse_video_tag_header(b"\x92hvc1")
    assert end.end_of_sequence
    meta = parse_video_tag_header(b"\x94hvc1" + encode_values("colorInfo", {}))
    assert not meta.sequence_header
    assert meta.header_size == 5
    ts = parse_video_tag_header(b"\x95av01\x80")
    assert not ts.sequence_header
    assert ts.codec == VideoCodec.AV1


def test_enhanced_command_frame_has_no_fourcc() -> None:
    info = parse_video_tag_header(b"\xd1\x00")
    assert info.is_video_info_frame
    assert info.enhanced
    assert info.fourcc == b""
    assert not info.keyframe
    assert info.header_size == 1


@pytest.mark.parametrize("packet_type", [6, 7])
def test_enhanced_multitrack_and_modex_unsupported(packet_type: int) -> None:
    with pytest.raises(FlvError, match=f"unsupported Enhanced RTMP packet type {packet_type}"):
        parse_video_tag_header(bytes((0x90 | packet_type,)) + b"hvc1\x00\x00\x00\x00")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty video tag"),
        (b"\x17", "truncated AVC video tag header: 1 bytes, need 5"),
        (b"\x17\x01\x00\x00", "truncated AVC video tag header"),
        (b"\x1c\x01", "truncated AVC video tag header"),
        (b"\x17\x03\x00\x00\x00", "invalid AVCPacketType 3"),
        (b"\x07\x01\x00\x00\x00", "invalid video FrameType 0"),
        (b"\x67\x01\x00\x00\x00", "invalid video FrameType 6"),
        (b"\x90hvc", "truncated Enhanced RTMP video tag header: 4 bytes, need 5"),
        (b"\x91hvc1\x00\x00", "truncated Enhanced RTMP video tag header: 7 bytes, need 8"),
        (b"\x98hvc1", "reserved Enhanced RTMP packet type 8"),
        (b"\x80hvc1", "invalid Enhanced RTMP video FrameType 0"),
    ],
)
def test_video_header_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        parse_video_tag_header(payload)


# ------------------------------------------------------------------------------ audio headers


def test_aac_sequence_header_and_raw() -> None:
    config = parse_audio_tag_header(b"\xaf\x00" + AUDIO_SPECIFIC_CONFIG)
    assert config == AudioTagInfo(
        codec=AudioCodec.AAC,
        sequence_header=True,
        header_size=2,
        sound_rate=44100,
        sound_size=16,
        stereo=True,
    )
    raw = parse_audio_tag_header(b"\xaf\x01\x21\x10")
    assert raw.codec == AudioCodec.AAC
    assert not raw.sequence_header
    assert raw.header_size == 2


def test_mp3() -> None:
    info = parse_audio_tag_header(b"\x2f\xff\xfb")
    assert info == AudioTagInfo(
        codec=AudioCodec.MP3,
        sequence_header=False,
        header_size=1,
        sound_rate=44100,
        sound_size=16,
        stereo=True,
    )
    mono = parse_audio_tag_header(b"\x24")
    assert (mono.sound_rate, mono.sound_size, mono.stereo) == (11025, 8, False)
    assert parse_audio_tag_header(b"\xe2").codec == AudioCodec.MP3  # MP3 8 kHz


def test_other_audio_codec_is_unknown() -> None:
    info = parse_audio_tag_header(b"\x72\x00")  # G.711 A-law
    assert info.codec == AudioCodec.UNKNOWN
    assert info.header_size == 1
    assert info.sound_rate == 5512


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty audio tag"),
        (b"\xaf", "truncated AAC audio tag header"),
        (b"\xaf\x02", "invalid AACPacketType 2"),
        (b"\x90fLaC", "unsupported enhanced audio"),
    ],
)
def test_audio_header_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        parse_audio_tag_header(payload)


# ------------------------------------------------------------------------------ make_packet


def test_make_packet_video() -> None:
    seq = make_packet(9, 0, b"\x17\x00\x00\x00\x00" + AVCC, received_at=12.5)
    assert seq.kind == PacketKind.VIDEO
    assert seq.sequence_header
    assert not seq.keyframe  # a sequence header is not a random access point
    assert seq.received_at == 12.5
    key = make_packet(9, 40, b"\x17\x01" + _si24(80) + b"\x00\x00\x00\x01\x65")
    assert key.keyframe
    assert not key.sequence_header
    assert key.composition_offset == 80
    assert key.pts == 120
    assert key.flv_tag == build_flv_tag(9, 40, key.payload)
    inter = make_packet(9, 80, b"\x27\x01" + _si24(-40) + b"\x00")
    assert not inter.keyframe
    assert inter.composition_offset == -40


def test_make_packet_enhanced_video() -> None:
    assert make_packet(9, 0, b"\x90hvc1\x01").sequence_header
    assert not make_packet(9, 0, b"\x90hvc1\x01").keyframe
    assert make_packet(9, 0, b"\x91hvc1" + _si24(40) + b"\x00").keyframe
    assert make_packet(9, 0, b"\x93hvc1\x00").keyframe
    assert not make_packet(9, 0, b"\xa3hvc1\x00").keyframe
    assert not make_packet(9, 0, b"\x94hvc1\x05").keyframe  # Metadata
    assert not make_packet(9, 0, b"\x92hvc1").keyframe  # SequenceEnd


def test_make_packet_video_info_frame_is_not_keyframe() -> None:
    packet = make_packet(9, 0, b"\x57\x00")
    assert not packet.keyframe
    assert not packet.sequence_header


def test_make_packet_audio_and_data() -> None:
    aac = make_packet(8, 0, b"\xaf\x00" + AUDIO_SPECIFIC_CONFIG)
    assert aac.kind == PacketKind.AUDIO
    assert aac.sequence_header
    assert not aac.keyframe
    assert not make_packet(8, 23, b"\xaf\x01\x21").sequence_header
    data = make_packet(18, 0, encode_values("@setDataFrame", "onMetaData", EcmaArray()))
    assert data.kind == PacketKind.DATA
    assert not data.keyframe
    assert not data.sequence_header


def test_make_packet_errors() -> None:
    with pytest.raises(FlvError):
        make_packet(9, 0, b"")
    with pytest.raises(FlvError):
        make_packet(9, 0, b"\x17\x00")
    with pytest.raises(FlvError):
        make_packet(8, 0, b"")
    with pytest.raises(FlvError, match="unsupported FLV tag type 20"):
        make_packet(20, 0, b"\x00")


# ------------------------------------------------------------------------------ FlvReader


def _sample_tags() -> list[FlvTag]:
    metadata = encode_values("onMetaData", EcmaArray(width=320.0, height=240.0))
    tags = [
        FlvTag(18, 0, 0, metadata),
        FlvTag(9, 0, 0, b"\x17\x00\x00\x00\x00" + AVCC),
        FlvTag(8, 0, 0, b"\xaf\x00" + AUDIO_SPECIFIC_CONFIG),
        FlvTag(9, 0, 0, b"\x17\x01\x00\x00\x50" + bytes(range(256)) * 4),
        FlvTag(8, 23, 0, b"\xaf\x01" + b"\x21" * 300),
        FlvTag(9, 40, 0, b"\x27\x01\xff\xff\xd8" + b"\x41" * 700),
        FlvTag(9, 0x12345678, 0, b"\x27\x01\x00\x00\x00\x41"),  # extended timestamp
        FlvTag(8, 0x01000000, 0, b"\xaf\x01"),
        FlvTag(9, 0x12345700, 0, b""),  # an empty tag is still a tag
    ]
    return tags


def _stream(tags: list[FlvTag]) -> bytes:
    return flv_file_header(has_audio=True, has_video=True) + b"".join(
        build_flv_tag(tag.kind, tag.timestamp, tag.payload) for tag in tags
    )


def _drain(reader: FlvReader) -> list[FlvHeader | FlvTag]:
    events: list[FlvHeader | FlvTag] = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    return events


def _expected() -> list[FlvHeader | FlvTag]:
    return [FlvHeader(version=1, has_audio=True, has_video=True), *_sample_tags()]


def test_reader_whole() -> None:
    reader = FlvReader()
    reader.feed(_stream(_sample_tags()))
    events = _drain(reader)
    assert events == _expected()
    assert reader.previous_tag_size_mismatches == 0
    assert reader.next_event() is None


def test_reader_one_byte_at_a_time() -> None:
    reader = FlvReader()
    events: list[FlvHeader | FlvTag] = []
    for byte in _stream(_sample_tags()):
        reader.feed(bytes((byte,)))
        events.extend(_drain(reader))
    assert events == _expected()


@pytest.mark.parametrize("seed", range(20))
def test_reader_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    data = _stream(_sample_tags())
    reader = FlvReader()
    events: list[FlvHeader | FlvTag] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 64) if rng.random() < 0.8 else rng.randint(64, 2048)
        reader.feed(data[pos : pos + step])
        pos += step
        events.extend(_drain(reader))
    assert events == _expected()


def test_reader_trailing_partial_bytes_need_more_data() -> None:
    data = _stream(_sample_tags())
    extra = build_flv_tag(9, 80, b"\x27\x01\x00\x00\x00" + b"\x41" * 100)
    for cut in range(1, len(extra)):
        reader = FlvReader()
        reader.feed(data + extra[:cut])
        events = _drain(reader)
        expected = _expected()
        if cut >= 11 + 105:  # the body is complete; only PreviousTagSize is partial
            expected.append(FlvTag(9, 80, 0, extra[11 : 11 + 105]))
        assert events == expected
        assert reader.next_event() is None


def test_reader_partial_header() -> None:
    header = flv_file_header(has_audio=True, has_video=False)
    for cut in range(len(header) + 1):
        reader = FlvReader()
        reader.feed(header[:cut])
        events = _drain(reader)
        assert events == ([] if cut < 9 else [FlvHeader(1, True, False)])


def test_reader_file_without_final_previous_tag_size() -> None:
    data = _stream(_sample_tags())[:-4]
    reader = FlvReader()
    reader.feed(data)
    assert _drain(reader) == _expected()


def test_reader_skips_extra_header_bytes() -> None:
    header = b"FLV\x01\x05\x00\x00\x00\x10" + b"\xee" * 7 + b"\x00\x00\x00\x00"
    tags = b"".join(build_flv_tag(t.kind, t.timestamp, t.payload) for t in _sample_tags())
    for step in (1, 3, len(header) + len(tags)):
        reader = FlvReader()
        events: list[FlvHeader | FlvTag] = []
        data = header + tags
        for pos in range(0, len(data), step):
            reader.feed(data[pos : pos + step])
            events.extend(_drain(reader))
        assert events == _expected()


def test_reader_tolerates_previous_tag_size_mismatch() -> None:
    tags = _sample_tags()[:3]
    wrong = b"".join(
        build_flv_tag(t.kind, t.timestamp, t.payload)[:-4] + b"\x00\x00\x00\x07" for t in tags
    )
    reader = FlvReader()
    reader.feed(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x09" + wrong)
    assert _drain(reader) == [FlvHeader(1, True, True), *tags]
    assert reader.previous_tag_size_mismatches == 4  # PreviousTagSize0 and all three tags


def test_reader_stream_id_and_kind() -> None:
    tag = bytearray(build_flv_tag(8, 5, b"\xaf\x01"))
    tag[8:11] = b"\x00\x00\x07"
    reader = FlvReader()
    reader.feed(flv_file_header(has_audio=True, has_video=False) + bytes(tag))
    _, event = _drain(reader)
    assert isinstance(event, FlvTag)
    assert event.stream_id == 7
    assert event.kind == PacketKind.AUDIO


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"FLX\x01\x05\x00\x00\x00\x09", "not an FLV stream"),
        (b"\x00\x00\x00\x01\x05\x00\x00\x00\x09", "not an FLV stream"),
        (b"FLV\x01\x05\x00\x00\x00\x08", "DataOffset 8"),
        (
            flv_file_header(has_audio=True, has_video=True) + build_flv_tag(20, 0, b"x"),
            "unsupported FLV tag type 20 at offset 13",
        ),
        (
            flv_file_header(has_audio=True, has_video=True) + b"\x29" + bytes(10),
            "encrypted FLV tag",
        ),
    ],
)
def test_reader_errors(data: bytes, message: str) -> None:
    reader = FlvReader()
    reader.feed(data)
    with pytest.raises(FlvError, match=message):
        _drain(reader)


def test_reader_max_tag_size() -> None:
    header = flv_file_header(has_audio=True, has_video=True)
    reader = FlvReader(max_tag_size=100)
    reader.feed(header + build_flv_tag(9, 0, b"\x17\x01" + bytes(98)))
    assert len(_drain(reader)) == 2
    reader = FlvReader(max_tag_size=100)
    # Only the tag header has arrived: the size alone is enough to refuse it.
    reader.feed(header + build_flv_tag(9, 0, bytes(101))[:11])
    with pytest.raises(LimitExceeded, match="101") as info:
        _drain(reader)
    assert info.value.limit == "flv_max_tag_size"


def test_reader_one_megabyte_one_byte_at_a_time_is_linear() -> None:
    payload = bytes(range(256)) * 16
    tags = [FlvTag(9, i, 0, b"\x27\x01\x00\x00\x00" + payload) for i in range(256)]
    data = _stream(tags)
    assert len(data) > 1_000_000
    reader = FlvReader()
    count = 0
    # A quadratic buffer would copy ~10**12 bytes here and hit the test timeout.
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        while reader.next_event() is not None:
            count += 1
    assert count == 1 + len(tags)


# ------------------------------------------------------------------------------ real ffmpeg


@pytest.mark.ffmpeg
def test_reader_on_real_ffmpeg_file(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not on PATH: cannot generate a real FLV file")
    out = tmp_path / "test.flv"
    # fmt: off
    argv = [
        ffmpeg, "-hide_banner", "-v", "error",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", "2", "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "flv", str(out),
    ]
    # fmt: on
    result = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    if result.returncode != 0 and b"libx264" in result.stderr:
        pytest.skip(f"this ffmpeg cannot encode with libx264: {result.stderr.decode()[:200]}")
    assert result.returncode == 0, result.stderr.decode()

    reader = FlvReader()
    reader.feed(out.read_bytes())
    events = _drain(reader)
    header, *tags = events
    assert header == FlvHeader(version=1, has_audio=True, has_video=True)
    assert all(isinstance(tag, FlvTag) for tag in tags)
    flv_tags = [tag for tag in tags if isinstance(tag, FlvTag)]

    assert flv_tags[0].kind == PacketKind.DATA
    name, metadata = decode_values(flv_tags[0].payload)
    assert name == "onMetaData"
    assert isinstance(metadata, EcmaArray)
    assert metadata["width"] == 320.0
    assert metadata["height"] == 240.0

    packets = [make_packet(tag.kind, tag.timestamp, tag.payload) for tag in flv_tags]
    video = [p for p in packets if p.kind == PacketKind.VIDEO]
    audio = [p for p in packets if p.kind == PacketKind.AUDIO]
    assert any(p.sequence_header for p in video)
    assert any(p.sequence_header for p in audio)
    assert parse_video_tag_header(video[0].payload).codec == VideoCodec.H264
    assert parse_audio_tag_header(audio[0].payload).codec == AudioCodec.AAC
    assert sum(p.keyframe for p in video) == 2
    assert video[0].sequence_header
    assert next(p for p in video if not p.sequence_header).keyframe
    for kind in (video, audio):
        stamps = [p.timestamp for p in kind]
        assert stamps == sorted(stamps)
    frames = [p for p in video if not p.sequence_header]
    assert 48 <= len(frames) <= 52
    assert all(p.composition_offset >= 0 for p in frames)
