"""One live stream: its codec state, GOP cache, readers and the merged, shared writes to them.

A `LiveStream` receives `MediaPacket`s from its publisher and hands them out two ways:
- **packet listeners** (the HLS packager; later the recorder and edge relays) get each packet
  synchronously, in order;
- **readers** (HTTP-FLV viewers, RTMP players) get pre-framed bytes. Every `batch_interval_ms`
  (and right before a keyframe) the pending packets are framed *once per output format* and the
  same bytes object is written to every reader of that format: one write per reader per batch.

Invariants:
- a batch never spans a keyframe: a keyframe always starts a new batch, so a reader that skipped
  ahead can resume on a batch boundary with a decodable picture;
- the publisher never waits for a reader: writes go to transports without awaiting; a reader whose
  unsent bytes exceed `reader_max_queue_bytes` skips batches until it has drained and a keyframe
  comes, and a reader that stays behind longer than `reader_max_behind_seconds` is closed;
- timestamps handed out are continuous across publisher reconnects (the returning publisher's
  timeline is shifted to follow the last packet sent).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Protocol

from ripplecast.config import Settings
from ripplecast.media.packet import MediaPacket, PacketKind

log = logging.getLogger("ripplecast.live")


class StreamEvent(Enum):
    """Changes of a stream that a reader may want to tell its client about."""

    UNPUBLISHED = auto()
    """The publisher went away; the stream waits for it during the grace period."""
    REPUBLISHED = auto()
    """The publisher came back within the grace period."""
    ENDED = auto()
    """The stream is over; the reader will be closed right after."""


class ReaderSink(Protocol):
    """Where a reader's bytes go: a transport, seen from the hub."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the client without waiting."""

    def buffered_bytes(self) -> int:
        """Bytes written but not yet sent to the client."""

    def close(self, reason: str) -> None:
        """Close the client's connection, saying why in the log."""

    def stream_event(self, event: StreamEvent) -> None:
        """Tell the client about a change of the stream (may do nothing)."""


class BatchFormat(Protocol):
    """Frames packets for one output format; the result is shared by all its readers."""

    name: str

    def frame(self, packets: Sequence[MediaPacket]) -> bytes:
        """Return the wire bytes for `packets`, in order."""


class PacketListener(Protocol):
    """Receives every packet of a stream in order (packagers, recorders, relays)."""

    def on_packet(self, packet: MediaPacket) -> None:
        """Handle one packet (sequence headers and metadata included)."""

    def on_discontinuity(self) -> None:
        """The publisher changed (reconnect): encoder state may differ from here on."""

    def close(self) -> None:
        """The stream ended; release everything."""


class StreamState(Enum):
    """Life of a stream."""

    LIVE = auto()
    WAITING = auto()
    """Publisher gone, grace period running."""
    ENDED = auto()


