"""RTMP client: ClientSession wired to ServerSession in memory, skim mode, and RtmpClient live.

The in-memory tests run the whole exchange whole and byte by byte; the skim reader is checked
against ChunkReader on randomly compressed (fmt 0-3) and randomly split chunk streams; the live
tests publish an ffmpeg-made FLV file to a real node with one RtmpClient and play it with another.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ripplecast.app import Node
from ripplecast.config import Settings
from ripplecast.errors import ProtocolError, UsageError
from ripplecast.media import amf0
from ripplecast.media.flv import FlvReader, FlvTag, parse_video_tag_header
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.aio import RequestRefused, RtmpClient, parse_url
from ripplecast.protocols.rtmp.client import (
    ClientPhase,
    ClientSession,
    Connected,
    ConnectFailed,
    Event,
    MediaReceived,
    MediaSkimmed,
    PlayFailed,
    PlayStarted,
    PublishFailed,
    PublishStarted,
    StatusReceived,
    StreamCreated,
    metadata_payload,
)
from ripplecast.protocols.rtmp.session import (
    ConnectRequest,
    PlayRequest,
    PublishRequest,
    ServerSession,
    StreamClosed,
    rtmp_media_message,
)
from ripplecast.protocols.rtmp.session import MediaReceived as ServerMedia
from support import require_program

# --- in memory: ClientSession <-> ServerSession --------------------------------------------


def fixed_random(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


Splitter = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    if data:
        yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


class Wire:
    """A client and a server session joined in memory; the server accepts what it is asked."""

    def __init__(self, split: Splitter, *, skim: int | None = None) -> None:
        self.split = split
        self.client = ClientSession(skim_media=skim, randbytes=fixed_random)
        self.server = ServerSession(randbytes=fixed_random)
        self.client_events: list[Event] = []
        self.server_events: list[object] = []
        self.refuse_publish = False
        self.refuse_play = False

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            out = self.client.data_to_send()
            for piece in self.split(out):
                moved = True
                self.server.receive_data(piece)
                while (event := self.server.next_event()) is not None:
                    self.server_events.append(event)
                    self._decide(event)
            back = self.server.data_to_send()
            for piece in self.split(back):
                moved = True
                self.client.receive_data(piece)
                while (cevent := self.client.next_event()) is not None:
                    self.client_events.append(cevent)
            if not moved:
                return
        raise AssertionError("sessions kept talking")

    def _decide(self, event: object) -> None:
        if isinstance(event, ConnectRequest):
            self.server.accept_connect()
        elif isinstance(event, PublishRequest):
            if self.refuse_publish:
                self.server.reject_publish(event.stream_id, "NetStream.Publish.BadName", "busy")
            else:
                self.server.accept_publish(event.stream_id, event.name)
        elif isinstance(event, PlayRequest):
            if self.refuse_play:
                self.server.reject_play(event.stream_id, "NetStream.Play.StreamNotFound", "no")
            else:
                self.server.accept_play(event.stream_id, event.name)

    def take(self) -> list[Event]:
        events, self.client_events = self.client_events, []
        return events


def media_set() -> list[tuple[int, int, bytes]]:
    rng = random.Random(7)
    avc_header = b"\x17\x00\x00\x00\x00" + rng.randbytes(30)
    frames: list[tuple[int, int, bytes]] = [
        (chunk.DATA_AMF0, 0, metadata_payload({"width": 320.0, "height": 240.0})),
        (chunk.VIDEO, 0, avc_header),
        (chunk.AUDIO, 0, b"\xaf\x00\x12\x10"),
    ]
    for i in range(30):
        key = i % 10 == 0
        video = (
            (b"\x17\x01" if key else b"\x27\x01")
            + b"\x00\x00\x00"
            + rng.randbytes(rng.choice((10, 4000, 9000, 20000)))
        )
        frames.append((chunk.VIDEO, i * 40, video))
        frames.append((chunk.AUDIO, i * 40 + 3, b"\xaf\x01" + rng.randbytes(200)))
    return frames


@pytest.mark.parametrize("split", [whole, bytewise], ids=["whole", "bytewise"])
def test_connect_create_publish_and_media_reach_the_server(split: Splitter) -> None:
    wire = Wire(split)
    wire.client.connect("live", "rtmp://localhost/live")
    assert wire.client.phase is ClientPhase.HANDSHAKE
    wire.pump()
    events = wire.take()
    assert [type(e) for e in events] == [Connected]
    connected = events[0]
    assert isinstance(connected, Connected)
    assert connected.info["code"] == "NetConnection.Connect.Success"
    assert wire.client.server_chunk_size == 4096
    assert wire.server.peer_chunk_size == 4096  # our Set Chunk Size arrived before connect
    request = wire.server_events[0]
    assert isinstance(request, ConnectRequest)
    assert (request.app, request.tc_url) == ("live", "rtmp://localhost/live")

    wire.client.create_stream()
    wire.pump()
    (created,) = wire.take()
    assert isinstance(created, StreamCreated)
    wire.client.publish(created.stream_id, "cam")
    wire.pump()
    (started,) = wire.take()
    assert started == PublishStarted(created.stream_id, "cam is now published.")

    sent = media_set()
    for type_id, ts, payload in sent:
        wire.client.send_media(created.stream_id, type_id, ts, payload)
    wire.pump()
    got = [e for e in wire.server_events if isinstance(e, ServerMedia)]
    assert [(m.type_id, m.timestamp, m.payload) for m in got[1:]] == sent[1:]
    # onMetaData went out as @setDataFrame and comes back unwrapped.
    assert got[0].type_id == chunk.DATA_AMF0
    assert amf0.decode_values(got[0].payload)[0] == "onMetaData"

    wire.client.close_stream(created.stream_id)
    wire.pump()
    assert any(isinstance(e, StreamClosed) for e in wire.server_events)


def connected_player(split: Splitter, *, skim: int | None = None) -> tuple[Wire, int]:
    wire = Wire(split, skim=skim)
    wire.client.connect("live", "rtmp://localhost/live")
    wire.pump()
    wire.client.create_stream()
    wire.pump()
    created = wire.take()[-1]
    assert isinstance(created, StreamCreated)
    return wire, created.stream_id


@pytest.mark.parametrize("skim", [None, 16], ids=["reassemble", "skim"])
@pytest.mark.parametrize("split", [whole, bytewise], ids=["whole", "bytewise"])
def test_play_receives_status_then_media(split: Splitter, skim: int | None) -> None:
    wire, sid = connected_player(split, skim=skim)
    wire.client.play(sid, "cam")
    wire.pump()
    events = wire.take()
    assert events[0] == StatusReceived(
        sid, "NetStream.Play.Reset", "status", "Playing and resetting cam."
    )
    assert events[1] == PlayStarted(sid, "Started playing cam.")
    assert len(events) == 2  # |RtmpSampleAccess is not media

    sent = media_set()
    blob = b"".join(
        rtmp_media_message(t, ts, p, stream_id=sid, chunk_size=4096) for t, ts, p in sent
    )
    wire.server._out.append(blob)  # what the hub writes next to the session's own bytes
    wire.pump()
    events = wire.take()
    if skim is None:
        assert [
            (e.type_id, e.timestamp, e.payload) for e in events if isinstance(e, MediaReceived)
        ] == sent
    else:
        assert isinstance(events[0], MediaReceived)  # data messages are still reassembled
        skimmed = [e for e in events if isinstance(e, MediaSkimmed)]
        assert [(e.type_id, e.timestamp, e.size, e.head) for e in skimmed] == [
            (t, ts, len(p), p[:16]) for t, ts, p in sent[1:]
        ]


def test_server_ping_is_answered_and_acks_follow_the_window() -> None:
    wire, sid = connected_player(whole)
    wire.server.ping(1234)
    wire.pump()
    # The server acknowledges nothing here, but its session saw our PingResponse without error,
    # and our acknowledgements follow its 2.5 MB window.
    wire.client.play(sid, "cam")
    wire.pump()
    wire.take()
    payload = b"\x27\x01\x00\x00\x00" + bytes(100_000)
    for i in range(30):
        wire.server._out.append(rtmp_media_message(9, i, payload, stream_id=sid, chunk_size=4096))
    wire.pump()
    assert wire.client.bytes_received > 2_500_000
    assert wire.client._last_ack >= 2_500_000


def test_refusals_become_failed_events() -> None:
    wire, sid = connected_player(whole)
    wire.refuse_publish = True
    wire.client.publish(sid, "taken")
    wire.pump()
    assert wire.take() == [PublishFailed(sid, "NetStream.Publish.BadName", "busy")]

    wire, sid = connected_player(whole)
    wire.refuse_play = True
    wire.client.play(sid, "nope")
    wire.pump()
    assert wire.take() == [PlayFailed(sid, "NetStream.Play.StreamNotFound", "no")]


def test_rejected_connect() -> None:
    client = ClientSession(randbytes=fixed_random)
    server = ServerSession(randbytes=fixed_random)
    client.connect("nope", "rtmp://localhost/nope")
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    request = server.next_event()
    assert isinstance(request, ConnectRequest)
    server.reject_connect("unknown application")
    client.receive_data(server.data_to_send())
    assert client.next_event() == ConnectFailed(
        "NetConnection.Connect.Rejected", "unknown application"
    )
    assert client.phase is ClientPhase.CLOSED


def test_misuse_and_bad_server_bytes() -> None:
    client = ClientSession()
    with pytest.raises(UsageError):
        client.create_stream()
    with pytest.raises(UsageError):
        client.send_media(1, 9, 0, b"\x17")
    client.connect("live", "rtmp://h/live")
    with pytest.raises(UsageError):
        client.connect("live", "rtmp://h/live")
    with pytest.raises(ProtocolError):
        client.receive_data(b"GET / HTTP/1.1\r\n")


# --- skim reader against ChunkReader ---------------------------------------------------------


def compressed_stream(
    rng: random.Random, count: int
) -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """Chunks with fmt 0/1/2/3 headers as nginx-rtmp and librtmp write them, extended times too."""
    chunk_size = 128
    out = bytearray()
    last: dict[int, tuple[int, int, int, int]] = {}  # csid -> (ts, length, type, delta)
    messages: list[tuple[int, int, int, bytes]] = []
    ts = {4: 0, 6: 0}
    for i in range(count):
        csid = rng.choice((4, 6))
        type_id = chunk.AUDIO if csid == 4 else chunk.VIDEO
        step = rng.choice((0, 23, 40, 0x1000000)) if i % 7 else 33
        ts[csid] = (ts[csid] + step) & 0xFFFFFFFF
        payload = rng.randbytes(rng.choice((0, 5, 128, 300, 1000)))
        if i == count // 2:
            # The server changes its chunk size mid-stream.
            out += chunk.encode_message(
                chunk_stream_id=2, type_id=1, stream_id=0, timestamp=0,
                payload=struct.pack(">I", 500), chunk_size=chunk_size,
            )  # fmt: skip
            chunk_size = 500
        prev = last.get(csid)
        delta = ts[csid] - prev[0] if prev is not None else 0
        if prev is None or delta < 0 or rng.random() < 0.2:
            fmt, field = 0, ts[csid]
        elif prev[1:3] != (len(payload), type_id) or rng.random() < 0.3:
            fmt, field = 1, delta
        elif prev[3] != delta or rng.random() < 0.3:
            fmt, field = 2, delta
        else:
            fmt, field = 3, delta
        ext = field >= 0xFFFFFF
        basic = bytes([fmt << 6 | csid])
        header = basic
        if fmt <= 2:
            header += (0xFFFFFF if ext else field).to_bytes(3, "big")
        if fmt <= 1:
            header += len(payload).to_bytes(3, "big") + bytes([type_id])
        if fmt == 0:
            header += (1).to_bytes(4, "little")
        if fmt == 3 and prev is not None:
            ext = prev[3] >= 0xFFFFFF
            if ext:
                header += prev[3].to_bytes(4, "big")
        elif ext:
            header += field.to_bytes(4, "big")
        out += header
        ext_bytes = header[-4:] if ext else b""
        for offset in range(0, max(len(payload), 1), chunk_size):
            if offset:
                out += bytes([0xC0 | csid]) + ext_bytes
            out += payload[offset : offset + chunk_size]
        last[csid] = (ts[csid], len(payload), type_id, delta if fmt else ts[csid])
        messages.append((type_id, ts[csid], len(payload), payload))
    return bytes(out), messages


@pytest.mark.parametrize("seed", range(12))
def test_skim_reader_agrees_with_chunk_reader(seed: int) -> None:
    rng = random.Random(seed)
    data, messages = compressed_stream(rng, 60)
    reader = chunk.ChunkReader()
    reader.receive_data(data)
    reference = []
    while (message := reader.next_message()) is not None:
        if message.type_id == chunk.SET_CHUNK_SIZE:
            reader.set_chunk_size(chunk.parse_u32(message.payload))
            continue
        reference.append(
            (message.type_id, message.timestamp, len(message.payload), message.payload)
        )
    assert reference == messages

    for split in ("whole", "bytewise", "random"):
        session = ClientSession(skim_media=8)
        session.phase = ClientPhase.CONNECTED  # skip the handshake: feed the chunk stream only
        pieces: list[bytes]
        if split == "whole":
            pieces = [data]
        elif split == "bytewise":
            pieces = [data[i : i + 1] for i in range(len(data))]
        else:
            cuts = sorted(rng.sample(range(1, len(data)), 40))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        got = []
        for piece in pieces:
            session._reader.receive_data(piece)
            while (event := session.next_event()) is not None:
                assert isinstance(event, MediaSkimmed)
                got.append((event.type_id, event.timestamp, event.size, event.head))
        assert got == [(t, ts, n, p[:8]) for t, ts, n, p in messages], split


def test_skim_reader_bounds() -> None:
    session = ClientSession(skim_media=4)
    session.phase = ClientPhase.CONNECTED
    with pytest.raises(ProtocolError):
        session.receive_data(bytes([0x46]) + b"\x00" * 10)  # fmt 1 with no previous header
    session = ClientSession(skim_media=4)
    session.phase = ClientPhase.CONNECTED
    huge = (
        bytes([0x06]) + b"\x00\x00\x00" + (9 * 1024 * 1024).to_bytes(3, "big") + b"\x09" + bytes(4)
    )
    with pytest.raises(ProtocolError):
        session.receive_data(huge)


def test_parse_url() -> None:
    assert parse_url("rtmp://127.0.0.1:1940/live") == ("127.0.0.1", 1940, "live")
    assert parse_url("rtmp://example.com/live/") == ("example.com", 1935, "live")
    for bad in ("http://h/live", "rtmp://h", "rtmp:///live"):
        with pytest.raises(UsageError):
            parse_url(bad)


# --- live: RtmpClient against a real node ------------------------------------------------------


@pytest.fixture(scope="module")
def test_flv(tmp_path_factory: pytest.TempPathFactory) -> list[FlvTag]:
    """2 s of testsrc + sine, 25 fps, a keyframe every 25 frames, as FLV tags."""
    import subprocess

    ffmpeg = require_program("ffmpeg")
    path = tmp_path_factory.mktemp("flv") / "test.flv"
    subprocess.run(
        [
            ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
            "-keyint_min", "25", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    reader = FlvReader()
    reader.feed(path.read_bytes())
    tags = []
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag):
            tags.append(event)
    return tags


def is_keyframe(payload: bytes) -> bool:
    info = parse_video_tag_header(payload)
    return info.keyframe and not info.sequence_header


async def start_node(tmp_path: Path) -> Node:
    node = Node(
        Settings(
            rtmp_host="127.0.0.1",
            rtmp_port=0,
            http_host="127.0.0.1",
            http_port=0,
            data_dir=tmp_path,
            publish_mode="open",
            reconnect_grace_seconds=0,
        )
    )
    await node.start()
    return node


async def packets_in(node: Node, name: str, count: int) -> None:
    """Wait (at most 5 s) until the node has taken `count` packets of stream `name`."""
    for _ in range(500):
        stream = node.hub.get(name)
        if stream is not None and stream.stats.packets_in >= count:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"stream {name} did not get {count} packets")


@pytest.mark.ffmpeg
async def test_publish_and_play_through_a_node(tmp_path: Path, test_flv: list[FlvTag]) -> None:
    node = await start_node(tmp_path)
    try:
        url = f"rtmp://127.0.0.1:{node.rtmp_port}/live"
        publisher = RtmpClient()
        await publisher.connect(url, timeout=5)
        await publisher.publish("cam")
        keys = [i for i, t in enumerate(test_flv) if t.kind == 9 and is_keyframe(t.payload)]
        second_key = keys[1]
        # First GOP, then a player joins (it gets it from the GOP cache), then the rest.
        for tag in test_flv[:second_key]:
            await publisher.send_media(tag.kind, tag.timestamp, tag.payload)
        await packets_in(node, "cam", second_key)
        player = RtmpClient()
        await player.connect(url, timeout=5)
        await player.play("cam")
        for tag in test_flv[second_key:]:
            await publisher.send_media(tag.kind, tag.timestamp, tag.payload)
            await asyncio.sleep(0.002)
        await publisher.close()

        video: list[MediaReceived] = []
        audio_ts: list[int] = []
        stopped = False
        async with asyncio.timeout(10):
            async for event in player:
                if isinstance(event, MediaReceived) and event.type_id == chunk.VIDEO:
                    video.append(event)
                elif isinstance(event, MediaReceived) and event.type_id == chunk.AUDIO:
                    audio_ts.append(event.timestamp)
                elif isinstance(event, StatusReceived) and event.code == "NetStream.Play.Stop":
                    stopped = True
        await player.close()
        assert stopped
        assert parse_video_tag_header(video[0].payload).sequence_header
        assert is_keyframe(video[1].payload)
        sent_video = [t for t in test_flv if t.kind == 9]
        assert len(video) == len(sent_video)  # the whole first GOP came from the cache
        stamps = [e.timestamp for e in video]
        assert stamps == sorted(stamps)
        assert audio_ts == sorted(audio_ts)
        assert stamps[-1] == sent_video[-1].timestamp
    finally:
        await node.close()


@pytest.mark.ffmpeg
async def test_skimming_player_sees_the_same_frames(tmp_path: Path, test_flv: list[FlvTag]) -> None:
    node = await start_node(tmp_path)
    try:
        url = f"rtmp://127.0.0.1:{node.rtmp_port}/live"
        async with RtmpClient() as publisher:
            await publisher.connect(url)
            await publisher.publish("cam")
            keys = [i for i, t in enumerate(test_flv) if t.kind == 9 and is_keyframe(t.payload)]
            for tag in test_flv[: keys[1]]:
                await publisher.send_media(tag.kind, tag.timestamp, tag.payload)
            await packets_in(node, "cam", keys[1])
            seen: list[MediaReceived | MediaSkimmed] = []
            player = RtmpClient(skim_media=5, on_media=seen.append)
            await player.connect(url)
            await player.play("cam")
            for tag in test_flv[keys[1] :]:
                await publisher.send_media(tag.kind, tag.timestamp, tag.payload)
            await publisher.close()
            async with asyncio.timeout(10):
                while await player.read_event() is not None:
                    pass
        videos = [e for e in seen if isinstance(e, MediaSkimmed) and e.type_id == chunk.VIDEO]
        sent = [t for t in test_flv if t.kind == chunk.VIDEO]
        assert [(e.timestamp, e.size, e.head) for e in videos] == [
            (t.timestamp, len(t.payload), t.payload[:5]) for t in sent
        ]
    finally:
        await node.close()


@pytest.mark.ffmpeg
async def test_refusals_from_a_node(tmp_path: Path, test_flv: list[FlvTag]) -> None:
    node = await start_node(tmp_path)
    try:
        url = f"rtmp://127.0.0.1:{node.rtmp_port}/live"
        async with RtmpClient() as first:
            await first.connect(url)
            await first.publish("dup")
            await first.send_media(test_flv[0].kind, 0, test_flv[0].payload)
            second = RtmpClient()
            await second.connect(url)
            with pytest.raises(RequestRefused) as refused:
                await second.publish("dup")
            assert refused.value.code == "NetStream.Publish.BadName"
            await second.close()

        player = RtmpClient()
        await player.connect(url)
        with pytest.raises(RequestRefused) as refused:
            await player.play("nosuchstream")
        assert refused.value.code == "NetStream.Play.StreamNotFound"
        await player.close()
        assert player.closed
    finally:
        await node.close()


async def test_connect_to_a_closed_port_fails() -> None:
    client = RtmpClient()
    with pytest.raises(ConnectionRefusedError):
        await client.connect("rtmp://127.0.0.1:1/live", timeout=2)
