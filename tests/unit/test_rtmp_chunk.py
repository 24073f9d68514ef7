"""RTMP chunk stream: round trips, hand-built interleavings, timestamps, limits, any split."""

from __future__ import annotations

import random
import struct

import pytest

from ripplecast.errors import LimitExceeded, ProtocolError, UsageError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import (
    ChunkHeader,
    ChunkReader,
    ChunkStreamState,
    RtmpMessage,
    encode_message,
    parse_chunk_header,
)


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def fmt0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    ext = b""
    if ts >= 0xFFFFFF:
        ext, ts = struct.pack(">I", ts), 0xFFFFFF
    return (
        basic(0, csid) + u24(ts) + u24(length) + bytes([type_id]) + sid.to_bytes(4, "little") + ext
    )


def fmt1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    ext = b""
    if delta >= 0xFFFFFF:
        ext, delta = struct.pack(">I", delta), 0xFFFFFF
    return basic(1, csid) + u24(delta) + u24(length) + bytes([type_id]) + ext


def fmt2(csid: int, delta: int) -> bytes:
    ext = b""
    if delta >= 0xFFFFFF:
        ext, delta = struct.pack(">I", delta), 0xFFFFFF
    return basic(2, csid) + u24(delta) + ext


def fmt3(csid: int, ext: int | None = None) -> bytes:
    return basic(3, csid) + (b"" if ext is None else struct.pack(">I", ext))


def drain(reader: ChunkReader) -> list[RtmpMessage]:
    out = []
    while (message := reader.next_message()) is not None:
        if message.type_id == chunk.SET_CHUNK_SIZE:
            reader.set_chunk_size(chunk.parse_u32(message.payload))
        out.append(message)
    return out


def read_all(data: bytes, splits: list[int] | None = None, /, **limits: int) -> list[RtmpMessage]:
    reader = ChunkReader(**limits)
    if splits is None:
        reader.receive_data(data)
        return drain(reader)
    out: list[RtmpMessage] = []
    i = 0
    for n in splits:
        reader.receive_data(data[i : i + n])
        out += drain(reader)
        i += n
    reader.receive_data(data[i:])
    out += drain(reader)
    assert reader.bytes_received == len(data)
    return out


def all_splits(data: bytes, **limits: int) -> list[RtmpMessage]:
    """Parse whole, byte by byte and with random splits; all must agree. Returns the result."""
    whole = read_all(data, **limits)
    assert read_all(data, [1] * len(data), **limits) == whole
    rng = random.Random(len(data))
    for _ in range(5):
        splits = []
        left = len(data)
        while left > 0:
            n = rng.randint(1, 300)
            splits.append(n)
            left -= n
        assert read_all(data, splits, **limits) == whole
    return whole


