"""RTMP server session: the sans-I/O state machine for one client connection.

Feed it bytes with `receive_data()`, take decisions from `next_event()`, and write
`data_to_send()` to the peer. It runs the handshake, the chunk stream, the protocol control
messages (chunk size, window acknowledgement, peer bandwidth, ping) and the NetConnection and
NetStream commands, answering the ones that need no decision by itself. Decisions that belong to
the server (may this client publish or play this name?) come out as events and go back in as
`accept_*` / `reject_*` calls.

Invariants: no I/O, no clock; media payloads are passed through untouched (no copy beyond
reassembly); every error raised is a `ProtocolError` whose `reason` names what went wrong.
Outgoing media for players is *not* produced here: the live hub frames it once for every player
(see `rtmp_media_message`), and the adapter writes those shared bytes next to ours.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from ripplecast.errors import LimitExceeded, ProtocolError, UsageError
from ripplecast.media import amf0
from ripplecast.media.amf0 import UNDEFINED, AmfValue, EcmaArray
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import ChunkReader, RtmpMessage
from ripplecast.protocols.rtmp.handshake import ServerHandshake

FMS_VERSION = "FMS/3,5,7,7009"
CAPABILITIES = 31.0
SUPPORTED_FOURCC = ("avc1", "hvc1", "av01", "mp4a")


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The named limits one session enforces (from the node's settings)."""

    max_chunk_size: int = 65536
    """Largest chunk size the peer may set."""
    max_message_size: int = 8 * 1024 * 1024
    """Largest message the peer may send."""
    max_chunk_streams: int = 64
    """Most chunk stream ids in use at once."""
    out_chunk_size: int = 4096
    """Chunk size we announce and send with."""
    ack_window: int = 2_500_000
    """Window acknowledgement size we announce."""
    amf_max_depth: int = 16
    """Deepest AMF0 nesting accepted in commands."""
    amf_max_items: int = 4096
    """Most entries in one AMF0 object."""
    max_bad_commands: int = 16
    """Unknown or invalid commands tolerated before the connection is closed."""


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The client sent `connect`; answer with `accept_connect()` or `reject_connect()`."""

    app: str
    """The application name (`live` in rtmp://host/live/NAME), without query string."""
    tc_url: str
    """The URL the client says it connected to."""
    properties: dict[str, AmfValue]
    """Every field of the command object, for logging and feature detection."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """The client wants to publish; answer with `accept_publish()` or `reject_publish()`."""

    stream_id: int
    """Message stream id the client publishes on."""
    name: str
    """Publishing name (the stream key in Ripplecast), query string removed."""
    query: str
    """What followed `?` in the name, if anything."""
    publish_type: str
    """`live`, `record` or `append` as the client asked."""


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """The client wants to play; answer with `accept_play()` or `reject_play()`."""

    stream_id: int
    """Message stream id the client plays on."""
    name: str
    """Stream name, query string removed."""
    query: str
    """What followed `?` in the name, if anything."""


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """An audio, video or data message from the accepted publisher."""

    type_id: int
    """8 audio, 9 video, 18 data (metadata already unwrapped from @setDataFrame)."""
    timestamp: int
    """Absolute timestamp in milliseconds as the publisher stamped it."""
    payload: bytes
    """The FLV tag body."""


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The client stopped publishing or playing (FCUnpublish, closeStream, deleteStream)."""

    stream_id: int
    """The message stream id that was closed."""
    command: str
    """Which command closed it."""


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """A command was unknown or invalid; it was answered with `_error` and counted."""

    name: str
    """The command name as received (truncated to 64 characters)."""
    reason: str
    """Why it was refused."""


Event = (
    ConnectRequest | PublishRequest | PlayRequest | MediaReceived | StreamClosed | CommandRefused
)


class Phase(Enum):
    """Where the session is in its life."""

    HANDSHAKE = auto()
    AWAIT_CONNECT = auto()
    CONNECTING = auto()
    CONNECTED = auto()
    CLOSED = auto()


@dataclass(slots=True)
class _Stream:
    """One NetStream created with createStream."""

    stream_id: int
    publishing: bool = False
    playing: bool = False
    pending: str = ""
    name: str = ""


def _status(level: str, code: str, description: str, **extra: AmfValue) -> dict[str, AmfValue]:
    info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info


def rtmp_media_message(
    type_id: int, timestamp: int, payload: bytes, *, stream_id: int, chunk_size: int
) -> bytes:
    """Return one media message chunked for a player; the same bytes serve every player.

    Players share our chunk size and play on the same message stream id, so the hub encodes
    each message once per batch and writes the result to all of them.
    """
    csid = chunk.CSID_VIDEO if type_id == chunk.VIDEO else chunk.CSID_AUDIO
    if type_id == chunk.DATA_AMF0:
        csid = chunk.CSID_DATA
    return chunk.encode_message(
        chunk_stream_id=csid,
        type_id=type_id,
        stream_id=stream_id,
        timestamp=timestamp,
        payload=payload,
        chunk_size=chunk_size,
    )


class ServerSession:
    """The server side of one RTMP connection (see module docstring)."""

    def __init__(
        self,
        limits: SessionLimits | None = None,
        *,
        timestamp_ms: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.limits = limits or SessionLimits()
        self.phase = Phase.HANDSHAKE
        self._handshake = ServerHandshake(timestamp_ms=timestamp_ms, randbytes=randbytes)
        self._reader = ChunkReader(
            max_chunk_size=self.limits.max_chunk_size,
            max_message_size=self.limits.max_message_size,
            max_chunk_streams=self.limits.max_chunk_streams,
        )
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._peer_window = 0
        self._last_ack = 0
        self._bad_commands = 0
        self._connect_tid = 0.0
        self._object_encoding = 0.0
        self.app = ""
        self.tc_url = ""
        self.peer_chunk_size = 128
        self._out_chunk_size = 128  # until our Set Chunk Size has been sent

    # --- bytes in and out -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; call `next_event()` until it returns None."""
        if self.phase is Phase.HANDSHAKE:
            self._handshake.receive_data(data)
            out = self._handshake.data_to_send()
            if out:
                self._out.append(out)
            if not self._handshake.complete:
                return
            self.phase = Phase.AWAIT_CONNECT
            data = self._handshake.leftover()
            if not data:
                return
        self._reader.receive_data(data)

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte that should now be written to the peer."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def bytes_received(self) -> int:
        """Bytes received after the handshake (what Acknowledgement counts)."""
        return self._reader.bytes_received

    def next_event(self) -> Event | None:
        """Process buffered messages until one needs the server's decision; None = need data.

        Raises `ProtocolError` (or `LimitExceeded`) when the peer misbehaves; the connection
        must then be closed.
        """
        while not self._events:
            if self.phase in (Phase.HANDSHAKE, Phase.CLOSED):
                return None
            message = self._reader.next_message()
            if message is None:
                self._maybe_acknowledge()
                return None
            self._handle(message)
        return self._events.popleft()

    # --- decisions from the server ----------------------------------------------------------

    def accept_connect(self) -> None:
        """Answer `connect` with success, after the window, bandwidth and chunk size messages."""
        self._require(self.phase is Phase.CONNECTING, "accept_connect without a connect")
        self.phase = Phase.CONNECTED
        self._out.append(chunk.window_ack_size(self.limits.ack_window))
        self._out.append(chunk.set_peer_bandwidth(self.limits.ack_window, 2))
        self._out.append(chunk.set_chunk_size(self.limits.out_chunk_size))
        self._out_chunk_size = self.limits.out_chunk_size
        properties: dict[str, AmfValue] = {"fmsVer": FMS_VERSION, "capabilities": CAPABILITIES}
        info = _status(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
            objectEncoding=self._object_encoding,
        )
        self._send_command(0, "_result", self._connect_tid, properties, info)

    def reject_connect(self, description: str) -> None:
        """Answer `connect` with NetConnection.Connect.Rejected; close the connection after."""
        self._require(self.phase is Phase.CONNECTING, "reject_connect without a connect")
        info = _status("error", "NetConnection.Connect.Rejected", description)
        self._send_command(0, "_error", self._connect_tid, None, info)
        self.phase = Phase.CLOSED

    def accept_publish(self, stream_id: int, name: str) -> None:
        """Start the publish: StreamBegin and NetStream.Publish.Start."""
        stream = self._pending_stream(stream_id, "publish")
        stream.publishing, stream.pending, stream.name = True, "", name
        self._out.append(chunk.user_control(chunk.STREAM_BEGIN, stream_id))
        self._on_status(stream_id, "status", "NetStream.Publish.Start", f"{name} is now published.")

    def reject_publish(self, stream_id: int, code: str, description: str) -> None:
        """Refuse the publish (code e.g. NetStream.Publish.BadName); close the connection after."""
        stream = self._pending_stream(stream_id, "publish")
        stream.pending = ""
        self._on_status(stream_id, "error", code, description)

    def accept_play(self, stream_id: int, name: str) -> None:
        """Start playback: StreamBegin, Play.Reset, Play.Start and |RtmpSampleAccess.

        No `onStatus NetStream.Data.Start` data message: ffmpeg's FLV demuxer turns unknown
        data messages into a phantom data stream.

        After this the adapter attaches the connection to the hub, which writes media framed
        with `rtmp_media_message(..., stream_id=stream_id)`.
        """
        stream = self._pending_stream(stream_id, "play")
        stream.playing, stream.pending, stream.name = True, "", name
        self._out.append(chunk.user_control(chunk.STREAM_IS_RECORDED, stream_id))
        self._out.append(chunk.user_control(chunk.STREAM_BEGIN, stream_id))
        self._on_status(
            stream_id, "status", "NetStream.Play.Reset", f"Playing and resetting {name}."
        )
        self._on_status(stream_id, "status", "NetStream.Play.Start", f"Started playing {name}.")
        access = amf0.encode_values("|RtmpSampleAccess", True, True)
        self._out.append(self._encode(chunk.CSID_DATA, chunk.DATA_AMF0, stream_id, access))

    def reject_play(self, stream_id: int, code: str, description: str) -> None:
        """Refuse playback (code e.g. NetStream.Play.StreamNotFound)."""
        stream = self._pending_stream(stream_id, "play")
        stream.pending = ""
        self._on_status(stream_id, "error", code, description)

    def notify_unpublished(self, stream_id: int, name: str) -> None:
        """Tell a player that the publisher went away (it may come back)."""
        self._on_status(
            stream_id, "status", "NetStream.Play.UnpublishNotify", f"{name} is now unpublished."
        )

    def notify_republished(self, stream_id: int, name: str) -> None:
        """Tell a player that the publisher is back."""
        self._on_status(
            stream_id, "status", "NetStream.Play.PublishNotify", f"{name} is now published."
        )

    def end_play(self, stream_id: int, name: str) -> None:
        """Tell a player the stream is over: StreamEOF and NetStream.Play.Stop."""
        self._out.append(chunk.user_control(chunk.STREAM_EOF, stream_id))
        self._on_status(stream_id, "status", "NetStream.Play.Stop", f"Stopped playing {name}.")

    def ping(self, timestamp_ms: int) -> None:
        """Queue a PingRequest (keeps NATs open; the peer answers with PingResponse)."""
        self._out.append(chunk.user_control(chunk.PING_REQUEST, timestamp_ms & 0xFFFFFFFF))

    # --- internals --------------------------------------------------------------------------

    def _require(self, condition: bool, what: str) -> None:
        if not condition:
            raise UsageError(what)

    def _pending_stream(self, stream_id: int, kind: str) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.pending != kind:
            raise UsageError(f"no pending {kind} on stream {stream_id}")
        return stream

    def _encode(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> bytes:
        return chunk.encode_message(
            chunk_stream_id=csid,
            type_id=type_id,
            stream_id=stream_id,
            timestamp=0,
            payload=payload,
            chunk_size=self._out_chunk_size,
        )

    def _send_command(self, stream_id: int, name: str, tid: float, *args: AmfValue) -> None:
        payload = amf0.encode_values(name, tid, *args)
        self._out.append(self._encode(chunk.CSID_COMMAND, chunk.COMMAND_AMF0, stream_id, payload))

    def _on_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send_command(stream_id, "onStatus", 0.0, None, _status(level, code, description))

    def _maybe_acknowledge(self) -> None:
        received = self._reader.bytes_received
        if self._peer_window and received - self._last_ack >= self._peer_window:
            self._last_ack = received
            self._out.append(chunk.acknowledgement(received & 0xFFFFFFFF))

    def _handle(self, message: RtmpMessage) -> None:
        type_id = message.type_id
        if type_id in (chunk.AUDIO, chunk.VIDEO):
            self._media(message, message.payload)
        elif type_id in (chunk.DATA_AMF0, chunk.DATA_AMF3):
            body = message.payload[1:] if type_id == chunk.DATA_AMF3 else message.payload
            self._data(message, body)
        elif type_id in (chunk.COMMAND_AMF0, chunk.COMMAND_AMF3):
            body = message.payload[1:] if type_id == chunk.COMMAND_AMF3 else message.payload
            self._command(message, body)
        elif type_id == chunk.SET_CHUNK_SIZE:
            size = chunk.parse_u32(message.payload)
            self._reader.set_chunk_size(size)
            self.peer_chunk_size = size
        elif type_id == chunk.ABORT:
            self._reader.abort(chunk.parse_u32(message.payload))
        elif type_id == chunk.WINDOW_ACK_SIZE:
            self._peer_window = chunk.parse_u32(message.payload)
        elif type_id == chunk.USER_CONTROL:
            event, values = chunk.parse_user_control(message.payload)
            if event == chunk.PING_REQUEST and values:
                self._out.append(chunk.user_control(chunk.PING_RESPONSE, values[0]))
        elif type_id == chunk.AGGREGATE:
            self._aggregate(message)
        # ACK (3), SET_PEER_BANDWIDTH (6) and shared objects need no answer from a server.

    def _publishing_stream(self, stream_id: int) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.publishing:
            return stream
        # Some encoders send media on stream 0 or another id; accept if one stream publishes.
        for candidate in self._streams.values():
            if candidate.publishing:
                return candidate
        return None

    def _media(self, message: RtmpMessage, payload: bytes) -> None:
        if self._publishing_stream(message.stream_id) is None:
            raise ProtocolError(
                f"media message (type {message.type_id}) before publish was accepted",
                reason="media_before_publish",
            )
        self._events.append(MediaReceived(message.type_id, message.timestamp, payload))

    def _data(self, message: RtmpMessage, body: bytes) -> None:
        values = self._decode(body)
        if not values or not isinstance(values[0], str):
            return
        if values[0] == "@setDataFrame":
            values = values[1:]
        if not values or values[0] != "onMetaData" or len(values) < 2:
            return  # other data messages (cue points, onTextData) are not kept
        if self._publishing_stream(message.stream_id) is None:
            return
        metadata = values[1]
        if isinstance(metadata, dict) and not isinstance(metadata, EcmaArray):
            metadata = EcmaArray(metadata)
        payload = amf0.encode_values("onMetaData", metadata)
        self._events.append(MediaReceived(chunk.DATA_AMF0, message.timestamp, payload))

    def _aggregate(self, message: RtmpMessage) -> None:
        data = message.payload
        offset = 0
        first_ts: int | None = None
        while offset + 11 <= len(data):
            tag_type = data[offset]
            size = int.from_bytes(data[offset + 1 : offset + 4], "big")
            ts = int.from_bytes(data[offset + 4 : offset + 7], "big") | (data[offset + 7] << 24)
            end = offset + 11 + size
            if end + 4 > len(data):
                raise ProtocolError("aggregate message truncated", reason="aggregate")
            first_ts = ts if first_ts is None else first_ts
            body = data[offset + 11 : end]
            timestamp = (message.timestamp + ts - first_ts) & 0xFFFFFFFF
            sub = RtmpMessage(message.chunk_stream_id, tag_type, message.stream_id, timestamp, body)
            if tag_type in (chunk.AUDIO, chunk.VIDEO):
                self._media(sub, body)
            elif tag_type == chunk.DATA_AMF0:
                self._data(sub, body)
            offset = end + 4

    def _decode(self, body: bytes) -> list[AmfValue]:
        return amf0.decode_values(
            body, max_depth=self.limits.amf_max_depth, max_items=self.limits.amf_max_items
        )

    def _refuse(self, name: str, tid: float, reason: str) -> None:
        self._bad_commands += 1
        if tid:
            info = _status("error", "NetConnection.Call.Failed", reason)
            self._send_command(0, "_error", tid, None, info)
        self._events.append(CommandRefused(name[:64], reason))
        if self._bad_commands > self.limits.max_bad_commands:
            raise LimitExceeded(
                f"more than {self.limits.max_bad_commands} refused commands",
                limit="rtmp_max_bad_commands",
            )

    def _command(self, message: RtmpMessage, body: bytes) -> None:
        values = self._decode(body)
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError(
                "command message without a name and transaction id", reason="command"
            )
        name = values[0]
        tid = (
            values[1]
            if isinstance(values[1], float | int) and not isinstance(values[1], bool)
            else 0.0
        )
        args = values[2:]
        if self.phase is Phase.AWAIT_CONNECT:
            if name != "connect":
                raise ProtocolError(f"expected connect, got {name[:64]!r}", reason="command")
            self._connect(float(tid), args)
            return
        if self.phase is Phase.CONNECTING:
            raise ProtocolError(f"{name[:64]!r} before connect was answered", reason="command")
        handler = _COMMANDS.get(name)
        if handler is None:
            self._refuse(name, float(tid), f"unknown command {name[:64]!r}")
            return
        handler(self, message.stream_id, float(tid), args)

    def _connect(self, tid: float, args: list[AmfValue]) -> None:
        obj = args[0] if args and isinstance(args[0], dict) else None
        if obj is None:
            raise ProtocolError("connect without a command object", reason="command")
        app = obj.get("app")
        tc_url = obj.get("tcUrl")
        if not isinstance(app, str):
            raise ProtocolError("connect without an app name", reason="command")
        encoding = obj.get("objectEncoding")
        self._object_encoding = float(encoding) if isinstance(encoding, float | int) else 0.0
        self._connect_tid = tid
        self.app = app.split("?", 1)[0].strip("/")
        self.tc_url = tc_url if isinstance(tc_url, str) else ""
        self.phase = Phase.CONNECTING
        self._events.append(ConnectRequest(self.app, self.tc_url, dict(obj)))

    def _cmd_create_stream(self, _sid: int, tid: float, _args: list[AmfValue]) -> None:
        if len(self._streams) >= 8:
            raise LimitExceeded("more than 8 streams on one connection", limit="rtmp_max_streams")
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams[stream_id] = _Stream(stream_id)
        self._send_command(0, "_result", tid, None, float(stream_id))

    def _cmd_simple_result(self, _sid: int, tid: float, _args: list[AmfValue]) -> None:
        if tid:
            self._send_command(0, "_result", tid, None, UNDEFINED)

    def _cmd_fc_publish(self, _sid: int, tid: float, args: list[AmfValue]) -> None:
        name = _string_arg(args, 1) or ""
        self._cmd_simple_result(_sid, tid, args)
        info = _status("status", "NetStream.Publish.Start", f"FCPublish to {_printable(name)}.")
        self._send_command(0, "onFCPublish", 0.0, None, info)

    def _cmd_fc_unpublish(self, sid: int, tid: float, args: list[AmfValue]) -> None:
        self._cmd_simple_result(sid, tid, args)
        info = _status("status", "NetStream.Unpublish.Success", "FCUnpublish.")
        self._send_command(0, "onFCUnpublish", 0.0, None, info)
        for stream in self._streams.values():
            if stream.publishing:
                stream.publishing = False
                self._events.append(StreamClosed(stream.stream_id, "FCUnpublish"))

    def _stream_for(self, sid: int) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            if sid == 0 and len(self._streams) == 1:
                return next(iter(self._streams.values()))
            raise ProtocolError(f"command on unknown message stream {sid}", reason="command")
        return stream

    def _cmd_publish(self, sid: int, _tid: float, args: list[AmfValue]) -> None:
        stream = self._stream_for(sid)
        raw = _string_arg(args, 1)
        if raw is None:
            raise ProtocolError("publish without a name", reason="command")
        if stream.publishing or stream.playing or stream.pending:
            raise ProtocolError(f"publish on busy stream {stream.stream_id}", reason="command")
        kind = _string_arg(args, 2) or "live"
        name, _, query = raw.partition("?")
        stream.pending = "publish"
        self._events.append(PublishRequest(stream.stream_id, name, query, kind))

    def _cmd_play(self, sid: int, _tid: float, args: list[AmfValue]) -> None:
        stream = self._stream_for(sid)
        raw = _string_arg(args, 1)
        if raw is None:
            raise ProtocolError("play without a name", reason="command")
        if stream.publishing or stream.playing or stream.pending:
            raise ProtocolError(f"play on busy stream {stream.stream_id}", reason="command")
        name, _, query = raw.partition("?")
        stream.pending = "play"
        self._events.append(PlayRequest(stream.stream_id, name, query))

    def _close_stream(self, stream: _Stream, command: str) -> None:
        was_active = stream.publishing or stream.playing
        stream.publishing = stream.playing = False
        stream.pending = ""
        if was_active:
            self._events.append(StreamClosed(stream.stream_id, command))

    def _cmd_close_stream(self, sid: int, _tid: float, _args: list[AmfValue]) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            self._close_stream(stream, "closeStream")

    def _cmd_delete_stream(self, _sid: int, _tid: float, args: list[AmfValue]) -> None:
        target = args[1] if len(args) > 1 else None
        if isinstance(target, float | int) and not isinstance(target, bool):
            stream = self._streams.pop(int(target), None)
            if stream is not None:
                self._close_stream(stream, "deleteStream")

    def _cmd_get_stream_length(self, _sid: int, tid: float, _args: list[AmfValue]) -> None:
        self._send_command(0, "_result", tid, None, 0.0)

    def _cmd_ignore(self, _sid: int, _tid: float, _args: list[AmfValue]) -> None:
        """Commands that need no answer (receiveAudio, receiveVideo, pause, seek, ...)."""


def _string_arg(args: list[AmfValue], index: int) -> str | None:
    if len(args) > index and isinstance(args[index], str):
        value = args[index]
        assert isinstance(value, str)
        return value
    return None


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name[:64])


_Handler = Callable[[ServerSession, int, float, list[AmfValue]], None]

_COMMANDS: dict[str, _Handler] = {
    "createStream": ServerSession._cmd_create_stream,
    "releaseStream": ServerSession._cmd_simple_result,
    "FCPublish": ServerSession._cmd_fc_publish,
    "FCUnpublish": ServerSession._cmd_fc_unpublish,
    "publish": ServerSession._cmd_publish,
    "play": ServerSession._cmd_play,
    "play2": ServerSession._cmd_ignore,
    "closeStream": ServerSession._cmd_close_stream,
    "deleteStream": ServerSession._cmd_delete_stream,
    "getStreamLength": ServerSession._cmd_get_stream_length,
    "_checkbw": ServerSession._cmd_simple_result,
    "_result": ServerSession._cmd_ignore,
    "_error": ServerSession._cmd_ignore,
    "onBWDone": ServerSession._cmd_ignore,
    "receiveAudio": ServerSession._cmd_ignore,
    "receiveVideo": ServerSession._cmd_ignore,
    "pause": ServerSession._cmd_ignore,
    "seek": ServerSession._cmd_ignore,
    "FCSubscribe": ServerSession._cmd_simple_result,
    "FCUnsubscribe": ServerSession._cmd_ignore,
    "setPeerInfo": ServerSession._cmd_ignore,
}

__all__ = [
    "CommandRefused",
    "ConnectRequest",
    "Event",
    "MediaReceived",
    "Phase",
    "PlayRequest",
    "PublishRequest",
    "ServerSession",
    "SessionLimits",
    "StreamClosed",
    "rtmp_media_message",
]
