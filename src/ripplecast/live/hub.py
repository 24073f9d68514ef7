"""The hub: the registry of live streams on this node, keyed by name.

It decides who owns a name (one publisher at a time; a returning publisher continues a stream in
its grace period) and attaches the packet listeners (HLS packager, ...) that every new stream
gets. It knows nothing of sockets or HTTP: adapters call it.

`find` is how viewers' adapters look a stream up: a local stream, else, on an edge, one mirrored
from the node that has it (`RemoteStreams`, injected).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from ripplecast.config import Settings
from ripplecast.errors import RipplecastError
from ripplecast.live.stream import LiveStream, PacketListener, StreamState

log = logging.getLogger("ripplecast.live")

ListenerFactory = Callable[[LiveStream], PacketListener]


class StreamBusy(RipplecastError):
    """The name already has a live publisher."""


class RemoteStreams(Protocol):
    """Streams of other nodes, mirrored on demand (an edge's puller)."""

    async def find(self, name: str) -> LiveStream | None:
        """The local mirror of stream `name`, started if needed; None if no node has it."""


class Hub:
    """Registry of this node's live streams (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.time,
        listener_factories: Sequence[ListenerFactory] = (),
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._clock = clock
        self._factories = list(listener_factories)
        self._streams: dict[str, LiveStream] = {}
        self.publishes_refused = 0
        self.remote: RemoteStreams | None = None
        """Where `find` looks for streams this node does not have (set on an edge)."""
        self.on_stream_ended: list[Callable[[LiveStream], None]] = []
        """Called with each stream that ended and left the hub."""

    def get(self, name: str) -> LiveStream | None:
        """Return the stream called `name`, live or waiting for its publisher, or None."""
        return self._streams.get(name)

    async def find(self, name: str) -> LiveStream | None:
        """The stream called `name` for a viewer: local, else mirrored from another node."""
        stream = self._streams.get(name)
        if stream is not None or self.remote is None:
            return stream
        return await self.remote.find(name)

    def __iter__(self) -> Iterator[LiveStream]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def start_publish(self, name: str) -> LiveStream:
        """Give `name` to a new publisher and return its stream.

        A stream waiting in its grace period is continued; a live one raises `StreamBusy`.
        """
        stream = self._streams.get(name)
        if stream is not None:
            if stream.state is StreamState.WAITING:
                stream.publisher_returned()
                log.info("stream %s: publisher returned within the grace period", name)
                return stream
            self.publishes_refused += 1
            raise StreamBusy(f"stream {name} is already being published")
        loop = self._loop or asyncio.get_running_loop()
        stream = LiveStream(
            name, self._settings, loop=loop, clock=self._clock, on_ended=self._forget
        )
        for factory in self._factories:
            stream.add_listener(factory(stream))
        self._streams[name] = stream
        return stream

    def _forget(self, stream: LiveStream) -> None:
        if self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
            for callback in self.on_stream_ended:
                callback(stream)

    def close(self, reason: str = "server shutting down") -> None:
        """End every stream (readers and packagers are closed)."""
        for stream in list(self._streams.values()):
            stream.end(reason)
