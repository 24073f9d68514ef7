"""A cluster on one machine: origins, edges, workers and web nodes as `ripplecast serve --role`
processes on loopback, with HAProxy in front (`ripplecast cluster up/down`, and the cluster
tests).

Everything lives in one run directory:

    RUN_DIR/cluster.json     what was started (see `LocalCluster.to_json`), mode 0600
    RUN_DIR/secrets.json     secret_key and cluster_secret, made once and kept, mode 0600
    RUN_DIR/haproxy.cfg      the generated HAProxy configuration (`render_haproxy_config`)
    RUN_DIR/haproxy.sock     HAProxy's admin socket
    RUN_DIR/logs/NODE.log    each process's stdout and stderr (haproxy.log for HAProxy)
    RUN_DIR/nodes/NODE/      each node's data dir
    RUN_DIR/media/           the shared media storage, unless a storage URL is given

Invariants:

- cluster.json is rewritten (atomically) after every process started or stopped, so whatever
  interrupts `up`, `down` finds every process that may be running.
- Each node's settings are exactly the environment `cluster up` gives it: inherited
  RIPPLECAST_* variables are dropped; `ClusterSpec.settings` and `config_file` add to them.
- Each run gets its own cache prefix, so clusters sharing one Redis never see each other.
- `up` either returns a cluster whose every node answers /readyz and whose HAProxy sees every
  server UP, or stops what it started and raises `DevClusterError` naming the node that did
  not come up, with the end of its log.

The API is synchronous (it waits for other processes); call it through `asyncio.to_thread`
from async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ripplecast.devcluster.errors import DevClusterError
from ripplecast.devcluster.haproxy import (
    HaproxyLayout,
    Server,
    check_config,
    find_haproxy,
    render_haproxy_config,
    server_states,
)
from ripplecast.devcluster.processes import (
    Liveness,
    ProcessRecord,
    StopOutcome,
    liveness,
    signal_group,
    spawn,
    stop_groups,
    tail,
)
from ripplecast.devcluster.records import HaproxyProcess, NodeProcess
from ripplecast.devcluster.spec import (
    CLUSTER_FILE,
    MANAGED_SETTINGS,
    ROLE_ORDER,
    SHARED_SETTINGS,
    ClusterSpec,
    PortAllocator,
    load_or_create_secrets,
    node_environment,
    node_settings,
    write_private,
)

__all__ = ["FORMAT_VERSION", "HAPROXY", "SERVE", "LocalCluster"]

FORMAT_VERSION = 1
"""The `version` field of cluster.json."""
HAPROXY = "haproxy"
"""The name of HAProxy's process in `processes()`, `down()` outcomes and `kill`."""
SERVE = (sys.executable, "-m", "ripplecast.cli", "serve")
"""How a node is started (with `--role ROLE`): this interpreter, so the same installation."""


