"""Cluster benchmark: one all-in-one process against one origin and two edge processes.

Two scenarios on one machine, over loopback, with the viewers, publisher and CPU/RSS readers of
`bench.fanout` (HTTP-FLV viewers as cheap asyncio protocols, the real-time publisher with
wall-clock SEI stamps, the same kept-up criteria):

- `topology`: N HTTP-FLV viewers of one 720p30 stream against each deployment in `--topologies`:
    all          one `ripplecast serve` process (RIPPLECAST_ROLE=all);
    shared-port  one origin and two edge processes bound to ONE HTTP/RTMP port with
                 SO_REUSEPORT (RIPPLECAST_REUSE_PORT=true): every viewer connects to that port
                 and the kernel spreads the connections between the edges;
    split-ports  one origin and two edges on ports of their own, viewers alternating.
  The publisher always sends to the origin (or the all-in-one node); edges pull the stream from
  it, so delay samples (SEI stamps) include the origin->edge hop.
- `egress`: origin + 2 edges (shared port) with N viewers on the edges, N from 0 up: the
  origin's egress and its connection count stay at one upstream per edge whatever N is, while
  the edges' egress grows with N.

Every row starts fresh processes: the origin (or all-in-one) first, then each edge once the
previous node is registered and ready (they share one SQLite file, which must not be created by
two processes at once), all on one Redis under a key prefix unique to the run, deleted at the
end. Before the idle measurement each edge is made to pull the stream (probe viewers until the
origin serves one upstream per edge; the probes leave again), so "idle" means publisher ingest,
HLS and the edges' upstreams. Then viewers ramp up, and over `--duration` seconds this process
measures, per node process: CPU (utime+stime from /proc/PID/stat, % of one core), RSS, the
viewers it holds and its egress: bytes acknowledged on the established TCP connections of its
HTTP port (`ss -tinp`, `bytes_acked`), which on the origin are the edges' upstreams. It also
reads each node's own report (viewers, egress) from the cluster registry as a cross-check.

    python -m bench.cluster topology --viewers 1000,2000,3000 --repeat 3 \\
        --out bench/results/cluster-2026-11-25.json
    python -m bench.cluster egress --viewers 0,10,100,1000 --repeat 3 \\
        --out bench/results/cluster-2026-11-25.json

Each round runs every configuration once (`--repeat` rounds). This machine is shared: a run
during which other processes used more than half a core (`DISTURBED_OTHERS`, read from
/proc/stat minus the benchmark's own processes) is kept in the results but run again (up to
`--retries` times) and left out of the medians, unless every run of that configuration was
disturbed. Each command replaces its own section of the JSON file (`--section`, default the
scenario's name; every run is kept beside the medians) and appends one JSON line per run to the
`.log` beside it; it prints Markdown tables. `report --out FILE` recomputes the medians from
the runs in FILE, stores them and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

from bench.fanout import (
    CLK_TCK,
    FIRST_KEY_TIMEOUT,
    ROOT,
    SATURATED,
    Server,
    Viewer,
    free_port,
    machine_busy,
    percentile,
    proc_cpu_split,
    proc_rss_kb,
    raise_nofile,
    run_flv_viewer,
    self_cpu_seconds,
    start_publisher,
    stop_process,
    viewer_kept_up,
)
from bench.publisher import prepare_media
from bench.vod_common import wait_for_quiet
from ripplecast.cache import open_cache
from ripplecast.cluster import NodeInfo, NodeRegistry

REDIS_URL = "redis://127.0.0.1:6379/0"
TOPOLOGIES = ("all", "shared-port", "split-ports")
EDGES = 2
BATCH_MS = 30
"""The hub's batch interval on every node (the setting's default, stated so rows compare)."""
IDLE_SECONDS = 3.0
SETTLE_SECONDS = 2.0
WARMUP_SECONDS = 2.5
NODE_START_TIMEOUT = 30.0
MAX_PROBES = 32
"""Probe viewers tried before giving up on getting every shared-port edge to pull."""
EDGE_IDLE_SECONDS = 120
"""An edge keeps its upstream this long without viewers: the probes leave before the ramp."""
DISTURBED_OTHERS = 50.0
"""A run is disturbed when the rest of the machine (other people's processes) used more than
this % of a core during its window; its figures are kept but left out of the medians."""
RUN_SLACK_SECONDS = 120.0
"""Added to a run's planned length for its global timeout (node starts, stops, ss)."""


# --- node processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """One node process of a deployment."""

    name: str
    """all, origin, edge-1, edge-2 (its registry id is bench-NAME)."""
    role: str
    http_port: int
    rtmp_port: int
    reuse_port: bool = False

    @property
    def node_id(self) -> str:
        return f"bench-{self.name}"


@dataclass
class Deployment:
    """The running processes of one topology."""

    topology: str
    nodes: list[tuple[NodeSpec, Server]]
    viewer_ports: list[int]
    """Viewer i connects to viewer_ports[i % len(viewer_ports)]."""

    @property
    def origin(self) -> tuple[NodeSpec, Server]:
        return self.nodes[0]

    @property
    def edges(self) -> list[tuple[NodeSpec, Server]]:
        return self.nodes[1:]

    async def stop(self) -> None:
        for _, server in reversed(self.nodes):
            await server.stop()


def plan(topology: str) -> tuple[list[NodeSpec], list[int]]:
    """The nodes of `topology` (origin or all-in-one first) and the viewers' ports."""
    if topology == "all":
        node = NodeSpec("all", "all", free_port(), free_port())
        return [node], [node.http_port]
    origin = NodeSpec("origin", "origin", free_port(), free_port())
    if topology == "shared-port":
        http, rtmp = free_port(), free_port()
        edges = [NodeSpec(f"edge-{i + 1}", "edge", http, rtmp, True) for i in range(EDGES)]
        return [origin, *edges], [http]
    if topology == "split-ports":
        edges = [NodeSpec(f"edge-{i + 1}", "edge", free_port(), free_port()) for i in range(EDGES)]
        return [origin, *edges], [e.http_port for e in edges]
    raise ValueError(f"unknown topology {topology!r} (one of {', '.join(TOPOLOGIES)})")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this benchmark dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))


