"""The node registry: which nodes of the cluster are alive, what they do and how loaded they are.

This module owns `NodeInfo` (with its `Addresses` and `NodeLoad`), its JSON record, the
`NodeRegistry` kept in the shared `Cache`, the `Heartbeat` task that keeps one node registered,
and the cluster error classes.

Invariants:

- A node is registered by a heartbeat and stays registered for `ttl_seconds` after its last one;
  a node that stops beating (killed, partitioned) vanishes on its own, with no one to clean up.
- Every record lives under the cache prefix: the node's JSON at `cluster:node:ID` and its id in
  the index `cluster:nodes` (both with the heartbeat's TTL). The index lets `nodes()` list the
  cluster in two round trips, however many other keys the cache holds.
- Sizes are bounded: at most `max_nodes` nodes (`RegistryFull` beyond), every text field of a
  record has a length limit, and a record is at most `MAX_RECORD_BYTES`.
- A record that does not decode (written by a newer, incompatible version, or damaged) is
  skipped by readers, counted in `invalid_records` and logged once per node id; it never breaks
  a listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, get_args

from ripplecast.cache import Cache, CacheError
from ripplecast.errors import RipplecastError, UsageError

__all__ = [
    "DEFAULT_MAX_NODES",
    "MAX_RECORD_BYTES",
    "NODE_INDEX",
    "NODE_KEY_PREFIX",
    "ROLES",
    "Addresses",
    "ClusterError",
    "ClusterInputError",
    "Heartbeat",
    "NodeInfo",
    "NodeLoad",
    "NodeRegistry",
    "RegistryFull",
    "Role",
    "check_node_id",
]

log = logging.getLogger("ripplecast.cluster.registry")

Role = Literal["origin", "edge", "worker", "web", "all"]
ROLES: tuple[Role, ...] = get_args(Role)

NODE_KEY_PREFIX = "cluster:node:"
"""Cache key of a node's record: this prefix and the node id."""
NODE_INDEX = "cluster:nodes"
"""Cache index of the registered node ids."""
DEFAULT_MAX_NODES = 1_000
MAX_RECORD_BYTES = 4_096
"""Longest JSON record read or written (the limits on the fields keep real ones far below)."""
RECORD_VERSION = 1
"""The `v` field of a record; a reader skips records of another version."""

MAX_NODE_ID_LENGTH = 64
MAX_ADDRESS_LENGTH = 256
MAX_VERSION_LENGTH = 64
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NO_SPACE_OR_CONTROL = re.compile(r"[!-~]*")
"""Printable ASCII without spaces: addresses and versions (they land in logs and URLs)."""


class ClusterError(RipplecastError):
    """Base of the errors of the cluster package."""


class ClusterInputError(ClusterError):
    """A node id, node record or stream name that the cluster cannot use; the message says why."""


class RegistryFull(ClusterError):
    """The registry already holds `max_nodes` other live nodes."""


