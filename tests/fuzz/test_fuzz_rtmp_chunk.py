"""Fuzz the RTMP chunk reader and handshake: for any bytes only ProtocolError escapes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ripplecast.errors import ProtocolError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import (
    ChunkHeader,
    ChunkReader,
    ChunkStreamState,
    RtmpMessage,
    encode_message,
    parse_chunk_header,
)
from ripplecast.protocols.rtmp.handshake import ClientHandshake, ServerHandshake

FUZZ = settings(max_examples=300, deadline=None)

# Bytes biased towards chunk headers: fmt/csid bytes, 0xFF runs (extended timestamps), zeros.
header_ish = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\x02", b"\x03", b"\x43", b"\x83", b"\xc3", b"\x00", b"\x01"]),
        st.just(b"\xff\xff\xff"),
    ),
    max_size=30,
).map(b"".join)


def drain(reader: ChunkReader) -> list[RtmpMessage]:
    out = []
    while (message := reader.next_message()) is not None:
        if message.type_id == chunk.SET_CHUNK_SIZE and len(message.payload) >= 4:
            reader.set_chunk_size(chunk.parse_u32(message.payload))
        out.append(message)
    return out


@FUZZ
@given(data=st.one_of(st.binary(max_size=3000), header_ish), split=st.integers(1, 64))
def test_chunk_reader_raises_only_protocol_errors(data: bytes, split: int) -> None:
    reader = ChunkReader(max_chunk_size=4096, max_message_size=20_000, max_chunk_streams=8)
    try:
        for i in range(0, len(data), split):
            reader.receive_data(data[i : i + split])
            for message in drain(reader):
                assert 0 <= message.timestamp <= 0xFFFFFFFF
    except ProtocolError:
        pass


@FUZZ
@given(
    messages=st.lists(
        st.tuples(
            st.integers(2, 65599),
            st.integers(0, 255),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.binary(max_size=600),
        ),
        max_size=8,
    ),
    chunk_size=st.integers(1, 300),
    split=st.integers(1, 500),
)
def test_encode_then_read_round_trips(
    messages: list[tuple[int, int, int, int, bytes]], chunk_size: int, split: int
) -> None:
    reader = ChunkReader()
    reader.set_chunk_size(chunk_size)
    data = b"".join(
        encode_message(chunk_stream_id=c, type_id=t, stream_id=s, timestamp=ts, payload=p,
                       chunk_size=chunk_size)
        for c, t, s, ts, p in messages
    )  # fmt: skip
    got: list[RtmpMessage] = []
    for i in range(0, len(data), split):
        reader.receive_data(data[i : i + split])
        while (message := reader.next_message()) is not None:
            got.append(message)
    assert got == [
        RtmpMessage(chunk_stream_id=c, type_id=t, stream_id=s, timestamp=ts, payload=p)
        for c, t, s, ts, p in messages
    ]


u32 = st.integers(0, 0xFFFFFFFF)
headers = st.tuples(
    u32, st.integers(0, 0xFFFFFF), st.integers(0, 255), u32, u32, st.booleans(), u32
)
previous_headers = st.dictionaries(
    st.sampled_from([2, 3, 4, 6, 63, 64, 319, 320]),
    st.tuples(headers, st.booleans()),
    max_size=4,
)


@FUZZ
@given(data=st.one_of(st.binary(max_size=30), header_ish), previous=previous_headers)
def test_chunk_header_parser_is_pure_and_split_proof(
    data: bytes, previous: dict[int, tuple[ChunkHeader, bool]]
) -> None:
    streams: dict[int, ChunkStreamState] = {}
    for csid, (header, in_message) in previous.items():
        streams[csid] = ChunkStreamState(header)
        streams[csid].in_message = in_message

    def outcome(buf: bytes) -> tuple[object, ...]:
        try:
            return ("parsed", parse_chunk_header(buf, 0, streams, 4, 1 << 20))
        except ProtocolError as e:
            return ("raised", type(e), str(e), e.reason)

    whole = outcome(data)
    for cut in range(len(data)):
        # A prefix either needs more bytes or already gives the whole buffer's answer.
        part = outcome(data[:cut])
        assert part == ("parsed", None) or part == whole
    if whole[0] == "parsed" and whole[1] is not None:
        csid, offset, header = whole[1]
        assert offset <= len(data)
        assert header is not None or streams[csid].in_message
    after = {
        c: ((s.timestamp, s.length, s.type_id, s.stream_id, s.delta, s.extended, s.extended_value),
            s.in_message)
        for c, s in streams.items()
    }  # fmt: skip
    assert after == previous


@FUZZ
@given(data=st.binary(max_size=4000), split=st.integers(1, 2000))
def test_handshakes_raise_only_protocol_errors(data: bytes, split: int) -> None:
    for hs in (ServerHandshake(), ClientHandshake()):
        try:
            for i in range(0, len(data), split):
                hs.receive_data(data[i : i + split])
                hs.data_to_send()
            if hs.complete:
                assert hs.leftover() == data[1 + 2 * 1536 :]
        except ProtocolError:
            pass


@FUZZ
@given(body=st.binary(min_size=1536, max_size=1536))
def test_server_answers_any_c1(body: bytes) -> None:
    hs = ServerHandshake()
    hs.receive_data(b"\x03" + body)
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * 1536