def node_env(spec: NodeSpec, workdir: Path, prefix: str, secret: str) -> dict[str, str]:
    """The environment of one node: the caller's without RIPPLECAST_*, plus the cluster's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    env.update(
        RIPPLECAST_ROLE=spec.role,
        RIPPLECAST_CLUSTER_NODE_ID=spec.node_id,
        RIPPLECAST_CACHE_URL=REDIS_URL,
        RIPPLECAST_CACHE_PREFIX=prefix,
        RIPPLECAST_SECRET_KEY=secret,
        RIPPLECAST_DATABASE_URL=f"sqlite:///{workdir / 'cluster.db'}",
        RIPPLECAST_PUBLISH_MODE="open",
        RIPPLECAST_WORKER_ENABLED="false",
        RIPPLECAST_VOD_ENABLED="false",
        RIPPLECAST_REUSE_PORT="true" if spec.reuse_port else "false",
        RIPPLECAST_BATCH_INTERVAL_MS=str(BATCH_MS),
        RIPPLECAST_RTMP_HOST="127.0.0.1",
        RIPPLECAST_HTTP_HOST="127.0.0.1",
        RIPPLECAST_EDGE_IDLE_SECONDS=str(EDGE_IDLE_SECONDS),
        RIPPLECAST_SHUTDOWN_TIMEOUT="2",
        RIPPLECAST_DRAIN_TIMEOUT_SECONDS="1",  # the viewers are gone by then: no drain to wait
    )
    return env


async def start_node(
    spec: NodeSpec, workdir: Path, prefix: str, secret: str, registry: NodeRegistry
) -> Server:
    """Start one node and return once it is registered and its port answers /readyz."""
    log = workdir / f"{spec.name}.log"
    argv = [
        sys.executable, "-m", "ripplecast.cli", "serve",
        "--rtmp-port", str(spec.rtmp_port), "--http-port", str(spec.http_port),
        "--data-dir", str(workdir / spec.name),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=node_env(spec, workdir, prefix, secret),
            preexec_fn=_die_with_parent,
        )
    server = Server(spec.name, proc, spec.rtmp_port, spec.http_port, log)
    try:
        await wait_ready(spec, server, registry)
    except BaseException:
        await server.stop()
        raise
    return server


async def wait_ready(spec: NodeSpec, server: Server, registry: NodeRegistry) -> None:
    """Until `spec` is in the registry (it registers just before it says ready) and its HTTP
    port answers /readyz with 200. On a shared port that answer may come from another edge:
    the registry entry is what tells this one is up."""
    deadline = time.monotonic() + NODE_START_TIMEOUT
    url = f"http://127.0.0.1:{spec.http_port}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if server.proc.returncode is not None:
                tail = server.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{spec.name} exited with {server.proc.returncode}:\n{tail}")
            if await registry.node(spec.node_id) is not None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{spec.name} not ready after {NODE_START_TIMEOUT} s ({url})")
            await asyncio.sleep(0.1)


async def migrate(env: dict[str, str]) -> None:
    """Create the shared database's schema (`ripplecast db upgrade`): nodes given a
    database URL do not migrate it themselves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ripplecast.cli", "db", "upgrade",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_START_TIMEOUT)
    except BaseException:
        await stop_process(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"ripplecast db upgrade failed: {out.decode(errors='replace')}")


async def deploy(topology: str, workdir: Path, prefix: str, registry: NodeRegistry) -> Deployment:
    """Start `topology`'s nodes one after another (each once the previous is ready)."""
    specs, viewer_ports = plan(topology)
    secret = secrets.token_urlsafe(48)
    await migrate(node_env(specs[0], workdir, prefix, secret))
    deployment = Deployment(topology, [], viewer_ports)
    try:
        for spec in specs:
            server = await start_node(spec, workdir, prefix, secret, registry)
            deployment.nodes.append((spec, server))
    except BaseException:
        await deployment.stop()
        raise
    return deployment


async def delete_keys(prefix: str) -> int:
    """Delete every Redis key under `prefix`; return how many."""
    client = redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


