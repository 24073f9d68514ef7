"""A Ripplecast cluster on one machine, for demos and the cluster tests.

- `spec`: `ClusterSpec` (what to start) and each node's settings; `records`: the entries of
  RUN_DIR/cluster.json.
- `local`: `LocalCluster` starts origins, edges, workers and web nodes as `ripplecast serve
  --role` processes on loopback plus HAProxy in front (`up`), records them in
  RUN_DIR/cluster.json, and stops exactly those again (`down`).
- `haproxy`: the HAProxy configuration as data (`render_haproxy_config`), `haproxy -c`, and the
  health of each server read from HAProxy's admin socket.
- `processes`: starting a process in its own group and stopping it again only while its pid
  still belongs to it (/proc start time and command line).
- `status`: the node registry as a table or JSON (`ripplecast cluster status`).

The package sits beside `upload_client`, under `cli`: it runs other processes and may import
`config`, `cache` and `cluster`, never `app`.
"""

from __future__ import annotations

from ripplecast.devcluster.errors import DevClusterError
from ripplecast.devcluster.haproxy import (
    HaproxyLayout,
    Server,
    check_config,
    find_haproxy,
    render_haproxy_config,
    server_states,
)
from ripplecast.devcluster.local import HAPROXY, LocalCluster
from ripplecast.devcluster.processes import Liveness, ProcessRecord, StopOutcome
from ripplecast.devcluster.records import HaproxyProcess, NodeProcess
from ripplecast.devcluster.spec import (
    CLUSTER_FILE,
    DEFAULT_CACHE_URL,
    DEFAULT_RUN_DIR,
    ClusterSpec,
)

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_CACHE_URL",
    "DEFAULT_RUN_DIR",
    "HAPROXY",
    "ClusterSpec",
    "DevClusterError",
    "HaproxyLayout",
    "HaproxyProcess",
    "Liveness",
    "LocalCluster",
    "NodeProcess",
    "ProcessRecord",
    "Server",
    "StopOutcome",
    "check_config",
    "find_haproxy",
    "render_haproxy_config",
    "server_states",
]
