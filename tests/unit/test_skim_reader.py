"""Skim reader: the same chunk headers, errors and limits as ChunkReader, whole and byte by byte.

Both readers parse headers with `chunk.parse_chunk_header`; these tests pin that the skim reader
hands it the same limits and keeps the same per chunk stream state, so that every header form
and every header error comes out the same. (Its agreement on long compressed streams is tested
with the RTMP client, which uses it.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from ripplecast.errors import ProtocolError
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import ChunkReader, RtmpMessage, encode_message
from ripplecast.protocols.rtmp.skim import MediaSkimmed, SkimReader

PEEK = 6


@dataclass(frozen=True)
class Limits:
    max_chunk_size: int = 65536
    max_message_size: int = 8 * 1024 * 1024
    max_chunk_streams: int = 64


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def media(csid: int, ts: int, payload: bytes, chunk_size: int = 128, type_id: int = 9) -> bytes:
    return encode_message(chunk_stream_id=csid, type_id=type_id, stream_id=1, timestamp=ts,
                          payload=payload, chunk_size=chunk_size)  # fmt: skip


Event = tuple[object, ...]


def chunk_reader_events(data: bytes, limits: Limits) -> list[Event]:
    """What ChunkReader makes of `data`, in the skim reader's terms (media cut to PEEK bytes)."""
    reader = ChunkReader(max_chunk_size=limits.max_chunk_size,
                         max_message_size=limits.max_message_size,
                         max_chunk_streams=limits.max_chunk_streams)  # fmt: skip
    out: list[Event] = []
    try:
        reader.receive_data(data)
        while (m := reader.next_message()) is not None:
            if m.type_id == chunk.SET_CHUNK_SIZE:
                reader.set_chunk_size(chunk.parse_u32(m.payload))
            if m.type_id in (chunk.AUDIO, chunk.VIDEO):
                out.append((m.type_id, m.stream_id, m.timestamp, len(m.payload), m.payload[:PEEK]))
            else:
                out.append((m.type_id, m.stream_id, m.timestamp, m.payload))
    except ProtocolError as e:
        out.append((type(e), str(e), e.reason))
    return out


def skim_events(data: bytes, limits: Limits, step: int) -> list[Event]:
    reader = SkimReader(limits, peek=PEEK)
    out: list[Event] = []
    try:
        for i in range(0, len(data), step):
            reader.receive_data(data[i : i + step])
            while (event := reader.next_message()) is not None:
                if isinstance(event, MediaSkimmed):
                    out.append((event.type_id, event.stream_id, event.timestamp, event.size,
                                event.head))  # fmt: skip
                else:
                    assert isinstance(event, RtmpMessage)
                    out.append((event.type_id, event.stream_id, event.timestamp, event.payload))
    except ProtocolError as e:
        out.append((type(e), str(e), e.reason))
    return out


def assert_same(data: bytes, limits: Limits) -> list[Event]:
    expected = chunk_reader_events(data, limits)
    for step in (len(data) or 1, 1, 7):
        got = skim_events(data, limits, step)
        if expected and isinstance(expected[-1][0], type):
            # The skim reader parses eagerly in `receive_data`, so the messages queued before
            # the error in that same read are not handed out: compare the error and a prefix.
            assert got[-1] == expected[-1], step
            assert got[:-1] == expected[: len(got) - 1], step
        else:
            assert got == expected, step
    return expected


def test_every_header_form_reads_the_same() -> None:
    ext = 0x01000000
    data = b"".join(
        (
            media(3, 5, b"a" * 300),  # 1-byte csid, three chunks
            media(64, 6, b"b" * 10),  # 2-byte form
            media(319, 7, b"c" * 200),
            media(320, 8, b"d" * 200),  # 3-byte form
            media(65599, 0xFFFFFFFF, b"e" * 300),  # extended timestamp, repeated on fmt 3
            basic(1, 3) + b"\x00\x00\x21" + (20).to_bytes(3, "big") + b"\x08" + b"f" * 20,
            basic(2, 3) + b"\x00\x00\x17" + b"g" * 20,
            basic(3, 3) + b"h" * 20,  # fmt 3 new message: adds the previous delta
            basic(2, 64) + b"\xff\xff\xff" + struct.pack(">I", ext) + b"i" * 10,
            basic(3, 64) + struct.pack(">I", ext) + b"j" * 10,  # reads the extended delta
            chunk.set_chunk_size(50),
            media(6, 9, b"k" * 120, chunk_size=50, type_id=chunk.DATA_AMF0),  # reassembled
        )
    )
    got = assert_same(data, Limits())
    assert [e[2] for e in got] == [5, 6, 7, 8, 0xFFFFFFFF, 38, 61, 84, 6 + ext, 6 + 2 * ext, 0, 9]


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (basic(1, 5) + bytes(7) + b"x", Limits()),  # no previous header
        (basic(3, 5) + b"x", Limits()),
        (media(6, 0, bytes(300))[:140] + media(6, 0, b"x"), Limits()),  # middle of a message
        (b"".join(media(c, 0, b"x") for c in range(3, 8)), Limits(max_chunk_streams=4)),
        (media(6, 0, bytes(1001)), Limits(max_message_size=1000)),
        (media(65599, 0, bytes(70_000), chunk_size=128), Limits(max_message_size=65_536)),
    ],
    ids=["fmt 1 first", "fmt 3 first", "fmt 0 mid-message", "chunk streams", "size", "3-byte"],
)
def test_header_errors_are_the_same(data: bytes, limits: Limits) -> None:
    events = assert_same(data, limits)
    assert events, "the input must end in an error"
    error = events[-1]
    assert isinstance(error[0], type) and issubclass(error[0], ProtocolError)