# --- TCP counters from ss ----------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One established TCP connection whose local port is a node's HTTP port."""

    local: str
    peer: str
    pid: int
    """Owning process (0 when ss could not tell, or was not asked)."""
    bytes_acked: int


_USERS_PID = re.compile(r"pid=(\d+)")
_BYTES_ACKED = re.compile(r"\bbytes_acked:(\d+)")


async def connections(ports: list[int], *, pids: bool) -> dict[tuple[str, str], Connection]:
    """Established TCP connections with a local port in `ports`, by (local, peer) address."""
    if not ports:
        return {}
    where = " or ".join(f"sport = :{port}" for port in sorted(set(ports)))
    argv = ["ss", "-tinH" + ("p" if pids else ""), "state", "established", f"( {where} )"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.decode(errors='replace')}")
    return {(c.local, c.peer): c for c in parse_ss(out.decode(errors="replace"))}


def parse_ss(text: str) -> Iterator[Connection]:
    """Connections from `ss -tin[p]H state established` output: a line per socket (Recv-Q,
    Send-Q, local, peer[, users]) followed by an indented line of TCP info."""
    head: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            head = line.split()
            continue
        if head is None or len(head) < 4:
            continue
        found = _USERS_PID.search(" ".join(head[4:]))
        acked = _BYTES_ACKED.search(line)
        yield Connection(
            head[2],
            head[3],
            int(found.group(1)) if found else 0,
            int(acked.group(1)) if acked else 0,
        )
        head = None


# --- one row -----------------------------------------------------------------------------------


@dataclass
class ProcessFigures:
    """One node process over the measurement window."""

    name: str
    role: str
    cpu_pct: float = 0.0
    """utime + stime over the window, % of one core."""
    idle_cpu_pct: float = 0.0
    """Before any viewer: publisher ingest, HLS, and on an edge its upstream."""
    kernel_share_pct: float = 0.0
    rss_base_kb: float = 0.0
    rss_kb: float = 0.0
    viewers: float = 0.0
    """Viewers connected to it at the end of the window (its HTTP port's connections; 0 on an
    origin, whose connections are the edges' upstreams)."""
    http_connections: float = 0.0
    """Every established connection on its HTTP port (on the origin: the edges' upstreams)."""
    egress_mbit: float = 0.0
    """Bytes acknowledged on its HTTP port's connections over the window, in Mbit/s."""
    reported_viewers: float = 0.0
    """The viewers it reported in its last heartbeat (registry)."""
    reported_egress_mbit: float = 0.0
    """The egress it reported in its last heartbeat (registry), Mbit/s."""


