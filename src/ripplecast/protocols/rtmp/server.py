"""RTMP server: the asyncio adapter around `ServerSession`, wired to the live hub.

One `RtmpConnection` (an `asyncio.Protocol`) per client moves bytes between the socket and the
sans-I/O session, acts on its events (connect, publish, play, media) and arms the timers
(handshake, idle, publisher silence). A misbehaving peer closes its own connection with a logged
reason and a counter; nothing it sends can reach another stream.

With a TLS context the server also listens on `rtmps_port`: RTMPS connections are the same
`RtmpConnection`s (same hub, policy and limits) once their TLS handshake is done, which has
`tls_handshake_timeout` to finish.

Players are readers of the hub: their media is framed once per batch by `RtmpFormat` and the same
bytes are written to every player (`rtmp_media_message`), next to the session's own replies.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, cast
from urllib.parse import parse_qsl

from ripplecast.accounts.policy import AccessRequest, Action, Credentials, Decision, Via
from ripplecast.config import Settings
from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.live.hub import Hub, StreamBusy
from ripplecast.live.names import InvalidStreamName, printable, validate_stream_name
from ripplecast.live.sockets import limit_send_buffer
from ripplecast.live.stream import LiveStream, Reader, StreamEvent
from ripplecast.media.flv import make_packet
from ripplecast.media.packet import MediaPacket
from ripplecast.protocols.proxy_header import ProxyHeader, TrustedProxies, parse_proxy_header
from ripplecast.protocols.rtmp.session import (
    CommandRefused,
    ConnectRequest,
    MediaReceived,
    Phase,
    PlayRequest,
    PublishRequest,
    ServerSession,
    SessionLimits,
    StreamClosed,
    rtmp_media_message,
)

log = logging.getLogger("ripplecast.rtmp")

Authorize = Callable[[AccessRequest], Awaitable[Decision]]
"""The access policy's `authorize` (see ripplecast.accounts.policy)."""

Notify = Callable[[str, Mapping[str, object]], None]
"""Tell the outside world about an event (the webhook dispatcher's `emit`): never blocks or
raises. Events: on_publish, on_unpublish, on_play, on_stop; the payload is plain JSON data,
never a secret (no stream key)."""


