"""Collectors of the node's other components, each reading counters the component keeps anyway:
the access policy's denials, the edge VOD cache, uploads, the job queue (the one that needs a
database query, refreshed before a scrape), the cluster heartbeat and stream claims; and the
process itself."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping

from prometheus_client.metrics_core import Metric

from ripplecast.accounts.policy import AccessPolicy
from ripplecast.cluster import Heartbeat
from ripplecast.cluster.claims import OwnedStreams
from ripplecast.metrics import specs as c
from ripplecast.metrics.specs import MetricSpec
from ripplecast.metrics.streams import bounded
from ripplecast.storage import CachingStorage
from ripplecast.vod.jobs import JobQueue
from ripplecast.vod.uploads import Uploads

log = logging.getLogger("ripplecast.metrics")

JOB_COUNTS_MAX_AGE_SECONDS = 5.0
"""Job counts younger than this are reused: many scrapers cost one query per period."""
JOB_COUNTS_TIMEOUT_SECONDS = 2.0
"""A scrape waits this long for the job counts, then answers without them."""
OPEN_FDS_MAX_AGE_SECONDS = 5.0
"""The open descriptors are counted again after this long (listing them costs as much as the
node has connections)."""


def _value(spec: MetricSpec, value: float) -> Metric:
    family = spec.family()
    family.add_metric([], value)
    return family


def _labelled(spec: MetricSpec, values: Mapping[str, float]) -> Metric:
    family = spec.family()
    for label, value in values.items():
        family.add_metric([label], value)
    return family


class AccessCollector:
    """The access policy's denials by protocol and reason."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    def describe(self) -> list[Metric]:
        return [c.AUTH_DENIALS.family()]

    def collect(self) -> list[Metric]:
        family = c.AUTH_DENIALS.family()
        for key, count in bounded(self._policy.denials).items():
            via, _, reason = key.partition(":")
            family.add_metric([via, reason or "_other"], count)
        return [family]


class EdgeCacheCollector:
    """The edge VOD cache's counters and sizes."""

    def __init__(self, cache: CachingStorage) -> None:
        self._cache = cache

    def describe(self) -> list[Metric]:
        return [spec.family() for spec in _EDGE_CACHE]

    def collect(self) -> list[Metric]:
        cache = self._cache
        return [
            _labelled(c.VOD_CACHE_HITS, {"memory": cache.hits_memory, "disk": cache.hits_disk}),
            _value(c.VOD_CACHE_MISSES, cache.misses),
            _value(c.VOD_CACHE_COALESCED, cache.coalesced),
            _value(c.VOD_CACHE_PASSTHROUGHS, cache.passthroughs),
            _value(c.VOD_CACHE_EVICTIONS, cache.evictions),
            _labelled(
                c.VOD_CACHE_ERRORS, {"damaged": cache.damaged, "disk_write": cache.disk_errors}
            ),
            _value(c.VOD_CACHE_FETCHED, cache.bytes_fetched),
            _labelled(c.VOD_CACHE_USED, {"memory": cache.memory_used, "disk": cache.disk_used}),
        ]


_EDGE_CACHE = (
    c.VOD_CACHE_HITS,
    c.VOD_CACHE_MISSES,
    c.VOD_CACHE_COALESCED,
    c.VOD_CACHE_PASSTHROUGHS,
    c.VOD_CACHE_EVICTIONS,
    c.VOD_CACHE_ERRORS,
    c.VOD_CACHE_FETCHED,
    c.VOD_CACHE_USED,
)


