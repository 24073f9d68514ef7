"""The cluster: the same program as origins, edges, workers and web nodes sharing one Redis.

- `registry`: `NodeRegistry` (who is alive, with role, addresses, load and draining flag, by
  heartbeat with a TTL), `Heartbeat` (keeps one node registered) and the cluster errors.
- `ownership`: `StreamOwnership` (which origin owns a live stream name: an atomic claim with a
  TTL and a fencing token, so a stale owner learns it lost the stream).
- `claims`: `OwnedStreams` (an origin's claims, renewed while its streams live).
- `live`: `LiveDirectory` (which streams are live anywhere: a `StreamSummary` published by each
  stream's origin, the viewers each edge reports summed in), for web nodes, whose hub is empty.

They keep their state in a `Cache` (Redis in a cluster, in-process on a single box) under its
prefix. The package sits beside `accounts`, `webhooks` and `vod`: it may import `cache`,
`config` and `errors`, never the HTTP, live or protocol code; `app.py` wires it into a node.
"""

from __future__ import annotations

from ripplecast.cluster.live import (
    AudioSummary,
    DirectoryFull,
    EdgeViewers,
    LiveDirectory,
    StreamSummary,
    VideoSummary,
    ViewerCount,
)
from ripplecast.cluster.ownership import Claim, StreamOwnership
from ripplecast.cluster.registry import (
    ROLES,
    Addresses,
    ClusterError,
    ClusterInputError,
    Heartbeat,
    NodeInfo,
    NodeLoad,
    NodeRegistry,
    RegistryFull,
    Role,
)

__all__ = [
    "ROLES",
    "Addresses",
    "AudioSummary",
    "Claim",
    "ClusterError",
    "ClusterInputError",
    "DirectoryFull",
    "EdgeViewers",
    "Heartbeat",
    "LiveDirectory",
    "NodeInfo",
    "NodeLoad",
    "NodeRegistry",
    "RegistryFull",
    "Role",
    "StreamOwnership",
    "StreamSummary",
    "VideoSummary",
    "ViewerCount",
]