def _ready(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """True if GET /readyz at host:port answers 200."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class LocalCluster:
    """A running (or partly stopped) local cluster, as recorded in RUN_DIR/cluster.json.

    Start one with `LocalCluster.up(spec)`, find the one of a run dir with `LocalCluster.load`,
    stop it with `down()` (or use it as a context manager). `nodes` maps node ids ("origin-1",
    "edge-2", ...) to `NodeProcess`; `kill`, `start_node`, `haproxy_states` and
    `wait_haproxy` are for failover tests.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        cache_prefix: str,
        nodes: dict[str, NodeProcess],
        haproxy: HaproxyProcess,
        config_file: str = "",
        started_at: float | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.cache_prefix = cache_prefix
        """The cache prefix every node of this run uses (what `cluster status` reads)."""
        self.nodes = nodes
        self.haproxy = haproxy
        self.config_file = config_file
        self.started_at = time.time() if started_at is None else started_at
        self.secrets: Mapping[str, str] = {}
        """secret_key and cluster_secret (read from secrets.json when first needed)."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # --- URLs -------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """HTTP through HAProxy: pages, API, /live and /vod (routed to the edges)."""
        return f"http://{self.haproxy.host}:{self.haproxy.http_port}"

    @property
    def rtmp_ingest_url(self) -> str:
        """RTMP publishing through HAProxy (to the origins)."""
        return f"rtmp://{self.haproxy.host}:{self.haproxy.rtmp_ingest_port}/live"

    @property
    def rtmp_play_url(self) -> str:
        """RTMP playing through HAProxy (to the edges)."""
        return f"rtmp://{self.haproxy.host}:{self.haproxy.rtmp_play_port}/live"

    def redirect_url(self, path: str = "live/NAME.flv") -> str:
        """The redirect endpoint for `path` (through HAProxy, answered by a web node)."""
        return f"{self.http_url}/redirect/{path.lstrip('/')}"

    @property
    def cache_url(self) -> str:
        """The Redis every node shares."""
        return next(iter(self.nodes.values())).settings["cache_url"]

    def shared_settings(self) -> dict[str, str]:
        """The settings that make a command act on this cluster's data, by name: database,
        Redis and cache prefix, storage, the secrets, the extra settings every node was given
        and the settings file.

        Raises `DevClusterError` if secrets.json cannot be read.
        """
        first = next(iter(self.nodes.values())).settings
        shared = {
            name: value
            for name, value in first.items()
            if name in SHARED_SETTINGS or name not in MANAGED_SETTINGS
        }
        shared |= self.secrets or load_or_create_secrets(self.run_dir)
        if self.config_file:
            shared["config"] = self.config_file
        return shared

    def by_role(self, role: str) -> list[NodeProcess]:
        """The nodes of `role`, in node id order."""
        return [node for node in self.nodes.values() if node.role == role]

    # --- cluster.json -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """What cluster.json holds (secrets are in secrets.json only)."""
        return {
            "version": FORMAT_VERSION,
            "run_dir": str(self.run_dir),
            "started_at": self.started_at,
            "cache_prefix": self.cache_prefix,
            "config_file": self.config_file,
            "urls": {
                "http": self.http_url,
                "rtmp_ingest": self.rtmp_ingest_url,
                "rtmp_play": self.rtmp_play_url,
                "redirect": self.redirect_url(),
            },
            "haproxy": self.haproxy.to_json(),
            "nodes": [node.to_json() for node in self.nodes.values()],
        }

    def save(self) -> None:
        """Write cluster.json (atomically, mode 0600)."""
        write_private(self.run_dir / CLUSTER_FILE, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> LocalCluster | None:
        """The cluster recorded in `run_dir`, or None if there is none.

        Raises `DevClusterError` if cluster.json is damaged or of another format.
        """
        run_dir = run_dir.resolve()
        path = run_dir / CLUSTER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise DevClusterError(f"{path} is not JSON: {exc}") from None
        try:
            if data["version"] != FORMAT_VERSION:
                raise DevClusterError(f"{path} has format version {data['version']!r}, not 1")
            nodes = [NodeProcess.from_json(node) for node in data["nodes"]]
            return cls(
                run_dir,
                cache_prefix=str(data["cache_prefix"]),
                nodes={node.node_id: node for node in nodes},
                haproxy=HaproxyProcess.from_json(data["haproxy"]),
                config_file=str(data.get("config_file", "")),
                started_at=float(data["started_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DevClusterError(f"{path} is damaged: {exc!r}") from None

    def processes(self) -> dict[str, ProcessRecord]:
        """The recorded processes by name (node ids and "haproxy")."""
        named = {node_id: node.process for node_id, node in self.nodes.items()}
        named[HAPROXY] = self.haproxy.process
        return {name: record for name, record in named.items() if record is not None}

    def running(self) -> dict[str, Liveness]:
        """What became of each recorded process (see `Liveness`)."""
        return {name: liveness(record) for name, record in self.processes().items()}

    # --- starting -----------------------------------------------------------------------------

    @classmethod
    def up(
        cls, spec: ClusterSpec, *, progress: Callable[[str], None] | None = None
    ) -> LocalCluster:
        """Migrate the database, start the nodes and HAProxy, and wait until all are ready;
        `progress` is told what is being done (one line each step).

        Raises `DevClusterError` (having stopped whatever it started) when something does not
        come up in `spec.timeout`, and when a cluster already runs in the run dir.
        """
        say = progress or (lambda _line: None)
        spec.check()
        haproxy_program = spec.haproxy or find_haproxy()
        run_dir = spec.run_dir.resolve()
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        previous = cls.load(run_dir)
        if previous is not None:
            states = previous.running().items()
            alive = [n for n, s in states if s in (Liveness.RUNNING, Liveness.LEFTOVERS)]
            if alive:
                raise DevClusterError(
                    f"a cluster already runs in {run_dir} ({', '.join(alive)}): stop it first "
                    f"with `ripplecast cluster down --run-dir {run_dir}`"
                )
        secret_values = load_or_create_secrets(run_dir)
        for folder in ("logs", "nodes"):
            (run_dir / folder).mkdir(exist_ok=True)
        storage_url = spec.storage_url or str(run_dir / "media")
        config_file = str(spec.config_file.resolve()) if spec.config_file else ""
        _check_redis(spec.cache_url)
        say("migrating the database (ripplecast db upgrade)")
        _upgrade_database(spec, run_dir, config_file)
        cluster = cls._plan(spec, run_dir, storage_url, haproxy_program, config_file)
        cluster.secrets = secret_values
        try:
            cluster._start_all(spec.timeout, say)
        except BaseException:
            cluster.down()
            raise
        return cluster

    @classmethod
    def _plan(
        cls,
        spec: ClusterSpec,
        run_dir: Path,
        storage_url: str,
        haproxy_program: str,
        config_file: str,
    ) -> LocalCluster:
        ports = PortAllocator(spec.host, spec.base_port)
        try:
            haproxy = HaproxyProcess(
                host=spec.host,
                http_port=ports.take(),
                rtmp_ingest_port=ports.take(),
                rtmp_play_port=ports.take(),
                config=run_dir / "haproxy.cfg",
                log=run_dir / "logs" / "haproxy.log",
                stats_socket=run_dir / "haproxy.sock",
                program=haproxy_program,
            )
            cache_prefix = f"rc-{secrets.token_hex(4)}:"
            counts = {"web": spec.web, "origin": spec.origins, "edge": spec.edges}
            counts["worker"] = spec.workers
            nodes = {}
            for role in ROLE_ORDER:
                for number in range(1, counts[role] + 1):
                    node_id = f"{role}-{number}"
                    http_port = ports.take()
                    rtmp_port = ports.take() if role in ("origin", "edge") else 0
                    settings = node_settings(
                        spec,
                        run_dir,
                        node_id=node_id,
                        role=role,
                        http_port=http_port,
                        rtmp_port=rtmp_port,
                        cache_prefix=cache_prefix,
                        storage_url=storage_url,
                    )
                    nodes[node_id] = NodeProcess(
                        node_id=node_id,
                        role=role,
                        host=spec.host,
                        http_port=http_port,
                        rtmp_port=rtmp_port,
                        data_dir=Path(settings["data_dir"]),
                        log=run_dir / "logs" / f"{node_id}.log",
                        settings=settings,
                    )
        finally:
            ports.release()
        return cls(
            run_dir,
            cache_prefix=cache_prefix,
            nodes=nodes,
            haproxy=haproxy,
            config_file=config_file,
        )

    def _start_all(self, timeout: float, say: Callable[[str], None]) -> None:
        deadline = time.monotonic() + timeout
        say(f"starting {len(self.nodes)} nodes: {', '.join(self.nodes)}")
        for node in self.nodes.values():
            self._spawn_node(node)
        self.wait_ready(timeout=timeout)
        say("starting HAProxy")
        self.write_haproxy_config()
        check_config(self.haproxy.program, self.haproxy.config)
        self.start_haproxy(timeout=max(1.0, deadline - time.monotonic()))

    def _spawn_node(self, node: NodeProcess) -> None:
        if not self.secrets:
            self.secrets = load_or_create_secrets(self.run_dir)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        env = node_environment(node.settings, self.secrets, self.config_file)
        process, record = spawn([*SERVE, "--role", node.role], env=env, log_path=node.log)
        self._children[record.pid] = process
        node.process = record
        self.save()

    def start_node(self, node_id: str, *, timeout: float = 30.0) -> NodeProcess:
        """Start node `node_id` again (after `kill`), with its recorded ports and settings, and
        wait until it is ready.

        Raises `DevClusterError` if it is still running or does not come up in `timeout`.
        """
        node = self._node(node_id)
        if node.process is not None and liveness(node.process) is Liveness.RUNNING:
            raise DevClusterError(f"node {node_id} is running (pid {node.process.pid})")
        self._spawn_node(node)
        self.wait_ready([node_id], timeout=timeout)
        return node

    def wait_ready(self, node_ids: Iterable[str] | None = None, *, timeout: float = 30.0) -> None:
        """Wait until every node of `node_ids` (default: all) answers GET /readyz with 200.

        Raises `DevClusterError` naming a node that exited or was not ready in `timeout`, with
        the end of its log.
        """
        waiting = list(self.nodes if node_ids is None else node_ids)
        deadline = time.monotonic() + timeout
        while waiting:
            for node_id in list(waiting):
                node = self._node(node_id)
                if node.process is None or liveness(node.process) is not Liveness.RUNNING:
                    self._reap()
                    raise DevClusterError(
                        f"node {node_id} ({node.role}) exited before it was ready; "
                        f"its log {node.log}:\n{tail(node.log)}"
                    )
                if _ready(node.host, node.http_port):
                    waiting.remove(node_id)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                node = self._node(waiting[0])
                raise DevClusterError(
                    f"node {node.node_id} ({node.role}) was not ready after {timeout:.0f} s "
                    f"(GET {node.http_url}/readyz); not ready either: "
                    f"{', '.join(waiting[1:]) or 'no other'}; its log {node.log}:\n"
                    + tail(node.log)
                )
            time.sleep(0.1)

    def write_haproxy_config(self) -> Path:
        """Write RUN_DIR/haproxy.cfg for the nodes' ports; return its path."""

        def servers(role: str) -> list[Server]:
            return [
                Server(node.node_id, node.host, node.http_port, node.rtmp_port)
                for node in self.by_role(role)
            ]

        layout = HaproxyLayout(
            bind_host=self.haproxy.host,
            http_port=self.haproxy.http_port,
            rtmp_ingest_port=self.haproxy.rtmp_ingest_port,
            rtmp_play_port=self.haproxy.rtmp_play_port,
            origins=servers("origin"),
            edges=servers("edge"),
            web=servers("web"),
            stats_socket=self.haproxy.stats_socket,
        )
        self.haproxy.config.write_text(render_haproxy_config(layout))
        return self.haproxy.config

    def start_haproxy(self, *, timeout: float = 30.0) -> None:
        """Start HAProxy on the written configuration and wait until its ports accept and its
        health checks see every node UP. Raises `DevClusterError` otherwise."""
        with contextlib.suppress(FileNotFoundError):
            self.haproxy.stats_socket.unlink()  # left by a HAProxy that was killed
        argv = [self.haproxy.program, "-db", "-f", str(self.haproxy.config)]
        process, record = spawn(argv, env=dict(os.environ), log_path=self.haproxy.log)
        self._children[record.pid] = process
        self.haproxy.process = record
        self.save()
        expected = {f"origins/{node.node_id}" for node in self.by_role("origin")}
        expected |= {
            f"{b}/{node.node_id}" for node in self.by_role("edge") for b in ("edges", "edges_rtmp")
        }
        expected |= {f"web/{node.node_id}" for node in self.by_role("web")}
        ports = (self.haproxy.http_port, self.haproxy.rtmp_ingest_port, self.haproxy.rtmp_play_port)
        deadline = time.monotonic() + timeout
        while True:
            if liveness(record) is not Liveness.RUNNING:
                self._reap()
                raise DevClusterError(
                    f"haproxy exited; its log {self.haproxy.log}:\n{tail(self.haproxy.log)}"
                )
            try:
                states = server_states(self.haproxy.stats_socket)
            except OSError:
                states = {}
            down = sorted(name for name in expected if states.get(name) != "UP")
            if not down and all(_accepts(self.haproxy.host, port) for port in ports):
                return
            if time.monotonic() >= deadline:
                seen = ", ".join(f"{n} ({states.get(n, 'no state')})" for n in down)
                raise DevClusterError(
                    f"haproxy was not ready after {timeout:.0f} s: servers not UP: "
                    f"{seen or 'none'}; its log {self.haproxy.log}:\n{tail(self.haproxy.log)}"
                )
            time.sleep(0.1)

    # --- failover helpers -------------------------------------------------------------------

    def kill(self, name: str, signum: int = signal.SIGKILL, *, timeout: float = 10.0) -> None:
        """Send `signum` (default SIGKILL) to the process group of node `name` (or "haproxy")
        and wait until the group is gone; the node is then recorded as stopped.

        Raises `DevClusterError` if it was not running or is still there after `timeout`.
        """
        record = self.haproxy.process if name == HAPROXY else self._node(name).process
        if record is None or signal_group(record, signum) is not Liveness.RUNNING:
            raise DevClusterError(f"{name} is not running")
        outcome = stop_groups({name: record}, term_timeout=timeout, kill_timeout=0, reap=self._reap)
        if outcome[name] is StopOutcome.SURVIVED:
            raise DevClusterError(f"{name} (pid {record.pid}) is still running after {timeout} s")
        self._forget(name)

    def haproxy_states(self) -> dict[str, str]:
        """HAProxy's view of each server, by "BACKEND/NODE_ID" (see `server_states`)."""
        return server_states(self.haproxy.stats_socket)

    def wait_haproxy(self, expected: Mapping[str, str], *, timeout: float = 10.0) -> None:
        """Wait until HAProxy's health checks show `expected`, e.g. {"origins/origin-1":
        "DOWN"}. Raises `DevClusterError` with the states seen last after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.haproxy_states()
            except OSError:
                states = {}
            if all(states.get(name) == state for name, state in expected.items()):
                return
            if time.monotonic() >= deadline:
                raise DevClusterError(f"HAProxy shows {states} after {timeout} s, not {expected}")
            time.sleep(0.1)

    # --- stopping -------------------------------------------------------------------------------

    def down(
        self, *, term_timeout: float = 10.0, kill_timeout: float = 5.0
    ) -> dict[str, StopOutcome]:
        """Stop every recorded process (HAProxy and the nodes) and remove cluster.json; return
        what happened to each (see `stop_groups`). A process that survived SIGKILL stays
        recorded, and cluster.json with it."""
        outcomes = stop_groups(
            self.processes(), term_timeout=term_timeout, kill_timeout=kill_timeout, reap=self._reap
        )
        for name, outcome in outcomes.items():
            if outcome is not StopOutcome.SURVIVED:
                self._forget(name, save=False)
        if any(outcome is StopOutcome.SURVIVED for outcome in outcomes.values()):
            self.save()
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / CLUSTER_FILE).unlink()
        self._reap()
        return outcomes

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.down()

    # --- internals ------------------------------------------------------------------------------

    def _node(self, node_id: str) -> NodeProcess:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise DevClusterError(
                f"no node {node_id!r} in this cluster (nodes: {', '.join(self.nodes)})"
            ) from None

    def _forget(self, name: str, *, save: bool = True) -> None:
        if name == HAPROXY:
            self.haproxy.process = None
        else:
            self._node(name).process = None
        if save:
            self.save()

    def _reap(self) -> None:
        """Collect the exit status of our own children that ended (no zombies left)."""
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]


def _check_redis(url: str) -> None:
    """Raise `DevClusterError` unless the Redis at `url` answers."""

    from ripplecast.cache import CacheError, open_cache

    async def ping() -> None:
        cache = open_cache(url, prefix="rc-cluster-up-check:")
        try:
            await cache.get("ping")
        finally:
            await cache.close()

    try:
        asyncio.run(ping())
    except CacheError as exc:
        raise DevClusterError(f"the Redis at --cache-url does not answer: {exc}") from None


def _upgrade_database(spec: ClusterSpec, run_dir: Path, config_file: str) -> None:
    """Run `ripplecast db upgrade` on the shared database (nodes do not migrate it)."""
    env = node_environment(
        {"database_url": spec.database_url, "data_dir": str(run_dir / "nodes")}, {}, config_file
    )
    argv: Sequence[str] = (sys.executable, "-m", "ripplecast.cli", "db", "upgrade")
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        raise DevClusterError("`ripplecast db upgrade` took more than 120 s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise DevClusterError(
            "`ripplecast db upgrade` failed on --database-url:\n" + "\n".join(output)
        )
