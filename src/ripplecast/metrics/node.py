"""One node's metrics: its own registry, the collectors that read its components at scrape time,
the few instruments observed where no counter exists, the event-loop lag probe, and the HTTP
side (`GET /metrics` and the request-latency middleware).

Each node has its own `CollectorRegistry`, never prometheus_client's global one: several nodes
can run in one process (the tests do), and a registry is what one `/metrics` shows.

Observation points, all off the packet path: an HLS segment cut (once every few seconds per
stream), a transcoding attempt's end, an HTTP response head (`on_response_prepare`), and a timer
every `LAG_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

from ripplecast.accounts.policy import AccessPolicy
from ripplecast.cluster import Heartbeat
from ripplecast.cluster.claims import OwnedStreams
from ripplecast.config import Settings
from ripplecast.live.hls import HlsSegment
from ripplecast.live.hub import Hub
from ripplecast.live.stream import BatchFormat
from ripplecast.metrics import specs as c
from ripplecast.metrics.components import (
    AccessCollector,
    ClusterCollector,
    EdgeCacheCollector,
    JobsCollector,
    ProcessMetrics,
    UploadsCollector,
)
from ripplecast.metrics.sources import PullerSource, RefusalSource, RtmpSource
from ripplecast.metrics.specs import MetricSpec
from ripplecast.metrics.streams import LiveCollector, StreamLabels
from ripplecast.storage import CachingStorage
from ripplecast.vod.jobs import JobQueue
from ripplecast.vod.uploads import Uploads
from ripplecast.vod.worker import Worker

LAG_INTERVAL_SECONDS = 0.5
"""The event-loop lag probe's timer: how late it fires is the lag."""
UNMATCHED_ROUTE = "_unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods that are their own label value; any other is "other"."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_STARTED = web.RequestKey("ripplecast_metrics_started", float)

# No `_created` series beside each counter and histogram: in the text format they are gauges
# of their own that double the series count and that Prometheus does not need. (A setting of
# the prometheus_client library, for the whole process.)
disable_created_metrics()  # type: ignore[no-untyped-call]


def _histogram(spec: MetricSpec, registry: CollectorRegistry) -> Histogram:
    return Histogram(
        spec.name, spec.help, list(spec.labels), buckets=spec.buckets, registry=registry
    )


def _counter(spec: MetricSpec, registry: CollectorRegistry) -> Counter:
    return Counter(spec.family_name, spec.help, list(spec.labels), registry=registry)


def route_of(request: web.BaseRequest) -> str:
    """The route pattern a request matched (`/live/{name}.flv`), never its raw path."""
    match_info = getattr(request, "match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


class NodeMetrics:
    """See the module docstring. Build it first, hand its hooks to the components
    (`segment_cut` to HLS packagers, `http_middleware`/`on_response_prepare`/`handle` to the HTTP
    app), `watch_*` the components once they exist, then `start()` with the node and `close()`."""

    def __init__(self, settings: Settings, *, version: str) -> None:
        self.registry = registry = CollectorRegistry()
        registry.register(ProcessMetrics())
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.stream_labels = StreamLabels(
            enabled=settings.metrics_stream_labels, limit=settings.metrics_max_labelled_streams
        )
        info = Gauge(c.BUILD_INFO.name, c.BUILD_INFO.help, c.BUILD_INFO.labels, registry=registry)
        info.labels(version, platform.python_version(), settings.role.value).set(1)
        self._http_duration = _histogram(c.HTTP_DURATION, registry)
        self._http_bytes = _counter(c.HTTP_RESPONSE_BYTES, registry)
        self._lag = _histogram(c.EVENT_LOOP_LAG, registry)
        self._segments: Histogram | None = None
        self._job_duration: Histogram | None = None
        self._job_failures: Counter | None = None
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._lag_task: asyncio.Task[None] | None = None

    def _register(self, collector: Collector) -> None:
        self.registry.register(collector)

    # --- components ------------------------------------------------------------------------

    def watch_live(
        self,
        hub: Hub,
        *,
        http_flv: BatchFormat,
        rtmp: RtmpSource | None,
        live_http: RefusalSource | None,
        puller: PullerSource | None,
    ) -> None:
        """Report the hub's streams and viewers, the servers' refusals, an edge's upstreams,
        and the HLS segments `segment_cut` is told about."""
        self._register(
            LiveCollector(
                hub,
                self.stream_labels,
                http_flv=http_flv,
                rtmp=rtmp,
                live_http=live_http,
                puller=puller,
            )
        )
        self._segments = _histogram(c.HLS_SEGMENT_DURATION, self.registry)

    def watch_access(self, policy: AccessPolicy) -> None:
        self._register(AccessCollector(policy))

    def watch_edge_cache(self, cache: CachingStorage) -> None:
        self._register(EdgeCacheCollector(cache))

    def watch_uploads(self, uploads: Uploads) -> None:
        self._register(UploadsCollector(uploads))

    def watch_jobs(self, jobs: JobQueue) -> None:
        collector = JobsCollector(jobs)
        self._register(collector)
        self._refreshers.append(collector.refresh)

    def watch_worker(self, worker: Worker) -> None:
        """Time the worker's attempts and count its failures."""
        if self._job_duration is None:
            self._job_duration = _histogram(c.JOB_DURATION, self.registry)
            self._job_failures = _counter(c.JOB_FAILURES, self.registry)
        worker.on_job_finished = self.job_finished

    def watch_cluster(self, heartbeat: Heartbeat, claims: OwnedStreams | None) -> None:
        self._register(ClusterCollector(heartbeat, claims))

    # --- observation points ----------------------------------------------------------------

    def segment_cut(self, segment: HlsSegment) -> None:
        """An HLS packager finished `segment`."""
        if self._segments is not None:
            self._segments.observe(segment.duration)

    def job_finished(self, outcome: str, seconds: float) -> None:
        """A transcoding attempt ended (`Worker.on_job_finished`)."""
        if self._job_duration is None or self._job_failures is None:
            return
        self._job_duration.labels(outcome).observe(seconds)
        if outcome in ("retried", "failed"):
            self._job_failures.labels(outcome).inc()

    # --- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def http_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Notes when a request arrived (the outermost middleware, so all others count)."""
        request[_STARTED] = time.perf_counter()
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """A response head is about to be sent: observe the latency by route, and count the
        body's bytes when its length is known."""
        started = request.get(_STARTED)
        if started is None:
            return
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"
        status = f"{response.status // 100}xx"
        self._http_duration.labels(route, method, status).observe(time.perf_counter() - started)
        size = response.content_length
        if size and request.method != "HEAD":
            self._http_bytes.labels(route).inc(size)

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the registry in the text format the scraper asks for (Prometheus
        text 0.0.4 by default, OpenMetrics when accepted)."""
        for refresh in self._refreshers:
            await refresh()
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (without refreshing the job counts)."""
        encode, _ = choose_encoder("")
        return encode(self.registry)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the event-loop lag probe (in the running loop)."""
        if self._lag_task is None:
            self._lag_task = asyncio.create_task(self._probe_lag(), name="metrics: loop lag")

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_INTERVAL_SECONDS)
            self._lag.observe(max(0.0, loop.time() - before - LAG_INTERVAL_SECONDS))

    async def close(self) -> None:
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