def check_node_id(node_id: str) -> str:
    """Return `node_id` if usable (1-64 of A-Z a-z 0-9 . _ -, a letter or digit first).

    Raises `ClusterInputError` otherwise.
    """
    if not 0 < len(node_id) <= MAX_NODE_ID_LENGTH or not _NODE_ID.fullmatch(node_id):
        raise ClusterInputError(
            f"node id {node_id[:80]!r} must be 1-{MAX_NODE_ID_LENGTH} characters of "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return node_id


def _check_text(what: str, value: str, max_length: int) -> None:
    if len(value) > max_length or not _NO_SPACE_OR_CONTROL.fullmatch(value):
        raise ClusterInputError(
            f"{what} {value[:80]!r} must be at most {max_length} printable ASCII characters "
            "without spaces"
        )


def _check_count(what: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ClusterInputError(f"{what} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where a node answers; an empty string means it has no such listener."""

    http: str = ""
    """Base URL of its HTTP server, e.g. "http://10.0.0.5:8080"."""
    rtmp: str = ""
    """Base URL of its RTMP server, e.g. "rtmp://10.0.0.5:1935"."""

    def __post_init__(self) -> None:
        _check_text("an HTTP address", self.http, MAX_ADDRESS_LENGTH)
        _check_text("an RTMP address", self.rtmp, MAX_ADDRESS_LENGTH)


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """How busy a node is, as it last reported."""

    viewers: int = 0
    """Viewers connected to it, over every protocol."""
    egress_bps: int = 0
    """Bits per second it sends to viewers and edges."""
    cpu: float = 0.0
    """Share of the machine's CPU it uses: 0.0 idle, 1.0 every core busy."""

    def __post_init__(self) -> None:
        _check_count("viewers", self.viewers)
        _check_count("egress_bps", self.egress_bps)
        _check_count("cpu", self.cpu)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says about itself in each heartbeat. Invalid fields raise
    `ClusterInputError` at construction."""

    node_id: str
    """Unique in the cluster, and best unique per process run (see `check_node_id`)."""
    role: Role
    internal: Addresses
    """Where other nodes reach it (edges pull from an origin's internal HTTP address)."""
    public: Addresses
    """Where viewers and publishers reach it (what a redirect sends them to)."""
    load: NodeLoad = field(default_factory=NodeLoad)
    draining: bool = False
    """True while it finishes its work before stopping: send it nothing new."""
    version: str = ""
    """Ripplecast version it runs."""
    started_at: float = 0.0
    """Unix time at which the process started."""
    heartbeat_at: float = 0.0
    """Unix time of the heartbeat that stored this record (set by the registry)."""

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        if self.role not in ROLES:
            raise ClusterInputError(f"node role {self.role!r} is not one of {', '.join(ROLES)}")
        _check_text("a version", self.version, MAX_VERSION_LENGTH)
        _check_count("started_at", self.started_at)
        _check_count("heartbeat_at", self.heartbeat_at)

    def to_json(self) -> bytes:
        """The record stored in the cache (compact JSON with a format version `v`)."""
        record = {
            "v": RECORD_VERSION,
            "node_id": self.node_id,
            "role": self.role,
            "internal": {"http": self.internal.http, "rtmp": self.internal.rtmp},
            "public": {"http": self.public.http, "rtmp": self.public.rtmp},
            "load": {
                "viewers": self.load.viewers,
                "egress_bps": self.load.egress_bps,
                "cpu": self.load.cpu,
            },
            "draining": self.draining,
            "version": self.version,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeInfo:
        """Decode a record written by `to_json`; unknown fields are ignored.

        Raises `ClusterInputError` naming what is wrong.
        """
        if len(data) > MAX_RECORD_BYTES:
            raise ClusterInputError(f"node record of {len(data)} bytes > {MAX_RECORD_BYTES}")
        try:
            record = json.loads(data)
        except ValueError as exc:  # also UnicodeDecodeError
            raise ClusterInputError(f"node record is not JSON: {exc}") from None
        obj = _Fields(record, "node record")
        if (version := obj.get("v", int)) != RECORD_VERSION:
            raise ClusterInputError(f"node record has format version {version}, not 1")
        internal = obj.sub("internal")
        public = obj.sub("public")
        load = obj.sub("load")
        return cls(
            node_id=obj.get("node_id", str),
            role=obj.get("role", str),  # type: ignore[arg-type]  # __post_init__ checks it
            internal=Addresses(internal.get("http", str), internal.get("rtmp", str)),
            public=Addresses(public.get("http", str), public.get("rtmp", str)),
            load=NodeLoad(
                load.get("viewers", int), load.get("egress_bps", int), load.number("cpu")
            ),
            draining=obj.get("draining", bool),
            version=obj.get("version", str),
            started_at=obj.number("started_at"),
            heartbeat_at=obj.number("heartbeat_at"),
        )


_T = TypeVar("_T")


class _Fields:
    """Typed access to the fields of one decoded JSON object, with precise errors."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise ClusterInputError(f"{where} is not a JSON object")
        self._fields: dict[str, Any] = value
        self._where = where

    def get(self, name: str, kind: type[_T]) -> _T:
        value = self._fields.get(name)
        # bool is an int in Python, never in a record
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ClusterInputError(f"{self._where}: {name!r} is not a {kind.__name__}")
        return value

    def number(self, name: str) -> float:
        value = self._fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ClusterInputError(f"{self._where}: {name!r} is not a number")
        return float(value)

    def sub(self, name: str) -> _Fields:
        return _Fields(self._fields.get(name), f"{self._where}: {name!r}")


class NodeRegistry:
    """The live nodes of the cluster, in the shared cache (see the module invariants).

    `ttl_seconds` is how long a node stays listed after its last heartbeat; `clock` gives the
    Unix time stamped into each record (`heartbeat_at`).
    """

    def __init__(
        self,
        cache: Cache,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        if not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise UsageError(f"ttl_seconds must be a finite number > 0, got {ttl_seconds!r}")
        if max_nodes < 1:
            raise UsageError(f"max_nodes must be >= 1, got {max_nodes!r}")
        self._cache = cache
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self.max_nodes = max_nodes
        self.invalid_records = 0
        """Records skipped because they did not decode (see the module docstring)."""
        self._reported_invalid: set[str] = set()

    async def heartbeat(self, info: NodeInfo) -> NodeInfo:
        """Register or refresh `info` for `ttl_seconds`; return the record as stored.

        Raises `RegistryFull` if `max_nodes` other nodes are registered, `CacheError` if the
        cache fails.
        """
        stored = replace(info, heartbeat_at=self._clock())
        record = stored.to_json()
        if len(record) > MAX_RECORD_BYTES:  # unreachable with the field limits; kept as a bound
            raise ClusterInputError(f"node record of {len(record)} bytes > {MAX_RECORD_BYTES}")
        # Index first: a refused node writes nothing. A record without an index entry (the
        # reverse order, interrupted) would be invisible to `nodes()` anyway.
        added = await self._cache.index_add(
            NODE_INDEX, info.node_id, ttl=self.ttl_seconds, max_members=self.max_nodes
        )
        if not added:
            raise RegistryFull(
                f"cannot register node {info.node_id!r}: {self.max_nodes} nodes are registered "
                "(the cluster's max_nodes)"
            )
        await self._cache.set(NODE_KEY_PREFIX + info.node_id, record, ttl=self.ttl_seconds)
        return stored

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, sorted by node id (records that do not decode are skipped)."""
        ids = await self._cache.index_members(NODE_INDEX, limit=self.max_nodes)
        records = await self._cache.get_many([NODE_KEY_PREFIX + node_id for node_id in ids])
        found = (self._decode(n, r) for n, r in zip(ids, records, strict=True) if r is not None)
        return sorted((info for info in found if info is not None), key=lambda i: i.node_id)

    async def node(self, node_id: str) -> NodeInfo | None:
        """The live node `node_id`, or None (also for a record that does not decode).

        Raises `ClusterInputError` for an unusable id.
        """
        record = await self._cache.get(NODE_KEY_PREFIX + check_node_id(node_id))
        return None if record is None else self._decode(node_id, record)

    async def remove(self, node_id: str) -> bool:
        """Unregister `node_id` at once (clean shutdown); True if it was registered."""
        check_node_id(node_id)
        listed = await self._cache.index_remove(NODE_INDEX, node_id)
        stored = await self._cache.delete(NODE_KEY_PREFIX + node_id)
        return listed or stored

    def _decode(self, node_id: str, record: bytes) -> NodeInfo | None:
        try:
            info = NodeInfo.from_json(record)
            if info.node_id != node_id:
                raise ClusterInputError(f"record names node {info.node_id!r}")
        except ClusterInputError as exc:
            self.invalid_records += 1
            if node_id not in self._reported_invalid and len(self._reported_invalid) < 100:
                self._reported_invalid.add(node_id)
                log.warning("node %s: skipping its registry record: %s", node_id, exc)
            return None
        return info


class Heartbeat:
    """Keeps one node registered: beats at `start()`, then every `interval` seconds (a third
    of the registry's TTL by default, so two beats may fail before the node drops out), and
    unregisters the node at `close()`.

    `info` is called for each beat, so the load and draining flag are current. A failed beat
    (cache unreachable, registry full) is counted in `failures` and logged once per outage;
    beating goes on, so a node re-registers by itself when Redis comes back.
    """

    def __init__(
        self,
        registry: NodeRegistry,
        info: Callable[[], NodeInfo],
        *,
        interval: float | None = None,
    ) -> None:
        interval = registry.ttl_seconds / 3 if interval is None else interval
        if not (0 < interval < registry.ttl_seconds):
            raise UsageError(
                f"heartbeat interval {interval!r} must be > 0 and shorter than the TTL "
                f"{registry.ttl_seconds!r}"
            )
        self._registry = registry
        self._info = info
        self.interval = interval
        self._node_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.beats = 0
        """Successful heartbeats."""
        self.failures = 0
        """Failed heartbeats."""
        self._failing = False
        self._closing = False

    async def start(self) -> None:
        """Register the node now, then keep beating in a task.

        Raises what the first beat raises (`CacheError`, `ClusterError`): a node that cannot
        register at start should say so rather than run unseen.
        """
        if self._task is not None or self._closing:
            raise UsageError("a heartbeat starts once")
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self._node_id}")

    async def beat(self) -> None:
        """Send one heartbeat now (e.g. right after the draining flag changed)."""
        info = self._info()
        self._node_id = info.node_id
        await self._registry.heartbeat(info)
        self.beats += 1

    async def _run(self) -> None:
        # The flag, not only the cancellation, ends the loop: a cancellation that lands inside
        # a Redis call can come out as a connection error (redis/redis-py#2551, #2028).
        while not self._closing:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except (CacheError, ClusterError) as exc:
                if self._closing:
                    return
                self.failures += 1
                if not self._failing:
                    log.warning("node %s: heartbeat failed, retrying: %s", self._node_id, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("node %s: heartbeat works again", self._node_id)
                self._failing = False

    async def close(self) -> None:
        """Stop beating and unregister the node (a failure to reach the cache is logged: the
        record then expires by itself). Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._node_id is not None:
            try:
                await self._registry.remove(self._node_id)
            except CacheError as exc:
                log.warning(
                    "node %s: could not unregister (its record will expire): %s", self._node_id, exc
                )

    async def __aenter__(self) -> Heartbeat:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
