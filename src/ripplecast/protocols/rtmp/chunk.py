"""RTMP chunk stream (Adobe RTMP spec 5.3), sans-I/O: bytes <-> whole RTMP messages.

Owns: `parse_chunk_header` (the one parser of chunk headers: basic header, fmt 0-3 message
header, extended timestamp, inheritance from the chunk stream's previous header, and the limits
on chunk streams and message size), `ChunkReader` (reassembles messages from interleaved chunks
with it; the skim reader is its other user), `encode_message` (one message -> self-contained
chunk bytes), protocol control message builders/parsers, and the message type, chunk stream id
and user control event constants.

Invariants of `ChunkReader`:
- `receive_data` only buffers; `next_message` parses chunks and returns one whole message or
  None ("need more data"). It never parses past the chunk that completes a message, so a
  `set_chunk_size` made by the caller after seeing a Set Chunk Size message applies from the
  very next chunk, as the spec requires.
- A chunk is consumed only when its header and whole payload are in, so any split of the input
  (whole, byte by byte, random) yields the same messages; header parsing has no side effect
  until the chunk is committed.
- Memory is bounded: a declared message length over `max_message_size`, more incomplete message
  bytes (summed over every chunk stream) than `max_message_size`, more distinct chunk stream
  ids than `max_chunk_streams`, or a chunk size over `max_chunk_size` raise `LimitExceeded`.
  Malformed input raises `ProtocolError`; nothing else escapes for any input.
- Timestamps are absolute milliseconds, modulo 2**32.

Decisions where implementations disagree (sources: ffmpeg libavformat/rtmppkt.c, SRS
srs_protocol_rtmp_stack.cpp `read_message_header`, nginx-rtmp ngx_rtmp_handler.c
`ngx_rtmp_recv`, librtmp rtmp.c `RTMP_ReadPacket`):

- fmt 3 starting a new message reuses the previous header and adds "the previous delta". After
  a fmt 1/2 header that is its delta (all agree). After a fmt 0 header we follow ffmpeg and SRS:
  the fmt 0 timestamp field itself is the delta (ffmpeg re-adds the previous `ts_field`, SRS
  keeps `timestamp_delta`), which is also what ffmpeg's *writer* assumes when it picks fmt 3.
  nginx-rtmp and librtmp's reader use delta 0 there instead; both readings agree for the only
  fmt-0-then-fmt-3 pattern librtmp's writer produces (fmt 0 at timestamp 0).
- Extended timestamp on fmt 3: read when the latest fmt 0/1/2 header of the chunk stream used
  one. For a fmt 3 chunk starting a new message the 4 bytes are always read and taken as the
  delta (ffmpeg). For a continuation chunk we are tolerant like SRS: the 4 bytes are consumed
  only if they equal the message's absolute timestamp (Flash, FMS, SRS, our writer) or the
  header's extended field (ffmpeg, which repeats its delta); otherwise the sender (old
  encoders) is taken to have omitted them and they are payload.
- A fmt 0/1/2 header on a chunk stream with an incomplete message is a `ProtocolError` (as in
  SRS for fmt 0): every known client uses fmt 3 for continuation chunks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from ripplecast.errors import LimitExceeded, ProtocolError, UsageError

__all__ = [
    "ABORT",
    "ACK",
    "AGGREGATE",
    "AUDIO",
    "COMMAND_AMF0",
    "COMMAND_AMF3",
    "CSID_AUDIO",
    "CSID_COMMAND",
    "CSID_CONTROL",
    "CSID_DATA",
    "CSID_VIDEO",
    "DATA_AMF0",
    "DATA_AMF3",
    "DEFAULT_CHUNK_SIZE",
    "LIMIT_DYNAMIC",
    "LIMIT_HARD",
    "LIMIT_SOFT",
    "PING_REQUEST",
    "PING_RESPONSE",
    "SET_BUFFER_LENGTH",
    "SET_CHUNK_SIZE",
    "SET_PEER_BANDWIDTH",
    "SHARED_OBJECT_AMF0",
    "SHARED_OBJECT_AMF3",
    "STREAM_BEGIN",
    "STREAM_DRY",
    "STREAM_EOF",
    "STREAM_IS_RECORDED",
    "USER_CONTROL",
    "VIDEO",
    "WINDOW_ACK_SIZE",
    "ChunkHeader",
    "ChunkReader",
    "ChunkStreamState",
    "RtmpMessage",
    "abort",
    "acknowledgement",
    "encode_message",
    "parse_chunk_header",
    "parse_set_peer_bandwidth",
    "parse_u32",
    "parse_user_control",
    "set_chunk_size",
    "set_peer_bandwidth",
    "user_control",
    "window_ack_size",
]

# Message type ids (spec 5.4, 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# Conventional chunk stream ids (any 2..65599 is legal; 2 is reserved for protocol control).
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_DATA = 5
CSID_VIDEO = 6

# User control event types (spec 7.1.7).
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types (spec 5.4.5).
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

DEFAULT_CHUNK_SIZE = 128
MAX_CSID = 65599
_EXT = 0xFFFFFF
_MASK32 = 0xFFFFFFFF
_MSG_HEADER_SIZE = (11, 7, 3, 0)
_COMPACT_AT = 65536

_U32 = struct.Struct(">I")
_U32U8 = struct.Struct(">IB")


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    """One reassembled RTMP message."""

    chunk_stream_id: int
    """Chunk stream id it arrived on (2..65599)."""
    type_id: int
    """Message type id (SET_CHUNK_SIZE, AUDIO, VIDEO, COMMAND_AMF0, ...)."""
    stream_id: int
    """Message stream id (0 for protocol control and NetConnection commands)."""
    timestamp: int
    """Absolute timestamp in milliseconds, 32-bit (already summed from deltas)."""
    payload: bytes
    """The message body, exactly as long as the header declared."""


ChunkHeader: TypeAlias = tuple[int, int, int, int, int, bool, int]
"""A message header with every field filled in, as `parse_chunk_header` returns it.