class Admission(Protocol):
    """The admission webhook's verdict (ripplecast.webhooks.AdmissionResult)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


Admit = Callable[[Mapping[str, object]], Awaitable[Admission]]
"""Ask the admission webhook about a publish (payload as for on_publish)."""

Claim = Callable[[str], Awaitable[str | None]]
"""Take stream NAME for this node before its publisher is accepted (the cluster's stream
ownership): None when granted, else why not (shown to the publisher and logged)."""


def _ignore(event: str, payload: Mapping[str, object]) -> None:
    pass


_connection_ids = itertools.count(1)


class RtmpFormat:
    """Frames media for RTMP players of one message stream id and chunk size."""

    name = "rtmp"

    def __init__(self, stream_id: int, chunk_size: int) -> None:
        self.stream_id = stream_id
        self.chunk_size = chunk_size

    def frame(self, packets: Sequence[MediaPacket]) -> bytes:
        sid, size = self.stream_id, self.chunk_size
        return b"".join(
            [
                rtmp_media_message(p.kind, p.timestamp, p.payload, stream_id=sid, chunk_size=size)
                for p in packets
            ]
        )


class RtmpServer:
    """Listens for RTMP clients and serves publishers and players from the hub."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        authorize: Authorize,
        *,
        notify: Notify = _ignore,
        admit: Admit | None = None,
        claim: Claim | None = None,
        accept_publishers: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.authorize = authorize
        self.notify = notify
        self.admit = admit
        self.claim = claim
        self.accept_publishers = accept_publishers
        self.proxies = TrustedProxies(settings.trusted_proxies)
        """Balancers whose PROXY header names the client (with `rtmp_proxy_protocol`)."""
        self.limits = SessionLimits(
            max_chunk_size=settings.rtmp_max_chunk_size,
            max_message_size=settings.rtmp_max_message_size,
            max_chunk_streams=settings.rtmp_max_chunk_streams,
            out_chunk_size=settings.rtmp_out_chunk_size,
            ack_window=settings.rtmp_ack_window,
            amf_max_depth=settings.amf_max_depth,
            amf_max_items=settings.amf_max_items,
            max_bad_commands=settings.rtmp_max_bad_commands,
        )
        self.connections: set[RtmpConnection] = set()
        self.refused: Counter[str] = Counter()
        """Connections closed or requests refused, by reason (for logs and metrics)."""
        self._formats: dict[int, RtmpFormat] = {}
        self._server: asyncio.Server | None = None
        self._bound_port: int | None = None
        self.tls = tls
        """The server TLS context of the RTMPS listener; None: plain RTMP only."""
        self._tls_server: asyncio.Server | None = None
        self._bound_tls_port: int | None = None

    def format_for(self, stream_id: int) -> RtmpFormat:
        """The shared format for players on message stream `stream_id`."""
        fmt = self._formats.get(stream_id)
        if fmt is None:
            fmt = self._formats[stream_id] = RtmpFormat(stream_id, self.limits.out_chunk_size)
        return fmt

    async def start(self) -> None:
        """Start listening on the configured host and port (and the RTMPS port with TLS)."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        self._server = await loop.create_server(
            lambda: RtmpConnection(self),
            settings.rtmp_host,
            settings.rtmp_port,
            reuse_address=True,
            reuse_port=settings.reuse_port or None,
        )
        if self.tls is not None:
            self._tls_server = await loop.create_server(
                lambda: RtmpConnection(self),
                settings.rtmp_host,
                settings.rtmps_port,
                ssl=self.tls,
                ssl_handshake_timeout=settings.tls_handshake_timeout,
                reuse_address=True,
                reuse_port=settings.reuse_port or None,
            )

    def stop_listening(self) -> None:
        """Accept no new connection (draining); the connected ones go on."""
        if self._server is not None:
            _ = self.port  # remembered for the registry and logs
            self._server.close()
        if self._tls_server is not None:
            _ = self.tls_port
            self._tls_server.close()

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0); still known after
        `stop_listening()`."""
        if self._bound_port is None:
            if self._server is None or not self._server.sockets:
                raise RuntimeError("RTMP server is not listening")
            self._bound_port = int(self._server.sockets[0].getsockname()[1])
        return self._bound_port

    @property
    def tls_port(self) -> int:
        """The RTMPS port actually bound; 0 without TLS."""
        if self.tls is None:
            return 0
        if self._bound_tls_port is None:
            if self._tls_server is None or not self._tls_server.sockets:
                raise RuntimeError("RTMPS server is not listening")
            self._bound_tls_port = int(self._tls_server.sockets[0].getsockname()[1])
        return self._bound_tls_port

    async def close(self) -> None:
        """Stop listening and close every connection, telling players the stream ended."""
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        for server in servers:
            server.close()
        for connection in list(self.connections):
            connection.shutdown()
        for server in servers:
            await server.wait_closed()

    def kick_key(self, key_id: int) -> int:
        """Disconnect every publisher that went live with stream key `key_id`; return how many."""
        kicked = 0
        for connection in list(self.connections):
            if connection.publishing is not None and connection.publish_key_id == key_id:
                connection.kick("key_revoked", "stream key revoked")
                kicked += 1
        return kicked

    def kick_stream(self, name: str, reason: str) -> int:
        """Disconnect every publisher of stream `name` (an admin's kick); return how many."""
        kicked = 0
        for connection in list(self.connections):
            if connection.publishing is not None and connection.publishing[1].name == name:
                connection.kick("kicked", reason)
                kicked += 1
        return kicked

    def count_refusal(self, reason: str) -> None:
        self.refused[reason] += 1


