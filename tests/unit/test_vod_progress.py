"""ffmpeg `-progress` parsing: real captured output, whole, byte by byte, any split."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ripplecast.vod.ffmpeg import Progress, ProgressParser

# Captured from ffmpeg 5.1 (`-progress pipe:1` of a transcode with HLS, poster and sprite
# outputs); ffmpeg 6+ prints N/A times until the first packet is written, as in the first block.
CAPTURED = b"""frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
frame=225
fps=0.00
stream_0_0_q=0.0
stream_0_2_q=11.0
stream_1_0_q=3.0
stream_2_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=8962900
out_time_ms=8962900
out_time=00:00:08.962900
dup_frames=0
drop_frames=0
speed=16.3x
progress=continue
frame=225
fps=0.00
stream_0_0_q=-1.0
stream_0_2_q=-1.0
stream_1_0_q=3.0
stream_2_0_q=5.0
bitrate=N/A
total_size=N/A
out_time_us=9009344
out_time_ms=9009344
out_time=00:00:09.009344
dup_frames=0
drop_frames=0
speed=16.2x
progress=end
"""

EXPECTED = [
    Progress(out_time_seconds=0.0, speed=None, done=False),
    Progress(out_time_seconds=8.9629, speed=16.3, done=False),
    Progress(out_time_seconds=9.009344, speed=16.2, done=True),
]


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Progress]:
    parser = ProgressParser()
    events: list[Progress] = []
    start = 0
    for cut in sorted(cuts):
        events += parser.feed(data[start:cut])
        start = cut
    events += parser.feed(data[start:])
    return events


def test_whole_output() -> None:
    assert ProgressParser().feed(CAPTURED) == EXPECTED


def test_byte_by_byte() -> None:
    parser = ProgressParser()
    events: list[Progress] = []
    for index in range(len(CAPTURED)):
        events += parser.feed(CAPTURED[index : index + 1])
    assert events == EXPECTED


def test_random_splits() -> None:
    generator = random.Random(1234)
    for _ in range(200):
        cuts = generator.sample(range(len(CAPTURED)), generator.randint(1, 40))
        assert feed_in_pieces(CAPTURED, cuts) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(CAPTURED)), max_size=60))
def test_any_split(cuts: list[int]) -> None:
    assert feed_in_pieces(CAPTURED, cuts) == EXPECTED


def test_an_unfinished_block_waits_for_its_progress_line() -> None:
    parser = ProgressParser()
    assert parser.feed(b"out_time_us=1000000\nspeed=2x\nprogress=conti") == []
    assert parser.feed(b"nue\n") == [Progress(1.0, 2.0, False)]
    assert parser.feed(b"out_time_us=2000000\n") == []  # trailing bytes of the next block


def test_crlf_and_the_other_time_keys() -> None:
    parser = ProgressParser()
    # out_time when out_time_us is N/A; out_time_ms (microseconds, despite its name) last.
    data = (
        b"out_time_us=N/A\r\nout_time=01:02:03.500000\r\nspeed=0.5x\r\nprogress=continue\r\n"
        b"out_time_ms=4000000\r\nprogress=continue\r\n"
        b"speed=N/A\r\nprogress=end\r\n"
    )
    assert parser.feed(data) == [
        Progress(3723.5, 0.5, False),
        Progress(4.0, None, False),
        Progress(4.0, None, True),  # no time in the block: the last one stays
    ]


def test_negative_and_garbage_values_are_harmless() -> None:
    parser = ProgressParser()
    data = (
        b"out_time_us=-23220\nspeed=-1x\nprogress=continue\n"
        b"out_time=-00:00:00.023220\nprogress=continue\n"
        b"out_time_us=12x\nout_time=soon\nspeed=fast\nprogress=continue\n"
        b"no equals sign here\n=\nspeed=inf\nprogress=continue\n"
    )
    assert parser.feed(data) == [Progress(0.0, None, False)] * 4


def test_an_overlong_line_is_dropped_without_growing_the_buffer() -> None:
    parser = ProgressParser(max_line_bytes=64)
    assert parser.feed(b"junk=" + b"x" * 1000) == []
    assert parser.feed(b"y" * 1000) == []
    assert parser.feed(b"still the same line\nout_time_us=5000000\nprogress=continue\n") == [
        Progress(5.0, None, False)
    ]
