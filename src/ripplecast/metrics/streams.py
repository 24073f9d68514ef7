"""Live metrics read from the hub at scrape time: streams, viewers, bytes, slow readers,
refusals, and an edge's upstreams.

Nothing here runs on the packet path: `LiveCollector.collect` reads the counters the hub keeps
anyway (`StreamStats`, reader sets, the HLS audiences, the servers' refusal counters) when
Prometheus asks. Per-stream series are bounded by `StreamLabels`; the ingest bitrate and frame
rate come from the counters' change between scrapes (`IngestRates`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from ripplecast.live.hls import HlsPackager
from ripplecast.live.hub import Hub
from ripplecast.live.stream import BatchFormat, LiveStream, StreamState
from ripplecast.metrics import specs as c
from ripplecast.metrics.sources import PullerSource, RefusalSource, RtmpSource, UpstreamLike
from ripplecast.metrics.specs import MAX_REASONS, OTHER_STREAMS, MetricSpec

RATE_WINDOW_SECONDS = 10.0
"""The ingest rates are measured over at least this long when scrapes are that frequent."""
RATE_MIN_SPAN_SECONDS = 0.5
"""Below this span between two samples the average since the stream's start is used."""
RATE_MAX_SAMPLES = 64
"""Samples kept per stream (bounds the memory when many scrapers scrape often)."""

PROTOCOLS = ("http-flv", "rtmp", "hls")
UPSTREAM_STATES = ("connecting", "connected", "failing")


def bounded(counts: Mapping[str, int], limit: int = MAX_REASONS) -> dict[str, int]:
    """`counts` with at most `limit` keys: the largest ones, the rest summed as "_other"."""
    if len(counts) <= limit:
        return dict(counts)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ordered[: limit - 1])
    kept["_other"] = sum(value for _, value in ordered[limit - 1 :])
    return kept


class StreamLabels:
    """Which streams get their own `stream` label: the first `limit` live ones, each keeping
    its label while it lives (series do not hop between streams); later ones are `_other`.
    With `enabled` false no stream gets a label (`label` returns None)."""

    def __init__(self, *, enabled: bool, limit: int) -> None:
        self.enabled = enabled
        self.limit = limit
        self._labelled: dict[str, None] = {}

    def retain(self, names: Collection[str]) -> None:
        """Forget the names not in `names` (their streams ended), freeing their places."""
        for name in [n for n in self._labelled if n not in names]:
            del self._labelled[name]

    def label(self, name: str) -> str | None:
        """The `stream` label value of stream `name`."""
        if not self.enabled:
            return None
        if name in self._labelled:
            return name
        if len(self._labelled) < self.limit:
            self._labelled[name] = None
            return name
        return OTHER_STREAMS


