"""The bounds and rates of the live metrics: stream labels, capped reasons, ingest rates."""

from __future__ import annotations

from ripplecast.config import Settings
from ripplecast.live.hub import Hub
from ripplecast.media.flv import make_packet
from ripplecast.metrics.streams import IngestRates, StreamLabels, bounded

KEYFRAME = bytes([0x17, 1, 0, 0, 0]) + b"\x00" * 995  # AVC NALU, keyframe: 1000 bytes


def test_labels_go_to_the_first_streams_and_stick() -> None:
    labels = StreamLabels(enabled=True, limit=2)
    assert [labels.label(n) for n in ("a", "b", "c")] == ["a", "b", "_other"]
    assert labels.label("c") == "_other"
    assert labels.label("a") == "a"
    labels.retain({"b", "c"})  # a ended: its place goes to the next stream asking
    assert labels.label("c") == "c"
    assert labels.label("d") == "_other"
    assert labels.label("b") == "b"


def test_labels_off_means_no_stream_label() -> None:
    labels = StreamLabels(enabled=False, limit=10)
    assert labels.label("a") is None


def test_reasons_are_capped_keeping_the_largest() -> None:
    counts = {f"r{n}": n for n in range(1, 101)}
    capped = bounded(counts, limit=5)
    assert len(capped) == 5
    assert capped == {"r100": 100, "r99": 99, "r98": 98, "r97": 97, "_other": sum(range(1, 97))}
    assert bounded({"x": 1}, limit=5) == {"x": 1}


async def test_ingest_rates_follow_the_counters_between_scrapes() -> None:
    now = [1000.0]
    wall = [5000.0]
    hub = Hub(Settings(), clock=lambda: wall[0])
    stream = hub.start_publish("s")
    rates = IngestRates(clock=lambda: now[0], wallclock=lambda: wall[0])

    def push(frames: int) -> None:
        for _ in range(frames):
            stream.push(make_packet(9, 0, KEYFRAME))

    push(20)
    wall[0] += 2.0
    # First scrape: the average since the stream started (20 frames, 20,000 bytes in 2 s).
    assert rates.rates(stream) == (80_000.0, 10.0)
    for _ in range(15):  # 15 scrapes a second apart, 25 frames a second
        now[0] += 1.0
        wall[0] += 1.0
        push(25)
        bits, fps = rates.rates(stream)
        assert (bits, fps) == (200_000.0, 25.0)
    # A new stream of the same name starts from its own counters.
    stream.end("test")
    again = hub.start_publish("s")
    wall[0] += 1.0
    again.push(make_packet(9, 0, KEYFRAME))
    assert rates.rates(again) == (8_000.0, 1.0)
