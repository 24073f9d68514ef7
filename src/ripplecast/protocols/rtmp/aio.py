"""RTMP client over asyncio: the thin adapter around the sans-I/O `ClientSession`.

`RtmpClient` opens a TCP connection, moves bytes between the socket and the session, and turns
the request/answer pairs into awaitables:

    client = RtmpClient()
    await client.connect("rtmp://127.0.0.1:1935/live", timeout=5)
    await client.publish("cam")                      # or: await client.play("cam")
    await client.send_media(9, timestamp, payload)   # waits while the socket buffer is full
    async for event in client: ...                   # media and status events, until closed
    await client.close()

Events are queued for `read_event()` (reading pauses while the queue holds `max_queue` events),
or, for media, handed synchronously to an `on_media` callback with no queue and no task switch:
that and `skim_media=N` (see `ClientSession`) make a player cheap enough for a load generator.

Errors: `RequestRefused` when the server says no (connect rejected, NetStream.Publish.BadName,
NetStream.Play.StreamNotFound, ...), `ConnectionClosed` when it hangs up first, `ProtocolError`
when its bytes are malformed, `TimeoutError` from the `timeout` arguments, `UsageError` for calls
in the wrong order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

from ripplecast.errors import ProtocolError, RipplecastError, UsageError
from ripplecast.protocols.rtmp.client import (
    CallFailed,
    ClientLimits,
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
    StreamCreated,
)

__all__ = ["ConnectionClosed", "RequestRefused", "RtmpClient", "RtmpClientError", "parse_url"]

DEFAULT_PORT = 1935


class RtmpClientError(RipplecastError):
    """Base of the errors `RtmpClient` raises about the server's answers."""


