"""LiveStream and Hub: GOP cache, shared batches, slow readers, reconnect, names."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ripplecast.config import Settings
from ripplecast.live.hub import Hub, StreamBusy
from ripplecast.live.names import InvalidStreamName, validate_stream_name
from ripplecast.live.stream import StreamEvent, StreamState
from ripplecast.media.flv import make_packet
from ripplecast.media.packet import MediaPacket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """Stands in for a viewer's transport: records writes, reports a settable backlog."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closed: str | None = None
        self.events: list[StreamEvent] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def buffered_bytes(self) -> int:
        return self.backlog

    def close(self, reason: str) -> None:
        self.closed = reason

    def stream_event(self, event: StreamEvent) -> None:
        self.events.append(event)


class TagFormat:
    """Frames a batch as the tuple of its packets' timestamps, to see exactly what was sent."""

    name = "test"

    def __init__(self) -> None:
        self.calls = 0

    def frame(self, packets: Sequence[MediaPacket]) -> bytes:
        self.calls += 1
        return b"".join(p.flv_tag for p in packets)


AVC_HEADER = bytes([0x17, 0, 0, 0, 0]) + bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0])
AAC_HEADER = bytes([0xAF, 0, 0x12, 0x10])


def video(ts: int, *, key: bool = False, size: int = 100) -> MediaPacket:
    return make_packet(9, ts, bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + bytes(size))


def audio(ts: int) -> MediaPacket:
    return make_packet(8, ts, bytes([0xAF, 1]) + bytes(20))


def timestamps(data: bytes) -> list[int]:
    """Timestamps of the FLV tags in `data`."""
    found, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        found.append(int.from_bytes(data[offset + 4 : offset + 7], "big"))
        offset += 11 + size + 4
    return found


@pytest.fixture
def settings() -> Settings:
    return Settings(
        batch_interval_ms=50,
        reader_max_queue_bytes=10_000,
        reader_max_behind_seconds=2.0,
        gop_cache_max_bytes=5_000,
        reconnect_grace_seconds=1.0,
    )