def msg(csid: int, type_id: int, sid: int, ts: int, payload: bytes) -> RtmpMessage:
    return RtmpMessage(chunk_stream_id=csid, type_id=type_id, stream_id=sid, timestamp=ts,
                       payload=payload)  # fmt: skip


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 255, 256, 257, 100_000])
def test_round_trip_sizes_at_chunk_size_128(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = encode_message(chunk_stream_id=6, type_id=chunk.VIDEO, stream_id=1, timestamp=40,
                          payload=payload, chunk_size=128)  # fmt: skip
    expected_chunks = max(1, -(-size // 128))
    assert len(data) == 12 + size + (expected_chunks - 1)
    assert all_splits(data) == [msg(6, chunk.VIDEO, 1, 40, payload)]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_basic_header_forms(csid: int) -> None:
    payload = b"x" * 300
    data = encode_message(chunk_stream_id=csid, type_id=chunk.AUDIO, stream_id=0xDEADBEEF,
                          timestamp=5, payload=payload, chunk_size=128)  # fmt: skip
    header_len = 1 if csid < 64 else 2 if csid < 320 else 3
    assert data[:header_len] == basic(0, csid)
    assert data[header_len + 11 + 128 : header_len + 11 + 128 + header_len] == basic(3, csid)
    assert all_splits(data) == [msg(csid, chunk.AUDIO, 0xDEADBEEF, 5, payload)]


def test_3_byte_form_for_a_small_csid_is_accepted() -> None:
    data = bytes([0x01, 0, 0]) + fmt0(2, 1, 1, 9, 1)[1:] + b"z"  # csid 64 in the 3-byte form
    assert read_all(data) == [msg(64, 9, 1, 1, b"z")]


def test_encode_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError):
        encode_message(chunk_stream_id=1, type_id=9, stream_id=1, timestamp=0, payload=b"",
                       chunk_size=128)  # fmt: skip
    with pytest.raises(UsageError):
        encode_message(chunk_stream_id=65600, type_id=9, stream_id=1, timestamp=0, payload=b"",
                       chunk_size=128)  # fmt: skip
    with pytest.raises(UsageError):
        encode_message(chunk_stream_id=3, type_id=9, stream_id=1, timestamp=0, payload=b"",
                       chunk_size=0)  # fmt: skip


# --- timestamps --------------------------------------------------------------------------------


def test_spec_example_1_deltas_with_fmt_2_and_3() -> None:
    # Adobe RTMP spec 5.3.2.1: audio, 32-byte messages, timestamps 1000, 1020, 1040, 1060.
    body = [bytes([i]) * 32 for i in range(4)]
    data = (
        fmt0(3, 1000, 32, 8, 12345) + body[0]
        + fmt2(3, 20) + body[1]
        + fmt3(3) + body[2]
        + fmt3(3) + body[3]
    )  # fmt: skip
    got = all_splits(data)
    assert [m.timestamp for m in got] == [1000, 1020, 1040, 1060]
    assert [m.payload for m in got] == body
    assert all(m.stream_id == 12345 and m.type_id == 8 for m in got)


def test_spec_example_2_one_message_in_three_chunks() -> None:
    # Spec 5.3.2.2: a 307-byte message, chunk size 128.
    payload = bytes(range(256)) + bytes(51)
    data = (
        fmt0(4, 1000, 307, 9, 12346) + payload[:128]
        + fmt3(4) + payload[128:256]
        + fmt3(4) + payload[256:]
    )  # fmt: skip
    assert all_splits(data) == [msg(4, 9, 12346, 1000, payload)]


def test_fmt_1_changes_length_and_type_and_keeps_stream_id() -> None:
    data = fmt0(5, 100, 2, 18, 7) + b"ab" + fmt1(5, 33, 3, 20) + b"cde" + fmt2(5, 7) + b"fgh"
    assert all_splits(data) == [
        msg(5, 18, 7, 100, b"ab"),
        msg(5, 20, 7, 133, b"cde"),
        msg(5, 20, 7, 140, b"fgh"),
    ]


def test_fmt_3_new_message_after_fmt_0_uses_its_timestamp_as_delta() -> None:
    # ffmpeg (rtmppkt.c) and SRS: the fmt 0 timestamp field is the delta a following fmt 3
    # message adds; ffmpeg's writer emits fmt 3 when the new delta equals that field.
    data = fmt0(6, 40, 1, 9, 1) + b"a" + fmt3(6) + b"b" + fmt3(6) + b"c"
    assert [m.timestamp for m in all_splits(data)] == [40, 80, 120]
    data = fmt0(6, 0, 1, 9, 1) + b"a" + fmt3(6) + b"b"
    assert [m.timestamp for m in all_splits(data)] == [0, 0]


def test_timestamps_wrap_at_32_bits() -> None:
    data = fmt0(6, 0xFFFFFFF0, 1, 9, 1) + b"a" + fmt2(6, 0x20) + b"b"
    assert [m.timestamp for m in all_splits(data)] == [0xFFFFFFF0, 0x10]


def test_extended_timestamp_on_fmt_0_and_every_fmt_3_chunk() -> None:
    payload = bytes(range(200)) * 2
    for ts in (0xFFFFFF, 0x12345678, 0xFFFFFFFF):
        data = encode_message(chunk_stream_id=6, type_id=9, stream_id=1, timestamp=ts,
                              payload=payload, chunk_size=128)  # fmt: skip
        ext = struct.pack(">I", ts)
        assert data[1:4] == b"\xff\xff\xff"
        assert data[12:16] == ext
        assert data.count(b"\xc6" + ext) == 3  # every continuation repeats it
        assert all_splits(data) == [msg(6, 9, 1, ts, payload)]


def test_timestamp_just_below_extended_is_not_extended() -> None:
    data = encode_message(chunk_stream_id=6, type_id=9, stream_id=1, timestamp=0xFFFFFE,
                          payload=b"x" * 200, chunk_size=128)  # fmt: skip
    assert len(data) == 12 + 200 + 1
    assert read_all(data)[0].timestamp == 0xFFFFFE


def test_continuation_without_extended_timestamp_is_tolerated() -> None:
    # Old encoders omit the 4 bytes on fmt 3 continuations; they are only consumed when they
    # match the expected value.
    ts = 0x01000000
    payload = b"P" * 128 + b"Q" * 72
    data = fmt0(6, ts, 200, 9, 1) + payload[:128] + fmt3(6) + payload[128:]
    assert all_splits(data) == [msg(6, 9, 1, ts, payload)]


def test_extended_delta_on_fmt_1_and_ffmpeg_style_continuation() -> None:
    # ffmpeg repeats the header's extended *delta* on continuation chunks.
    delta = 0x01000001
    second = b"S" * 130
    data = (
        fmt0(6, 10, 1, 9, 1) + b"f"
        + fmt1(6, delta, 130, 9) + second[:128]
        + fmt3(6, ext=delta) + second[128:]
    )  # fmt: skip
    assert all_splits(data) == [msg(6, 9, 1, 10, b"f"), msg(6, 9, 1, 10 + delta, second)]


def test_fmt_3_new_message_after_extended_header_reads_the_delta() -> None:
    delta = 0x01000000
    data = (
        fmt0(6, 5, 1, 9, 1) + b"a"
        + fmt2(6, delta) + b"b"
        + fmt3(6, ext=delta) + b"c"
    )  # fmt: skip
    assert [m.timestamp for m in all_splits(data)] == [5, 5 + delta, 5 + 2 * delta]


# --- interleaving ------------------------------------------------------------------------------


def test_interleaved_chunk_streams_by_hand() -> None:
    video = bytes(range(200)) + bytes(100)  # 300 bytes, 3 chunks
    audio1, audio2 = b"A" * 10, b"B" * 10
    data = (
        fmt0(6, 1000, 300, 9, 1) + video[:128]
        + fmt0(4, 1000, 10, 8, 1) + audio1
        + fmt3(6) + video[128:256]
        + fmt2(4, 23) + audio2
        + fmt0(3, 0, 5, 20, 0) + b"cmd!!"
        + fmt3(6) + video[256:]
    )  # fmt: skip
    assert all_splits(data) == [
        msg(4, 8, 1, 1000, audio1),
        msg(4, 8, 1, 1023, audio2),
        msg(3, 20, 0, 0, b"cmd!!"),
        msg(6, 9, 1, 1000, video),
    ]


# --- control messages: set chunk size, abort ---------------------------------------------------


def test_set_chunk_size_applies_from_the_next_chunk() -> None:
    big = bytes(range(256)) * 40  # 10240 bytes
    data = (
        chunk.set_chunk_size(4096)
        + encode_message(chunk_stream_id=6, type_id=9, stream_id=1, timestamp=0, payload=big,
                         chunk_size=4096)
        + chunk.set_chunk_size(100)
        + encode_message(chunk_stream_id=6, type_id=9, stream_id=1, timestamp=40, payload=big,
                         chunk_size=100)
    )  # fmt: skip
    got = all_splits(data)
    assert [m.type_id for m in got] == [1, 9, 1, 9]
    assert got[1].payload == big
    assert got[3].payload == big


def test_set_chunk_size_validation() -> None:
    reader = ChunkReader(max_chunk_size=65536)
    reader.set_chunk_size(1)
    reader.set_chunk_size(65536)
    assert reader.chunk_size == 65536
    with pytest.raises(LimitExceeded) as info:
        reader.set_chunk_size(65537)
    assert info.value.limit == "rtmp_max_chunk_size"
    for bad in (0, -1, 0x80000001):
        with pytest.raises(ProtocolError):
            reader.set_chunk_size(bad)


def test_abort_discards_the_incomplete_message() -> None:
    payload = b"V" * 300
    reader = ChunkReader()
    reader.receive_data(fmt0(6, 0, 300, 9, 1) + payload[:128] + chunk.abort(6))
    aborted = reader.next_message()
    assert aborted is not None
    assert aborted.type_id == chunk.ABORT
    assert chunk.parse_u32(aborted.payload) == 6
    reader.abort(6)
    reader.abort(99)  # unknown chunk stream: no-op
    # A new message (fmt 3 repeats the previous header: 300 bytes, delta 0).
    reader.receive_data(fmt3(6) + payload[:128] + fmt3(6) + payload[128:256] + fmt3(6)
                        + payload[256:])  # fmt: skip
    assert reader.next_message() == msg(6, 9, 1, 0, payload)
    assert reader.next_message() is None


# --- limits and malformed input ----------------------------------------------------------------


def test_message_size_limit() -> None:
    reader = ChunkReader(max_message_size=1000)
    reader.receive_data(fmt0(6, 0, 1001, 9, 1))
    with pytest.raises(LimitExceeded) as info:
        reader.next_message()
    assert info.value.limit == "rtmp_max_message_size"
    assert read_all(fmt0(6, 0, 1000, 9, 1) + bytes(128), max_message_size=1000) == []


def test_incomplete_messages_count_toward_the_limit() -> None:
    data = b"".join(fmt0(csid, 0, 900, 9, 1) + bytes(128) for csid in range(3, 12))
    reader = ChunkReader(max_message_size=1000)
    reader.receive_data(data)
    with pytest.raises(LimitExceeded) as info:
        reader.next_message()
    assert info.value.limit == "rtmp_max_message_size"


def test_chunk_stream_limit() -> None:
    data = b"".join(fmt0(csid, 0, 1, 9, 1) + b"x" for csid in range(3, 8))
    assert len(read_all(data, max_chunk_streams=5)) == 5
    reader = ChunkReader(max_chunk_streams=4)
    reader.receive_data(data)
    with pytest.raises(LimitExceeded) as info:
        drain(reader)
    assert info.value.limit == "rtmp_max_chunk_streams"


@pytest.mark.parametrize("header", [fmt1(5, 0, 1, 9), fmt2(5, 0), fmt3(5)])
def test_no_previous_header(header: bytes) -> None:
    reader = ChunkReader()
    reader.receive_data(header + b"x")
    fmt = header[0] >> 6
    with pytest.raises(ProtocolError, match=f"fmt {fmt} chunk on chunk stream 5 with no previous"):
        reader.next_message()


def test_new_header_in_the_middle_of_a_message() -> None:
    reader = ChunkReader()
    reader.receive_data(fmt0(6, 0, 300, 9, 1) + bytes(128) + fmt0(6, 0, 1, 9, 1) + b"x")
    with pytest.raises(ProtocolError, match="middle of a message"):
        reader.next_message()


def test_bytes_received_and_buffer_compaction() -> None:
    payload = bytes(1000)
    one = encode_message(chunk_stream_id=6, type_id=9, stream_id=1, timestamp=0, payload=payload,
                         chunk_size=128)  # fmt: skip
    reader = ChunkReader()
    for _ in range(300):  # past the compaction threshold many times
        reader.receive_data(one)
        assert reader.next_message() is not None
    assert reader.bytes_received == 300 * len(one)
    assert reader.next_message() is None


# --- parse_chunk_header: the one header parser (ChunkReader and the skim reader use it) -------

# (timestamp, length, type_id, stream_id, delta, extended, extended_value)
PREV: ChunkHeader = (1000, 300, 9, 7, 40, False, 40)
PREV_EXT: ChunkHeader = (1000, 300, 9, 7, 0x01000000, True, 0x01000000)


def state(header: ChunkHeader, *, in_message: bool = False) -> ChunkStreamState:
    st = ChunkStreamState(header)
    st.in_message = in_message
    return st


def fields(st: ChunkStreamState) -> tuple[object, ...]:
    return (st.timestamp, st.length, st.type_id, st.stream_id, st.delta, st.extended,
            st.extended_value, st.in_message)  # fmt: skip


HEADER_CASES = [
    # (name, bytes, previous headers, (csid, payload offset, header or None))
    ("fmt0", fmt0(6, 40, 300, 9, 1), {}, (6, 12, (40, 300, 9, 1, 40, False, 40))),
    ("fmt0 extended", fmt0(6, 0x12345678, 5, 8, 1), {},
     (6, 16, (0x12345678, 5, 8, 1, 0x12345678, True, 0x12345678))),
    ("fmt0 2-byte csid", fmt0(319, 1, 2, 20, 0), {}, (319, 13, (1, 2, 20, 0, 1, False, 1))),
    ("fmt0 3-byte csid", fmt0(65599, 1, 2, 20, 0), {}, (65599, 14, (1, 2, 20, 0, 1, False, 1))),
    ("fmt1 keeps stream id", fmt1(6, 33, 10, 8), {6: state(PREV)},
     (6, 8, (1033, 10, 8, 7, 33, False, 33))),
    ("fmt2 keeps length and type", fmt2(6, 20), {6: state(PREV)},
     (6, 4, (1020, 300, 9, 7, 20, False, 20))),
    ("fmt2 extended delta", fmt2(6, 0x01000001), {6: state(PREV)},
     (6, 8, (1000 + 0x01000001, 300, 9, 7, 0x01000001, True, 0x01000001))),
    ("fmt3 new message adds the delta", fmt3(6), {6: state(PREV)},
     (6, 1, (1040, 300, 9, 7, 40, False, 40))),
    ("fmt3 new message reads an extended delta", fmt3(6, ext=5), {6: state(PREV_EXT)},
     (6, 5, (1005, 300, 9, 7, 5, True, 5))),
    ("fmt3 continuation", fmt3(6), {6: state(PREV, in_message=True)}, (6, 1, None)),
    ("fmt3 continuation repeating the timestamp", fmt3(6, ext=1000),
     {6: state(PREV_EXT, in_message=True)}, (6, 5, None)),
    ("fmt3 continuation repeating the extended field", fmt3(6, ext=0x01000000),
     {6: state(PREV_EXT, in_message=True)}, (6, 5, None)),
    ("fmt3 continuation without it: payload", fmt3(6, ext=0xABCDEF01),
     {6: state(PREV_EXT, in_message=True)}, (6, 1, None)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "streams", "expected"),
    [case[1:] for case in HEADER_CASES],
    ids=[case[0] for case in HEADER_CASES],
)
def test_parse_chunk_header(
    data: bytes,
    streams: dict[int, ChunkStreamState],
    expected: tuple[int, int, ChunkHeader | None],
) -> None:
    before = {csid: fields(st) for csid, st in streams.items()}
    csid, offset, _ = expected
    # Every byte is needed, even the 4 a continuation checks and then leaves as payload.
    for cut in range(len(data)):
        assert parse_chunk_header(data[:cut], 0, streams, 64, 1 << 20) is None, cut
    for buf in (data, bytearray(data) + b"payload", b"garbage" + data):
        start = 7 if buf.startswith(b"garbage") else 0
        got = parse_chunk_header(buf, start, streams, 64, 1 << 20)
        assert got == (csid, start + offset, expected[2])
    # Pure: the previous headers are left as they were.
    assert {c: fields(st) for c, st in streams.items()} == before


@pytest.mark.parametrize(
    ("data", "streams", "error", "reason"),
    [
        (fmt1(5, 0, 1, 9), {}, ProtocolError, "chunk_header"),
        (fmt2(5, 0), {}, ProtocolError, "chunk_header"),
        (fmt3(5), {}, ProtocolError, "chunk_header"),
        (fmt0(6, 0, 1, 9, 1), {6: state(PREV, in_message=True)}, ProtocolError, "chunk_header"),
        (fmt2(6, 0), {6: state(PREV, in_message=True)}, ProtocolError, "chunk_header"),
        (fmt0(7, 0, 1, 9, 1), {6: state(PREV)}, LimitExceeded, "limit:rtmp_max_chunk_streams"),
        (fmt0(6, 0, 301, 9, 1), {}, LimitExceeded, "limit:rtmp_max_message_size"),
        (fmt3(6), {6: state((0, 301, 9, 1, 0, False, 0))}, LimitExceeded,
         "limit:rtmp_max_message_size"),
    ],
)  # fmt: skip
def test_parse_chunk_header_errors(
    data: bytes, streams: dict[int, ChunkStreamState], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as info:
        parse_chunk_header(data, 0, streams, 1, 300)
    assert isinstance(info.value, ProtocolError)
    assert info.value.reason == reason


# --- control message helpers -------------------------------------------------------------------


def test_control_message_builders_and_parsers() -> None:
    out = read_all(
        chunk.set_chunk_size(4096)
        + chunk.acknowledgement(123456)
        + chunk.window_ack_size(2_500_000)
        + chunk.set_peer_bandwidth(2_500_000, chunk.LIMIT_DYNAMIC)
        + chunk.user_control(chunk.STREAM_BEGIN, 1)
        + chunk.user_control(chunk.SET_BUFFER_LENGTH, 1, 3000)
        + chunk.abort(7)
    )
    assert all(m.chunk_stream_id == chunk.CSID_CONTROL and m.stream_id == 0 for m in out)
    assert [m.type_id for m in out] == [1, 3, 5, 6, 4, 4, 2]
    assert chunk.parse_u32(out[0].payload) == 4096
    assert chunk.parse_u32(out[1].payload) == 123456
    assert chunk.parse_u32(out[2].payload) == 2_500_000
    assert chunk.parse_set_peer_bandwidth(out[3].payload) == (2_500_000, 2)
    assert chunk.parse_user_control(out[4].payload) == (chunk.STREAM_BEGIN, (1,))
    assert chunk.parse_user_control(out[5].payload) == (chunk.SET_BUFFER_LENGTH, (1, 3000))
    assert chunk.parse_u32(out[6].payload) == 7
    assert chunk.parse_user_control(b"\x00\x06\x00\x00\x01\x00") == (chunk.PING_REQUEST, (256,))


@pytest.mark.parametrize(
    ("parser", "payload"),
    [
        (chunk.parse_u32, b"\x00\x00\x01"),
        (chunk.parse_set_peer_bandwidth, b"\x00\x00\x00\x01"),
        (chunk.parse_user_control, b"\x00"),
        (chunk.parse_user_control, b"\x00\x06\x00\x00"),
    ],
)
def test_parsers_reject_short_payloads(parser: object, payload: bytes) -> None:
    assert callable(parser)
    with pytest.raises(ProtocolError):
        parser(payload)


def test_constants() -> None:
    assert (chunk.SET_CHUNK_SIZE, chunk.ABORT, chunk.ACK, chunk.USER_CONTROL) == (1, 2, 3, 4)
    assert (chunk.WINDOW_ACK_SIZE, chunk.SET_PEER_BANDWIDTH, chunk.AUDIO, chunk.VIDEO) == (
        5,
        6,
        8,
        9,
    )
    assert (chunk.DATA_AMF3, chunk.SHARED_OBJECT_AMF3, chunk.COMMAND_AMF3) == (15, 16, 17)
    assert (chunk.DATA_AMF0, chunk.SHARED_OBJECT_AMF0, chunk.COMMAND_AMF0) == (18, 19, 20)
    assert chunk.AGGREGATE == 22
    assert (chunk.STREAM_BEGIN, chunk.STREAM_EOF, chunk.STREAM_DRY) == (0, 1, 2)
    assert (chunk.SET_BUFFER_LENGTH, chunk.STREAM_IS_RECORDED) == (3, 4)
    assert (chunk.PING_REQUEST, chunk.PING_RESPONSE) == (6, 7)