@dataclass
class ClusterRow:
    scenario: str
    topology: str
    viewers: int
    duration: float
    kept_up: float = 0
    connected: float = 0
    errors: float = 0
    startup_p50_ms: float = 0.0
    startup_p95_ms: float = 0.0
    startup_max_ms: float = 0.0
    edge_cold_start_ms: float = 0.0
    """Startup of the probe viewers that made an edge pull (locate + upstream + GOP)."""
    delay_p50_ms: float = 0.0
    delay_p95_ms: float = 0.0
    delay_p99_ms: float = 0.0
    delay_samples: float = 0
    servers_cpu_pct: float = 0.0
    servers_idle_cpu_pct: float = 0.0
    servers_rss_kb: float = 0.0
    origin_connections: float = 0.0
    """Established connections on the origin's (or all-in-one's) HTTP port at the window end."""
    origin_egress_mbit: float = 0.0
    edges_egress_mbit: float = 0.0
    received_mbit: float = 0.0
    """What the viewers read over the window, all together, Mbit/s."""
    generator_cpu_pct: float = 0.0
    publisher_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    others_cpu_pct: float = 0.0
    """The rest of the machine's busy time in the window, % of a core: other people's
    processes on this shared machine, kernel threads (ksoftirqd), ss."""
    softirq_cpu_pct: float = 0.0
    """Software-interrupt time of the whole machine (/proc/stat), % of a core: loopback TCP
    delivery. Part of it runs in the senders' context and is in their CPU too; the rest runs
    in ksoftirqd or interrupts the idle task, and is in no process's figures."""
    others_top: list[str] = field(default_factory=list)
    """The processes outside the benchmark that used the most CPU in the window."""
    quiet_wait_s: float = 0.0
    """How long the run waited for a quiet machine before starting."""
    saturated: bool = False
    processes: list[ProcessFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def warm_edges(deployment: Deployment) -> list[float]:
    """Make every edge pull the stream: probe viewers (left again at once) until the origin
    serves one upstream per edge. Returns the startups (ms) of the probes that started a pull."""
    edges = deployment.edges
    if not edges:
        return []
    origin_port = deployment.origin[0].http_port
    cold: list[float] = []
    pulling = len(await connections([origin_port], pids=False))
    for attempt in range(MAX_PROBES):
        port = deployment.viewer_ports[attempt % len(deployment.viewer_ports)]
        probe = Viewer(-1 - attempt)
        transport = await run_flv_viewer(probe, "127.0.0.1", port)
        try:
            for _ in range(int(FIRST_KEY_TIMEOUT * 50)):
                if probe.first_key or probe.error:
                    break
                await asyncio.sleep(0.02)
            if not probe.first_key:
                raise RuntimeError(f"probe viewer on port {port} got no keyframe: {probe.error}")
        finally:
            if transport is not None:
                transport.abort()
        now = len(await connections([origin_port], pids=False))
        if now > pulling:
            cold.append(1000 * (probe.first_key - probe.started))
        pulling = now
        if pulling >= len(edges):
            return cold
    raise RuntimeError(f"only {pulling} of {len(edges)} edges pull after {MAX_PROBES} probes")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime + stime, stime) of `pid`."""
    user, kernel = proc_cpu_split(pid)
    return user + kernel, kernel


async def run_cluster_row(
    topology: str,
    viewers: int,
    *,
    scenario: str,
    duration: float,
    media: Path,
    ramp: float = 200.0,
    warmup: float = WARMUP_SECONDS,
    idle: float = IDLE_SECONDS,
    settle: float = SETTLE_SECONDS,
) -> ClusterRow:
    """One measurement of `topology` with `viewers`; bounded by a global timeout, and every
    process it starts is stopped (and every Redis key deleted) before it returns."""
    planned = warmup + idle + viewers / ramp + FIRST_KEY_TIMEOUT + settle + duration
    async with asyncio.timeout(planned + RUN_SLACK_SECONDS):
        return await _run_cluster_row(
            topology, viewers, scenario=scenario, duration=duration, media=media, ramp=ramp,
            warmup=warmup, idle=idle, settle=settle, publish_for=planned + RUN_SLACK_SECONDS,
        )  # fmt: skip


async def _run_cluster_row(
    topology: str,
    viewers: int,
    *,
    scenario: str,
    duration: float,
    media: Path,
    ramp: float,
    warmup: float,
    idle: float,
    settle: float,
    publish_for: float,
) -> ClusterRow:
    row = ClusterRow(scenario, topology, viewers, duration)
    prefix = f"rc-bench-{secrets.token_hex(6)}:"
    cache = open_cache(REDIS_URL, prefix=prefix)
    registry = NodeRegistry(cache, ttl_seconds=10)
    handles: list[asyncio.Transport | None] = []
    publisher: asyncio.subprocess.Process | None = None
    deployment: Deployment | None = None
    with tempfile.TemporaryDirectory(prefix=f"bench-cluster-{topology}-") as tmp:
        try:
            deployment = await deploy(topology, Path(tmp), prefix, registry)
            origin = deployment.origin[1]
            publisher = await start_publisher(origin.rtmp_port, media, publish_for)
            await asyncio.sleep(warmup)  # the first keyframe and GOP reach the origin
            if viewers:
                cold = await warm_edges(deployment)
                row.edge_cold_start_ms = statistics.median(cold) if cold else float("nan")
            figures = [ProcessFigures(spec.name, spec.role) for spec, _ in deployment.nodes]
            pids = [server.proc.pid for _, server in deployment.nodes]
            idle0, t0 = [cpu_seconds(p)[0] for p in pids], time.monotonic()
            await asyncio.sleep(idle)
            span = time.monotonic() - t0
            for fig, pid, before in zip(figures, pids, idle0, strict=True):
                fig.idle_cpu_pct = 100 * (cpu_seconds(pid)[0] - before) / span
                fig.rss_base_kb = proc_rss_kb(pid)

            people = [Viewer(i) for i in range(viewers)]
            ports = deployment.viewer_ports
            tasks: list[asyncio.Future[asyncio.Transport | None]] = []
            started = time.monotonic()
            for i, viewer in enumerate(people):
                port = ports[i % len(ports)]
                tasks.append(asyncio.ensure_future(run_flv_viewer(viewer, "127.0.0.1", port)))
                ahead = started + (i + 1) / ramp - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            handles = list(await asyncio.gather(*tasks))
            for _ in range(int(FIRST_KEY_TIMEOUT * 10)):
                if all(v.first_key or v.error for v in people):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(settle)

            # --- the measurement window ---
            http_ports = sorted({spec.http_port for spec, _ in deployment.nodes})
            tcp_start = time.monotonic()
            tcp0 = await connections(http_ports, pids=False)
            tcp_start = (tcp_start + time.monotonic()) / 2
            for v in people:
                v.sampling = True
            ts0 = [v.last_ts for v in people]
            bytes0 = sum(v.bytes for v in people)
            cpu0 = [cpu_seconds(p) for p in pids]
            g0, p0, m0 = self_cpu_seconds(), sum(proc_cpu_split(publisher.pid)), machine_busy()
            every0, soft0 = every_process_cpu(), softirq_seconds()
            w0 = time.monotonic()
            await asyncio.sleep(duration)
            w1 = time.monotonic()
            cpu1 = [cpu_seconds(p) for p in pids]
            g1, p1, m1 = self_cpu_seconds(), sum(proc_cpu_split(publisher.pid)), machine_busy()
            every1, soft1 = every_process_cpu(), softirq_seconds()
            wall_end = time.time()
            for v in people:
                v.sampling = False
            rss = [proc_rss_kb(p) for p in pids]
            bytes1 = sum(v.bytes for v in people)
            tcp_end = time.monotonic()
            tcp1 = await connections(http_ports, pids=True)
            tcp_end = (tcp_end + time.monotonic()) / 2
            reported = {info.node_id: info for info in await registry.nodes()}
            span = w1 - w0

            summarise_processes(
                deployment,
                figures,
                (cpu0, cpu1),
                rss,
                (tcp0, tcp1),
                reported,
                span,
                tcp_span=tcp_end - tcp_start,
            )
            row.processes = figures
            row.servers_cpu_pct = sum(f.cpu_pct for f in figures)
            row.servers_idle_cpu_pct = sum(f.idle_cpu_pct for f in figures)
            row.servers_rss_kb = sum(f.rss_kb for f in figures)
            row.origin_connections = figures[0].http_connections
            row.origin_egress_mbit = figures[0].egress_mbit
            row.edges_egress_mbit = sum(f.egress_mbit for f in figures[1:])
            row.received_mbit = (bytes1 - bytes0) * 8 / span / 1e6
            row.generator_cpu_pct = 100 * (g1 - g0) / span
            row.publisher_cpu_pct = 100 * (p1 - p0) / span
            row.machine_busy_pct = 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
            row.others_cpu_pct = (
                row.machine_busy_pct * (os.cpu_count() or 1)
                - row.servers_cpu_pct
                - row.generator_cpu_pct
                - row.publisher_cpu_pct
            )
            row.softirq_cpu_pct = 100 * (soft1 - soft0) / span
            ours = {os.getpid(), publisher.pid, *pids}
            row.others_top = busiest_others(every0, every1, ours, span)
            row.saturated = row.generator_cpu_pct > SATURATED
            summarise_viewers(row, people, ts0, span, wall_end)
            for spec, server in deployment.nodes:
                if server.proc.returncode is not None:
                    row.notes.append(f"{spec.name} exited with {server.proc.returncode}")
        except BaseException:
            print_logs(Path(tmp))  # what the nodes said, before the folder goes
            raise
        finally:
            for handle in handles:
                if handle is not None:
                    handle.abort()
            if publisher is not None:
                await stop_process(publisher)
            if deployment is not None:
                await deployment.stop()
            await cache.close()
            with contextlib.suppress(Exception):
                await delete_keys(prefix)
            await asyncio.sleep(0.2)  # let aborted transports finish closing
    return row


def every_process_cpu() -> dict[int, tuple[str, float]]:
    """Name and CPU seconds of every readable process: utime + stime (threads included) plus
    cutime + cstime (its children that ended and were reaped)."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue  # it ended meanwhile
        name = text[text.find("(") + 1 : text.rfind(")")]
        values = text.rsplit(")", 1)[1].split()
        ticks = sum(int(v) for v in values[11:15])
        found[int(entry.name)] = (name, ticks / CLK_TCK)
    return found


