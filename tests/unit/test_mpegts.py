"""TsMuxer: packet structure, PSI, access unit rewriting, and round trips through ffprobe/ffmpeg."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ripplecast.errors import UsageError
from ripplecast.media.avc import CodecError
from ripplecast.media.mpegts import (
    AUDIO_PID,
    PMT_PID,
    VIDEO_PID,
    TsMuxer,
    crc32_mpeg2,
)
from ripplecast.media.packet import AudioCodec, VideoCodec

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe are not on PATH")


def _has_x265() -> bool:
    if not HAVE_FFMPEG:
        return False
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    return "libx265" in out


needs_x265 = pytest.mark.skipif(not _has_x265(), reason="ffmpeg has no libx265")

# A 320x240 High profile SPS/PPS from x264 and its AVCDecoderConfigurationRecord.
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
ASC_44100_STEREO = b"\x12\x10"

# ffmpeg's first PAT (transport_stream_id 1, program 1 -> PMT PID 0x1000, version 0, CC 0).
FFMPEG_PAT = bytes.fromhex("474000100000b00d0001c100000001f0002ab104b2") + b"\xff" * 167


# -- test-side FLV reader and TS demuxer (independent of the code under test) ---------------------


@dataclass
class FlvTag:
    kind: int
    timestamp: int
    body: bytes


def read_flv(data: bytes) -> list[FlvTag]:
    """Walk an FLV file: 9-byte header, PreviousTagSize0, then 11-byte tag headers."""
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while pos + 11 <= len(data):
        kind = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        tags.append(FlvTag(kind, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def mux_flv(muxer: TsMuxer, tags: list[FlvTag], segment_every_ms: int | None = None) -> bytes:
    """Feed FLV tags to the muxer the way the HLS packager does; new segments on keyframes."""
    out = bytearray()
    started = False
    segment_start = 0
    for tag in tags:
        if tag.kind == 9:
            codec = tag.body[0] & 0x0F
            keyframe = tag.body[0] >> 4 == 1
            assert codec == 7
            if tag.body[1] == 0:
                muxer.set_video_config(VideoCodec.H264, tag.body[5:])
                continue
            if tag.body[1] != 1:
                continue
            cts = int.from_bytes(tag.body[2:5], "big", signed=True)
            if not started or (
                keyframe
                and segment_every_ms is not None
                and tag.timestamp - segment_start >= segment_every_ms
            ):
                out += muxer.start_segment()
                started = True
                segment_start = tag.timestamp
            out += muxer.write_video(
                tag.body[5:], dts_ms=tag.timestamp, pts_ms=tag.timestamp + cts, keyframe=keyframe
            )
        elif tag.kind == 8:
            assert tag.body[0] >> 4 == 10
            if tag.body[1] == 0:
                muxer.set_audio_config(AudioCodec.AAC, tag.body[2:])
            elif started:
                out += muxer.write_audio(tag.body[2:], pts_ms=tag.timestamp)
    return bytes(out)


def ts_packets(data: bytes) -> list[bytes]:
    assert len(data) % 188 == 0
    return [data[i : i + 188] for i in range(0, len(data), 188)]


def pid_of(packet: bytes) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


def payload_of(packet: bytes) -> bytes:
    afc = packet[3] >> 4 & 3
    if afc == 1:
        return packet[4:]
    if afc == 3:
        return packet[5 + packet[4] :]
    return b""


def pes_units(data: bytes, pid: int) -> list[tuple[bytes, bytes]]:
    """(first TS packet, whole PES) for every PES on `pid`."""
    units: list[tuple[bytes, bytearray]] = []
    for packet in ts_packets(data):
        if pid_of(packet) != pid:
            continue
        if packet[1] & 0x40:
            units.append((packet, bytearray()))
        units[-1][1].extend(payload_of(packet))
    return [(first, bytes(pes)) for first, pes in units]


def decode_ts(field: bytes) -> int:
    return (
        (field[0] >> 1 & 7) << 30 | field[1] << 22 | (field[2] >> 1) << 15 | field[3] << 7
    ) | field[4] >> 1


def split_pes(pes: bytes) -> tuple[int, int | None, int | None, bytes]:
    """(stream_id, pts, dts, elementary stream bytes)."""
    assert pes[:3] == b"\x00\x00\x01"
    flags = pes[7] >> 6
    pts = decode_ts(pes[9:14]) if flags & 2 else None
    dts = decode_ts(pes[14:19]) if flags == 3 else None
    return pes[3], pts, dts, pes[9 + pes[8] :]


def annexb_nals(es: bytes) -> list[bytes]:
    return [n.rstrip(b"\x00") for n in re.split(b"\x00\x00\x01", es)[1:]]


def check_continuity(data: bytes) -> dict[int, list[int]]:
    counters: dict[int, list[int]] = {}
    for packet in ts_packets(data):
        assert len(packet) == 188
        assert packet[0] == 0x47
        assert packet[3] & 0x10, "every packet we send carries payload"
        counters.setdefault(pid_of(packet), []).append(packet[3] & 0x0F)
    for pid, ccs in counters.items():
        for before, after in itertools.pairwise(ccs):
            assert after == (before + 1) % 16, f"PID {pid:#x} jumps {before} -> {after}"
    return counters


def psi_section(packet: bytes) -> bytes:
    payload = payload_of(packet)
    start = 1 + payload[0]
    length = ((payload[start + 1] & 0x0F) << 8) | payload[start + 2]
    return payload[start : start + 3 + length]


# -- unit behaviour -----------------------------------------------------------------------------


def test_crc32_mpeg2_known_values() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value
    assert crc32_mpeg2(b"") == 0xFFFFFFFF
    assert crc32_mpeg2(psi_section(FFMPEG_PAT)) == 0


def test_pat_matches_ffmpeg_and_pmt_lists_configured_tracks() -> None:
    muxer = TsMuxer()
    assert not muxer.has_video
    assert not muxer.has_audio
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    muxer.set_audio_config(AudioCodec.AAC, ASC_44100_STEREO)
    assert muxer.has_video
    assert muxer.has_audio
    assert muxer.codecs() == "avc1.64000d,mp4a.40.2"
    psi = muxer.start_segment()
    pat, pmt = ts_packets(psi)
    assert pat == FFMPEG_PAT
    assert pid_of(pmt) == PMT_PID
    section = psi_section(pmt)
    assert crc32_mpeg2(section) == 0
    assert section[0] == 0x02
    assert ((section[8] & 0x1F) << 8 | section[9]) == VIDEO_PID  # PCR_PID
    streams = section[12:-4]
    assert streams == bytes((0x1B, 0xE1, 0x00, 0xF0, 0x00, 0x0F, 0xE1, 0x01, 0xF0, 0x00))


def test_pmt_audio_only_then_video_bumps_version() -> None:
    muxer = TsMuxer()
    muxer.set_audio_config(AudioCodec.MP3)
    first = psi_section(ts_packets(muxer.start_segment())[1])
    assert ((first[8] & 0x1F) << 8 | first[9]) == AUDIO_PID
    assert first[12:-4] == bytes((0x03, 0xE1, 0x01, 0xF0, 0x00))
    assert muxer.codecs() == "mp4a.40.34"
    assert (first[5] >> 1) & 0x1F == 0
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    second = psi_section(ts_packets(muxer.start_segment())[1])
    assert (second[5] >> 1) & 0x1F == 1
    assert crc32_mpeg2(second) == 0
    assert second[12:13] == b"\x1b"
    third = psi_section(ts_packets(muxer.start_segment())[1])
    assert (third[5] >> 1) & 0x1F == 1


def _frame(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


IDR = b"\x65\x88\x84" + bytes(range(200)) * 3
SLICE = b"\x41\x9a\x02" + b"\x55" * 50
SEI = b"\x06\x05\x02\xaa\xbb\x80"


def test_keyframe_gets_aud_and_parameter_sets() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    data = muxer.start_segment()
    data += muxer.write_video(_frame(SEI, IDR), dts_ms=1000, pts_ms=1066, keyframe=True)
    data += muxer.write_video(_frame(SLICE), dts_ms=1033, pts_ms=1033, keyframe=False)
    check_continuity(data)
    (first_pkt, key_pes), (_, delta_pes) = pes_units(data, VIDEO_PID)
    stream_id, pts, dts, es = split_pes(key_pes)
    assert (stream_id, pts, dts) == (0xE0, 1066 * 90, 1000 * 90)
    assert annexb_nals(es) == [b"\x09\xf0", SPS, PPS, SEI, IDR]
    assert es.startswith(b"\x00\x00\x00\x01\x09\xf0")
    assert key_pes[4:6] == b"\x00\x00"  # unbounded video PES
    # The keyframe's first packet: adaptation field with random_access_indicator and PCR.
    assert first_pkt[3] >> 4 == 3
    assert first_pkt[5] & 0x40
    assert first_pkt[5] & 0x10
    pcr = int.from_bytes(first_pkt[6:11], "big") >> 7
    assert pcr == 1000 * 90 - 63000
    _, pts, dts, es = split_pes(delta_pes)
    assert (pts, dts) == (1033 * 90, None)
    assert annexb_nals(es) == [b"\x09\xf0", SLICE]


def test_existing_aud_and_parameter_sets_are_not_duplicated() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    data = muxer.write_video(
        _frame(b"\x09\x10", SPS, PPS, b"\x09\xf0", IDR, b"\x09\xf0"),
        dts_ms=0,
        pts_ms=0,
        keyframe=True,
    )
    data += muxer.write_video(
        _frame(SLICE, b"\x09\xf0", SLICE), dts_ms=33, pts_ms=33, keyframe=False
    )
    (_, key), (_, delta) = pes_units(data, VIDEO_PID)
    assert annexb_nals(split_pes(key)[3]) == [b"\x09\x10", SPS, PPS, IDR]
    assert annexb_nals(split_pes(delta)[3]) == [b"\x09\xf0", SLICE, SLICE]


def test_frame_without_pictures_gives_no_packets() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    assert muxer.write_video(b"", dts_ms=0, pts_ms=0, keyframe=True) == b""
    assert muxer.write_video(_frame(b"\x09\xf0"), dts_ms=0, pts_ms=0, keyframe=False) == b""


def test_idr_without_keyframe_flag_still_gets_parameter_sets() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    data = muxer.write_video(_frame(IDR), dts_ms=0, pts_ms=0, keyframe=False)
    assert annexb_nals(split_pes(pes_units(data, VIDEO_PID)[0][1])[3]) == [
        b"\x09\xf0",
        SPS,
        PPS,
        IDR,
    ]


def test_pes_sizes_around_packet_boundaries() -> None:
    """Every PES size near 184-byte multiples is sliced, stuffed and reassembled exactly."""
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    muxer.set_audio_config(AudioCodec.AAC, ASC_44100_STEREO)
    data = bytearray(muxer.start_segment())
    sizes = [*range(1, 12), *range(150, 200), *range(340, 390), 5000]
    for i, size in enumerate(sizes):
        data += muxer.write_audio(bytes([i & 0xFF]) * size, pts_ms=i * 23)
        data += muxer.write_video(
            _frame(b"\x41" + bytes(size)), dts_ms=i * 3, pts_ms=i * 3, keyframe=False
        )
    check_continuity(bytes(data))
    audio = pes_units(bytes(data), AUDIO_PID)
    video = pes_units(bytes(data), VIDEO_PID)
    assert len(audio) == len(video) == len(sizes)
    for i, ((_, pes), size) in enumerate(zip(audio, sizes, strict=True)):
        stream_id, pts, dts, es = split_pes(pes)
        assert (stream_id, pts, dts) == (0xC0, i * 23 * 90, None)
        assert int.from_bytes(pes[4:6], "big") == len(pes) - 6  # exact audio PES length
        assert es[:2] == b"\xff\xf1"
        assert es[7:] == bytes([i & 0xFF]) * size
    for (_, pes), size in zip(video, sizes, strict=True):
        assert annexb_nals(split_pes(pes)[3])[1] == b"\x41" + bytes(size).rstrip(b"\x00")


def test_pcr_at_least_every_40ms() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    data = muxer.start_segment()
    for i in range(60):
        data += muxer.write_video(
            _frame(SLICE), dts_ms=1000 + i * 20, pts_ms=1000 + i * 20, keyframe=False
        )
    pcrs = []
    for packet in ts_packets(data):
        if pid_of(packet) == VIDEO_PID and packet[3] & 0x20 and packet[4] and packet[5] & 0x10:
            pcrs.append(int.from_bytes(packet[6:11], "big") >> 7)
    assert pcrs[0] == 1000 * 90 - 63000
    assert all(0 < b - a <= 40 * 90 for a, b in itertools.pairwise(pcrs))
    assert len(pcrs) == 30


def test_timestamps_wrap_to_33_bits_and_pcr_clips_at_zero() -> None:
    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    big = (1 << 33) // 90 + 5
    data = muxer.write_video(_frame(IDR), dts_ms=big, pts_ms=big + 40, keyframe=True)
    _, pts, dts, _ = split_pes(pes_units(data, VIDEO_PID)[0][1])
    assert dts == (big * 90) % (1 << 33)
    assert pts == ((big + 40) * 90) % (1 << 33)
    data = muxer.write_video(_frame(IDR), dts_ms=10, pts_ms=10, keyframe=True)
    first = pes_units(data, VIDEO_PID)[0][0]
    assert int.from_bytes(first[6:11], "big") >> 7 == 0


def test_errors() -> None:
    muxer = TsMuxer()
    with pytest.raises(UsageError):
        muxer.write_video(_frame(IDR), dts_ms=0, pts_ms=0, keyframe=True)
    with pytest.raises(UsageError):
        muxer.write_audio(b"\x21", pts_ms=0)
    with pytest.raises(CodecError):
        muxer.set_video_config(VideoCodec.AV1, b"\x81")
    with pytest.raises(CodecError):
        muxer.set_audio_config(AudioCodec.UNKNOWN, b"")
    with pytest.raises(CodecError):
        muxer.set_audio_config(AudioCodec.AAC, b"\x12")
    assert not muxer.has_audio
    assert not muxer.has_video
    muxer.set_video_config(VideoCodec.H264, AVC_RECORD)
    muxer.set_audio_config(AudioCodec.AAC, ASC_44100_STEREO)
    before = muxer.write_video(_frame(SLICE), dts_ms=0, pts_ms=0, keyframe=False)
    with pytest.raises(CodecError):
        muxer.write_video(b"\x00\x00\x00\x09\x41", dts_ms=33, pts_ms=33, keyframe=False)
    with pytest.raises(CodecError):
        muxer.write_audio(bytes(9000), pts_ms=0)
    after = muxer.write_video(_frame(SLICE), dts_ms=66, pts_ms=66, keyframe=False)
    check_continuity(before + after)  # a failed call leaves the counters alone


# -- round trips through ffmpeg -----------------------------------------------------------------


def ffprobe(path: Path, *args: str) -> dict[str, list[dict[str, object]]]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", *args, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    parsed: dict[str, list[dict[str, object]]] = json.loads(result.stdout)
    return parsed


def decode_errors(path: Path) -> str:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def flv_tags(tmp_path_factory: pytest.TempPathFactory) -> list[FlvTag]:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe are not on PATH")
    path = tmp_path_factory.mktemp("flv") / "in.flv"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "4", "-pix_fmt", "yuv420p",
            "-c:v", "libx264", "-g", "30", "-bf", "2",
            "-c:a", "aac", "-f", "flv", str(path),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return read_flv(path.read_bytes())


@needs_ffmpeg
@pytest.mark.ffmpeg
def test_h264_aac_round_trip(flv_tags: list[FlvTag], tmp_path: Path) -> None:
    muxer = TsMuxer()
    data = mux_flv(muxer, flv_tags, segment_every_ms=1000)
    counters = check_continuity(data)
    assert len(counters[0]) >= 4, "start_segment ran at least four times"
    assert counters[0][1] == 1, "PAT counter continues across segments"
    for packet in ts_packets(data):
        if pid_of(packet) in (0, PMT_PID):
            assert crc32_mpeg2(psi_section(packet)) == 0
    out = tmp_path / "out.ts"
    out.write_bytes(data)

    info = ffprobe(out, "-show_streams", "-show_format")
    streams = {s["codec_type"]: s for s in info["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert video["codec_name"] == "h264"
    assert (video["width"], video["height"]) == (640, 360)
    assert audio["codec_name"] == "aac"
    assert audio["sample_rate"] in ("44100", "48000")
    assert audio["channels"] == 1
    duration = float(info["format"]["duration"])  # type: ignore[call-overload]
    assert abs(duration - 4.0) <= 0.2
    assert decode_errors(out) == ""

    packets = ffprobe(out, "-show_packets")["packets"]
    video_packets = [p for p in packets if p["codec_type"] == "video"]
    dts = [int(p["dts"]) for p in video_packets]  # type: ignore[call-overload]
    assert dts == sorted(dts)
    assert len(set(dts)) == len(dts) == 120
    assert any(p["pts"] != p["dts"] for p in video_packets), "B-frames reorder"
    assert sum(1 for p in video_packets if "K" in str(p["flags"])) == 4
    audio_pts = [int(p["pts"]) for p in packets if p["codec_type"] == "audio"]  # type: ignore[call-overload]
    assert audio_pts == sorted(audio_pts)


def _hevc_access_units(stream: bytes) -> list[list[bytes]]:
    """Group an Annex B HEVC stream into access units (first_slice_segment_in_pic_flag)."""
    units: list[list[bytes]] = []
    current: list[bytes] = []
    has_vcl = False
    for nal in (n.rstrip(b"\x00") for n in re.split(b"\x00\x00\x01", stream)[1:]):
        kind = (nal[0] >> 1) & 0x3F
        starts_picture = (kind < 32 and nal[2] & 0x80) or 32 <= kind <= 39
        if has_vcl and starts_picture:
            units.append(current)
            current, has_vcl = [], False
        current.append(nal)
        has_vcl = has_vcl or kind < 32
    units.append(current)
    return units


@needs_ffmpeg
@needs_x265
@pytest.mark.ffmpeg
def test_hevc_round_trip(tmp_path: Path) -> None:
    raw = tmp_path / "in.hevc"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-t", "2",
            "-pix_fmt", "yuv420p", "-c:v", "libx265",
            "-x265-params", "log-level=error:bframes=0:keyint=25", "-f", "hevc", str(raw),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    units = _hevc_access_units(raw.read_bytes())
    params = {(n[0] >> 1) & 0x3F: n for n in units[0] if 32 <= (n[0] >> 1) & 0x3F <= 34}
    vps, sps, pps = params[32], params[33], params[34]
    rbsp = sps.replace(b"\x00\x00\x03", b"\x00\x00")
    record = bytes((1,)) + rbsp[3:15] + bytes((0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 3))
    for kind, nal in ((32, vps), (33, sps), (34, pps)):
        record += bytes((0x80 | kind, 0, 1)) + len(nal).to_bytes(2, "big") + nal

    muxer = TsMuxer()
    muxer.set_video_config(VideoCodec.HEVC, record)
    assert muxer.codecs().startswith("hvc1.1.6.L")
    assert muxer.video_config is not None
    assert (muxer.video_config.width, muxer.video_config.height) == (640, 360)
    data = bytearray()
    for i, unit in enumerate(units):
        nals = [n for n in unit if not 32 <= (n[0] >> 1) & 0x3F <= 34]  # the muxer re-inserts
        keyframe = any(16 <= (n[0] >> 1) & 0x3F <= 23 for n in nals)
        if i == 0 or (keyframe and i % 25 == 0):
            data += muxer.start_segment()
        frame = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
        data += muxer.write_video(frame, dts_ms=i * 40, pts_ms=i * 40, keyframe=keyframe)
    check_continuity(bytes(data))
    out = tmp_path / "out.ts"
    out.write_bytes(bytes(data))
    info = ffprobe(out, "-show_streams", "-show_format")
    (video,) = info["streams"]
    assert video["codec_name"] == "hevc"
    assert (video["width"], video["height"]) == (640, 360)
    assert decode_errors(out) == ""
    packets = ffprobe(out, "-show_packets")["packets"]
    assert len(packets) == 50
    first_es = split_pes(pes_units(bytes(data), VIDEO_PID)[0][1])[3]
    assert annexb_nals(first_es)[:4] == [b"\x46\x01\x50", vps, sps, pps]
