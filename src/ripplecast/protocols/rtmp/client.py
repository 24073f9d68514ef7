"""RTMP client session: the sans-I/O state machine for one connection to an RTMP server.

Feed it the server's bytes with `receive_data()`, take what happened from `next_event()`, and
write `data_to_send()` to the server. Requests (`connect`, `create_stream`, `publish`, `play`,
`send_media`, `close_stream`) queue bytes; their answers come back as events. It runs the simple
handshake, the chunk stream, the protocol control messages (our Set Chunk Size, the server's
chunk size, window acknowledgements, ping) and tracks the transaction id of every command.

Two ways to read media:
- by default every message is reassembled and audio/video/data arrive as `MediaReceived`;
- with `skim_media=N` audio and video payloads are never buffered or copied: the chunk headers
  are walked and each message arrives as `MediaSkimmed` with its size and its first N bytes (what
  a load generator needs to find keyframes, timestamps and an SEI stamp). Command, control and
  data messages are still reassembled in full.

Invariants: no I/O, no clock; the constructor queues C0C1, and requests made before the handshake
is over are held and sent right after C2. Errors: `UsageError` when a request comes in the wrong
state (our bug), `ProtocolError` (or `LimitExceeded`) when the server's bytes are malformed; the
connection must then be closed. A refusal by the server (connect rejected, publish or play
refused) is not an error but an event.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from ripplecast.errors import ProtocolError, UsageError
from ripplecast.media import amf0
from ripplecast.media.amf0 import AmfValue, EcmaArray
from ripplecast.protocols.rtmp import chunk
from ripplecast.protocols.rtmp.chunk import ChunkReader, RtmpMessage
from ripplecast.protocols.rtmp.handshake import ClientHandshake
from ripplecast.protocols.rtmp.skim import MediaSkimmed, SkimReader

__all__ = [
    "CallFailed",
    "ClientLimits",
    "ClientPhase",
    "ClientSession",
    "ConnectFailed",
    "Connected",
    "Event",
    "MediaReceived",
    "MediaSkimmed",
    "PlayFailed",
    "PlayStarted",
    "PublishFailed",
    "PublishStarted",
    "StatusReceived",
    "StreamCreated",
    "metadata_payload",
]

FLASH_VERSION = "LNX 9,0,124,2"
"""What we say we are in `connect` (the value ffmpeg and librtmp send)."""

_SET_DATA_FRAME = amf0.encode_value("@setDataFrame")
_ON_META_DATA = amf0.encode_value("onMetaData")


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The named bounds one client session enforces, and what it announces."""

    max_chunk_size: int = 65536
    """Largest chunk size the server may set."""
    max_message_size: int = 8 * 1024 * 1024
    """Largest message the server may send."""
    max_chunk_streams: int = 64
    """Most chunk stream ids the server may use at once."""
    out_chunk_size: int = 4096
    """Chunk size we announce (Set Chunk Size, before `connect`) and send with."""
    amf_max_depth: int = 16
    """Deepest AMF0 nesting accepted in commands."""
    amf_max_items: int = 4096
    """Most entries in one AMF0 object."""


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The server accepted `connect` (`_result`, NetConnection.Connect.Success)."""

    properties: dict[str, AmfValue]
    """The server's properties object (fmsVer, capabilities, ...)."""
    info: dict[str, AmfValue]
    """The information object (level, code, description, objectEncoding)."""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The server refused `connect` (`_error`); it closes the connection after."""

    code: str
    """The status code, e.g. NetConnection.Connect.Rejected."""
    description: str
    """The server's explanation."""


@dataclass(frozen=True, slots=True)
class StreamCreated:
    """`createStream` succeeded."""

    stream_id: int
    """The new message stream id, for `publish` or `play`."""


@dataclass(frozen=True, slots=True)
class PublishStarted:
    """The server accepted the publish (NetStream.Publish.Start): send media now."""

    stream_id: int
    """The message stream id that publishes."""
    description: str
    """The server's description."""


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """The server refused the publish (an error-level onStatus while it was pending)."""

    stream_id: int
    """The message stream id the publish was asked on."""
    code: str
    """The status code, e.g. NetStream.Publish.BadName."""
    description: str
    """The server's explanation."""


@dataclass(frozen=True, slots=True)
class PlayStarted:
    """The server started playback (NetStream.Play.Start): media follows."""

    stream_id: int
    """The message stream id that plays."""
    description: str
    """The server's description."""


