"""What a local cluster starts, and the settings each of its nodes runs with.

`ClusterSpec` is the request (`ripplecast cluster up`'s options); `node_settings` gives one
node's settings by name, `node_environment` turns them into the environment of its process
(inherited RIPPLECAST_* variables dropped, so a node runs with exactly these); the shared secrets
are made once per run directory and kept in RUN_DIR/secrets.json, mode 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ripplecast.config import Settings
from ripplecast.devcluster.errors import DevClusterError
from ripplecast.devcluster.haproxy import MAX_SOCKET_PATH

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_CACHE_URL",
    "DEFAULT_RUN_DIR",
    "MANAGED_SETTINGS",
    "ROLE_ORDER",
    "SECRET_SETTINGS",
    "SHARED_SETTINGS",
    "ClusterSpec",
    "PortAllocator",
    "load_or_create_secrets",
    "node_environment",
    "node_settings",
    "write_private",
]

DEFAULT_RUN_DIR = Path("cluster")
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/0"
CLUSTER_FILE = "cluster.json"
SECRETS_FILE = "secrets.json"
ROLE_ORDER = ("origin", "edge", "web", "worker")
"""The order of the nodes in cluster.json and listings."""
MAX_NODES_PER_ROLE = 32
MANAGED_SETTINGS = frozenset(
    {
        "role",
        "cluster_node_id",
        "http_host",
        "http_port",
        "rtmp_host",
        "rtmp_port",
        "public_host",
        "data_dir",
        "database_url",
        "cache_url",
        "cache_prefix",
        "storage_url",
        "secret_key",
        "cluster_secret",
        "cluster_internal_http_url",
        "cluster_public_http_url",
        "cluster_public_rtmp_url",
        "trusted_proxies",
        "rtmp_proxy_protocol",
    }
)
"""Settings `cluster up` gives every node itself; `ClusterSpec.settings` may not set them."""
SHARED_SETTINGS = frozenset({"database_url", "cache_url", "cache_prefix", "storage_url"})
"""Managed settings every node has alike (with the secrets and the extra settings)."""
SECRET_SETTINGS = frozenset({"secret_key", "cluster_secret"})
"""Settings kept in secrets.json only, never in cluster.json."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What `LocalCluster.up` starts."""

    database_url: str
    """The shared metadata database (PostgreSQL, MariaDB); migrated by `up`."""
    cache_url: str = DEFAULT_CACHE_URL
    """The shared Redis."""
    storage_url: str = ""
    """The shared media storage. Empty: the folder RUN_DIR/media."""
    origins: int = 1
    edges: int = 1
    workers: int = 0
    web: int = 1
    run_dir: Path = DEFAULT_RUN_DIR
    base_port: int | None = None
    """First port to hand out (counting up, skipping busy ones). None: any free ports."""
    host: str = "127.0.0.1"
    """Where every process listens and is reached."""
    settings: Mapping[str, str] = field(default_factory=dict)
    """More settings for every node, by setting name (e.g. {"publish_mode": "open"})."""
    config_file: Path | None = None
    """A TOML settings file every node reads (RIPPLECAST_CONFIG)."""
    timeout: float = 60.0
    """Seconds `up` waits for the nodes, then for HAProxy, to be ready."""
    haproxy: str | None = None
    """The haproxy program. None: `find_haproxy()`."""

    def check(self) -> None:
        """Raise `DevClusterError` naming the first unusable field."""
        counts = {"origins": self.origins, "edges": self.edges}
        counts |= {"workers": self.workers, "web": self.web}
        for name, count in counts.items():
            if not 0 <= count <= MAX_NODES_PER_ROLE:
                raise DevClusterError(f"--{name} must be 0 to {MAX_NODES_PER_ROLE}, not {count}")
        if sum(counts.values()) == 0:
            raise DevClusterError("a cluster needs at least one node")
        if not self.database_url:
            raise DevClusterError("a cluster shares one database: give --database-url")
        if urlsplit(self.cache_url).scheme not in ("redis", "rediss"):
            raise DevClusterError(
                f"the nodes of a cluster share one Redis: --cache-url must be redis://..., "
                f"not {urlsplit(self.cache_url).scheme or self.cache_url!r}"
            )
        if self.base_port is not None and not 1024 <= self.base_port <= 65000:
            raise DevClusterError(f"--base-port must be 1024 to 65000, not {self.base_port}")
        socket_path = self.run_dir.resolve() / "haproxy.sock"
        if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
            raise DevClusterError(
                f"the run dir {self.run_dir.resolve()} is too long a path for HAProxy's socket "
                f"in it (at most {MAX_SOCKET_PATH} bytes): use a shorter one"
            )
        if self.timeout <= 0:
            raise DevClusterError(f"the timeout must be > 0, not {self.timeout}")
        for name in self.settings:
            if name not in Settings.model_fields:
                raise DevClusterError(f"{name!r} is not a setting (see `ripplecast config show`)")
            if name in MANAGED_SETTINGS:
                raise DevClusterError(f"{name!r} is set by `cluster up` itself for each node")


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def load_or_create_secrets(run_dir: Path) -> dict[str, str]:
    """secret_key and cluster_secret of the clusters of `run_dir`: made once, then kept.

    Raises `DevClusterError` if the file is readable by others or damaged.
    """
    path = run_dir / SECRETS_FILE
    if not path.exists():
        made = {name: secrets.token_urlsafe(32) for name in sorted(SECRET_SETTINGS)}
        write_private(path, json.dumps(made, indent=2) + "\n")
        return made
    if path.stat().st_mode & 0o077:
        raise DevClusterError(f"{path} is readable by other users: chmod 600 {path}")
    try:
        stored = json.loads(path.read_text())
        return {name: str(stored[name]) for name in SECRET_SETTINGS}
    except (ValueError, KeyError, TypeError) as exc:
        raise DevClusterError(f"{path} is damaged ({exc!r}): remove it to make new ones") from None


