"""The live HLS packager fed with real encoder output (FLV made by ffmpeg)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ripplecast.config import Settings
from ripplecast.live.hls import HlsPackager, render_playlist
from ripplecast.media.flv import FlvReader, FlvTag, make_packet
from ripplecast.media.packet import MediaPacket
from support import require_program


def encode(
    tmp_path: Path, *, seconds: int, gop: int, audio_only: bool = False
) -> list[MediaPacket]:
    out = tmp_path / "in.flv"
    argv = [require_program("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=44100"]  # fmt: skip
    if not audio_only:
        argv += ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-c:v", "libx264",
                 "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop),
                 "-sc_threshold", "0"]  # fmt: skip
    argv += ["-t", str(seconds), "-c:a", "aac", "-f", "flv", str(out)]
    subprocess.run(argv, check=True, timeout=60)
    reader = FlvReader()
    reader.feed(out.read_bytes())
    packets = []
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag) and event.kind in (8, 9):
            packets.append(make_packet(event.kind, event.timestamp, event.payload, received_at=1e9))
    return packets


def test_segments_cut_on_keyframes_at_target(tmp_path: Path) -> None:
    packets = encode(tmp_path, seconds=10, gop=25)  # keyframe every 1 s
    packager = HlsPackager("t", Settings(hls_segment_seconds=2, hls_window_segments=3))
    for packet in packets:
        packager.on_packet(packet)
    listed = packager.segments
    assert len(listed) == 3
    # 10 s cut at 2 s: segments start at 0, 2, 4, 6 s (8 s is still open); the window shows 3.
    assert [s.number for s in listed] == [1, 2, 3]
    assert [s.sequence for s in listed] == [1, 2, 3]
    assert all(abs(s.duration - 2.0) < 0.05 for s in listed)
    playlist = (packager.playlist or b"").decode()
    assert playlist.startswith("#EXTM3U\n")
    assert "#EXT-X-TARGETDURATION:2\n" in playlist
    assert "#EXT-X-MEDIA-SEQUENCE:1\n" in playlist
    assert playlist.count("#EXTINF:2.000,") == 3
    assert "#EXT-X-PROGRAM-DATE-TIME:2001-09-09T01:46:40.000Z" in playlist
    # Each segment starts with a PAT and holds whole TS packets.
    for segment in listed:
        assert segment.data[:1] == b"\x47"
        assert len(segment.data) % 188 == 0
    # Older segments are still served for late players, then forgotten.
    assert packager.segment(0) is not None
    assert packager.segment(99) is None


def test_gop_longer_than_target_sets_target_duration(tmp_path: Path) -> None:
    packets = encode(tmp_path, seconds=10, gop=75)  # keyframe every 3 s, target 2 s
    packager = HlsPackager("t", Settings(hls_segment_seconds=2, hls_window_segments=5))
    for packet in packets:
        packager.on_packet(packet)
    listed = packager.segments
    assert [round(s.duration) for s in listed] == [3, 3, 3]
    assert [s.number for s in listed] == [0, 1, 3]  # media clock: 0 s, 3 s, 6 s in 2 s units
    assert [s.sequence for s in listed] == [0, 1, 2]  # sequence numbers stay consecutive
    assert b"#EXT-X-TARGETDURATION:3\n" in (packager.playlist or b"")


def test_discontinuity_after_publisher_change(tmp_path: Path) -> None:
    packets = encode(tmp_path, seconds=4, gop=25)
    packager = HlsPackager("t", Settings(hls_segment_seconds=1, hls_window_segments=10))
    for packet in packets:
        packager.on_packet(packet)
    before = len(packager.segments)
    packager.on_discontinuity()
    offset = packets[-1].timestamp + 40
    for packet in packets:
        packager.on_packet(packet.retimed(packet.timestamp + offset))
    listed = packager.segments
    flags = [s.discontinuity for s in listed]
    assert flags.count(True) == 1
    assert flags.index(True) == before + 1
    assert "#EXT-X-DISCONTINUITY\n" in (packager.playlist or b"").decode()


def test_audio_only_stream_is_packaged(tmp_path: Path) -> None:
    packets = encode(tmp_path, seconds=5, gop=0, audio_only=True)
    packager = HlsPackager("t", Settings(hls_segment_seconds=1, hls_window_segments=10))
    for packet in packets:
        packager.on_packet(packet)
    assert len(packager.segments) == 4
    assert all(0.95 < s.duration < 1.1 for s in packager.segments)


def test_garbage_frame_costs_one_frame_not_the_stream(tmp_path: Path) -> None:
    packets = encode(tmp_path, seconds=4, gop=25)
    packager = HlsPackager("t", Settings(hls_segment_seconds=1))
    injected = False
    for i, packet in enumerate(packets):
        if i >= 40 and packet.kind == 9 and not injected:
            injected = True
            # NAL length pointing far past the end of the frame.
            packager.on_packet(
                make_packet(
                    9, packet.timestamp, bytes([0x27, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1])
                )
            )
        packager.on_packet(packet)
    assert packager.errors == 1
    assert len(packager.segments) == 3


@pytest.mark.parametrize("count", [0, 1])
def test_render_playlist_shapes(count: int) -> None:
    text = render_playlist([], target_duration=2, discontinuity_sequence=count).decode()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")
    assert ("#EXT-X-DISCONTINUITY-SEQUENCE:1" in text) == bool(count)
