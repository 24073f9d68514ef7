"""Edge pull: an edge mirrors a live stream from the origin that owns it, once per stream.

`EdgePuller` is the hub's `RemoteStreams`: a viewer asking this edge for NAME (HTTP-FLV, RTMP or
HLS) makes the hub call `find(NAME)`. The first call starts an `Upstream`; every other call,
concurrent or later, shares it, so one edge holds ONE upstream per stream however many viewers
it has. The upstream:

1. locates the owner (`Locate`: the stream's claim and the owner's internal HTTP address in the
   registry); no owner means no such stream, and `find` answers None at once (a fast 404);
2. reads the owner's HTTP-FLV (`/live/NAME.flv`) with a short-lived cluster token in a header,
   and pushes every tag into a local `LiveStream`, created by the hub as for a publisher, so the
   local HLS packager, HTTP-FLV and RTMP readers work unchanged. Tags keep the origin's
   timestamps, so the HLS segment names (media-clock numbers) match the origin's;
3. when the upstream breaks (origin killed, network cut), keeps the viewers connected for
   `edge_failover_seconds` while it looks the owner up again every `edge_retry_seconds`, and
   resumes from whichever origin owns the stream then: the local stream sees a returning
   publisher (a discontinuity; timestamps continue). When the origin ends the response cleanly,
   the stream is over there: the local one ends too, unless another node owns it now;
4. closes itself `edge_idle_seconds` after the last viewer left (readers and HLS players).

Every limit is a setting; every failure is logged with the stream and origin and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ripplecast.accounts.cluster_tokens import HEADER, pull_token
from ripplecast.config import Settings
from ripplecast.errors import LimitExceeded, ProtocolError
from ripplecast.live.hls import HlsPackager
from ripplecast.live.hub import Hub, StreamBusy
from ripplecast.live.stream import LiveStream, StreamState
from ripplecast.media.flv import FlvReader, FlvTag, make_packet

__all__ = ["EdgePuller", "Locate", "Origin", "Upstream"]

log = logging.getLogger("ripplecast.edge")

TOKEN_LIFETIME_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a stream can be pulled from right now."""

    node_id: str
    http: str
    """The owner's internal HTTP base URL (http://10.0.0.5:8080)."""


Locate = Callable[[str], Awaitable[Origin | None]]
"""The node that owns stream NAME now, or None (raises nothing: a lookup failure is None)."""


class _Ended(Exception):
    """The origin ended its response cleanly: the stream is over there."""