def busiest_others(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    ours: set[int],
    span: float,
    count: int = 4,
) -> list[str]:
    """The `count` processes outside `ours` that used the most CPU between the readings
    (with their reaped children; a process that started meanwhile counts in full)."""
    used = [
        (seconds - (before[pid][1] if pid in before else 0.0), name, pid)
        for pid, (name, seconds) in after.items()
        if pid not in ours
    ]
    used.sort(reverse=True)
    return [
        f"{command_line(pid, name)}: {100 * cpu / span:.0f} %"
        for cpu, name, pid in used[:count]
        if cpu
    ]


def command_line(pid: int, name: str, chars: int = 80) -> str:
    """The start of `pid`'s command line, or `name` (a kernel thread, or it ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        argv = ""
    return (argv or f"[{name}]")[:chars]


def softirq_seconds() -> float:
    """Software-interrupt time of all CPUs so far (/proc/stat), in seconds."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[7]) / CLK_TCK


def print_logs(workdir: Path, chars: int = 3000) -> None:
    """Print the end of every node's log in `workdir` to stderr."""
    for log in sorted(workdir.glob("*.log")):
        tail = log.read_text(errors="replace")[-chars:]
        print(f"--- {log.name} (last {chars} characters)\n{tail}", file=sys.stderr)


def summarise_processes(
    deployment: Deployment,
    figures: list[ProcessFigures],
    cpu: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    rss: list[int],
    tcp: tuple[dict[tuple[str, str], Connection], dict[tuple[str, str], Connection]],
    reported: dict[str, NodeInfo],
    span: float,
    *,
    tcp_span: float,
) -> None:
    """Fill each process's figures from the window's two readings: `span` seconds between the
    CPU readings, `tcp_span` between the middles of the two `ss` readings (which a busy
    machine can delay by seconds)."""
    before, after = tcp
    for index, (spec, server) in enumerate(deployment.nodes):
        fig = figures[index]
        total = cpu[1][index][0] - cpu[0][index][0]
        fig.cpu_pct = 100 * total / span
        fig.kernel_share_pct = 100 * (cpu[1][index][1] - cpu[0][index][1]) / max(1e-9, total)
        fig.rss_kb = rss[index]
        mine = [
            (key, c)
            for key, c in after.items()
            if c.pid == server.proc.pid and c.local.endswith(f":{spec.http_port}")
        ]
        fig.http_connections = len(mine)
        # An origin's HTTP connections are the edges' upstreams; everyone else's are viewers.
        fig.viewers = 0 if spec.role == "origin" else len(mine)
        sent = 0
        for key, c in mine:
            start = before.get(key)
            sent += c.bytes_acked - (start.bytes_acked if start is not None else 0)
        fig.egress_mbit = sent * 8 / tcp_span / 1e6
        info = reported.get(spec.node_id)
        if info is not None:
            fig.reported_viewers = info.load.viewers
            fig.reported_egress_mbit = info.load.egress_bps / 1e6