class RequestRefused(RtmpClientError):
    """The server refused connect, createStream, publish or play."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description


class ConnectionClosed(RtmpClientError):
    """The connection closed before the awaited answer came."""


def parse_url(url: str) -> tuple[str, int, str]:
    """Return `(host, port, app)` of `rtmp://host[:port]/app`; raises UsageError otherwise."""
    parts = urlsplit(url)
    app = parts.path.strip("/")
    if parts.scheme != "rtmp" or not parts.hostname or not app:
        raise UsageError(f"not an rtmp://host[:port]/app URL: {url!r}")
    return parts.hostname, parts.port or DEFAULT_PORT, app


MediaCallback = Callable[[MediaReceived | MediaSkimmed], None]


class _Protocol(asyncio.Protocol):
    """Moves bytes between the transport and the session; queues or hands out events."""

    def __init__(self, client: RtmpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain: asyncio.Future[None] | None = None
        self.paused_writing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.client._protocol = self
        self.client._flush()

    def data_received(self, data: bytes) -> None:
        client = self.client
        session = client.session
        on_media = client.on_media
        try:
            session.receive_data(data)
            while (event := session.next_event()) is not None:
                if on_media is not None and isinstance(event, MediaSkimmed | MediaReceived):
                    on_media(event)
                else:
                    client._queue_event(event)
        except ProtocolError as exc:
            client.error = exc
            client._flush()
            if self.transport is not None:
                self.transport.close()
            return
        client._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.client._queue_end()
        self._wake()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._wake()

    def _wake(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    async def drain(self) -> None:
        if not self.paused_writing or self.lost.done():
            return
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        await self._drain


class RtmpClient:
    """One RTMP client connection (see module docstring).

    `skim_media`: read audio/video without copying, as `MediaSkimmed` with this many head bytes.
    `on_media`: called with every media event instead of queueing it (must not block).
    `drain_threshold`: `send_media` waits while more than this many bytes are unsent.
    `max_queue`: reading pauses while this many events wait for `read_event`.
    `request_timeout`: seconds `connect`, `publish` and `play` wait for their answer.
    """

    def __init__(
        self,
        *,
        limits: ClientLimits | None = None,
        skim_media: int | None = None,
        on_media: MediaCallback | None = None,
        drain_threshold: int = 256 * 1024,
        max_queue: int = 1024,
        request_timeout: float = 10.0,
    ) -> None:
        self.session = ClientSession(limits, skim_media=skim_media)
        self.on_media = on_media
        self.drain_threshold = drain_threshold
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.error: ProtocolError | None = None
        """The server's protocol violation that closed the connection, if any."""
        self.stream_id: int | None = None
        """The message stream id publishing or playing, once started."""
        self._protocol: _Protocol | None = None
        self._events: deque[Event | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._reading_paused = False

    # --- connection -------------------------------------------------------------------------

    async def connect(self, url: str, *, timeout: float | None = None) -> Connected:  # noqa: ASYNC109
        """Open the TCP connection, handshake and `connect` to the app of `url`.

        `timeout` bounds the three steps together (default `request_timeout`).
        Returns the Connected event. Raises RequestRefused (connect rejected), ConnectionClosed,
        ProtocolError, TimeoutError, OSError (e.g. connection refused).
        """
        if self._protocol is not None:
            raise UsageError("connect was already called")
        host, port, app = parse_url(url)
        self.session.connect(app, f"rtmp://{host}:{port}/{app}")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.request_timeout if timeout is None else timeout):
            _, protocol = await loop.create_connection(lambda: _Protocol(self), host, port)
            self._protocol = protocol
            assert protocol.transport is not None
            protocol.transport.set_write_buffer_limits(high=self.drain_threshold)
            event = await self._wait_for(Connected, ConnectFailed)
        if isinstance(event, ConnectFailed):
            raise RequestRefused(event.code, event.description)
        assert isinstance(event, Connected)
        return event

    async def _create_stream(self) -> int:
        self.session.create_stream()
        self._flush()
        event = await self._wait_for(StreamCreated, CallFailed)
        if isinstance(event, CallFailed):
            raise RequestRefused(event.code or "createStream failed", event.description)
        assert isinstance(event, StreamCreated)
        return event.stream_id

    async def publish(self, name: str) -> int:
        """createStream and publish `name`; return the message stream id once started.

        Raises RequestRefused (e.g. NetStream.Publish.BadName), ConnectionClosed, TimeoutError
        (after `request_timeout`).
        """
        async with asyncio.timeout(self.request_timeout):
            stream_id = await self._create_stream()
            self.session.publish(stream_id, name)
            self._flush()
            event = await self._wait_for(PublishStarted, PublishFailed)
        if isinstance(event, PublishFailed):
            raise RequestRefused(event.code, event.description)
        self.stream_id = stream_id
        return stream_id

    async def play(self, name: str) -> int:
        """createStream and play `name`; return the message stream id once started.

        Media follows as events (or `on_media` calls). Raises RequestRefused (e.g.
        NetStream.Play.StreamNotFound), ConnectionClosed, TimeoutError.
        """
        async with asyncio.timeout(self.request_timeout):
            stream_id = await self._create_stream()
            self.session.play(stream_id, name)
            self._flush()
            event = await self._wait_for(PlayStarted, PlayFailed)
        if isinstance(event, PlayFailed):
            raise RequestRefused(event.code, event.description)
        self.stream_id = stream_id
        return stream_id

    async def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Send one audio (8), video (9) or data (18) message on the publishing stream.

        Waits while the socket's unsent bytes are above `drain_threshold`. Raises
        ConnectionClosed if the connection is gone, UsageError before `publish`.
        """
        protocol = self._protocol
        if self.stream_id is None or protocol is None:
            raise UsageError("send_media before publish")
        if protocol.lost.done():
            raise ConnectionClosed("the server closed the connection")
        self.session.send_media(self.stream_id, type_id, timestamp, payload)
        self._flush()
        if protocol.paused_writing:
            await protocol.drain()

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet sent."""
        transport = self._protocol.transport if self._protocol else None
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._protocol is not None and self._protocol.lost.done()

    async def close(self, *, grace: float = 2.0) -> None:
        """Stop publishing/playing (closeStream, deleteStream) and close the connection.

        Waits up to `grace` seconds for the server to see the close, then aborts.
        """
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return
        if not protocol.lost.done():
            if self.stream_id is not None:
                with contextlib.suppress(UsageError):
                    self.session.close_stream(self.stream_id)
                self._flush()
            protocol.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.lost), grace)
            if not protocol.lost.done():
                protocol.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once (no closing commands)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()

    async def __aenter__(self) -> RtmpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- events -----------------------------------------------------------------------------

    async def read_event(self) -> Event | None:
        """Return the next queued event; None once the connection has closed.

        Raises the ProtocolError that closed the connection, if one did.
        """
        while not self._events:
            if self._ended:
                if self.error is not None:
                    raise self.error
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if event is None:
            self._ended = True
            return await self.read_event()
        if self._reading_paused and len(self._events) <= self.max_queue // 2:
            self._reading_paused = False
            if self._protocol is not None and self._protocol.transport is not None:
                self._protocol.transport.resume_reading()
        return event

    def __aiter__(self) -> RtmpClient:
        return self

    async def __anext__(self) -> Event:
        event = await self.read_event()
        if event is None:
            raise StopAsyncIteration
        return event

    # --- internals --------------------------------------------------------------------------

    async def _wait_for(self, *types: type) -> Event:
        """Take events until one of `types`; the others stay queued, in order."""
        skipped: list[Event] = []
        try:
            while True:
                event = await self.read_event()
                if event is None:
                    raise ConnectionClosed("the server closed the connection")
                if isinstance(event, types):
                    return event
                skipped.append(event)
        finally:
            self._events.extendleft(reversed(skipped))

    def _flush(self) -> None:
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        if transport is None or transport.is_closing():
            return
        out = self.session.data_to_send()
        if out:
            transport.write(out)

    def _queue_event(self, event: Event) -> None:
        self._events.append(event)
        self._wake()
        if not self._reading_paused and len(self._events) >= self.max_queue:
            protocol = self._protocol
            if protocol is not None and protocol.transport is not None:
                self._reading_paused = True
                protocol.transport.pause_reading()

    def _queue_end(self) -> None:
        self._events.append(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