`(timestamp, length, type_id, stream_id, delta, extended, extended_value)`: the fields of
`ChunkStreamState`, in that order, so a reader commits it with one unpacking assignment. A
plain tuple because one is built per message on the readers' hot path, where a NamedTuple
costs ~8x and a frozen dataclass ~25x as much to build (measured on CPython 3.11).
"""


class ChunkStreamState:
    """A chunk stream's previous header, which fmt 1/2/3 headers inherit; readers subclass it.

    A reader creates it when it commits the first (fmt 0) header on a chunk stream id.
    """

    __slots__ = (
        "delta",
        "extended",
        "extended_value",
        "in_message",
        "length",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self, header: ChunkHeader) -> None:
        (
            self.timestamp,  # absolute timestamp of the latest message, modulo 2**32
            self.length,  # its length in bytes
            self.type_id,
            self.stream_id,
            self.delta,  # what a fmt 3 header starting a new message adds (module docstring)
            self.extended,  # the latest fmt 0/1/2 header had an extended timestamp ...
            self.extended_value,  # ... with this value, so fmt 3 chunks carry one too
        ) = header
        self.in_message = False
        """A message is incomplete here: only fmt 3 continuation chunks may follow."""


def parse_chunk_header(
    buf: bytes | bytearray,
    pos: int,
    streams: Mapping[int, ChunkStreamState],
    max_chunk_streams: int,
    max_message_size: int,
) -> tuple[int, int, ChunkHeader | None] | None:
    """Parse the chunk header at `buf[pos:]` against the chunk streams' previous headers.

    Pure: neither `buf` nor `streams` is touched, so a caller may parse a header again once
    more bytes are in, and commits the result (to the `ChunkStreamState` of that chunk stream
    id, created on first use) only when it takes the chunk.

    Returns None if the header is not complete in `buf`, else `(chunk stream id, offset of the
    chunk payload, header)`, where header is None for a continuation chunk of the message in
    progress on that chunk stream (its state's header stays in force) and the new message's
    `ChunkHeader` otherwise.

    Raises ProtocolError(reason="chunk_header") for a fmt 1/2/3 header with no previous header
    or a fmt 0/1/2 header in the middle of a message, and LimitExceeded for a new chunk stream
    id beyond `max_chunk_streams` ("rtmp_max_chunk_streams") or a message length over
    `max_message_size` ("rtmp_max_message_size").
    """
    end = len(buf)
    p = pos
    if p >= end:
        return None
    b0 = buf[p]
    fmt = b0 >> 6
    csid = b0 & 0x3F
    if csid == 0:
        if end - p < 2:
            return None
        csid = 64 + buf[p + 1]
        p += 2
    elif csid == 1:
        if end - p < 3:
            return None
        csid = 64 + buf[p + 1] + (buf[p + 2] << 8)
        p += 3
    else:
        p += 1
    if end - p < _MSG_HEADER_SIZE[fmt]:
        return None

    st = streams.get(csid)
    if st is None:
        if fmt != 0:
            raise ProtocolError(
                f"fmt {fmt} chunk on chunk stream {csid} with no previous header",
                reason="chunk_header",
            )
        if len(streams) >= max_chunk_streams:
            raise LimitExceeded(
                f"more than {max_chunk_streams} chunk streams",
                limit="rtmp_max_chunk_streams",
            )
    elif st.in_message:
        if fmt != 3:
            raise ProtocolError(
                f"fmt {fmt} chunk on chunk stream {csid} in the middle of a message",
                reason="chunk_header",
            )
        if st.extended:
            # Tolerant read (see module docstring): consume only an expected value.
            if end - p < 4:
                return None
            value = _U32.unpack_from(buf, p)[0]
            if value == st.timestamp or value == st.extended_value:
                p += 4
        return csid, p, None

    if fmt == 3:
        assert st is not None
        length, type_id, stream_id = st.length, st.type_id, st.stream_id
        ext, ext_value, delta = st.extended, st.extended_value, st.delta
        if ext:
            if end - p < 4:
                return None
            ext_value = delta = _U32.unpack_from(buf, p)[0]
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
        p += _MSG_HEADER_SIZE[fmt]
        ext = field == _EXT
        if ext:
            if end - p < 4:
                return None
            field = _U32.unpack_from(buf, p)[0]
            p += 4
        ext_value = delta = field
        if fmt == 0:
            timestamp = field
        else:
            assert st is not None
            timestamp = (st.timestamp + field) & _MASK32

    if length > max_message_size:
        raise LimitExceeded(
            f"message of {length} bytes on chunk stream {csid} exceeds the limit of "
            f"{max_message_size}",
            limit="rtmp_max_message_size",
        )
    return csid, p, (timestamp, length, type_id, stream_id, delta, ext, ext_value)


class _ChunkStream(ChunkStreamState):
    """ChunkReader's state per chunk stream id: the header (base class) and incomplete message."""

    __slots__ = ("parts", "received")

    def __init__(self, header: ChunkHeader) -> None:
        super().__init__(header)
        self.parts: list[bytearray] = []  # chunk payloads of the incomplete message
        self.received = 0


class ChunkReader:
    """Reassembles RTMP messages from the chunk stream a peer sends.

    Feed bytes with `receive_data`, then call `next_message` until it returns None. When a
    Set Chunk Size message comes out, call `set_chunk_size` before the next `next_message`;
    for an Abort message call `abort`.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = 65536,
        max_message_size: int = 8 * 1024 * 1024,
        max_chunk_streams: int = 64,
    ) -> None:
        if max_chunk_size < 1 or max_message_size < 0 or max_chunk_streams < 1:
            raise UsageError("ChunkReader limits must be positive")
        self.max_chunk_size = max_chunk_size
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._buf = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._incomplete = 0  # payload bytes held in incomplete messages, all chunk streams
        self._bytes_received = 0

    @property
    def bytes_received(self) -> int:
        """Total bytes passed to `receive_data` (for Acknowledgement sequence numbers)."""
        return self._bytes_received

    @property
    def chunk_size(self) -> int:
        """The peer's current chunk size (128 until `set_chunk_size`)."""
        return self._chunk_size

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; parses nothing."""
        buf = self._buf
        pos = self._pos
        if pos:
            if pos >= len(buf):
                buf.clear()
                self._pos = 0
            elif pos >= _COMPACT_AT and pos * 2 >= len(buf):
                del buf[:pos]
                self._pos = 0
        buf += data
        self._bytes_received += len(data)

    def set_chunk_size(self, size: int) -> None:
        """Apply a Set Chunk Size from the peer to every following chunk.

        Raises ProtocolError if the size is below 1 or has its most significant bit set,
        LimitExceeded(limit="rtmp_max_chunk_size") if it is above `max_chunk_size`.
        """
        if size < 1 or size & 0x80000000:
            raise ProtocolError(f"invalid chunk size {size}", reason="chunk_size")
        if size > self.max_chunk_size:
            raise LimitExceeded(
                f"chunk size {size} exceeds the limit of {self.max_chunk_size}",
                limit="rtmp_max_chunk_size",
            )
        self._chunk_size = size

    def abort(self, chunk_stream_id: int) -> None:
        """Discard the incomplete message on `chunk_stream_id` (Abort message); no-op if none."""
        st = self._streams.get(chunk_stream_id)
        if st is not None and st.in_message:
            self._incomplete -= st.received
            st.parts.clear()
            st.received = 0
            st.in_message = False

    def next_message(self) -> RtmpMessage | None:
        """Return the next whole message, or None when more bytes are needed.

        Raises ProtocolError (LimitExceeded for limits) when the peer's bytes are malformed.
        """
        # One loop over chunks, with everything it reads bound to locals: this is the hot path
        # of every publisher. `set_chunk_size` and `abort` are only called between calls.
        buf = self._buf
        streams = self._streams
        chunk_size = self._chunk_size
        max_chunk_streams = self.max_chunk_streams
        max_message_size = self.max_message_size
        while True:
            parsed = parse_chunk_header(
                buf, self._pos, streams, max_chunk_streams, max_message_size
            )
            if parsed is None:
                return None
            csid, p, header = parsed
            if header is None:
                st = streams[csid]
                remaining = st.length - st.received
                n = remaining if remaining < chunk_size else chunk_size
                if len(buf) - p < n:
                    return None
            else:
                remaining = header[1]  # the message length
                n = remaining if remaining < chunk_size else chunk_size
                if len(buf) - p < n:
                    return None  # nothing committed yet: the header is parsed again next time
                found = streams.get(csid)
                if found is None:
                    st = streams[csid] = _ChunkStream(header)
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
                st.in_message = True

            data = buf[p : p + n]
            self._pos = p + n
            if n == remaining:
                parts = st.parts
                if parts:
                    parts.append(data)
                    payload = b"".join(parts)
                    parts.clear()
                    self._incomplete -= st.received
                    st.received = 0
                else:
                    payload = bytes(data)
                st.in_message = False
                return RtmpMessage(
                    chunk_stream_id=csid,
                    type_id=st.type_id,
                    stream_id=st.stream_id,
                    timestamp=st.timestamp,
                    payload=payload,
                )
            st.parts.append(data)
            st.received += n
            self._incomplete += n
            if self._incomplete > max_message_size:
                raise LimitExceeded(
                    f"{self._incomplete} bytes of incomplete messages exceed the limit of "
                    f"{max_message_size}",
                    limit="rtmp_max_message_size",
                )


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= MAX_CSID:
        rest = csid - 64
        return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))
    raise UsageError(f"chunk stream id {csid} out of range 2..{MAX_CSID}")


def encode_message(
    *,
    chunk_stream_id: int,
    type_id: int,
    stream_id: int,
    timestamp: int,
    payload: bytes,
    chunk_size: int,
) -> bytes:
    """Return `payload` as chunks: a fmt 0 chunk, then fmt 3 continuations.

    The result depends on no connection state, so one call serves every connection using the
    same outgoing `chunk_size`. `timestamp` is taken modulo 2**32; from 0xFFFFFF up it goes in
    an extended timestamp, repeated on every fmt 3 chunk (as Flash, librtmp and ffmpeg do).
    Raises UsageError on an out-of-range chunk stream id, chunk size or payload length.
    """
    length = len(payload)
    if chunk_size < 1 or length > 0xFFFFFF or not 0 <= type_id <= 0xFF:
        raise UsageError(f"cannot encode: chunk_size={chunk_size}, length={length}")
    timestamp &= _MASK32
    if timestamp >= _EXT:
        ext = _U32.pack(timestamp)
        field = _EXT
    else:
        ext = b""
        field = timestamp
    header = b"".join(
        (
            _basic_header(0, chunk_stream_id),
            field.to_bytes(3, "big"),
            length.to_bytes(3, "big"),
            bytes((type_id,)),
            (stream_id & _MASK32).to_bytes(4, "little"),
            ext,
        )
    )
    if length <= chunk_size:
        return header + payload
    cont = _basic_header(3, chunk_stream_id) + ext
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [header, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


def _control(type_id: int, payload: bytes) -> bytes:
    # Control payloads are at most 10 bytes: one chunk under any sane outgoing chunk size.
    return encode_message(
        chunk_stream_id=CSID_CONTROL,
        type_id=type_id,
        stream_id=0,
        timestamp=0,
        payload=payload,
        chunk_size=DEFAULT_CHUNK_SIZE,
    )


def set_chunk_size(size: int) -> bytes:
    """Return an encoded Set Chunk Size message (type 1) announcing our outgoing chunk size."""
    if not 1 <= size <= 0x7FFFFFFF:
        raise UsageError(f"chunk size {size} out of range")
    return _control(SET_CHUNK_SIZE, _U32.pack(size))


def abort(chunk_stream_id: int) -> bytes:
    """Return an encoded Abort message (type 2) for `chunk_stream_id`."""
    return _control(ABORT, _U32.pack(chunk_stream_id & _MASK32))


def acknowledgement(sequence_number: int) -> bytes:
    """Return an encoded Acknowledgement (type 3); `sequence_number` = bytes received."""
    return _control(ACK, _U32.pack(sequence_number & _MASK32))


def window_ack_size(size: int) -> bytes:
    """Return an encoded Window Acknowledgement Size message (type 5)."""
    return _control(WINDOW_ACK_SIZE, _U32.pack(size & _MASK32))


def set_peer_bandwidth(size: int, limit_type: int) -> bytes:
    """Return an encoded Set Peer Bandwidth message (type 6); limit_type is LIMIT_*."""
    return _control(SET_PEER_BANDWIDTH, _U32U8.pack(size & _MASK32, limit_type & 0xFF))


def user_control(event_type: int, *data: int) -> bytes:
    """Return an encoded User Control message (type 4): event type then 32-bit values."""
    payload = event_type.to_bytes(2, "big") + b"".join(_U32.pack(v & _MASK32) for v in data)
    return _control(USER_CONTROL, payload)


def parse_u32(payload: bytes) -> int:
    """Return the 32-bit value of a Set Chunk Size, Abort, Ack or Window Ack Size payload.

    Raises ProtocolError if the payload is shorter than 4 bytes.
    """
    if len(payload) < 4:
        raise ProtocolError(f"control message payload of {len(payload)} bytes, need 4")
    return int(_U32.unpack_from(payload)[0])


def parse_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """Return `(window size, limit type)` of a Set Peer Bandwidth payload.

    Raises ProtocolError if the payload is shorter than 5 bytes.
    """
    if len(payload) < 5:
        raise ProtocolError(f"Set Peer Bandwidth payload of {len(payload)} bytes, need 5")
    size, limit_type = _U32U8.unpack_from(payload)
    return int(size), int(limit_type)


def parse_user_control(payload: bytes) -> tuple[int, tuple[int, ...]]:
    """Return `(event type, 32-bit values)` of a User Control payload.

    Raises ProtocolError if the payload is shorter than 2 bytes or the event data is not a
    whole number of 32-bit values.
    """
    size = len(payload)
    if size < 2 or (size - 2) % 4:
        raise ProtocolError(f"User Control payload of {size} bytes is malformed")
    event_type = int.from_bytes(payload[:2], "big")
    values = tuple(int(v[0]) for v in _U32.iter_unpack(payload[2:]))
    return event_type, values
