"""The live directory: which streams are live anywhere in the cluster, for nodes that hold none.

A web node serves the pages and the REST API but has no publishers and mirrors nothing, so its
own hub is empty. This module owns `LiveDirectory` and the plain records it keeps in the shared
`Cache`:

- the origin that owns a stream publishes a `StreamSummary` of it (what the streams API shows:
  state, start, tracks, bitrate, viewers) every third of `ttl_seconds` (as it renews its claim),
  and removes it when the stream ends;
- an edge that mirrors a stream reports an `EdgeViewers` record for it (its own viewers by
  protocol, and which origin its upstream reads) at the same pace, and withdraws it when the
  mirror closes;
- `publish` sums the edges' reports into the stream's summary, so a reader gets a stream,
  viewers included, in one round trip, and a page of them in two (`names`, `summaries`).

Invariants:

- Keys live under the cache prefix: `cluster:live` (the index of live stream names), the summary
  at `cluster:stream:NAME`, the index of the edges reporting for a stream at
  `cluster:viewers:NAME` and each edge's report at `cluster:viewers:NAME:NODE` (names and node
  ids never hold ':'). Everything is written with `ttl_seconds`, so the stream of an origin that
  died, and the viewers of an edge that died, vanish by themselves within that time.
- Bounded: at most `max_streams` names in the index (`DirectoryFull` beyond), `max_edges`
  reports per stream, records of at most `MAX_SUMMARY_BYTES` / `MAX_REPORT_BYTES` with every
  text field length-checked. No operation scans keys.
- The viewers of a summary never count an edge's upstream: an edge pulling a stream is an
  HTTP-FLV reader on its origin, so each edge whose report names the summary's origin is taken
  off that origin's HTTP-FLV count (never below zero) and its own viewers are added instead.
  Counts are as fresh as the last report and publish (up to two thirds of `ttl_seconds`).
- `remove(NAME)` deletes only the summary this directory itself wrote last, so an origin whose
  stream ended never removes the record of the origin that took the name over meanwhile.
- A record that does not decode (another format version, damaged) is skipped by readers,
  counted in `invalid_records` and logged once per stream name.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from ripplecast.cache import Cache
from ripplecast.cluster.ownership import DEFAULT_MAX_NAME_LENGTH
from ripplecast.cluster.registry import (
    DEFAULT_MAX_NODES,
    ClusterError,
    ClusterInputError,
    check_node_id,
)
from ripplecast.config import STREAM_NAME_PATTERN
from ripplecast.errors import UsageError

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "LIVE_INDEX",
    "MAX_REPORT_BYTES",
    "MAX_SUMMARY_BYTES",
    "STREAM_KEY_PREFIX",
    "VIEWERS_KEY_PREFIX",
    "AudioSummary",
    "DirectoryFull",
    "EdgeViewers",
    "LiveDirectory",
    "StreamState",
    "StreamSummary",
    "VideoSummary",
    "ViewerCount",
]

log = logging.getLogger("ripplecast.cluster.live")

LIVE_INDEX = "cluster:live"
"""Cache index of the names of the streams live in the cluster."""
STREAM_KEY_PREFIX = "cluster:stream:"
"""Cache key of a stream's summary: this prefix and the stream name."""
VIEWERS_KEY_PREFIX = "cluster:viewers:"
"""`cluster:viewers:NAME` indexes the edges reporting viewers of NAME;
`cluster:viewers:NAME:NODE` is the report of edge NODE."""
DEFAULT_MAX_STREAMS = 1_000
MAX_SUMMARY_BYTES = 2_048
"""Longest summary record read or written (the field limits keep real ones far below)."""
MAX_REPORT_BYTES = 512
"""Longest edge report read or written."""
RECORD_VERSION = 1
"""The `v` field of every record; a reader skips records of another version."""
MAX_CODEC_LENGTH = 64
"""Longest codec name or RFC 6381 `codecs` value."""
MAX_REPORTED_INVALID = 100
"""Stream names whose undecodable records are logged (once each); the rest are only counted."""

StreamState = Literal["live", "waiting"]
_STATES: tuple[StreamState, ...] = ("live", "waiting")
_CODEC = re.compile(r"[!-~]*")
"""Printable ASCII without spaces."""
_T = TypeVar("_T")