class RtmpConnection(asyncio.Protocol):
    """One client connection (see module docstring)."""

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.id = next(_connection_ids)
        self.peer = "?"
        self.peer_ip = ""
        self.transport: asyncio.Transport | None = None
        self.over_tls = False
        """An RTMPS connection (its TLS handshake done)."""
        self.session = ServerSession(server.limits, timestamp_ms=int(time.time() * 1000))
        self._deadline: asyncio.TimerHandle | None = None
        self._publisher_check: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self.publishing: tuple[int, LiveStream] | None = None
        self.publish_key_id = 0
        self.playing: dict[int, tuple[LiveStream, Reader]] = {}
        self._closing = False
        self._deciding = False
        self._decision_task: asyncio.Task[None] | None = None
        self._proxy_header: bytes | None = None
        """Bytes of a PROXY header still being received (None: none expected)."""

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.peer_ip = str(peer[0]) if isinstance(peer, tuple) else ""
        self.over_tls = transport.get_extra_info("ssl_object") is not None
        settings = self.server.settings
        if len(self.server.connections) >= settings.rtmp_max_connections:
            self._refuse("rtmp_max_connections", "too many connections")
            return
        self.server.connections.add(self)
        if settings.rtmp_proxy_protocol and self.server.proxies.trusts(self.peer_ip):
            self._proxy_header = b""
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(
            settings.rtmp_handshake_timeout, self._timeout, "handshake timeout"
        )

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_data = time.monotonic()
        if self._proxy_header is not None:
            data = self._take_proxy_header(data)
            if not data:
                return
        was_handshaking = not self._handshake_done
        try:
            self.session.receive_data(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if was_handshaking and self._handshake_done:
            self._rearm_idle()
        self._process()

    def _take_proxy_header(self, data: bytes) -> bytes:
        """Read the balancer's PROXY header; return the bytes after it (b"" until complete)."""
        assert self._proxy_header is not None
        buffer = self._proxy_header + data
        if buffer[:1] not in (b"P", b"\r"):
            # RTMP's first byte is its version (3): a direct connection from the proxy's host.
            self._proxy_header = None
            return buffer
        try:
            header = parse_proxy_header(buffer)
        except ProtocolError as exc:
            self._refuse("proxy_header", f"bad PROXY header from a trusted proxy: {exc}")
            return b""
        if not isinstance(header, ProxyHeader):
            self._proxy_header = buffer
            return b""
        self._proxy_header = None
        if header.client_ip:
            self.peer = f"{header.client_ip}:{header.client_port}"
            self.peer_ip = header.client_ip
        return buffer[header.length :]

    def _process(self) -> None:
        """Handle the session's events until one needs the access policy (or none is left)."""
        if self._deciding:
            return  # the decision resumes processing when it is made
        try:
            while (event := self.session.next_event()) is not None:
                if isinstance(event, PublishRequest | PlayRequest):
                    self._decide(event)
                    break
                self._handle(event)
                if self._closing:
                    return
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        self._flush()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._flush()
        reason = exc.limit if isinstance(exc, LimitExceeded) else exc.reason
        self._refuse(reason, str(exc))

    def _decide(self, event: PublishRequest | PlayRequest) -> None:
        """Ask the access policy without blocking the loop; reading pauses meanwhile."""
        self._deciding = True
        if self.transport is not None:
            self.transport.pause_reading()
        self._flush()
        task = asyncio.get_running_loop().create_task(self._run_decision(event))
        self._decision_task = task

    async def _run_decision(self, event: PublishRequest | PlayRequest) -> None:
        try:
            if isinstance(event, PublishRequest):
                await self._publish(event)
            else:
                await self._play(event)
        except Exception:
            log.exception("rtmp conn=%d peer=%s access decision failed", self.id, self.peer)
            self._refuse("access_error", "access decision failed")
        finally:
            self._deciding = False
            self._decision_task = None
        if self._closing:
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cleanup("connection closed by peer" if not self._closing else "closed")

    # --- reader sink (for the hub) ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def buffered_bytes(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self, reason: str) -> None:
        if self._closing:
            return
        log.info("rtmp conn=%d peer=%s play stop: %s", self.id, self.peer, reason)
        if reason == "reader too slow":
            self.server.count_refusal("slow_reader")
            self._close(abort=True)
        else:
            for stream_id, (stream, _reader) in self.playing.items():
                self.session.end_play(stream_id, stream.name)
            self._flush()
            self._close()

    def stream_event(self, event: StreamEvent) -> None:
        for stream_id, (stream, _reader) in self.playing.items():
            if event is StreamEvent.UNPUBLISHED:
                self.session.notify_unpublished(stream_id, stream.name)
            elif event is StreamEvent.REPUBLISHED:
                self.session.notify_republished(stream_id, stream.name)
        self._flush()

    # --- internals --------------------------------------------------------------------------

    @property
    def _handshake_done(self) -> bool:
        return self.session.phase is not Phase.HANDSHAKE

    def kick(self, reason: str, message: str) -> None:
        """Close this connection on the server's initiative (counted and logged)."""
        if not self._closing:
            self._refuse(reason, message)

    def shutdown(self) -> None:
        """Server stopping: end plays cleanly, drop the publisher."""
        if self.playing:
            self.close("server shutting down")
        else:
            self._close()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _close(self, *, abort: bool = False) -> None:
        self._closing = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _refuse(self, reason: str, message: str) -> None:
        self.server.count_refusal(reason)
        log.warning("rtmp conn=%d peer=%s closed: %s (%s)", self.id, self.peer, message, reason)
        self._close()

    def _timeout(self, what: str) -> None:
        self._deadline = None
        if not self._closing:
            self._refuse(what.replace(" ", "_"), what)

    def _rearm_idle(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(
            self.server.settings.rtmp_idle_timeout, self._timeout, "idle timeout"
        )

    def _settle(self) -> None:
        """A publish or play started: no more idle deadline."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handle(self, event: object) -> None:
        if isinstance(event, MediaReceived):
            self._media(event)
        elif isinstance(event, ConnectRequest):
            self._connect(event)
        elif isinstance(event, StreamClosed):
            self._stream_closed(event.stream_id, event.command)
        elif isinstance(event, CommandRefused):
            self.server.count_refusal("unknown_command")
            log.info("rtmp conn=%d peer=%s refused: %s", self.id, self.peer, event.reason)

    def _connect(self, event: ConnectRequest) -> None:
        app = self.server.settings.rtmp_app
        if event.app != app:
            self.session.reject_connect(f"unknown application {printable(event.app)!r}")
            self._flush()
            self._refuse("bad_app", f"connect to unknown application {printable(event.app)!r}")
            return
        self.session.accept_connect()

    async def _publish(self, event: PublishRequest) -> None:
        settings = self.server.settings
        if not self.server.accept_publishers:
            self._reject_publish(event, "not_origin", "this node does not accept publishers")
            return
        decision = await self.server.authorize(
            AccessRequest(
                Action.PUBLISH,
                f"/{settings.rtmp_app}",
                Via.RTMP,
                Credentials(stream_key=event.name),
                self.peer_ip,
            )
        )
        if self._closing:
            return
        if not decision.allowed:
            self._reject_publish(event, decision.reason, "invalid stream key")
            return
        name = decision.stream
        try:
            validate_stream_name(name, max_length=settings.stream_name_max_length)
        except InvalidStreamName as exc:
            self._reject_publish(event, "bad_name", str(exc))
            return
        if self.publishing is not None:
            self._reject_publish(event, "second_publish", "this connection already publishes")
            return
        data = self._event_data(name, stream_key_id=decision.credential_id or None)
        if self.server.admit is not None:
            verdict = await self.server.admit(data)
            if self._closing:
                return
            if not verdict.allowed:
                message = verdict.message or "refused by the admission webhook"
                self._reject_publish(event, f"admission_{verdict.reason}", message)
                return
        if self.server.claim is not None:
            refusal = await self.server.claim(name)
            if self._closing:
                return
            if refusal is not None:
                self._reject_publish(event, "stream_owned_elsewhere", refusal)
                return
        try:
            stream = self.server.hub.start_publish(name)
        except StreamBusy as exc:
            self._reject_publish(event, "stream_busy", str(exc))
            return
        self.publishing = (event.stream_id, stream)
        self.publish_key_id = decision.credential_id
        self.session.accept_publish(event.stream_id, name)
        self._settle()
        loop = asyncio.get_running_loop()
        self._publisher_check = loop.call_later(
            settings.rtmp_publisher_timeout / 2, self._check_publisher
        )
        log.info(
            "rtmp conn=%d peer=%s publish start stream=%s%s",
            self.id,
            self.peer,
            name,
            " (rtmps)" if self.over_tls else "",
        )
        self.server.notify("on_publish", data)

    def _reject_publish(self, event: PublishRequest, reason: str, message: str) -> None:
        self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", message)
        self._flush()
        # The key itself is a secret: never log it.
        self._refuse(f"publish_{reason}", f"publish refused: {message}")

    def _check_publisher(self) -> None:
        self._publisher_check = None
        if self._closing or self.publishing is None:
            return
        timeout = self.server.settings.rtmp_publisher_timeout
        if time.monotonic() - self._last_data > timeout:
            self._refuse("publisher_timeout", f"no data from publisher for {timeout:.0f} s")
            return
        loop = asyncio.get_running_loop()
        self._publisher_check = loop.call_later(timeout / 2, self._check_publisher)

    def _media(self, event: MediaReceived) -> None:
        if self.publishing is None or not event.payload:
            return  # some encoders send empty audio/video messages: nothing to relay
        packet = make_packet(event.type_id, event.timestamp, event.payload, received_at=time.time())
        self.publishing[1].push(packet)

    async def _play(self, event: PlayRequest) -> None:
        settings = self.server.settings
        try:
            name = validate_stream_name(event.name, max_length=settings.stream_name_max_length)
        except InvalidStreamName as exc:
            self.session.reject_play(event.stream_id, "NetStream.Play.StreamNotFound", str(exc))
            self._flush()
            self._refuse("play_bad_name", f"play refused: {exc}")
            return
        resource = f"/{settings.rtmp_app}/{name}"
        query = dict(parse_qsl(event.query, max_num_fields=16))
        decision = await self.server.authorize(
            AccessRequest(
                Action.PLAY, resource, Via.RTMP, Credentials(signed=query), self.peer_ip, resource
            )
        )
        if self._closing:
            return
        stream = await self.server.hub.find(name) if decision.allowed else None
        if stream is None:
            # Refused and unknown look the same: a private stream cannot be probed.
            self.session.reject_play(
                event.stream_id, "NetStream.Play.StreamNotFound", f"no stream {name}"
            )
            self._flush()
            reason = "play_not_found" if decision.allowed else f"play_{decision.reason}"
            self.server.count_refusal(reason)
            log.info("rtmp conn=%d peer=%s play refused: %s (%s)", self.id, self.peer, name, reason)
            self._close()
            return
        self.session.accept_play(event.stream_id, name)
        self._flush()
        self._settle()
        if self.transport is not None:
            limit_send_buffer(self.transport, settings.viewer_send_buffer_bytes)
        reader = stream.add_reader(self, self.server.format_for(event.stream_id))
        self.playing[event.stream_id] = (stream, reader)
        log.info(
            "rtmp conn=%d peer=%s play start stream=%s%s",
            self.id,
            self.peer,
            name,
            " (rtmps)" if self.over_tls else "",
        )
        self.server.notify("on_play", self._event_data(name))

    def _stream_closed(self, stream_id: int, command: str) -> None:
        if self.publishing is not None and self.publishing[0] == stream_id:
            _, stream = self.publishing
            self.publishing = None
            log.info(
                "rtmp conn=%d peer=%s publish stop stream=%s (%s)",
                self.id,
                self.peer,
                stream.name,
                command,
            )
            stream.publisher_left()
            self.server.notify("on_unpublish", self._event_data(stream.name, reason=command))
        entry = self.playing.pop(stream_id, None)
        if entry is not None:
            stream, reader = entry
            stream.remove_reader(reader)
            log.info("rtmp conn=%d peer=%s play stop stream=%s", self.id, self.peer, stream.name)
            self.server.notify("on_stop", self._event_data(stream.name, reason=command))

    def _event_data(self, stream: str, **extra: object) -> dict[str, object]:
        """The payload of a webhook event about `stream` on this connection (no secrets)."""
        return {
            "stream": stream,
            "app": self.server.settings.rtmp_app,
            "protocol": "rtmp",
            "client_ip": self.peer_ip,
            "connection_id": self.id,
            **extra,
        }

    def _cleanup(self, why: str) -> None:
        self._closing = True
        if self._decision_task is not None:
            self._decision_task.cancel()
        self.server.connections.discard(self)
        for timer in (self._deadline, self._publisher_check):
            if timer is not None:
                timer.cancel()
        self._deadline = self._publisher_check = None
        if self.publishing is not None:
            stream_id = self.publishing[0]
            self._stream_closed(stream_id, why)
        for stream_id in list(self.playing):
            self._stream_closed(stream_id, why)
