"""Skim reader: walks an RTMP chunk stream without buffering audio and video payloads.

For clients that only need to know *that* media arrived (the load generator, later probes): each
audio/video message comes out as `MediaSkimmed` with its size and first bytes, so a viewer costs
no payload copies. Command, control and data messages are reassembled in full, as `ChunkReader`
does, with the same header rules and limits. Sans-I/O like the rest of the RTMP core.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import RtmpMessage


class SkimLimits(Protocol):
    """The bounds the skim reader enforces (a `ClientLimits` has them)."""

    @property
    def max_chunk_size(self) -> int: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def max_chunk_streams(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MediaSkimmed:
    """An audio or video message seen in skim mode: its size and first bytes, nothing copied."""

    stream_id: int
    """The message stream id it came on."""
    type_id: int
    """8 audio or 9 video."""
    timestamp: int
    """Absolute timestamp in milliseconds (32-bit)."""
    size: int
    """The whole payload's length in bytes."""
    head: bytes
    """The first `skim_media` bytes of the payload (fewer if the payload is shorter)."""


_MEDIA = frozenset((chunk.AUDIO, chunk.VIDEO))
_EXT = 0xFFFFFF
_MASK32 = 0xFFFFFFFF


class _SkimStream:
    """Per chunk stream id state of the skim reader (see `ChunkReader._ChunkStream`)."""

    __slots__ = (
        "active",
        "delta",
        "ext",
        "ext_value",
        "head",
        "keep",
        "length",
        "need",
        "received",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.ext = False
        self.ext_value = 0
        self.active = False  # a message is in progress
        self.received = 0
        self.keep: bytearray | None = None  # whole payload, for non-media messages
        self.head = bytearray()  # first `peek` bytes, for media messages
        self.need = 0  # head bytes still wanted


class SkimReader:
    """A chunk stream reader that walks media payloads without buffering them.

    Same header semantics as `ChunkReader` (fmt 0-3, deltas, the tolerant extended timestamp on
    continuation chunks, the same limits), but it parses eagerly in `receive_data` and applies a
    Set Chunk Size (and Abort) itself as soon as the message is complete, so that the following
    chunks of the same read are cut right. Only the bytes of an incomplete chunk header are kept
    between reads.
    """

    def __init__(self, limits: SkimLimits, *, peek: int) -> None:
        self._limits = limits
        self._peek = max(0, peek)
        self._chunk_size = chunk.DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _SkimStream] = {}
        self._messages: deque[RtmpMessage | MediaSkimmed] = deque()
        self._tail = b""  # start of a chunk header cut by the end of the last read
        self._cur: _SkimStream | None = None
        self._chunk_left = 0
        self._incomplete = 0
        self.bytes_received = 0

    def set_chunk_size(self, size: int) -> None:
        """Validate and apply the server's chunk size (already applied when skimmed)."""
        if size < 1 or size & 0x80000000:
            raise ProtocolError(f"invalid chunk size {size}", reason="chunk_size")
        if size > self._limits.max_chunk_size:
            raise LimitExceeded(
                f"chunk size {size} exceeds the limit of {self._limits.max_chunk_size}",
                limit="rtmp_max_chunk_size",
            )
        self._chunk_size = size

    def abort(self, chunk_stream_id: int) -> None:
        """Drop the incomplete message on `chunk_stream_id` (already done when skimmed)."""
        st = self._streams.get(chunk_stream_id)
        if st is not None and st.active and st is not self._cur:
            if st.keep is not None:
                self._incomplete -= len(st.keep)
            st.active, st.keep, st.received = False, None, 0

    def next_message(self) -> RtmpMessage | MediaSkimmed | None:
        """Return the next message (reassembled or skimmed), or None."""
        return self._messages.popleft() if self._messages else None

    def receive_data(self, data: bytes) -> None:
        """Walk the chunks in `data`; raises ProtocolError/LimitExceeded like ChunkReader."""
        self.bytes_received += len(data)
        if self._tail:
            data = self._tail + data
            self._tail = b""
        pos = 0
        end = len(data)
        while pos < end:
            left = self._chunk_left
            if left:
                st = self._cur
                assert st is not None
                take = left if left <= end - pos else end - pos
                if st.keep is not None:
                    st.keep += data[pos : pos + take]
                    self._incomplete += take
                elif st.need:
                    piece = data[pos : pos + (take if take < st.need else st.need)]
                    st.head += piece
                    st.need -= len(piece)
                pos += take
                st.received += take
                left -= take
                self._chunk_left = left
                if not left and st.received >= st.length:
                    self._complete(st)
                continue
            consumed = self._header(data, pos, end)
            if consumed is None:
                self._tail = data[pos:]
                return
            pos = consumed

    def _header(self, buf: bytes, p: int, end: int) -> int | None:
        """Parse one chunk header at `p`; return the offset after it, None if incomplete."""
        avail = end - p
        b0 = buf[p]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        if csid == 0:
            if avail < 2:
                return None
            csid = 64 + buf[p + 1]
            p += 2
        elif csid == 1:
            if avail < 3:
                return None
            csid = 64 + buf[p + 1] + (buf[p + 2] << 8)
            p += 3
        else:
            p += 1
        if end - p < (11, 7, 3, 0)[fmt]:
            return None
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise ProtocolError(
                    f"fmt {fmt} chunk on chunk stream {csid} with no previous header",
                    reason="chunk_header",
                )
            if len(self._streams) >= self._limits.max_chunk_streams:
                raise LimitExceeded(
                    f"more than {self._limits.max_chunk_streams} chunk streams",
                    limit="rtmp_max_chunk_streams",
                )
        if st is not None and st.active:
            if fmt != 3:
                raise ProtocolError(
                    f"fmt {fmt} chunk on chunk stream {csid} in the middle of a message",
                    reason="chunk_header",
                )
            if st.ext:
                if end - p < 4:
                    return None
                value = int.from_bytes(buf[p : p + 4], "big")
                if value == st.timestamp or value == st.ext_value:
                    p += 4
            self._start_chunk(st)
            return p
        if fmt == 3:
            assert st is not None
            length, type_id, stream_id = st.length, st.type_id, st.stream_id
            ext, ext_value, delta = st.ext, st.ext_value, st.delta
            if ext:
                if end - p < 4:
                    return None
                ext_value = delta = int.from_bytes(buf[p : p + 4], "big")
                p += 4
            timestamp = (st.timestamp + delta) & _MASK32
        else:
            field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            if fmt <= 1:
                length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                type_id = buf[p + 6]
                if fmt == 0:
                    stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
                else:
                    assert st is not None
                    stream_id = st.stream_id
            else:
                assert st is not None
                length, type_id, stream_id = st.length, st.type_id, st.stream_id
            p += (11, 7, 3)[fmt]
            ext = field == _EXT
            if ext:
                if end - p < 4:
                    return None
                field = int.from_bytes(buf[p : p + 4], "big")
                p += 4
            ext_value = delta = field
            if fmt == 0:
                timestamp = field
            else:
                assert st is not None
                timestamp = (st.timestamp + field) & _MASK32
        if length > self._limits.max_message_size:
            raise LimitExceeded(
                f"message of {length} bytes on chunk stream {csid} exceeds the limit of "
                f"{self._limits.max_message_size}",
                limit="rtmp_max_message_size",
            )
        if st is None:
            st = self._streams[csid] = _SkimStream()
        st.timestamp, st.delta, st.length = timestamp, delta, length
        st.type_id, st.stream_id = type_id, stream_id
        st.ext, st.ext_value = ext, ext_value
        st.active, st.received = True, 0
        if type_id in _MEDIA:
            st.keep = None
            st.need = self._peek
            st.head = bytearray()
        else:
            st.keep = bytearray()
        self._start_chunk(st)
        return p

    def _start_chunk(self, st: _SkimStream) -> None:
        remaining = st.length - st.received
        self._cur = st
        self._chunk_left = remaining if remaining < self._chunk_size else self._chunk_size
        if not remaining:
            self._complete(st)
        elif st.keep is not None and self._incomplete + self._chunk_left > (
            self._limits.max_message_size
        ):
            raise LimitExceeded(
                f"incomplete messages exceed the limit of {self._limits.max_message_size} bytes",
                limit="rtmp_max_message_size",
            )

    def _complete(self, st: _SkimStream) -> None:
        st.active = False
        self._cur = None
        keep = st.keep
        if keep is None:
            self._messages.append(
                MediaSkimmed(st.stream_id, st.type_id, st.timestamp, st.length, bytes(st.head))
            )
            return
        st.keep = None
        self._incomplete -= len(keep)
        payload = bytes(keep)
        if st.type_id == chunk.SET_CHUNK_SIZE:
            self.set_chunk_size(chunk.parse_u32(payload))
        elif st.type_id == chunk.ABORT:
            self.abort(chunk.parse_u32(payload))
        self._messages.append(RtmpMessage(0, st.type_id, st.stream_id, st.timestamp, payload))