@dataclass(frozen=True, slots=True)
class PlayFailed:
    """The server refused playback (an error-level onStatus while it was pending)."""

    stream_id: int
    """The message stream id the play was asked on."""
    code: str
    """The status code, e.g. NetStream.Play.StreamNotFound."""
    description: str
    """The server's explanation."""


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Any other onStatus: Play.Reset, Play.UnpublishNotify, Play.PublishNotify, Play.Stop, ..."""

    stream_id: int
    """The message stream id it came on."""
    code: str
    """The status code."""
    level: str
    """`status`, `warning` or `error`."""
    description: str
    """The server's description ("" when absent)."""


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A command other than connect was answered with `_error`."""

    command: str
    """The command we sent (e.g. createStream)."""
    code: str
    """The status code, when the server gave one."""
    description: str
    """The server's explanation."""


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """An audio, video or data message (data: onMetaData and the like, not onStatus)."""

    stream_id: int
    """The message stream id it came on."""
    type_id: int
    """8 audio, 9 video, 18 data (AMF0)."""
    timestamp: int
    """Absolute timestamp in milliseconds (32-bit)."""
    payload: bytes
    """The FLV tag body."""


Event = (
    Connected
    | ConnectFailed
    | StreamCreated
    | PublishStarted
    | PublishFailed
    | PlayStarted
    | PlayFailed
    | StatusReceived
    | CallFailed
    | MediaReceived
    | MediaSkimmed
)


class ClientPhase(Enum):
    """Where the session is in its life."""

    HANDSHAKE = auto()
    READY = auto()
    """Handshake done, `connect` not sent yet."""
    CONNECTING = auto()
    CONNECTED = auto()
    CLOSED = auto()
    """`connect` was refused: nothing more will happen."""


def _text(info: dict[str, AmfValue], key: str) -> str:
    value = info.get(key)
    return value if isinstance(value, str) else ""