class UploadsCollector:
    """Upload bytes received and refusals."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads

    def describe(self) -> list[Metric]:
        return [c.UPLOAD_BYTES.family(), c.UPLOAD_REFUSALS.family()]

    def collect(self) -> list[Metric]:
        uploads = self._uploads
        return [
            _value(c.UPLOAD_BYTES, uploads.bytes_received),
            _labelled(c.UPLOAD_REFUSALS, bounded(uploads.refused)),
        ]


class JobsCollector:
    """The job queue's depth by state. Counting needs a database query, which a collector
    (called synchronously) cannot make: `refresh` runs it before each scrape, at most once per
    `JOB_COUNTS_MAX_AGE_SECONDS`, and `collect` reports its result. When the database does not
    answer, the family has no samples (rather than stale ones) and the failure is logged once."""

    def __init__(self, jobs: JobQueue, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs = jobs
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._counted_at: float | None = None
        self._failing = False
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one query
            now = self._clock()
            if self._counted_at is not None and now - self._counted_at < (
                JOB_COUNTS_MAX_AGE_SECONDS
            ):
                return
            try:
                counts = await asyncio.wait_for(self._jobs.counts(), JOB_COUNTS_TIMEOUT_SECONDS)
            except Exception as exc:
                self._counts, self._counted_at = {}, None
                if not self._failing:
                    log.warning("metrics: cannot count the transcoding jobs: %s", exc)
                self._failing = True
                return
            if self._failing:
                log.info("metrics: counting the transcoding jobs works again")
            self._failing = False
            self._counts = {str(state.value): number for state, number in counts.items()}
            self._counted_at = now

    def describe(self) -> list[Metric]:
        return [c.JOBS.family()]

    def collect(self) -> list[Metric]:
        return [_labelled(c.JOBS, self._counts)]


class ClusterCollector:
    """This node's heartbeats and, on an origin, its stream claims."""

    def __init__(self, heartbeat: Heartbeat, claims: OwnedStreams | None) -> None:
        self._heartbeat = heartbeat
        self._claims = claims

    def describe(self) -> list[Metric]:
        specs = [c.HEARTBEATS, c.HEARTBEAT_FAILURES]
        if self._claims is not None:
            specs += _CLAIMS
        return [spec.family() for spec in specs]

    def collect(self) -> list[Metric]:
        families = [
            _value(c.HEARTBEATS, self._heartbeat.beats),
            _value(c.HEARTBEAT_FAILURES, self._heartbeat.failures),
        ]
        claims = self._claims
        if claims is not None:
            families += [
                _value(c.CLAIMS, len(claims.held())),
                _value(c.CLAIM_REFUSALS, claims.refused),
                _value(c.CLAIMS_LOST, claims.lost),
                _value(c.CLAIMS_RECLAIMED, claims.reclaimed),
            ]
        return families


_CLAIMS = [c.CLAIMS, c.CLAIM_REFUSALS, c.CLAIMS_LOST, c.CLAIMS_RECLAIMED]


class ProcessMetrics:
    """The standard `process_*` metrics, for less than prometheus_client's ProcessCollector
    costs a server holding thousands of sockets: one read of /proc/self/stat, the descriptor
    limit from getrlimit rather than by parsing /proc/self/limits, and the open descriptors (a
    directory listing as long as the node has connections) counted at most every
    `OPEN_FDS_MAX_AGE_SECONDS`. Without /proc (not Linux) it reports what it can."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._open_fds: tuple[float, int] | None = None
        self._start: float | None = None
        try:
            with open("/proc/stat", "rb") as stat:
                boot = next(float(line.split()[1]) for line in stat if line.startswith(b"btime"))
            self._start = boot + float(self._stat()[19]) / self._ticks
        except (OSError, StopIteration, IndexError, ValueError):
            pass

    @staticmethod
    def _stat() -> list[bytes]:
        with open("/proc/self/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()

    def describe(self) -> list[Metric]:
        return [spec.family() for spec in _PROCESS]

    def collect(self) -> list[Metric]:
        times = os.times()
        families = [
            _value(c.PROCESS_CPU, times.user + times.system),
            _value(c.PROCESS_MAX_FDS, resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        ]
        if self._start is not None:
            families.append(_value(c.PROCESS_START, self._start))
        try:
            parts = self._stat()
            families.append(_value(c.PROCESS_VMEM, float(parts[20])))
            families.append(_value(c.PROCESS_RSS, float(parts[21]) * self._page))
            families.append(_value(c.PROCESS_OPEN_FDS, self._count_open_fds()))
        except (OSError, IndexError, ValueError):
            pass
        return families

    def _count_open_fds(self) -> int:
        now = self._clock()
        if self._open_fds is None or now - self._open_fds[0] >= OPEN_FDS_MAX_AGE_SECONDS:
            self._open_fds = (now, len(os.listdir("/proc/self/fd")))
        return self._open_fds[1]


_PROCESS = [
    c.PROCESS_CPU,
    c.PROCESS_MAX_FDS,
    c.PROCESS_START,
    c.PROCESS_VMEM,
    c.PROCESS_RSS,
    c.PROCESS_OPEN_FDS,
]
