"""ServerSession, sans-I/O: a scripted client speaks to it through bytes only."""

from __future__ import annotations

import random

import pytest

from ripplecast.errors import LimitExceeded, ProtocolError, UsageError
from ripplecast.media import amf0
from ripplecast.media.amf0 import EcmaArray
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import ChunkReader, RtmpMessage
from ripplecast.protocols.rtmp.handshake import ClientHandshake
from ripplecast.protocols.rtmp.session import (
    CommandRefused,
    ConnectRequest,
    Event,
    MediaReceived,
    PlayRequest,
    PublishRequest,
    ServerSession,
    SessionLimits,
    StreamClosed,
)


def message(
    type_id: int, payload: bytes, *, stream_id: int = 0, ts: int = 0, csid: int = 3
) -> bytes:
    return chunk.encode_message(
        chunk_stream_id=csid, type_id=type_id, stream_id=stream_id, timestamp=ts,
        payload=payload, chunk_size=128,
    )  # fmt: skip


def command(*values: object, stream_id: int = 0) -> bytes:
    return message(20, amf0.encode_values(*values), stream_id=stream_id)  # type: ignore[arg-type]


class Peer:
    """The client side: handshake, then reads what the server sends back."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session
        self.reader = ChunkReader()
        hs = ClientHandshake()
        session.receive_data(hs.initial_bytes())
        hs.receive_data(session.data_to_send())
        session.receive_data(hs.data_to_send())
        assert hs.complete

    def send(self, data: bytes, *, split: str = "whole") -> list[Event]:
        events: list[Event] = []
        pieces = [data]
        if split == "bytes":
            pieces = [data[i : i + 1] for i in range(len(data))]
        elif split == "random":
            rng, pieces, i = random.Random(len(data)), [], 0
            while i < len(data):
                n = rng.randint(1, 300)
                pieces.append(data[i : i + n])
                i += n
        for piece in pieces:
            self.session.receive_data(piece)
            while (event := self.session.next_event()) is not None:
                events.append(event)
        return events

    def replies(self) -> list[RtmpMessage]:
        self.reader.receive_data(self.session.data_to_send())
        found = []
        while (msg := self.reader.next_message()) is not None:
            if msg.type_id == chunk.SET_CHUNK_SIZE:
                self.reader.set_chunk_size(chunk.parse_u32(msg.payload))
            found.append(msg)
        return found

    def commands(self) -> list[list[amf0.AmfValue]]:
        return [amf0.decode_values(m.payload) for m in self.replies() if m.type_id == 20]


def connect(session: ServerSession, split: str = "whole") -> Peer:
    peer = Peer(session)
    events = peer.send(
        command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "flashVer": "FMLE/3.0"}),
        split=split,
    )
    assert events == [ConnectRequest("live", "rtmp://h/live", events[0].properties)]  # type: ignore[union-attr]
    session.accept_connect()
    return peer


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_publish_flow_whatever_the_split(split: str) -> None:
    session = ServerSession()
    peer = connect(session, split)
    replies = peer.replies()
    types = [m.type_id for m in replies]
    assert types[:3] == [chunk.WINDOW_ACK_SIZE, chunk.SET_PEER_BANDWIDTH, chunk.SET_CHUNK_SIZE]
    result = amf0.decode_values(replies[3].payload)
    assert result[0] == "_result" and result[1] == 1.0
    assert isinstance(result[3], dict) and result[3]["code"] == "NetConnection.Connect.Success"

    script = (
        command("releaseStream", 2.0, None, "key")
        + command("FCPublish", 3.0, None, "key")
        + command("createStream", 4.0, None)
        + command("publish", 5.0, None, "key?token=1", "live", stream_id=1)
    )
    events = peer.send(script, split=split)
    assert events == [PublishRequest(1, "key", "token=1", "live")]
    names = [c[0] for c in peer.commands()]
    assert names == ["_result", "_result", "onFCPublish", "_result"]
    session.accept_publish(1, "main")
    statuses = peer.commands()
    assert statuses[-1][3]["code"] == "NetStream.Publish.Start"  # type: ignore[index]

    metadata = amf0.encode_values("@setDataFrame", "onMetaData", EcmaArray(width=320.0))
    video = bytes([0x17, 0, 0, 0, 0, 1, 2, 3])
    media = message(18, metadata, stream_id=1, csid=5) + message(
        9, video, stream_id=1, ts=40, csid=6
    )
    events = peer.send(media, split=split)
    assert events[1] == MediaReceived(9, 40, video)
    assert isinstance(events[0], MediaReceived) and events[0].type_id == 18
    # @setDataFrame is unwrapped: viewers get a plain onMetaData script tag.
    assert amf0.decode_values(events[0].payload) == ["onMetaData", {"width": 320.0}]

    events = peer.send(
        command("FCUnpublish", 6.0, None, "key") + command("deleteStream", 7.0, None, 1.0)
    )
    assert events == [StreamClosed(1, "FCUnpublish")]


def test_play_flow_and_notifications() -> None:
    session = ServerSession()
    peer = connect(session)
    peer.replies()
    events = peer.send(
        command("createStream", 2.0, None) + command("play", 0.0, None, "main", -2.0, stream_id=1)
    )
    assert events == [PlayRequest(1, "main", "")]
    peer.replies()
    session.accept_play(1, "main")
    replies = peer.replies()
    codes = [amf0.decode_values(m.payload)[3]["code"] for m in replies if m.type_id == 20]  # type: ignore[index]
    assert codes == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert any(
        m.type_id == chunk.USER_CONTROL and chunk.parse_user_control(m.payload)[0] == 0
        for m in replies
    )
    session.notify_unpublished(1, "main")
    session.end_play(1, "main")
    codes = [amf0.decode_values(m.payload)[3]["code"] for m in peer.replies() if m.type_id == 20]  # type: ignore[index]
    assert codes == ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]


def test_reject_publish_and_play() -> None:
    session = ServerSession()
    peer = connect(session)
    peer.send(command("createStream", 2.0, None) + command("publish", 0.0, None, "k", stream_id=1))
    peer.replies()
    session.reject_publish(1, "NetStream.Publish.BadName", "invalid stream key")
    status = peer.commands()[-1]
    assert status[3] == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "invalid stream key",
    }
    with pytest.raises(UsageError):
        session.accept_publish(1, "x")  # nothing pending any more


def test_ping_and_acknowledgement() -> None:
    session = ServerSession()
    peer = connect(session)
    peer.replies()
    peer.send(message(chunk.WINDOW_ACK_SIZE, (1000).to_bytes(4, "big"), csid=2))
    peer.send(message(chunk.USER_CONTROL, bytes([0, 6]) + (1234).to_bytes(4, "big"), csid=2))
    replies = peer.replies()
    assert (chunk.PING_RESPONSE, (1234,)) in [
        chunk.parse_user_control(m.payload) for m in replies if m.type_id == chunk.USER_CONTROL
    ]
    peer.send(command("createStream", 2.0, None) + command("publish", 0.0, None, "k", stream_id=1))
    session.accept_publish(1, "k")
    peer.replies()
    peer.send(message(9, bytes([0x27, 1, 0, 0, 0]) + bytes(1500), stream_id=1, csid=6))
    acks = [chunk.parse_u32(m.payload) for m in peer.replies() if m.type_id == chunk.ACK]
    assert acks and acks[0] >= 1000


def test_aggregate_message_is_split_into_media() -> None:
    session = ServerSession()
    peer = connect(session)
    peer.send(command("createStream", 2.0, None) + command("publish", 0.0, None, "k", stream_id=1))
    session.accept_publish(1, "k")

    def tag(kind: int, ts: int, body: bytes) -> bytes:
        header = (
            bytes([kind])
            + len(body).to_bytes(3, "big")
            + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes(4)
        )
        return header + body + (len(body) + 11).to_bytes(4, "big")

    body = tag(9, 100, b"\x17\x01\x00\x00\x00v") + tag(8, 120, b"\xaf\x01a")
    events = peer.send(message(22, body, stream_id=1, ts=1000, csid=6))
    assert events == [
        MediaReceived(9, 1000, b"\x17\x01\x00\x00\x00v"),
        MediaReceived(8, 1020, b"\xaf\x01a"),
    ]


def test_protocol_violations() -> None:
    session = ServerSession()
    peer = Peer(session)
    with pytest.raises(ProtocolError, match="expected connect"):
        peer.send(command("play", 0.0, None, "x"))

    session = ServerSession()
    peer = connect(session)
    with pytest.raises(ProtocolError, match="before publish"):
        peer.send(message(9, b"\x17\x01\x00\x00\x00", stream_id=1))

    session = ServerSession(SessionLimits(max_bad_commands=2))
    peer = connect(session)
    events = peer.send(command("nope", 2.0, None) + command("nope", 3.0, None))
    assert events == [CommandRefused("nope", "unknown command 'nope'")] * 2
    with pytest.raises(LimitExceeded):
        peer.send(command("nope", 4.0, None))


def test_amf3_command_messages_are_understood() -> None:
    session = ServerSession()
    peer = Peer(session)
    body = b"\x00" + amf0.encode_values("connect", 1.0, {"app": "live"})
    events = peer.send(message(17, body))
    assert isinstance(events[0], ConnectRequest)


def test_get_stream_length_checkbw_and_close_stream() -> None:
    session = ServerSession()
    peer = connect(session)
    peer.replies()
    events = peer.send(
        command("_checkbw", 2.0, None)
        + command("getStreamLength", 3.0, None, "main")
        + command("createStream", 4.0, None)
        + command("play", 0.0, None, "main", stream_id=1)
    )
    assert events == [PlayRequest(1, "main", "")]
    answers = [(c[0], c[1]) for c in peer.commands()]
    assert answers == [("_result", 2.0), ("_result", 3.0), ("_result", 4.0)]
    session.accept_play(1, "main")
    peer.replies()
    assert peer.send(command("closeStream", 0.0, None, stream_id=1)) == [
        StreamClosed(1, "closeStream")
    ]
    # Commands a player may send that need no answer are accepted silently.
    for name in ("receiveAudio", "receiveVideo", "pause", "seek"):
        assert peer.send(command(name, 0.0, None, True, stream_id=1)) == []
    assert peer.commands() == []