def summarise_viewers(
    row: ClusterRow, people: list[Viewer], ts0: list[int], span: float, wall_end: float
) -> None:
    """Kept up, startup and delay figures, as `bench.fanout` computes them."""
    startups: list[float] = []
    delays: list[float] = []
    for v, start_ts in zip(people, ts0, strict=True):
        if v.first_key:
            row.connected += 1
            startups.append(1000 * (v.first_key - v.started))
        if v.error and not v.first_key:
            row.errors += 1
        delays.extend(v.delays)
        if viewer_kept_up(v, start_ts, span, wall_end):
            row.kept_up += 1
    errors = sorted({v.error for v in people if v.error})
    if errors:
        row.notes.append(f"errors: {errors[:3]}")
    row.startup_p50_ms = percentile(startups, 50)
    row.startup_p95_ms = percentile(startups, 95)
    row.startup_max_ms = max(startups, default=float("nan"))
    ms = [1000 * d for d in delays]
    row.delay_samples = len(ms)
    row.delay_p50_ms = percentile(ms, 50)
    row.delay_p95_ms = percentile(ms, 95)
    row.delay_p99_ms = percentile(ms, 99)


# --- medians and reporting ---------------------------------------------------------------------

_FIXED = {"viewers", "duration"}


def _median_fields(items: list[dict[str, Any]]) -> dict[str, Any]:
    base = dict(items[0])
    for key, value in base.items():
        if isinstance(value, bool):
            base[key] = any(item[key] for item in items)
        elif isinstance(value, int | float) and key not in _FIXED:
            base[key] = statistics.median(item[key] for item in items)
    return base


def median_row(rows: list[ClusterRow], label: str = "") -> ClusterRow:
    """Field-wise median of repeated runs of one configuration (per process too; notes
    joined, after `label` or "median of N runs")."""
    data = [asdict(r) for r in rows]
    base = _median_fields(data)
    base["processes"] = [
        ProcessFigures(**_median_fields([d["processes"][i] for d in data]))
        for i in range(len(data[0]["processes"]))
    ]
    base["notes"] = [label or f"median of {len(rows)} runs"] + [n for r in rows for n in r.notes]
    return ClusterRow(**base)


def disturbed(row: ClusterRow) -> bool:
    """Did the rest of this shared machine use more than `DISTURBED_OTHERS` during the run?"""
    return row.others_cpu_pct > DISTURBED_OTHERS


def summarise_runs(runs: list[ClusterRow]) -> list[ClusterRow]:
    """One row per configuration (topology, viewers), in first-run order: the median of its
    undisturbed runs, or of all its runs when every one was disturbed (the note says which)."""
    groups: dict[tuple[str, int], list[ClusterRow]] = {}
    for run in runs:
        groups.setdefault((run.topology, run.viewers), []).append(run)
    rows = []
    for group in groups.values():
        quiet = [r for r in group if not disturbed(r)]
        left_out = len(group) - len(quiet)
        if quiet:
            label = f"median of {len(quiet)} undisturbed runs ({left_out} disturbed left out)"
            rows.append(median_row(quiet, label))
        else:
            rows.append(median_row(group, f"median of {len(group)} runs, ALL disturbed"))
    return rows


def row_from_dict(data: dict[str, Any]) -> ClusterRow:
    data = dict(data)
    data["processes"] = [ProcessFigures(**p) for p in data["processes"]]
    names = {f.name for f in fields(ClusterRow)}
    return ClusterRow(**{k: v for k, v in data.items() if k in names})


def _cpu(row: ClusterRow) -> str:
    return " · ".join(f"{p.cpu_pct:.1f}" for p in row.processes)


def _split(row: ClusterRow) -> str:
    edges = row.processes[1:]
    return " / ".join(f"{p.viewers:.0f}" for p in edges) if edges else "-"