class Upstream:
    """One stream pulled from its origin into the local hub (see the module docstring)."""

    def __init__(self, puller: EdgePuller, name: str) -> None:
        self._puller = puller
        self.name = name
        self.stream: LiveStream | None = None
        self.origin: Origin | None = None
        self.connects = 0
        """Connections opened to an origin (1 + the reconnections)."""
        self._last_viewer = time.monotonic()
        self._delivered = False
        """True once the current connection has delivered media."""
        self.started: asyncio.Future[LiveStream | None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"edge upstream {name}")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _start(self, result: LiveStream | None) -> None:
        if not self.started.done():
            self.started.set_result(result)

    async def _run(self) -> None:
        settings = self._puller.settings
        try:
            await self._pull_until_over(settings)
        except asyncio.CancelledError:
            self._end("edge shutting down")
            raise
        except Exception:  # a bug must not leave viewers hanging: end and say so
            log.exception("stream %s: edge upstream failed", self.name)
            self._end("edge upstream failed")
        finally:
            self._start(None)
            self._puller.forget(self)

    async def _pull_until_over(self, settings: Settings) -> None:
        broken_since: float | None = None
        while True:
            origin = await self._puller.locate(self.name)
            if origin is None:
                if self.stream is None:
                    self._puller.count("not_found")
                    return  # nobody has it: a fast 404
                if broken_since is None or self._expired(broken_since):
                    self._end("no origin has the stream any more")
                    return
                await asyncio.sleep(settings.edge_retry_seconds)
                continue
            try:
                await self._pull(origin)
            except _Ended:
                self._puller.count("origin_ended")
                successor = await self._puller.locate(self.name)
                if successor is None or successor.node_id == origin.node_id:
                    self._end("stream ended on its origin")
                    return
                broken_since = time.monotonic()
                continue
            except _Idle:
                self._end("no viewers left")
                return
            except (aiohttp.ClientError, TimeoutError, ProtocolError, LimitExceeded) as exc:
                self._puller.count("upstream_broken")
                # The first failure of an outage is a warning; the retries that follow are not.
                level = logging.DEBUG if broken_since is not None else logging.WARNING
                log.log(
                    level,
                    "stream %s: upstream from %s (%s) broke: %s",
                    self.name,
                    origin.node_id,
                    origin.http,
                    exc or type(exc).__name__,
                )
            if self.stream is None:
                return  # never started: the viewer gets a 404 rather than a long wait
            if self._delivered:
                broken_since = None  # that connection worked: a new outage starts now
            if self.stream.state is StreamState.LIVE:
                self.stream.publisher_left(settings.edge_failover_seconds)
            if self.stream.state is StreamState.ENDED:
                return
            if broken_since is None:
                broken_since = time.monotonic()
            elif self._expired(broken_since):
                self._end("origin did not come back")
                return
            await asyncio.sleep(settings.edge_retry_seconds)

    def _expired(self, since: float) -> bool:
        return time.monotonic() - since > self._puller.settings.edge_failover_seconds

    async def _pull(self, origin: Origin) -> None:
        """Read `origin`'s HTTP-FLV into the local stream until it ends (raises why)."""
        puller = self._puller
        settings = puller.settings
        resource = f"/live/{self.name}"
        token = pull_token(
            puller.secret, resource, expires_at=int(time.time()) + TOKEN_LIFETIME_SECONDS
        )
        url = f"{origin.http.rstrip('/')}{resource}.flv"
        self.connects += 1
        if self.connects > 1:
            puller.reconnects += 1
        self._delivered = False
        async with puller.session.get(url, headers={HEADER: token}) as response:
            if response.status == 404:
                raise _Ended()
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info,
                    (),
                    status=response.status,
                    message=f"origin answered {response.status}",
                )
            self.origin = origin
            log.info(
                "stream %s: pulling from %s (%s)%s",
                self.name,
                origin.node_id,
                origin.http,
                f", connection {self.connects}" if self.connects > 1 else "",
            )
            reader = FlvReader(max_tag_size=settings.edge_upstream_max_tag_bytes)
            resumed = False
            idle_check = time.monotonic() + settings.edge_idle_seconds
            async for data in response.content.iter_any():
                reader.feed(data)
                while (event := reader.next_event()) is not None:
                    if isinstance(event, FlvTag) and event.payload:
                        if not resumed:
                            resumed = True
                            self._publish()
                        packet = make_packet(
                            event.kind, event.timestamp, event.payload, received_at=time.time()
                        )
                        assert self.stream is not None
                        self.stream.push(packet)
                now = time.monotonic()
                if now >= idle_check:
                    idle_check = now + min(1.0, settings.edge_idle_seconds / 4 or 1.0)
                    self._check_idle(now)
        raise _Ended()

    def _publish(self) -> None:
        """The first tag of a connection: take the stream in the hub (new, or resumed)."""
        hub = self._puller.hub
        try:
            stream = hub.start_publish(self.name)
        except StreamBusy:
            # A local publisher has the name (an `all` node): nothing to mirror.
            raise _Ended() from None
        if self.stream is not None and stream is not self.stream:
            log.info("stream %s: the previous mirror had ended; started anew", self.name)
        self.stream = stream
        self._delivered = True
        self._last_viewer = time.monotonic()
        self._start(stream)

    def _check_idle(self, now: float) -> None:
        stream = self.stream
        if stream is None:
            return
        if stream.state is StreamState.ENDED:
            raise _Idle()
        if self._watched(stream, now):
            self._last_viewer = now
        elif now - self._last_viewer > self._puller.settings.edge_idle_seconds:
            raise _Idle()

    @staticmethod
    def _watched(stream: LiveStream, now: float) -> bool:
        if stream.reader_count:
            return True
        return any(
            isinstance(listener, HlsPackager) and listener.audience.count(now)
            for listener in stream.listeners
        )

    def _end(self, reason: str) -> None:
        stream = self.stream
        if stream is not None and stream.state is not StreamState.ENDED:
            stream.end(reason)
        log.info("stream %s: edge upstream closed: %s", self.name, reason)


class _Idle(Exception):
    """Nobody watched the mirror for `edge_idle_seconds`."""


class EdgePuller:
    """The hub's `RemoteStreams` on an edge: one `Upstream` per stream (module docstring)."""

    def __init__(self, settings: Settings, hub: Hub, locate: Locate, *, secret: bytes) -> None:
        self.settings = settings
        self.hub = hub
        self.locate = locate
        self.secret = secret
        self.upstreams: dict[str, Upstream] = {}
        self.events: Counter[str] = Counter()
        """Upstream outcomes by kind (not_found, upstream_broken, origin_ended, full)."""
        self.reconnects = 0
        """Connections opened again for an upstream that had one before (every stream)."""
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self.settings
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=settings.edge_connect_timeout_seconds,
                    # Silence longer than the origin's own grace period means it is gone.
                    sock_read=settings.edge_connect_timeout_seconds
                    + settings.reconnect_grace_seconds,
                ),
                auto_decompress=False,
            )
        return self._session

    def count(self, kind: str) -> None:
        self.events[kind] += 1

    async def find(self, name: str) -> LiveStream | None:
        """The local mirror of `name`, pulled from its owner if needed; None if nobody has it
        (or the edge cannot reach it within `edge_connect_timeout_seconds`)."""
        upstream = self.upstreams.get(name)
        if upstream is None:
            if len(self.upstreams) >= self.settings.edge_max_upstreams:
                self.count("full")
                log.warning("stream %s: not pulled: edge_max_upstreams reached", name)
                return None
            upstream = self.upstreams[name] = Upstream(self, name)
        elif upstream.stream is not None and upstream.stream.state is not StreamState.ENDED:
            return upstream.stream
        try:
            return await asyncio.wait_for(
                asyncio.shield(upstream.started), self.settings.edge_connect_timeout_seconds
            )
        except TimeoutError:
            return None

    def forget(self, upstream: Upstream) -> None:
        if self.upstreams.get(upstream.name) is upstream:
            del self.upstreams[upstream.name]

    async def close(self) -> None:
        """Close every upstream (their streams end) and the HTTP client."""
        for upstream in list(self.upstreams.values()):
            await upstream.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