class DirectoryFull(ClusterError):
    """The directory already lists `max_streams` other live streams."""


def _check_count(what: str, value: float) -> None:
    if isinstance(value, bool) or not (value >= 0 and math.isfinite(value)):
        raise ClusterInputError(f"{what} must be a finite number >= 0, got {value!r}")


def _check_codec(what: str, value: str | None) -> None:
    if value is not None and (len(value) > MAX_CODEC_LENGTH or not _CODEC.fullmatch(value)):
        raise ClusterInputError(
            f"{what} {value[:80]!r} must be at most {MAX_CODEC_LENGTH} printable ASCII "
            "characters without spaces"
        )


def check_stream_name(name: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str:
    """Return `name` if it is a usable stream name of at most `max_length` characters.

    Raises `ClusterInputError` otherwise."""
    if not 0 < len(name) <= max_length or not STREAM_NAME_PATTERN.fullmatch(name):
        raise ClusterInputError(
            f"stream name {name[:80]!r} must be 1-{max_length} characters of "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ViewerCount:
    """Viewers of one stream by protocol."""

    http_flv: int = 0
    rtmp: int = 0
    hls: int = 0
    """HLS players seen recently (an estimate, as the node counts them)."""

    def __post_init__(self) -> None:
        for what in ("http_flv", "rtmp", "hls"):
            _check_count(f"viewers {what}", getattr(self, what))

    @property
    def total(self) -> int:
        """Viewers over every protocol."""
        return self.http_flv + self.rtmp + self.hls

    def __add__(self, other: ViewerCount) -> ViewerCount:
        return ViewerCount(
            self.http_flv + other.http_flv, self.rtmp + other.rtmp, self.hls + other.hls
        )

    def _to_list(self) -> list[int]:
        return [self.http_flv, self.rtmp, self.hls]

    @classmethod
    def _from(cls, value: object, where: str) -> ViewerCount:
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
        ):
            raise ClusterInputError(f"{where} is not three counts")
        return cls(*value)


@dataclass(frozen=True, slots=True)
class VideoSummary:
    """The video track of a live stream, from its sequence header (best effort)."""

    codec: str
    """"h264", "hevc", "av1" or "unknown"."""
    codecs: str | None = None
    """RFC 6381 CODECS value, e.g. avc1.64001f."""
    width: int | None = None
    height: int | None = None
    fps: float = 0.0
    """Video frames received per second since the start."""

    def __post_init__(self) -> None:
        _check_codec("a video codec", self.codec)
        _check_codec("a video codecs value", self.codecs)
        for what in ("width", "height"):
            if (value := getattr(self, what)) is not None:
                _check_count(f"video {what}", value)
        _check_count("video fps", self.fps)


@dataclass(frozen=True, slots=True)
class AudioSummary:
    """The audio track of a live stream, from its sequence header (best effort)."""

    codec: str
    """"aac", "mp3" or "unknown"."""
    codecs: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        _check_codec("an audio codec", self.codec)
        _check_codec("an audio codecs value", self.codecs)
        for what in ("sample_rate", "channels"):
            if (value := getattr(self, what)) is not None:
                _check_count(f"audio {what}", value)


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What the cluster knows about one live stream, as its origin describes it. Invalid fields
    raise `ClusterInputError` at construction."""

    name: str
    origin: str
    """The node id of the origin that owns the stream."""
    state: StreamState
    """live, or waiting for its publisher to return (grace period)."""
    started_at: float
    """Unix time at which the stream started (the origin's clock)."""
    ingest_bitrate: float
    """Media bits per second received from the publisher since the start."""
    publishes: int
    """Publisher sessions (reconnects included)."""
    video: VideoSummary | None = None
    audio: AudioSummary | None = None
    viewers: ViewerCount = ViewerCount()
    """The origin's own viewers. As given to `publish`, every HTTP-FLV reader on the origin;
    as stored, without the edges' upstreams."""
    edge_viewers: ViewerCount = ViewerCount()
    """The viewers the edges reported (set by `publish`)."""
    updated_at: float = 0.0
    """Unix time of the publish that stored this summary (set by `publish`)."""

    def __post_init__(self) -> None:
        check_stream_name(self.name)
        check_node_id(self.origin)
        if self.state not in _STATES:
            raise ClusterInputError(f"stream state {self.state!r} is not live or waiting")
        _check_count("started_at", self.started_at)
        _check_count("ingest_bitrate", self.ingest_bitrate)
        _check_count("publishes", self.publishes)
        _check_count("updated_at", self.updated_at)

    @property
    def total_viewers(self) -> ViewerCount:
        """The stream's viewers over the whole cluster: the origin's and the edges'."""
        return self.viewers + self.edge_viewers

    def to_json(self) -> bytes:
        """The record stored in the cache (compact JSON with a format version `v`; viewer
        counts as [http_flv, rtmp, hls])."""
        video = self.video
        audio = self.audio
        record = {
            "v": RECORD_VERSION,
            "name": self.name,
            "origin": self.origin,
            "state": self.state,
            "started_at": self.started_at,
            "ingest_bitrate": self.ingest_bitrate,
            "publishes": self.publishes,
            "video": None
            if video is None
            else {
                "codec": video.codec,
                "codecs": video.codecs,
                "width": video.width,
                "height": video.height,
                "fps": video.fps,
            },
            "audio": None
            if audio is None
            else {
                "codec": audio.codec,
                "codecs": audio.codecs,
                "sample_rate": audio.sample_rate,
                "channels": audio.channels,
            },
            "viewers": self.viewers._to_list(),
            "edges": self.edge_viewers._to_list(),
            "updated_at": self.updated_at,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StreamSummary:
        """Decode a record written by `to_json`; unknown fields are ignored.

        Raises `ClusterInputError` naming what is wrong."""
        obj = _Record.load(data, MAX_SUMMARY_BYTES, "stream summary")
        video = obj.optional_sub("video")
        audio = obj.optional_sub("audio")
        return cls(
            name=obj.get("name", str),
            origin=obj.get("origin", str),
            state=obj.get("state", str),  # type: ignore[arg-type]  # __post_init__ checks it
            started_at=obj.number("started_at"),
            ingest_bitrate=obj.number("ingest_bitrate"),
            publishes=obj.get("publishes", int),
            video=None
            if video is None
            else VideoSummary(
                codec=video.get("codec", str),
                codecs=video.optional("codecs", str),
                width=video.optional("width", int),
                height=video.optional("height", int),
                fps=video.number("fps"),
            ),
            audio=None
            if audio is None
            else AudioSummary(
                codec=audio.get("codec", str),
                codecs=audio.optional("codecs", str),
                sample_rate=audio.optional("sample_rate", int),
                channels=audio.optional("channels", int),
            ),
            viewers=ViewerCount._from(obj.raw("viewers"), "stream summary: 'viewers'"),
            edge_viewers=ViewerCount._from(obj.raw("edges"), "stream summary: 'edges'"),
            updated_at=obj.number("updated_at"),
        )


@dataclass(frozen=True, slots=True)
class EdgeViewers:
    """One edge's viewers of one stream, as it reports them."""

    node_id: str
    """The edge's node id."""
    viewers: ViewerCount
    pulling_from: str = ""
    """The node id of the origin its upstream reads now ('' when not connected): that origin
    counts the upstream as one HTTP-FLV reader, which the directory takes off again."""

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        if self.pulling_from:
            check_node_id(self.pulling_from)

    def to_json(self) -> bytes:
        """The report stored in the cache (compact JSON with a format version `v`)."""
        record = {
            "v": RECORD_VERSION,
            "node": self.node_id,
            "viewers": self.viewers._to_list(),
            "pulling_from": self.pulling_from,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EdgeViewers:
        """Decode a report written by `to_json`. Raises `ClusterInputError`."""
        obj = _Record.load(data, MAX_REPORT_BYTES, "edge viewers report")
        return cls(
            node_id=obj.get("node", str),
            viewers=ViewerCount._from(obj.raw("viewers"), "edge viewers report: 'viewers'"),
            pulling_from=obj.get("pulling_from", str),
        )


class _Record:
    """Typed access to the fields of one decoded JSON object, with precise errors."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise ClusterInputError(f"{where} is not a JSON object")
        self._fields: dict[str, Any] = value
        self._where = where

    @classmethod
    def load(cls, data: bytes, max_bytes: int, where: str) -> _Record:
        if len(data) > max_bytes:
            raise ClusterInputError(f"{where} of {len(data)} bytes > {max_bytes}")
        try:
            record = cls(json.loads(data), where)
        except ValueError as exc:  # also UnicodeDecodeError
            raise ClusterInputError(f"{where} is not JSON: {exc}") from None
        if (version := record.raw("v")) != RECORD_VERSION:
            raise ClusterInputError(f"{where} has format version {version!r}, not 1")
        return record

    def raw(self, name: str) -> object:
        return self._fields.get(name)

    def get(self, name: str, kind: type[_T]) -> _T:
        value = self._fields.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ClusterInputError(f"{self._where}: {name!r} is not a {kind.__name__}")
        return value

    def optional(self, name: str, kind: type[_T]) -> _T | None:
        return None if self._fields.get(name) is None else self.get(name, kind)

    def number(self, name: str) -> float:
        value = self._fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ClusterInputError(f"{self._where}: {name!r} is not a number")
        return float(value)

    def optional_sub(self, name: str) -> _Record | None:
        value = self._fields.get(name)
        return None if value is None else _Record(value, f"{self._where}: {name!r}")


class LiveDirectory:
    """The cluster's live streams, in the shared cache (see the module invariants).

    `ttl_seconds` is how long a summary or an edge report lives unless written again (write
    every third of it: the stream claims' TTL); `clock` gives the Unix time stamped into each
    summary. Every method may raise `CacheError` (`CacheUnavailable` when Redis cannot be
    reached).
    """

    def __init__(
        self,
        cache: Cache,
        *,
        ttl_seconds: float,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_edges: int = DEFAULT_MAX_NODES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise UsageError(f"ttl_seconds must be a finite number > 0, got {ttl_seconds!r}")
        for what, value in (
            ("max_streams", max_streams),
            ("max_edges", max_edges),
            ("max_name_length", max_name_length),
        ):
            if value < 1:
                raise UsageError(f"{what} must be >= 1, got {value!r}")
        self._cache = cache
        self.ttl_seconds = ttl_seconds
        self.max_streams = max_streams
        self.max_edges = max_edges
        self.max_name_length = max_name_length
        self._clock = clock
        self._written: dict[str, bytes] = {}
        """The summary this directory last stored for each stream (what `remove` may delete)."""
        self.invalid_records = 0
        """Records skipped because they did not decode (see the module docstring)."""
        self._reported_invalid: set[str] = set()

    # -- origins -------------------------------------------------------------------------------

    async def publish(self, summary: StreamSummary) -> StreamSummary:
        """Store `summary` for `ttl_seconds`, with the edges' current viewers summed in and
        their upstreams taken off the origin's HTTP-FLV count; return it as stored.

        Raises `ClusterInputError` for a name longer than `max_name_length`, `DirectoryFull`
        if `max_streams` other streams are listed.
        """
        name = self._name(summary.name)
        edges = ViewerCount()
        pulls = 0
        for report in await self.edge_viewers(name):
            edges += report.viewers
            if report.pulling_from == summary.origin:
                pulls += 1
        own = summary.viewers
        stored = replace(
            summary,
            viewers=replace(own, http_flv=max(0, own.http_flv - pulls)),
            edge_viewers=edges,
            updated_at=self._clock(),
        )
        record = stored.to_json()
        if len(record) > MAX_SUMMARY_BYTES:  # unreachable with the field limits; kept as a bound
            raise ClusterInputError(f"stream summary of {len(record)} bytes > {MAX_SUMMARY_BYTES}")
        # Index first: a refused stream writes nothing.
        if not await self._cache.index_add(
            LIVE_INDEX, name, ttl=self.ttl_seconds, max_members=self.max_streams
        ):
            raise DirectoryFull(
                f"stream {name} is not listed: the cluster's live directory holds "
                f"{self.max_streams} streams"
            )
        await self._cache.set(STREAM_KEY_PREFIX + name, record, ttl=self.ttl_seconds)
        self._written[name] = record
        return stored

    async def remove(self, name: str) -> bool:
        """Unlist stream `name` at once (it ended here), if the summary stored is still the one
        this directory wrote; True if it was."""
        self._name(name)
        record = self._written.pop(name, None)
        if record is None or not await self._cache.compare_and_delete(
            STREAM_KEY_PREFIX + name, record
        ):
            return False
        await self._cache.index_remove(LIVE_INDEX, name)
        return True

    # -- edges ---------------------------------------------------------------------------------

    async def report_viewers(self, name: str, report: EdgeViewers) -> bool:
        """Store edge `report.node_id`'s viewers of stream `name` for `ttl_seconds`; False
        (nothing stored) if `max_edges` other edges already report for that stream."""
        self._name(name)
        index = VIEWERS_KEY_PREFIX + name
        if not await self._cache.index_add(
            index, report.node_id, ttl=self.ttl_seconds, max_members=self.max_edges
        ):
            return False
        record = report.to_json()
        await self._cache.set(f"{index}:{report.node_id}", record, ttl=self.ttl_seconds)
        return True

    async def withdraw_viewers(self, name: str, node_id: str) -> bool:
        """Remove edge `node_id`'s report for stream `name` (its mirror closed); True if any."""
        self._name(name)
        check_node_id(node_id)
        index = VIEWERS_KEY_PREFIX + name
        listed = await self._cache.index_remove(index, node_id)
        stored = await self._cache.delete(f"{index}:{node_id}")
        return listed or stored

    async def edge_viewers(self, name: str) -> list[EdgeViewers]:
        """The edges' current reports for stream `name`, by node id."""
        self._name(name)
        index = VIEWERS_KEY_PREFIX + name
        nodes = await self._cache.index_members(index, limit=self.max_edges)
        if not nodes:
            return []
        records = await self._cache.get_many([f"{index}:{node}" for node in nodes])
        reports = []
        for node, record in zip(nodes, records, strict=True):
            if record is None:
                continue
            try:
                report = EdgeViewers.from_json(record)
                if report.node_id != node:
                    raise ClusterInputError(f"report names node {report.node_id!r}")
            except ClusterInputError as exc:
                self._invalid(name, f"the viewers report of edge {node}", exc)
                continue
            reports.append(report)
        return reports

    # -- readers -------------------------------------------------------------------------------

    async def names(self) -> list[str]:
        """The names of the live streams, sorted (at most `max_streams`)."""
        return sorted(await self._cache.index_members(LIVE_INDEX, limit=self.max_streams))

    async def summaries(self, names: Sequence[str]) -> list[StreamSummary]:
        """The summaries of those of `names` that are live, in the order given: one round trip
        per `max_streams` names. Names that cannot be stream names are skipped."""
        usable = [n for n in names if self._usable(n)]
        found = []
        for start in range(0, len(usable), self.max_streams):
            chunk = usable[start : start + self.max_streams]
            records = await self._cache.get_many([STREAM_KEY_PREFIX + n for n in chunk])
            for name, record in zip(chunk, records, strict=True):
                if record is None:
                    continue
                try:
                    summary = StreamSummary.from_json(record)
                    if summary.name != name:
                        raise ClusterInputError(f"summary names stream {summary.name!r}")
                except ClusterInputError as exc:
                    self._invalid(name, "the summary", exc)
                    continue
                found.append(summary)
        return found

    async def summary(self, name: str) -> StreamSummary | None:
        """The summary of stream `name` if it is live (None also for an unusable name)."""
        found = await self.summaries([name])
        return found[0] if found else None

    # ------------------------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        return check_stream_name(name, self.max_name_length)

    def _usable(self, name: str) -> bool:
        return 0 < len(name) <= self.max_name_length and bool(STREAM_NAME_PATTERN.fullmatch(name))

    def _invalid(self, name: str, what: str, exc: ClusterInputError) -> None:
        self.invalid_records += 1
        if (
            name not in self._reported_invalid
            and len(self._reported_invalid) < MAX_REPORTED_INVALID
        ):
            self._reported_invalid.add(name)
            log.warning("stream %s: skipping %s in the live directory: %s", name, what, exc)