def topology_table(rows: list[ClusterRow]) -> str:
    baseline = {r.viewers: r for r in rows if r.topology == "all"}
    lines = [
        "| viewers | topology | kept up | startup p50 / p95 ms | delay p50 / p95 / p99 ms"
        " | CPU % of a core: origin · edges | servers CPU % | x all-in-one | servers RSS MB"
        " | viewers per edge | generator CPU % | others CPU % | machine busy % | saturated |",
        "|" + " --- |" * 14,
    ]
    for r in rows:
        base = baseline.get(r.viewers)
        ratio = (
            f"{r.servers_cpu_pct / base.servers_cpu_pct:.2f}x"
            if base is not None and base.servers_cpu_pct
            else "-"
        )
        lines.append(
            f"| {r.viewers} | {r.topology} | {r.kept_up:.0f}/{r.viewers}"
            f" | {r.startup_p50_ms:.0f} / {r.startup_p95_ms:.0f}"
            f" | {r.delay_p50_ms:.0f} / {r.delay_p95_ms:.0f} / {r.delay_p99_ms:.0f}"
            f" | {_cpu(r)} | {r.servers_cpu_pct:.1f} | {ratio}"
            f" | {r.servers_rss_kb / 1024:.0f} | {_split(r)} | {r.generator_cpu_pct:.0f}"
            f" | {r.others_cpu_pct:.0f} | {r.machine_busy_pct:.0f}"
            f" | {'**yes**' if r.saturated else 'no'} |"
        )
    return "\n".join(lines)


def egress_table(rows: list[ClusterRow]) -> str:
    lines = [
        "| viewers on the edges | origin HTTP connections | origin egress Mbit/s"
        " | edges egress Mbit/s (each) | viewers per edge | received by viewers Mbit/s"
        " | origin's own report Mbit/s | origin CPU % | edges CPU % | kept up |",
        "|" + " --- |" * 10,
    ]
    for r in rows:
        origin, edges = r.processes[0], r.processes[1:]
        each = " / ".join(f"{e.egress_mbit:.1f}" for e in edges)
        lines.append(
            f"| {r.viewers} | {r.origin_connections:.0f} | {r.origin_egress_mbit:.1f}"
            f" | {r.edges_egress_mbit:.1f} ({each}) | {_split(r)} | {r.received_mbit:.1f}"
            f" | {origin.reported_egress_mbit:.1f}"
            f" | {origin.cpu_pct:.1f} | {' · '.join(f'{e.cpu_pct:.1f}' for e in edges)}"
            f" | {r.kept_up:.0f}/{r.viewers} |"
        )
    return "\n".join(lines)


def ratios(rows: list[ClusterRow]) -> str:
    """Each cluster row against the all-in-one row of the same viewer count (same run)."""
    baseline = {r.viewers: r for r in rows if r.topology == "all"}
    lines = []
    for r in rows:
        base = baseline.get(r.viewers)
        if r.topology == "all" or base is None or not base.servers_cpu_pct:
            continue
        busiest = max(p.cpu_pct for p in r.processes)
        lines.append(
            f"- {r.viewers} viewers, {r.topology}: servers' CPU "
            f"{r.servers_cpu_pct / base.servers_cpu_pct:.2f}x all-in-one "
            f"({r.servers_cpu_pct:.1f} % vs {base.servers_cpu_pct:.1f} %), busiest process "
            f"{busiest / base.servers_cpu_pct:.2f}x ({busiest:.1f} %); kept up "
            f"{r.kept_up:.0f} vs {base.kept_up:.0f}; delay p95 {r.delay_p95_ms:.0f} vs "
            f"{base.delay_p95_ms:.0f} ms ({r.delay_p95_ms - base.delay_p95_ms:+.0f}); RSS "
            f"{r.servers_rss_kb / 1024:.0f} vs {base.servers_rss_kb / 1024:.0f} MB"
        )
    return "\n".join(lines)


def paired_ratios(runs: list[ClusterRow]) -> str:
    """Each undisturbed cluster run against the all-in-one run of its own round (the last
    undisturbed all-in-one run of that viewer count before it, with no run of the same
    configuration in between): medians and ranges of the per-round ratios."""
    last_all: dict[int, int] = {}
    last_seen: dict[tuple[str, int], int] = {}
    pairs: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    for index, run in enumerate(runs):
        key = (run.topology, run.viewers)
        previous = last_seen.get(key, -1)
        last_seen[key] = index
        if disturbed(run):
            continue
        if run.topology == "all":
            last_all[run.viewers] = index
            continue
        base_index = last_all.get(run.viewers, -1)
        if base_index <= previous:
            continue  # no undisturbed all-in-one run in this round
        base = runs[base_index]
        if not base.servers_cpu_pct:
            continue
        busiest = max(p.cpu_pct for p in run.processes)
        pairs.setdefault(key, []).append(
            (
                run.servers_cpu_pct / base.servers_cpu_pct,
                busiest / base.servers_cpu_pct,
                run.delay_p50_ms - base.delay_p50_ms,
                run.delay_p95_ms - base.delay_p95_ms,
            )
        )
    lines = []
    for (topology, viewers), found in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cpu, top, p50, p95 = ([f[i] for f in found] for i in range(4))
        lines.append(
            f"- {viewers} viewers, {topology}, {len(found)} rounds: all processes' CPU "
            f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}-{max(cpu):.2f}), busiest process "
            f"{statistics.median(top):.2f}x ({min(top):.2f}-{max(top):.2f}), delay p50 "
            f"{statistics.median(p50):+.0f} ms, p95 {statistics.median(p95):+.0f} ms"
        )
    return "\n".join(lines)


# --- driver ------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in TOPOLOGIES:
            raise SystemExit(f"unknown topology {name!r} (one of {', '.join(TOPOLOGIES)})")
    return names