class ClientSession:
    """The client side of one RTMP connection (see module docstring)."""

    def __init__(
        self,
        limits: ClientLimits | None = None,
        *,
        skim_media: int | None = None,
        timestamp_ms: int = 0,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.limits = limits or ClientLimits()
        self.phase = ClientPhase.HANDSHAKE
        self._handshake = ClientHandshake(timestamp_ms=timestamp_ms, randbytes=randbytes)
        self._reader: ChunkReader | SkimReader
        if skim_media is None:
            self._reader = ChunkReader(
                max_chunk_size=self.limits.max_chunk_size,
                max_message_size=self.limits.max_message_size,
                max_chunk_streams=self.limits.max_chunk_streams,
            )
        else:
            self._reader = SkimReader(self.limits, peek=skim_media)
        self._out: list[bytes] = [self._handshake.initial_bytes()]
        self._held: list[bytes] = []
        self._events: deque[Event] = deque()
        self._next_tid = 1
        self._transactions: dict[int, str] = {}
        self._pending: dict[int, str] = {}  # stream id -> "publish" | "play"
        self._window = 0  # the server's Window Acknowledgement Size
        self._last_ack = 0
        self._announced_window = 0
        self._out_chunk_size = chunk.DEFAULT_CHUNK_SIZE
        self.server_chunk_size = chunk.DEFAULT_CHUNK_SIZE
        """The chunk size the server sends with."""

    # --- bytes in and out -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server; call `next_event()` until it returns None.

        Raises ProtocolError if the server's handshake is not RTMP version 3.
        """
        if self.phase is ClientPhase.HANDSHAKE:
            self._handshake.receive_data(data)
            out = self._handshake.data_to_send()
            if out:
                self._out.append(out)
            if not self._handshake.complete:
                return
            self.phase = ClientPhase.READY
            self._out.extend(self._held)
            if self._held:
                self.phase = ClientPhase.CONNECTING
            self._held.clear()
            data = self._handshake.leftover()
            if not data:
                return
        self._reader.receive_data(data)

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte that should now be written to the server."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def bytes_received(self) -> int:
        """Bytes received after the handshake (what our Acknowledgements count)."""
        return self._reader.bytes_received

    def next_event(self) -> Event | None:
        """Return the next event, or None when more bytes are needed.

        Raises `ProtocolError` (or `LimitExceeded`) when the server misbehaves.
        """
        events = self._events
        while not events:
            if self.phase is ClientPhase.HANDSHAKE:
                return None
            message = self._reader.next_message()
            if message is None:
                if self._window:
                    self._maybe_acknowledge()
                return None
            if isinstance(message, MediaSkimmed):
                return message
            self._handle(message)
        return events.popleft()

    # --- requests ---------------------------------------------------------------------------

    def connect(self, app: str, tc_url: str, **properties: AmfValue) -> None:
        """Send Set Chunk Size and `connect`; answered by Connected or ConnectFailed.

        `properties` add to or replace fields of the command object. May be called before the
        handshake is over. Raises UsageError if connect was already sent.
        """
        if self.phase not in (ClientPhase.HANDSHAKE, ClientPhase.READY) or self._transactions:
            raise UsageError("connect was already sent")
        obj: dict[str, AmfValue] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": FLASH_VERSION,
            "tcUrl": tc_url,
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 4071.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        }
        obj.update(properties)
        size = self.limits.out_chunk_size
        parts = [chunk.set_chunk_size(size)]
        self._out_chunk_size = size
        parts.append(self._command_bytes(0, "connect", self._transaction("connect"), obj))
        if self.phase is ClientPhase.HANDSHAKE:
            self._held.extend(parts)
        else:
            self._out.extend(parts)
            self.phase = ClientPhase.CONNECTING

    def create_stream(self) -> None:
        """Send `createStream`; answered by StreamCreated (or CallFailed)."""
        self._require_connected("create_stream")
        self._command(0, "createStream", self._transaction("createStream"), None)

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> None:
        """Send `publish`; answered by PublishStarted or PublishFailed."""
        self._require_connected("publish")
        self._pending[stream_id] = "publish"
        self._command(stream_id, "publish", self._transaction("publish"), None, name, publish_type)

    def play(self, stream_id: int, name: str, *, buffer_ms: int = 1000) -> None:
        """Send `play` (start -2) and Set Buffer Length; answered by PlayStarted or PlayFailed."""
        self._require_connected("play")
        self._pending[stream_id] = "play"
        self._command(stream_id, "play", self._transaction("play"), None, name, -2.0)
        self._out.append(chunk.user_control(chunk.SET_BUFFER_LENGTH, stream_id, buffer_ms))

    def close_stream(self, stream_id: int) -> None:
        """Stop publishing or playing on `stream_id`: `closeStream` then `deleteStream`."""
        self._require_connected("close_stream")
        self._pending.pop(stream_id, None)
        self._command(stream_id, "closeStream", 0.0, None)
        self._command(0, "deleteStream", 0.0, None, float(stream_id))

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one audio (8), video (9) or data (18) message for the server.

        A data message starting with `onMetaData` (as in an FLV file) is sent as
        `@setDataFrame onMetaData ...`, as publishers do. Raises UsageError before connect or for
        another type id.
        """
        if self.phase is not ClientPhase.CONNECTED:
            raise UsageError("send_media before the connection is established")
        if type_id == chunk.VIDEO:
            csid = chunk.CSID_VIDEO
        elif type_id == chunk.AUDIO:
            csid = chunk.CSID_AUDIO
        elif type_id == chunk.DATA_AMF0:
            csid = chunk.CSID_DATA
            if payload.startswith(_ON_META_DATA):
                payload = _SET_DATA_FRAME + payload
        else:
            raise UsageError(f"send_media: type id {type_id} is not audio, video or data")
        self._out.append(
            chunk.encode_message(
                chunk_stream_id=csid,
                type_id=type_id,
                stream_id=stream_id,
                timestamp=timestamp,
                payload=payload,
                chunk_size=self._out_chunk_size,
            )
        )

    # --- internals --------------------------------------------------------------------------

    def _require_connected(self, what: str) -> None:
        if self.phase is not ClientPhase.CONNECTED:
            raise UsageError(f"{what} before the connection is established")

    def _transaction(self, command: str) -> float:
        tid = self._next_tid
        self._next_tid += 1
        self._transactions[tid] = command
        return float(tid)

    def _command_bytes(self, stream_id: int, name: str, tid: float, *args: AmfValue) -> bytes:
        return chunk.encode_message(
            chunk_stream_id=chunk.CSID_COMMAND,
            type_id=chunk.COMMAND_AMF0,
            stream_id=stream_id,
            timestamp=0,
            payload=amf0.encode_values(name, tid, *args),
            chunk_size=self._out_chunk_size,
        )

    def _command(self, stream_id: int, name: str, tid: float, *args: AmfValue) -> None:
        self._out.append(self._command_bytes(stream_id, name, tid, *args))

    def _maybe_acknowledge(self) -> None:
        received = self._reader.bytes_received
        if received - self._last_ack >= self._window:
            self._last_ack = received
            self._out.append(chunk.acknowledgement(received & 0xFFFFFFFF))

    def _decode(self, body: bytes) -> list[AmfValue]:
        return amf0.decode_values(
            body, max_depth=self.limits.amf_max_depth, max_items=self.limits.amf_max_items
        )

    def _handle(self, message: RtmpMessage) -> None:
        type_id = message.type_id
        if type_id in (chunk.AUDIO, chunk.VIDEO):
            self._events.append(
                MediaReceived(message.stream_id, type_id, message.timestamp, message.payload)
            )
        elif type_id in (chunk.DATA_AMF0, chunk.DATA_AMF3):
            body = message.payload[1:] if type_id == chunk.DATA_AMF3 else message.payload
            self._data(message, body)
        elif type_id in (chunk.COMMAND_AMF0, chunk.COMMAND_AMF3):
            body = message.payload[1:] if type_id == chunk.COMMAND_AMF3 else message.payload
            self._command_in(message, body)
        elif type_id == chunk.SET_CHUNK_SIZE:
            size = chunk.parse_u32(message.payload)
            self._reader.set_chunk_size(size)
            self.server_chunk_size = size
        elif type_id == chunk.ABORT:
            self._reader.abort(chunk.parse_u32(message.payload))
        elif type_id == chunk.WINDOW_ACK_SIZE:
            self._window = chunk.parse_u32(message.payload)
        elif type_id == chunk.SET_PEER_BANDWIDTH:
            size, _limit = chunk.parse_set_peer_bandwidth(message.payload)
            if size != self._announced_window:
                # Spec 5.4.5: answer a changed peer bandwidth with our Window Ack Size.
                self._announced_window = size
                self._out.append(chunk.window_ack_size(size))
        elif type_id == chunk.USER_CONTROL:
            event, values = chunk.parse_user_control(message.payload)
            if event == chunk.PING_REQUEST and values:
                self._out.append(chunk.user_control(chunk.PING_RESPONSE, values[0]))
        # ACK, aggregate and shared objects: nothing for a client to do.

    def _data(self, message: RtmpMessage, body: bytes) -> None:
        values = self._decode(body)
        if values and values[0] == "onStatus" and len(values) > 1:
            info = values[1]
            if isinstance(info, dict):
                self._status(message.stream_id, info)
            return
        if values and values[0] == "|RtmpSampleAccess":
            return  # a Flash Player permission, not media
        self._events.append(
            MediaReceived(message.stream_id, chunk.DATA_AMF0, message.timestamp, body)
        )

    def _command_in(self, message: RtmpMessage, body: bytes) -> None:
        values = self._decode(body)
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError(
                "command message without a name and transaction id", reason="command"
            )
        name, tid_value, args = values[0], values[1], values[2:]
        if name == "onStatus":
            info = args[1] if len(args) > 1 else (args[0] if args else None)
            if isinstance(info, dict):
                self._status(message.stream_id, info)
            return
        if name not in ("_result", "_error"):
            return  # onBWDone, onFCPublish, _checkbw, ...: nothing to answer
        if not isinstance(tid_value, float | int) or isinstance(tid_value, bool):
            return
        command = self._transactions.pop(int(tid_value), None)
        if command is None:
            return
        info = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        properties = args[0] if args and isinstance(args[0], dict) else {}
        if command == "connect":
            if name == "_result":
                self.phase = ClientPhase.CONNECTED
                self._events.append(Connected(properties, info))
            else:
                self.phase = ClientPhase.CLOSED
                self._events.append(ConnectFailed(_text(info, "code"), _text(info, "description")))
        elif command == "createStream" and name == "_result":
            stream_id = args[1] if len(args) > 1 else None
            if not isinstance(stream_id, float | int) or isinstance(stream_id, bool):
                raise ProtocolError("createStream result without a stream id", reason="command")
            self._events.append(StreamCreated(int(stream_id)))
        elif name == "_error":
            self._events.append(
                CallFailed(command, _text(info, "code"), _text(info, "description"))
            )

    def _status(self, stream_id: int, info: dict[str, AmfValue]) -> None:
        code, level = _text(info, "code"), _text(info, "level")
        description = _text(info, "description")
        if stream_id == 0 and len(self._pending) == 1:
            # Some servers answer on stream 0; with one request pending it can only be that one.
            stream_id = next(iter(self._pending))
        kind = self._pending.get(stream_id)
        event: Event
        if kind == "publish" and code == "NetStream.Publish.Start":
            del self._pending[stream_id]
            event = PublishStarted(stream_id, description)
        elif kind == "play" and code == "NetStream.Play.Start":
            del self._pending[stream_id]
            event = PlayStarted(stream_id, description)
        elif kind is not None and level == "error":
            del self._pending[stream_id]
            failed = PublishFailed if kind == "publish" else PlayFailed
            event = failed(stream_id, code, description)
        else:
            event = StatusReceived(stream_id, code, level, description)
        self._events.append(event)


def metadata_payload(metadata: dict[str, AmfValue]) -> bytes:
    """Return an `onMetaData` data payload (as in an FLV script tag) for `send_media`."""
    return amf0.encode_values("onMetaData", EcmaArray(metadata))