_reader_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Reader:
    """A viewer attached to a stream, with its slow-reader state."""

    sink: ReaderSink
    format: BatchFormat
    id: int = field(default_factory=lambda: next(_reader_ids))
    waiting_keyframe: bool = False
    """True while the reader skips batches until the next keyframe."""
    behind_since: float | None = None
    """When the reader fell behind (None if it only waits for the first keyframe)."""
    bytes_sent: int = 0
    batches_skipped: int = 0
    skips: int = 0
    """How many times the reader fell behind and skipped ahead."""
    header_generation: int = -1
    """The stream's header generation whose headers this reader was last sent."""


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream, read by logs, the API and metrics."""

    packets_in: int = 0
    bytes_in: int = 0
    video_frames: int = 0
    keyframes: int = 0
    readers_dropped: int = 0
    reader_skips: int = 0
    batches: int = 0
    publishes: int = 0
    bytes_out: int = 0
    """Bytes written to readers (HTTP-FLV viewers, RTMP players, edges)."""


class LiveStream:
    """See module docstring. Created and ended by the `Hub`."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        on_ended: Callable[[LiveStream], None],
    ) -> None:
        self.name = name
        self._settings = settings
        self._loop = loop
        self._clock = clock
        self._on_ended = on_ended
        self.state = StreamState.LIVE
        self.started_at = clock()
        self.stats = StreamStats(publishes=1)
        self.metadata: MediaPacket | None = None
        self.video_header: MediaPacket | None = None
        self.audio_header: MediaPacket | None = None
        self._header_generation = 0
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._gop_valid = False
        self._pending: list[MediaPacket] = []
        self._timer: asyncio.TimerHandle | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._readers: dict[BatchFormat, set[Reader]] = {}
        self._listeners: list[PacketListener] = []
        self._startup_cache: dict[BatchFormat, tuple[tuple[int, int, int], bytes]] = {}
        self._gop_epoch = 0
        self._unflushed_gop = 0
        """GOP packets still in `_pending`: new readers get them with the next batch."""
        self._last_timestamp = -1
        self._offset = 0
        self._rebase_pending = False
        self._batch_seconds = settings.batch_interval_ms / 1000.0

    # --- publisher side ---------------------------------------------------------------------

    def add_listener(self, listener: PacketListener) -> None:
        """Attach a packet listener (it gets every packet from now on)."""
        self._listeners.append(listener)

    @property
    def listeners(self) -> Sequence[PacketListener]:
        """The attached packet listeners."""
        return tuple(self._listeners)

    def push(self, packet: MediaPacket) -> None:
        """Take one packet from the publisher and pass it on (never blocks)."""
        if self.state is not StreamState.LIVE:
            return
        if self._rebase_pending:
            self._rebase_pending = False
            self._offset = self._last_timestamp + 1 - packet.timestamp
        if self._offset:
            packet = packet.retimed(max(0, packet.timestamp + self._offset))
        if packet.timestamp > self._last_timestamp:
            self._last_timestamp = packet.timestamp
        if packet.keyframe and self._pending:
            self._flush()  # a keyframe always starts a new batch
        stats = self.stats
        stats.packets_in += 1
        stats.bytes_in += len(packet.payload)
        in_gop = False
        if packet.sequence_header:
            if packet.kind is PacketKind.VIDEO:
                self.video_header = packet
            else:
                self.audio_header = packet
            self._header_generation += 1
        elif packet.kind is PacketKind.DATA:
            self.metadata = packet
            self._header_generation += 1
        elif packet.kind is PacketKind.VIDEO and packet.keyframe:
            stats.video_frames += 1
            stats.keyframes += 1
            in_gop = self._start_gop(packet)
        else:
            if packet.kind is PacketKind.VIDEO:
                stats.video_frames += 1
            in_gop = self._append_gop(packet)
        for listener in self._listeners:
            listener.on_packet(packet)
        if not self._readers:
            return
        self._pending.append(packet)
        if in_gop:
            self._unflushed_gop += 1
        if packet.keyframe:
            self._flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._batch_seconds, self._flush)

    def _start_gop(self, packet: MediaPacket) -> bool:
        self._gop_epoch += 1
        self._unflushed_gop = 0
        self._gop_bytes = len(packet.flv_tag)
        self._gop_valid = self._gop_bytes <= self._settings.gop_cache_max_bytes
        self._gop = [packet] if self._gop_valid else []
        return self._gop_valid

    def _append_gop(self, packet: MediaPacket) -> bool:
        if not self._gop_valid:
            return False
        self._gop_bytes += len(packet.flv_tag)
        if self._gop_bytes > self._settings.gop_cache_max_bytes:
            # Too big to keep: new viewers will wait for the next keyframe instead.
            self._gop, self._gop_bytes, self._gop_valid = [], 0, False
            self._gop_epoch += 1
            self._unflushed_gop = 0
            return False
        self._gop.append(packet)
        return True

    def publisher_left(self, grace_seconds: float | None = None) -> None:
        """The publisher disconnected: wait `grace_seconds` (by default
        `reconnect_grace_seconds`) for it, then end."""
        if self.state is not StreamState.LIVE:
            return
        self._flush()
        self.state = StreamState.WAITING
        grace = self._settings.reconnect_grace_seconds if grace_seconds is None else grace_seconds
        if grace <= 0:
            self.end("publisher left")
            return
        for reader in self._all_readers():
            reader.sink.stream_event(StreamEvent.UNPUBLISHED)
        self._grace_timer = self._loop.call_later(grace, self.end, "publisher did not return")

    def publisher_returned(self) -> None:
        """A publisher took the stream back within the grace period: continue the timeline."""
        if self.state is not StreamState.WAITING:
            return
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self.state = StreamState.LIVE
        self.stats.publishes += 1
        self._rebase_pending = True
        self._gop, self._gop_bytes, self._gop_valid = [], 0, False
        self._gop_epoch += 1
        for listener in self._listeners:
            listener.on_discontinuity()
        for reader in self._all_readers():
            reader.sink.stream_event(StreamEvent.REPUBLISHED)
            # Wait for the new publisher's first keyframe (its headers come with it).
            reader.waiting_keyframe = True
            reader.behind_since = None

    def end(self, reason: str) -> None:
        """End the stream: close every reader and listener, and leave the hub."""
        if self.state is StreamState.ENDED:
            return
        self._flush()
        self.state = StreamState.ENDED
        for timer in (self._timer, self._grace_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._grace_timer = None
        for reader in self._all_readers():
            reader.sink.stream_event(StreamEvent.ENDED)
            reader.sink.close(f"stream ended: {reason}")
        self._readers.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        log.info("stream %s ended (%s)", self.name, reason)
        self._on_ended(self)

    # --- reader side ------------------------------------------------------------------------

    @property
    def reader_count(self) -> int:
        """Readers attached right now."""
        return sum(len(readers) for readers in self._readers.values())

    def _all_readers(self) -> list[Reader]:
        return [reader for readers in self._readers.values() for reader in readers]

    def readers_of(self, fmt: BatchFormat) -> int:
        """How many readers use output format `fmt`."""
        return len(self._readers.get(fmt, ()))

    def add_reader(self, sink: ReaderSink, fmt: BatchFormat) -> Reader:
        """Attach a reader and write its start: metadata, codec headers and the GOP cache.

        A reader that arrives before the first keyframe (or when the GOP was too big to cache)
        gets the headers now and its first picture at the next keyframe.
        """
        reader = Reader(sink, fmt)
        self._readers.setdefault(fmt, set()).add(reader)
        start = self._startup_bytes(fmt)
        if start:
            sink.write(start)
            reader.bytes_sent += len(start)
            reader.header_generation = self._header_generation
        if self.state is not StreamState.LIVE or (self._has_video and not self._gop_valid):
            reader.waiting_keyframe = True
        return reader

    @property
    def _has_video(self) -> bool:
        # An audio-only stream has no keyframes: every batch is a place to start.
        return self.video_header is not None

    def remove_reader(self, reader: Reader) -> None:
        """Detach a reader (its connection closed)."""
        readers = self._readers.get(reader.format)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._readers[reader.format]
                self._startup_cache.pop(reader.format, None)

    def _headers(self) -> list[MediaPacket]:
        return [p for p in (self.metadata, self.video_header, self.audio_header) if p is not None]

    def _startup_bytes(self, fmt: BatchFormat) -> bytes:
        flushed = len(self._gop) - self._unflushed_gop
        key = (self._header_generation, self._gop_epoch, flushed)
        cached = self._startup_cache.get(fmt)
        if cached is not None and cached[0] == key:
            return cached[1]
        packets = self._headers()
        if self._gop_valid:
            # GOP packets still pending reach this reader with the next batch.
            packets.extend(self._gop[:flushed])
        data = fmt.frame(packets) if packets else b""
        self._startup_cache[fmt] = (key, data)
        return data

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        packets = self._pending
        if not packets:
            return
        self._pending = []
        self._unflushed_gop = 0
        self.stats.batches += 1
        starts_with_keyframe = packets[0].keyframe or not self._has_video
        now = self._clock()
        for fmt, readers in list(self._readers.items()):
            data = fmt.frame(packets)
            for reader in list(readers):
                self._deliver(reader, data, starts_with_keyframe, now)

    def _deliver(self, reader: Reader, data: bytes, keyframe: bool, now: float) -> None:
        settings = self._settings
        buffered = reader.sink.buffered_bytes()
        if reader.waiting_keyframe:
            if keyframe and buffered <= settings.reader_max_queue_bytes // 2:
                resumed = reader.behind_since is not None
                reader.waiting_keyframe = False
                reader.behind_since = None
                headers = self._headers()
                # A reader resuming after a skip may have missed a header change, so it gets
                # them again; one that got them on joining only if they changed since.
                if headers and (resumed or reader.header_generation != self._header_generation):
                    reader.header_generation = self._header_generation
                    head = reader.format.frame(headers)
                    reader.sink.write(head)
                    reader.bytes_sent += len(head)
            else:
                reader.batches_skipped += 1
                if (
                    reader.behind_since is not None
                    and now - reader.behind_since > settings.reader_max_behind_seconds
                ):
                    self._drop(reader, buffered)
                return
        elif buffered > settings.reader_max_queue_bytes:
            reader.waiting_keyframe = True
            reader.behind_since = now
            reader.skips += 1
            reader.batches_skipped += 1
            self.stats.reader_skips += 1
            log.info(
                "stream %s reader %d is too slow (%d bytes unsent): skipping to next keyframe",
                self.name,
                reader.id,
                buffered,
            )
            return
        reader.sink.write(data)
        reader.bytes_sent += len(data)
        self.stats.bytes_out += len(data)

    def _drop(self, reader: Reader, buffered: int) -> None:
        self.stats.readers_dropped += 1
        self.remove_reader(reader)
        log.warning(
            "stream %s reader %d dropped: behind for more than %.1f s (%d bytes unsent)",
            self.name,
            reader.id,
            self._settings.reader_max_behind_seconds,
            buffered,
        )
        reader.sink.close("reader too slow")
