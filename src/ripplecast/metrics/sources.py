"""What the collectors read from components of the layer above them (the RTMP server, the live
HTTP routes, an edge's puller): just the counters, as small protocols, so this package imports
none of those adapters (they, and `app`, import it)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from ripplecast.live.stream import LiveStream


class RefusalSource(Protocol):
    """A server counting what it refused, by reason (`LiveRoutes`)."""

    @property
    def refused(self) -> Mapping[str, int]: ...


class RtmpConnectionLike(Protocol):
    """One RTMP connection: publishing something or not."""

    @property
    def publishing(self) -> object | None: ...


class RtmpSource(RefusalSource, Protocol):
    """The RTMP server: its refusals and open connections (`RtmpServer`)."""

    @property
    def connections(self) -> Collection[RtmpConnectionLike]: ...


class UpstreamLike(Protocol):
    """One stream an edge pulls (`Upstream`): its local mirror once the first connection
    delivered media."""

    @property
    def stream(self) -> LiveStream | None: ...


class PullerSource(Protocol):
    """An edge's puller (`EdgePuller`)."""

    @property
    def upstreams(self) -> Mapping[str, UpstreamLike]: ...

    @property
    def events(self) -> Mapping[str, int]: ...

    @property
    def reconnects(self) -> int: ...