class IngestRates:
    """Ingest bitrate and video frame rate of each stream, from samples of its counters taken
    at each scrape: over the span back to the newest sample at least `RATE_WINDOW_SECONDS`
    old (or the oldest kept); at a stream's first scrape, the average since it started."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wallclock = wallclock
        self._samples: dict[str, tuple[LiveStream, deque[tuple[float, int, int]]]] = {}

    def retain(self, names: Collection[str]) -> None:
        for name in [n for n in self._samples if n not in names]:
            del self._samples[name]

    def rates(self, stream: LiveStream) -> tuple[float, float]:
        """(bits per second, frames per second) of `stream` now."""
        now = self._clock()
        stats = stream.stats
        entry = self._samples.get(stream.name)
        if entry is None or entry[0] is not stream:  # new, or a new stream of the same name
            entry = (stream, deque(maxlen=RATE_MAX_SAMPLES))
            self._samples[stream.name] = entry
        samples = entry[1]
        samples.append((now, stats.bytes_in, stats.video_frames))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW_SECONDS:
            samples.popleft()
        then, bytes_then, frames_then = samples[0]
        span = now - then
        if span < RATE_MIN_SPAN_SECONDS:
            uptime = self._wallclock() - stream.started_at
            if uptime <= 0:
                return 0.0, 0.0
            return stats.bytes_in * 8 / uptime, stats.video_frames / uptime
        return (stats.bytes_in - bytes_then) * 8 / span, (stats.video_frames - frames_then) / span


@dataclass(slots=True)
class _StreamSums:
    """Per-stream values, summed over the streams sharing one label."""

    live: int = 0
    viewers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0))
    ingest_bytes: int = 0
    bitrate: float = 0.0
    fps: float = 0.0
    sent_bytes: int = 0
    skips: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Ended:
    """What streams that ended had counted (node totals keep counting them)."""

    ingest_bytes: int = 0
    sent_bytes: int = 0
    skips: int = 0
    dropped: int = 0


class LiveCollector:
    """Collector of the live metrics of one node's hub (see the module docstring).

    `http_flv` is the HTTP-FLV output format (its readers are the HTTP-FLV viewers; every other
    reader is an RTMP player); `rtmp` and `live_http` are the servers whose refusals are counted;
    `puller` is an edge's, whose upstreams are reported."""

    def __init__(
        self,
        hub: Hub,
        labels: StreamLabels,
        *,
        http_flv: BatchFormat,
        rtmp: RtmpSource | None = None,
        live_http: RefusalSource | None = None,
        puller: PullerSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._labels = labels
        self._http_flv = http_flv
        self._rtmp = rtmp
        self._live_http = live_http
        self._puller = puller
        self._clock = clock
        self._rates = IngestRates(clock=clock, wallclock=wallclock)
        self._ended = _Ended()
        hub.on_stream_ended.append(self._stream_ended)

    def _stream_ended(self, stream: LiveStream) -> None:
        stats, ended = stream.stats, self._ended
        ended.ingest_bytes += stats.bytes_in
        ended.sent_bytes += stats.bytes_out
        ended.skips += stats.reader_skips
        ended.dropped += stats.readers_dropped

    def describe(self) -> list[Metric]:
        specs = _FAMILIES + (_EDGE if self._puller is not None else ())
        return [spec.family(self._labels.enabled) for spec in specs]

    def collect(self) -> list[Metric]:
        now = self._clock()
        streams = [s for s in self._hub if s.state is not StreamState.ENDED]
        upstreams = dict(self._puller.upstreams) if self._puller is not None else {}
        names = {s.name for s in streams} | set(upstreams)
        self._labels.retain(names)
        self._rates.retain(names)
        sums: dict[str | None, _StreamSums] = {}
        totals = _StreamSums()
        waiting = 0
        for stream in streams:
            one = self._stream_values(stream, now)
            waiting += 1 - one.live
            _add(totals, one)
            label = self._labels.label(stream.name)
            _add(sums.setdefault(label, _StreamSums()), one)
        families = self._node_families(totals, len(streams) - waiting, waiting)
        families += self._stream_families(sums)
        if self._puller is not None:
            families += self._edge_families(upstreams)
        return families

    def _stream_values(self, stream: LiveStream, now: float) -> _StreamSums:
        stats = stream.stats
        http_flv = stream.readers_of(self._http_flv)
        hls = sum(
            listener.audience.count(now)
            for listener in stream.listeners
            if isinstance(listener, HlsPackager)
        )
        bitrate, fps = self._rates.rates(stream)
        return _StreamSums(
            live=1 if stream.state is StreamState.LIVE else 0,
            viewers={"http-flv": http_flv, "rtmp": stream.reader_count - http_flv, "hls": hls},
            ingest_bytes=stats.bytes_in,
            bitrate=bitrate,
            fps=fps,
            sent_bytes=stats.bytes_out,
            skips=stats.reader_skips,
            dropped=stats.readers_dropped,
        )

    def _node_families(self, totals: _StreamSums, live: int, waiting: int) -> list[Metric]:
        ended = self._ended
        families = [
            _value(c.STREAMS_LIVE, live),
            _value(c.STREAMS_WAITING, waiting),
            _value(c.INGEST_BYTES, ended.ingest_bytes + totals.ingest_bytes),
            _value(c.SENT_BYTES, ended.sent_bytes + totals.sent_bytes),
            _value(c.READER_SKIPS, ended.skips + totals.skips),
            _value(c.READERS_DROPPED, ended.dropped + totals.dropped),
        ]
        viewers = c.VIEWERS.family()
        for protocol, count in totals.viewers.items():
            viewers.add_metric([protocol], count)
        families.append(viewers)
        refused = c.REFUSED.family()
        publishers = connections = 0
        if self._rtmp is not None:
            connections = len(self._rtmp.connections)
            publishers = sum(1 for x in self._rtmp.connections if x.publishing is not None)
            for reason, count in bounded(self._rtmp.refused).items():
                refused.add_metric(["rtmp", reason], count)
        if self._live_http is not None:
            for reason, count in bounded(self._live_http.refused).items():
                refused.add_metric(["http", reason], count)
        families += [
            refused,
            _value(c.PUBLISHERS, publishers),
            _value(c.RTMP_CONNECTIONS, connections),
        ]
        return families

    def _stream_families(self, sums: Mapping[str | None, _StreamSums]) -> list[Metric]:
        enabled = self._labels.enabled
        families = {spec: spec.family(enabled) for spec in _PER_STREAM}

        def add(spec: MetricSpec, labels: list[str], value: float) -> None:
            families[spec].add_metric(labels, value)

        for label, one in sums.items():
            key = [label] if label is not None else []
            add(c.STREAM_LIVE, key, one.live)
            add(c.STREAM_INGEST_BYTES, key, one.ingest_bytes)
            add(c.STREAM_INGEST_BITRATE, key, round(one.bitrate, 1))
            add(c.STREAM_INGEST_FPS, key, round(one.fps, 3))
            add(c.STREAM_SENT_BYTES, key, one.sent_bytes)
            add(c.STREAM_READER_SKIPS, key, one.skips)
            add(c.STREAM_READERS_DROPPED, key, one.dropped)
            for protocol, count in one.viewers.items():
                add(c.STREAM_VIEWERS, [*key, protocol], count)
        return list(families.values())

    def _edge_families(self, upstreams: Mapping[str, UpstreamLike]) -> list[Metric]:
        assert self._puller is not None
        by_label: dict[str | None, dict[str, int]] = {}
        for name, upstream in upstreams.items():
            stream = upstream.stream
            if stream is None:
                state = "connecting"
            elif stream.state is StreamState.LIVE:
                state = "connected"
            elif stream.state is StreamState.WAITING:
                state = "failing"
            else:
                continue  # ended: it leaves with the next scrape
            counts = by_label.setdefault(
                self._labels.label(name), dict.fromkeys(UPSTREAM_STATES, 0)
            )
            counts[state] += 1
        state_family = c.EDGE_UPSTREAM_STATE.family(self._labels.enabled)
        for label, counts in by_label.items():
            key = [label] if label is not None else []
            for state, count in counts.items():
                state_family.add_metric([*key, state], count)
        events = c.EDGE_EVENTS.family()
        for event, count in bounded(self._puller.events).items():
            events.add_metric([event], count)
        return [state_family, _value(c.EDGE_RECONNECTS, self._puller.reconnects), events]


_PER_STREAM = (
    c.STREAM_LIVE,
    c.STREAM_VIEWERS,
    c.STREAM_INGEST_BYTES,
    c.STREAM_INGEST_BITRATE,
    c.STREAM_INGEST_FPS,
    c.STREAM_SENT_BYTES,
    c.STREAM_READER_SKIPS,
    c.STREAM_READERS_DROPPED,
)
_FAMILIES = (
    c.STREAMS_LIVE,
    c.STREAMS_WAITING,
    c.INGEST_BYTES,
    c.SENT_BYTES,
    c.READER_SKIPS,
    c.READERS_DROPPED,
    c.VIEWERS,
    c.REFUSED,
    c.PUBLISHERS,
    c.RTMP_CONNECTIONS,
    *_PER_STREAM,
)
_EDGE = (c.EDGE_UPSTREAM_STATE, c.EDGE_RECONNECTS, c.EDGE_EVENTS)


def _add(into: _StreamSums, one: _StreamSums) -> None:
    into.live += one.live
    for protocol, count in one.viewers.items():
        into.viewers[protocol] += count
    into.ingest_bytes += one.ingest_bytes
    into.bitrate += one.bitrate
    into.fps += one.fps
    into.sent_bytes += one.sent_bytes
    into.skips += one.skips
    into.dropped += one.dropped


def _value(spec: MetricSpec, value: float) -> Metric:
    """A family of one unlabelled sample."""
    family = spec.family()
    family.add_metric([], value)
    return family