class PortAllocator:
    """Hands out distinct free TCP ports on `host` (from `base`, or any)."""

    def __init__(self, host: str, base: int | None) -> None:
        self._host = host
        self._next = base
        self._held: list[socket.socket] = []

    def take(self) -> int:
        while True:
            sock = socket.socket()
            try:
                sock.bind((self._host, self._next or 0))
            except OSError:
                sock.close()
                if self._next is None or self._next >= 65535:
                    raise DevClusterError(f"no free port left on {self._host}") from None
                self._next += 1
                continue
            # Held until all are handed out, so no port is handed out twice.
            self._held.append(sock)
            port = int(sock.getsockname()[1])
            if self._next is not None:
                self._next = port + 1
            return port

    def release(self) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()


def node_settings(
    spec: ClusterSpec,
    run_dir: Path,
    *,
    node_id: str,
    role: str,
    http_port: int,
    rtmp_port: int,
    cache_prefix: str,
    storage_url: str,
) -> dict[str, str]:
    """The settings of one node (secrets left out), by setting name."""
    host = spec.host
    values = {
        "role": role,
        "cluster_node_id": node_id,
        "http_host": host,
        "http_port": str(http_port),
        "rtmp_host": host,
        "rtmp_port": str(rtmp_port),
        "public_host": host,
        "data_dir": str(run_dir / "nodes" / node_id),
        "database_url": spec.database_url,
        "cache_url": spec.cache_url,
        "cache_prefix": cache_prefix,
        "storage_url": storage_url,
        "cluster_internal_http_url": f"http://{host}:{http_port}",
        "cluster_public_http_url": f"http://{host}:{http_port}",
        "cluster_public_rtmp_url": f"rtmp://{host}:{rtmp_port}" if rtmp_port else "",
        # HAProxy runs on this host: its X-Forwarded-For and PROXY headers name the clients.
        "trusted_proxies": json.dumps([host]),
        "rtmp_proxy_protocol": "true",
    }
    return values | dict(spec.settings)


def node_environment(
    settings: Mapping[str, str], secret_values: Mapping[str, str], config_file: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    for name, value in (*settings.items(), *secret_values.items()):
        env[f"RIPPLECAST_{name.upper()}"] = value
    if config_file:
        env["RIPPLECAST_CONFIG"] = config_file
    return env
