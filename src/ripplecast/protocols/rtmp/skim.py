"""Skim reader: walks an RTMP chunk stream without buffering audio and video payloads.

For clients that only need to know *that* media arrived (the load generator, later probes): each
audio/video message comes out as `MediaSkimmed` with its size and first bytes, so a viewer costs
no payload copies. Command, control and data messages are reassembled in full, as `ChunkReader`
does. Chunk headers are parsed by `parse_chunk_header`, the parser `ChunkReader` uses, so
the header rules, error messages and chunk stream and message size limits are the same by
construction; only the payload handling and the incomplete-bytes limit are this module's own.
Sans-I/O like the rest of the RTMP core.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import (
    ChunkHeader,
    ChunkStreamState,
    RtmpMessage,
    parse_chunk_header,
)


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


class _SkimStream(ChunkStreamState):
    """Per chunk stream id state of the skim reader: the header (base class) and payload walk."""

    __slots__ = ("head", "keep", "need", "received")

    def __init__(self, header: ChunkHeader) -> None:
        super().__init__(header)
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
        if st is not None and st.in_message and st is not self._cur:
            if st.keep is not None:
                self._incomplete -= len(st.keep)
            st.in_message, st.keep, st.received = False, None, 0

    def next_message(self) -> RtmpMessage | MediaSkimmed | None:
        """Return the next message (reassembled or skimmed), or None."""
        return self._messages.popleft() if self._messages else None

    def receive_data(self, data: bytes) -> None:
        """Walk the chunks in `data`; raises ProtocolError/LimitExceeded like ChunkReader."""
        self.bytes_received += len(data)
        if self._tail:
            data = self._tail + data
            self._tail = b""
        # The load generator's hot path: one loop that takes a chunk header when the previous
        # chunk is done, then walks payload. The limits and chunk streams are in locals; the
        # chunk size is not, as a Set Chunk Size completed in this loop changes it.
        streams = self._streams
        max_chunk_streams = self._limits.max_chunk_streams
        max_message_size = self._limits.max_message_size
        st = self._cur
        left = self._chunk_left
        pos = 0
        end = len(data)
        while pos < end:
            if not left:
                parsed = parse_chunk_header(data, pos, streams, max_chunk_streams, max_message_size)
                if parsed is None:
                    self._tail = data[pos:]
                    return
                csid, pos, header = parsed
                if header is None:  # a continuation chunk
                    st = streams[csid]
                else:
                    found = streams.get(csid)
                    if found is None:
                        st = streams[csid] = _SkimStream(header)
                    else:
                        st = found
                        (
                            st.timestamp,
                            st.length,
                            st.type_id,
                            st.stream_id,
                            st.delta,
                            st.extended,
                            st.extended_value,
                        ) = header
                    st.in_message, st.received = True, 0
                    if st.type_id in _MEDIA:
                        st.keep = None
                        st.need = self._peek
                        st.head = bytearray()
                    else:
                        st.keep = bytearray()
                remaining = st.length - st.received
                chunk_size = self._chunk_size
                left = remaining if remaining < chunk_size else chunk_size
                self._cur = st
                self._chunk_left = left
                if not remaining:
                    self._complete(st)
                    continue
                if st.keep is not None and self._incomplete + left > max_message_size:
                    raise LimitExceeded(
                        f"incomplete messages exceed the limit of {max_message_size} bytes",
                        limit="rtmp_max_message_size",
                    )
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

    def _complete(self, st: _SkimStream) -> None:
        st.in_message = False
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
