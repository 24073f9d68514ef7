"""Every metric a Ripplecast node exports, defined once: name, type, help, labels, buckets.

The collectors and instruments of this package build their metric families from these
`MetricSpec`s and nothing else, so this module is the catalog: `catalog()` returns it as plain
data for the dashboards and alert rules to be checked against (`ripplecast metrics catalog`
prints it as JSON), and docs/metrics.md explains each entry.

Names follow the Prometheus conventions: the `ripplecast_` prefix, `_total` on counters, base
units in the name (`_seconds`, `_bytes`). A counter's `name` is its sample name (with `_total`);
a histogram's is its base name (samples `_bucket`, `_sum`, `_count`). There is no `node` label:
Prometheus adds `instance` to every series it scrapes.

Labels are bounded. Per-stream series (`per_stream`) carry a `stream` label for at most
`metrics_max_labelled_streams` streams at once (the rest are summed under `stream="_other"`), or
none at all with `metrics_stream_labels = false` (then they are the node's sums). Reasons come
from fixed sets in the code, capped at `MAX_REASONS` values per family all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

Kind = Literal["counter", "gauge", "histogram"]

PREFIX = "ripplecast_"
STREAM_LABEL = "stream"
OTHER_STREAMS = "_other"
"""The `stream` label value of the streams beyond `metrics_max_labelled_streams`."""
MAX_REASONS = 64
"""Most values of a reason-like label one family exports; further ones are summed as "_other"."""

LIVE_ROLES = ("all", "origin", "edge")
EVERY_ROLE = ("all", "origin", "edge", "worker", "web")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family."""

    name: str
    """The exported name (a counter's with `_total`, a histogram's base name)."""
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    per_stream: bool = False
    """Carries the `stream` label (first in `labels`), bounded as the module docstring says."""
    buckets: tuple[float, ...] = ()
    """A histogram's upper bounds (+Inf is added)."""
    roles: tuple[str, ...] = EVERY_ROLE
    """The node roles that export it."""
    standard: bool = False
    """Exported by prometheus_client's own process and Python collectors."""

    @property
    def family_name(self) -> str:
        """The name prometheus_client wants (a counter's without `_total`)."""
        if self.kind == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name

    def label_names(self, stream_labels: bool = True) -> tuple[str, ...]:
        """The labels, without `stream` when stream labels are off."""
        if self.per_stream and not stream_labels:
            return tuple(label for label in self.labels if label != STREAM_LABEL)
        return self.labels

    def family(self, stream_labels: bool = True) -> CounterMetricFamily | GaugeMetricFamily:
        """An empty counter or gauge family to add samples to (custom collectors)."""
        labels = list(self.label_names(stream_labels))
        if self.kind == "counter":
            return CounterMetricFamily(self.family_name, self.help, labels=labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        raise ValueError(f"{self.name} is a {self.kind}: observed by an instrument")


SECONDS_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- the node ------------------------------------------------------------------------------

BUILD_INFO = MetricSpec(
    "ripplecast_build_info",
    "gauge",
    "Always 1; the labels name the Ripplecast version, the Python version and the node's role.",
    ("version", "python", "role"),
)
EVENT_LOOP_LAG = MetricSpec(
    "ripplecast_event_loop_lag_seconds",
    "histogram",
    "How late the event loop ran a timer due every 0.5 s (time other work held the loop).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
HTTP_DURATION = MetricSpec(
    "ripplecast_http_request_duration_seconds",
    "histogram",
    "Seconds from a request's arrival to its response head being sent, by route pattern (the"
    ' matched route, never the raw path; "_unmatched" when none matched), method and status'
    " class. For HTTP-FLV that is the time to start the stream, not the viewing time.",
    ("route", "method", "status"),
    buckets=SECONDS_FAST,
)
HTTP_RESPONSE_BYTES = MetricSpec(
    "ripplecast_http_response_bytes_total",
    "counter",
    "Bytes of HTTP response bodies of known length (HLS playlists and segments, VOD files,"
    " API, pages) by route pattern; HTTP-FLV is in ripplecast_sent_bytes_total.",
    ("route",),
)

# --- live: the node's totals -------------------------------------------------------------------

STREAMS_LIVE = MetricSpec(
    "ripplecast_streams_live",
    "gauge",
    "Streams fed by a publisher (on an edge: by an upstream from the origin) right now.",
    roles=LIVE_ROLES,
)
STREAMS_WAITING = MetricSpec(
    "ripplecast_streams_waiting",
    "gauge",
    "Streams whose publisher (or upstream) went away, kept for it to return within"
    " reconnect_grace_seconds (edge: edge_failover_seconds).",
    roles=LIVE_ROLES,
)
PUBLISHERS = MetricSpec(
    "ripplecast_publishers",
    "gauge",
    "RTMP publishers connected.",
    roles=LIVE_ROLES,
)
RTMP_CONNECTIONS = MetricSpec(
    "ripplecast_rtmp_connections",
    "gauge",
    "RTMP connections open (publishers, players and those that are neither yet).",
    roles=LIVE_ROLES,
)
VIEWERS = MetricSpec(
    "ripplecast_viewers",
    "gauge",
    'Viewers by protocol: "http-flv" and "rtmp" connections (an edge pulling a stream is one'
    ' http-flv viewer of its origin), "hls" clients that fetched a playlist within the last'
    " three segment durations.",
    ("protocol",),
    roles=LIVE_ROLES,
)
INGEST_BYTES = MetricSpec(
    "ripplecast_ingest_bytes_total",
    "counter",
    "Media payload bytes received from publishers and upstreams (ended streams included).",
    roles=LIVE_ROLES,
)
SENT_BYTES = MetricSpec(
    "ripplecast_sent_bytes_total",
    "counter",
    "Bytes written to HTTP-FLV and RTMP viewers and to pulling edges (ended streams included).",
    roles=LIVE_ROLES,
)
READER_SKIPS = MetricSpec(
    "ripplecast_reader_skips_total",
    "counter",
    "Times a slow viewer had more than reader_max_queue_bytes unsent and skipped to the next"
    " keyframe.",
    roles=LIVE_ROLES,
)
READERS_DROPPED = MetricSpec(
    "ripplecast_readers_dropped_total",
    "counter",
    "Viewers disconnected for staying behind longer than reader_max_behind_seconds.",
    roles=LIVE_ROLES,
)
REFUSED = MetricSpec(
    "ripplecast_refused_total",
    "counter",
    'Connections and requests refused by the RTMP server (protocol="rtmp": limits, timeouts,'
    ' protocol errors, publish and play refusals) and the live HTTP routes (protocol="http"),'
    " by reason.",
    ("protocol", "reason"),
    roles=LIVE_ROLES,
)
HLS_SEGMENT_DURATION = MetricSpec(
    "ripplecast_hls_segment_duration_seconds",
    "histogram",
    "Media seconds of each live HLS segment cut (target: hls_segment_seconds; longer ones mean"
    " the publisher's keyframes are further apart).",
    buckets=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0),
    roles=LIVE_ROLES,
)

# --- live: per stream ----------------------------------------------------------------------

STREAM_LIVE = MetricSpec(
    "ripplecast_stream_live",
    "gauge",
    "1 while the stream's publisher (or upstream) feeds it, 0 while it waits for it to return"
    ' (summed under "_other").',
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_VIEWERS = MetricSpec(
    "ripplecast_stream_viewers",
    "gauge",
    "Viewers of the stream by protocol (as ripplecast_viewers).",
    ("stream", "protocol"),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_INGEST_BYTES = MetricSpec(
    "ripplecast_stream_ingest_bytes_total",
    "counter",
    "Media payload bytes the stream received since it started.",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_INGEST_BITRATE = MetricSpec(
    "ripplecast_stream_ingest_bits_per_second",
    "gauge",
    "Ingest bitrate over the last 10 s or so (measured between scrapes; since the stream's"
    " start at its first scrape).",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_INGEST_FPS = MetricSpec(
    "ripplecast_stream_ingest_frames_per_second",
    "gauge",
    "Video frames received per second, over the same window as the bitrate.",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_SENT_BYTES = MetricSpec(
    "ripplecast_stream_sent_bytes_total",
    "counter",
    "Bytes written to the stream's HTTP-FLV and RTMP viewers and pulling edges.",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_READER_SKIPS = MetricSpec(
    "ripplecast_stream_reader_skips_total",
    "counter",
    "Times a slow viewer of the stream skipped to the next keyframe.",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)
STREAM_READERS_DROPPED = MetricSpec(
    "ripplecast_stream_readers_dropped_total",
    "counter",
    "Viewers of the stream disconnected for staying behind.",
    ("stream",),
    per_stream=True,
    roles=LIVE_ROLES,
)

# --- edge ----------------------------------------------------------------------------------

EDGE_UPSTREAM_STATE = MetricSpec(
    "ripplecast_edge_upstream_state",
    "gauge",
    'Upstreams of this edge by state (per stream: 1 for its current state): "connecting" (first'
    " connection),"
    ' "connected" (media flowing from the origin), "failing" (broken; its viewers wait while'
    " the owner is looked up again).",
    ("stream", "state"),
    per_stream=True,
    roles=("edge",),
)
EDGE_RECONNECTS = MetricSpec(
    "ripplecast_edge_upstream_reconnects_total",
    "counter",
    "Connections to an origin opened again for an upstream that had one (failovers, breaks).",
    roles=("edge",),
)
EDGE_EVENTS = MetricSpec(
    "ripplecast_edge_upstream_events_total",
    "counter",
    'Upstream outcomes: "not_found" (no origin has the stream), "upstream_broken",'
    ' "origin_ended" (the origin ended the stream), "full" (edge_max_upstreams reached).',
    ("event",),
    roles=("edge",),
)
VOD_CACHE_HITS = MetricSpec(
    "ripplecast_vod_cache_hits_total",
    "counter",
    "Edge VOD cache operations served from memory or disk.",
    ("tier",),
    roles=("edge",),
)
VOD_CACHE_MISSES = MetricSpec(
    "ripplecast_vod_cache_misses_total",
    "counter",
    "Edge VOD cache fills that reached the shared storage.",
    roles=("edge",),
)
VOD_CACHE_COALESCED = MetricSpec(
    "ripplecast_vod_cache_coalesced_total",
    "counter",
    "Edge VOD cache operations that waited for another request's fill of the same file.",
    roles=("edge",),
)
VOD_CACHE_PASSTHROUGHS = MetricSpec(
    "ripplecast_vod_cache_passthroughs_total",
    "counter",
    "Edge VOD operations on files too large to cache.",
    roles=("edge",),
)
VOD_CACHE_EVICTIONS = MetricSpec(
    "ripplecast_vod_cache_evictions_total",
    "counter",
    "Entries dropped from the edge VOD cache to make room.",
    roles=("edge",),
)
VOD_CACHE_ERRORS = MetricSpec(
    "ripplecast_vod_cache_errors_total",
    "counter",
    'Edge VOD cache disk problems: "damaged" files found and removed, "disk_write" failures.',
    ("kind",),
    roles=("edge",),
)
VOD_CACHE_FETCHED = MetricSpec(
    "ripplecast_vod_cache_fetched_bytes_total",
    "counter",
    "Bytes the edge VOD cache read from the shared storage.",
    roles=("edge",),
)
VOD_CACHE_USED = MetricSpec(
    "ripplecast_vod_cache_used_bytes",
    "gauge",
    "Object bytes the edge VOD cache holds, by tier.",
    ("tier",),
    roles=("edge",),
)

# --- access --------------------------------------------------------------------------------

AUTH_DENIALS = MetricSpec(
    "ripplecast_auth_denials_total",
    "counter",
    "Requests the access policy refused, by how they came (rtmp, http-flv, hls, api, vod) and"
    " reason (no_key, bad_key, revoked_key, disabled_user, signature_expired and the other"
    " signature_* reasons, not_found, unauthenticated, scope, not_admin, cluster_*).",
    ("protocol", "reason"),
)

# --- video on demand ---------------------------------------------------------------------------

UPLOAD_BYTES = MetricSpec(
    "ripplecast_upload_bytes_total",
    "counter",
    "Upload bytes received into the staging folder (tus and single-request uploads).",
    roles=("all", "web"),
)
UPLOAD_REFUSALS = MetricSpec(
    "ripplecast_upload_refusals_total",
    "counter",
    "Uploads or upload requests refused, by reason (too_large, quota, media_*, ...).",
    ("reason",),
    roles=("all", "web"),
)
JOBS = MetricSpec(
    "ripplecast_jobs",
    "gauge",
    "Transcoding jobs in the shared queue by state (queued: the backlog). Every web and worker"
    " node reports the same queue: aggregate with max, not sum.",
    ("state",),
    roles=("all", "web", "worker"),
)
JOB_DURATION = MetricSpec(
    "ripplecast_job_duration_seconds",
    "histogram",
    "Seconds one transcoding attempt took on this worker, by outcome: done (published),"
    " retried (failed, queued again), failed (for good), lost (its lease went to another"
    " worker).",
    ("outcome",),
    buckets=(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0),
    roles=("all", "worker"),
)
JOB_FAILURES = MetricSpec(
    "ripplecast_job_failures_total",
    "counter",
    'Failed transcoding attempts on this worker: outcome "retried" (queued again) or "failed"'
    " (the video failed).",
    ("outcome",),
    roles=("all", "worker"),
)

# --- cluster -------------------------------------------------------------------------------

HEARTBEATS = MetricSpec(
    "ripplecast_cluster_heartbeats_total",
    "counter",
    "Heartbeats this node wrote to the node registry.",
)
HEARTBEAT_FAILURES = MetricSpec(
    "ripplecast_cluster_heartbeat_failures_total",
    "counter",
    "Heartbeats that failed (cache unreachable, registry full); the node drops out of the"
    " registry after two in a row.",
)
CLAIMS = MetricSpec(
    "ripplecast_cluster_claims",
    "gauge",
    "Stream names this origin holds a claim on.",
    roles=("origin", "all"),
)
CLAIM_REFUSALS = MetricSpec(
    "ripplecast_cluster_claim_refusals_total",
    "counter",
    "Publishers refused because another node owns the name or the cache could not be reached.",
    roles=("origin", "all"),
)
CLAIMS_LOST = MetricSpec(
    "ripplecast_cluster_claims_lost_total",
    "counter",
    "Streams this origin gave up because another node had claimed them.",
    roles=("origin", "all"),
)
CLAIMS_RECLAIMED = MetricSpec(
    "ripplecast_cluster_claims_reclaimed_total",
    "counter",
    "Claims written again after the cache had lost them (a Redis restart).",
    roles=("origin", "all"),
)

# --- the process (the standard names; see components.ProcessMetrics) ---------------------------

PROCESS_CPU = MetricSpec(
    "process_cpu_seconds_total",
    "counter",
    "User and system CPU seconds of the process.",
    standard=True,
)
PROCESS_RSS = MetricSpec(
    "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", standard=True
)
PROCESS_VMEM = MetricSpec(
    "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", standard=True
)
PROCESS_START = MetricSpec(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process (Unix seconds).",
    standard=True,
)
PROCESS_OPEN_FDS = MetricSpec(
    "process_open_fds",
    "gauge",
    "Open file descriptors (one per connection; counted at most every 5 s).",
    standard=True,
)
PROCESS_MAX_FDS = MetricSpec(
    "process_max_fds", "gauge", "Limit of open file descriptors (RLIMIT_NOFILE).", standard=True
)

# --- prometheus_client's own collectors (Python runtime) ---------------------------------------

STANDARD = (
    MetricSpec("python_info", "gauge", "Python implementation and version.",
               ("implementation", "major", "minor", "patchlevel", "version"), standard=True),
    MetricSpec("python_gc_objects_collected_total", "counter", "Objects collected by the GC.",
               ("generation",), standard=True),
    MetricSpec("python_gc_objects_uncollectable_total", "counter",
               "Uncollectable objects found by the GC.", ("generation",), standard=True),
    MetricSpec("python_gc_collections_total", "counter", "GC runs per generation.",
               ("generation",), standard=True),
)  # fmt: skip

CATALOG: tuple[MetricSpec, ...] = (
    # Every MetricSpec defined above, in order, so that none can be left out.
    *(value for value in list(globals().values()) if isinstance(value, MetricSpec)),
    *STANDARD,
)


def catalog() -> list[dict[str, Any]]:
    """Every exported metric as plain data: name, type, labels, help, per_stream (the `stream`
    label is optional, see the module docstring), buckets, roles and standard."""
    return [
        {
            "name": spec.name,
            "type": spec.kind,
            "labels": list(spec.labels),
            "help": spec.help,
            "per_stream": spec.per_stream,
            "buckets": list(spec.buckets),
            "roles": list(spec.roles),
            "standard": spec.standard,
        }
        for spec in CATALOG
    ]