async def run_scenario(args: argparse.Namespace) -> list[ClusterRow]:
    """Every configuration once per round, `--repeat` rounds (so a noisy spell on this shared
    machine does not land on every run of one configuration); returns every run of the section
    (earlier ones too with `--append`)."""
    media = prepare_media(seconds=args.media_seconds)
    if args.scenario == "egress":
        configs = [("shared-port", n) for n in _ints(args.viewers)]
    else:
        configs = [(t, n) for n in _ints(args.viewers) for t in _names(args.topologies)]
    runs = earlier_runs(args.out, args.section or args.scenario) if args.append else []
    for attempt in range(args.repeat):
        for topology, viewers in configs:
            for retry in range(args.retries + 1):
                print(
                    f"# {args.scenario}: {topology}, {viewers} viewers"
                    f" (round {attempt + 1}/{args.repeat}{f', retry {retry}' if retry else ''})",
                    file=sys.stderr,
                    flush=True,
                )
                quiet = await wait_for_quiet(args.quiet_wait)
                row = await run_cluster_row(
                    topology, viewers, scenario=args.scenario, duration=args.duration,
                    media=media, ramp=args.ramp,
                )  # fmt: skip
                row.quiet_wait_s = quiet["waited_s"]
                line = json.dumps(asdict(row))
                print("  " + line, file=sys.stderr, flush=True)
                runs.append(row)
                if args.out:
                    with args.out.with_suffix(".log").open("a") as log:
                        log.write(line + "\n")
                    write(args.out, args, runs)
                if not disturbed(row):
                    break
    return runs


def earlier_runs(path: Path | None, section: str) -> list[ClusterRow]:
    """The runs already stored in `section` of the results file at `path` (none if absent)."""
    if path is None or not path.exists():
        return []
    stored = json.loads(path.read_text()).get(section, {})
    return [row_from_dict(r) for r in stored.get("runs", [])]


def write(path: Path, args: argparse.Namespace, runs: list[ClusterRow]) -> None:
    """Replace this command's section of the JSON file at `path` (others are kept); `runs`
    are every run of the section, earlier ones included with `--append`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    doc["machine"] = {"cpus": os.cpu_count(), "uname": " ".join(os.uname())}
    section = args.section or args.scenario
    before = doc.get(section, {}) if args.append else {}
    commands = before.get("commands", [before["argv"]] if "argv" in before else [])
    if sys.argv not in commands:
        commands.append(sys.argv)
    doc[section] = {
        "commands": commands,
        "commit": git_commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [asdict(r) for r in summarise_runs(runs)],
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def git_commit() -> str:
    """The checked-out commit of this repository (+ "-dirty" with local changes), or ""."""
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("-dirty" if dirty else "")


def report(rows: list[ClusterRow], scenario: str, runs: list[ClusterRow] | None = None) -> str:
    """The Markdown tables of `rows`; with `runs`, the per-round ratios too."""
    if scenario == "egress":
        return egress_table(rows)
    text = topology_table(rows)
    extra = ratios(rows)
    if extra:
        text += "\n\nMedians against the all-in-one medians:\n" + extra
    paired = paired_ratios(runs or [])
    if paired:
        text += "\n\nPer round, against the all-in-one run of the same round:\n" + paired
    return text


async def _main(args: argparse.Namespace) -> list[ClusterRow]:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does, so every finally block stops its processes.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(args.timeout):
        return await run_scenario(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("scenario", choices=["topology", "egress", "report"])
    parser.add_argument("--viewers", help="e.g. 1000,2000,3000 (topology), 0,10,100,1000 (egress)")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES), help="topology only")
    parser.add_argument("--duration", type=float, default=20.0, help="measurement seconds")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median kept)")
    parser.add_argument("--ramp", type=float, default=200.0, help="new viewers per second")
    parser.add_argument("--media-seconds", type=int, default=60, help="length of the media file")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="wait up to this for a quiet machine"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="runs again (within its round) a run disturbed by other processes, this many times",
    )
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="whole command, seconds")
    parser.add_argument("--out", type=Path, help="JSON results (its .log gets every run)")
    parser.add_argument(
        "--append", action="store_true", help="keep the section's earlier runs (more rounds)"
    )
    parser.add_argument(
        "--section", help="key of the results in the JSON file (default: the scenario's name)"
    )
    args = parser.parse_args(argv)
    if args.scenario == "report":
        if args.out is None or not args.out.exists():
            parser.error("report needs --out FILE (an existing results file)")
        doc = json.loads(args.out.read_text())
        for section, results in doc.items():
            if section != "machine":
                runs = [row_from_dict(r) for r in results["runs"]]
                rows = summarise_runs(runs)
                results["rows"] = [asdict(r) for r in rows]
                print(f"## {section}\n\n{report(rows, rows[0].scenario, runs)}\n")
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        return
    if args.viewers is None:
        args.viewers = "0,10,100,1000" if args.scenario == "egress" else "1000,2000,3000"
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    runs = asyncio.run(_main(args))
    print(report(summarise_runs(runs), args.scenario, runs))


if __name__ == "__main__":
    main()