async def test_new_reader_starts_with_headers_and_gop(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    stream.push(make_packet(9, 0, AVC_HEADER))
    stream.push(make_packet(8, 0, AAC_HEADER))
    for ts in range(0, 200, 40):
        stream.push(video(ts, key=ts == 120))
        stream.push(audio(ts))
    sink, fmt = Sink(), TagFormat()
    reader = stream.add_reader(sink, fmt)
    # Headers, then the GOP from the last keyframe (120) on.
    assert timestamps(sink.writes[0]) == [0, 0, 120, 120, 160, 160]
    assert not reader.waiting_keyframe
    hub.close()


async def test_one_frame_per_batch_shared_by_all_readers(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    stream.push(make_packet(9, 0, AVC_HEADER))
    stream.push(video(0, key=True))
    fmt = TagFormat()
    sinks = [Sink() for _ in range(50)]
    for sink in sinks:
        stream.add_reader(sink, fmt)
    calls_after_join = fmt.calls
    for ts in (40, 80, 120):
        stream.push(video(ts))
    await asyncio.sleep(0.08)
    # One framing for 50 readers, one write each, the very same bytes object.
    assert fmt.calls == calls_after_join + 1
    batches = [sink.writes[-1] for sink in sinks]
    assert all(batch is batches[0] for batch in batches)
    assert timestamps(batches[0]) == [40, 80, 120]
    hub.close()


async def test_keyframe_starts_a_new_batch_at_once(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    stream.push(video(0, key=True))
    sink = Sink()
    stream.add_reader(sink, TagFormat())
    stream.push(video(40))
    stream.push(video(80, key=True))
    # No wait: the pending batch is flushed before the keyframe and the keyframe right after.
    assert [timestamps(w) for w in sink.writes[1:]] == [[40], [80]]
    hub.close()


async def test_slow_reader_skips_to_keyframe_then_is_dropped(settings: Settings) -> None:
    clock = Clock()
    hub = Hub(settings, clock=clock)
    stream = hub.start_publish("s")
    stream.push(make_packet(9, 0, AVC_HEADER))
    stream.push(video(0, key=True))
    slow, fast, fmt = Sink(), Sink(), TagFormat()
    stream.add_reader(slow, fmt)
    stream.add_reader(fast, fmt)
    slow.backlog = 20_000  # over reader_max_queue_bytes
    stream.push(video(40))
    stream.push(video(80, key=True))
    assert stream.stats.reader_skips == 1
    slow_before = len(slow.writes)
    stream.push(video(120))
    stream.push(video(160, key=True))
    assert len(slow.writes) == slow_before  # still backlogged: skipped
    slow.backlog = 1_000  # drained
    stream.push(video(200))
    stream.push(video(240, key=True))
    # Resumes exactly at a keyframe, after the codec headers again.
    assert timestamps(slow.writes[-2]) == [0]
    assert timestamps(slow.writes[-1]) == [240]
    # Falls behind again and stays behind past reader_max_behind_seconds: dropped.
    slow.backlog = 50_000
    stream.push(video(280))
    stream.push(video(320, key=True))
    clock.now += 3
    stream.push(video(360))
    stream.push(video(400, key=True))
    assert slow.closed == "reader too slow"
    assert stream.stats.readers_dropped == 1
    assert stream.reader_count == 1
    # The fast reader got everything, in order.
    got = [ts for w in fast.writes for ts in timestamps(w)]
    assert got == [0, 0, *range(40, 401, 40)]
    hub.close()


async def test_gop_cache_is_capped_in_bytes(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    stream.push(make_packet(9, 0, AVC_HEADER))
    stream.push(video(0, key=True, size=1000))
    for ts in range(40, 400, 40):
        stream.push(video(ts, size=1000))  # > gop_cache_max_bytes (5,000) in all
    sink = Sink()
    reader = stream.add_reader(sink, TagFormat())
    assert [timestamps(w) for w in sink.writes] == [[0]]  # headers only: GOP too big to keep
    assert reader.waiting_keyframe
    stream.push(video(400, key=True))
    assert timestamps(sink.writes[-1]) == [400]
    hub.close()


async def test_second_publisher_refused_and_reconnect_continues(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    with pytest.raises(StreamBusy):
        hub.start_publish("s")
    stream.push(video(0, key=True))
    stream.push(video(5000))
    sink = Sink()
    stream.add_reader(sink, TagFormat())
    stream.publisher_left()
    assert stream.state is StreamState.WAITING
    assert sink.events == [StreamEvent.UNPUBLISHED]
    assert hub.start_publish("s") is stream  # within grace: the same stream
    assert sink.events[-1] is StreamEvent.REPUBLISHED
    stream.push(video(0, key=True))  # the new encoder starts at 0 again
    got = timestamps(sink.writes[-1])
    assert got == [5001]  # continues the timeline
    hub.close()


async def test_stream_ends_after_grace(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("s")
    sink = Sink()
    stream.add_reader(sink, TagFormat())
    stream.publisher_left()
    await asyncio.sleep(1.2)
    assert stream.state is StreamState.ENDED
    assert sink.closed is not None
    assert hub.get("s") is None
    hub.start_publish("s")  # the name is free again
    hub.close()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a" * 65, "longer than 64"),
        ("a/b", "slash"),
        ("a\\b", "slash"),
        ("..", "dot-dot"),
        ("a..b", "dot-dot"),
        (".x", "leading dot"),
        ("a\x00", "control character"),
        ("a\x7f", "control character"),
        ("a b", "characters other than"),
        ("é", "characters other than"),
    ],
)
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidStreamName, match=message):
        validate_stream_name(name, max_length=64)


def test_valid_names() -> None:
    for name in ("main", "cam-1", "a.b", "A_9"):
        assert validate_stream_name(name, max_length=64) == name


async def test_audio_only_stream_plays_without_keyframes(settings: Settings) -> None:
    hub = Hub(settings)
    stream = hub.start_publish("radio")
    stream.push(make_packet(8, 0, AAC_HEADER))
    sink = Sink()
    reader = stream.add_reader(sink, TagFormat())
    assert not reader.waiting_keyframe
    for ts in (0, 23, 46):
        stream.push(audio(ts))
    await asyncio.sleep(0.08)
    assert [ts for w in sink.writes for ts in timestamps(w)] == [0, 0, 23, 46]
    hub.close()
