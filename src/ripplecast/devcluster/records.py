"""The entries of cluster.json: one `NodeProcess` per node and the `HaproxyProcess`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ripplecast.devcluster.processes import ProcessRecord

__all__ = ["HaproxyProcess", "NodeProcess"]


@dataclass(slots=True)
class NodeProcess:
    """One node of a local cluster."""

    node_id: str
    """e.g. "origin-1"; also its name in HAProxy."""
    role: str
    host: str
    http_port: int
    rtmp_port: int
    """0 for web and worker nodes (they bind any free port, or none)."""
    data_dir: Path
    log: Path
    settings: dict[str, str]
    """Its settings by name, as given in its environment, secrets left out."""
    process: ProcessRecord | None = None
    """The running process; None while stopped."""

    @property
    def http_url(self) -> str:
        """Its own HTTP base URL (not through HAProxy)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def rtmp_url(self) -> str:
        """Its RTMP application URL, e.g. rtmp://127.0.0.1:41935/live ("" without RTMP)."""
        if not self.rtmp_port:
            return ""
        return f"rtmp://{self.host}:{self.rtmp_port}/{self.settings.get('rtmp_app', 'live')}"

    def to_json(self) -> dict[str, Any]:
        """The node's entry in cluster.json."""
        return {
            "node_id": self.node_id,
            "role": self.role,
            "host": self.host,
            "http_port": self.http_port,
            "rtmp_port": self.rtmp_port,
            "http_url": self.http_url,
            "rtmp_url": self.rtmp_url,
            "data_dir": str(self.data_dir),
            "log": str(self.log),
            "settings": self.settings,
            "process": None if self.process is None else self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeProcess:
        """Read what `to_json` wrote."""
        process = data.get("process")
        return cls(
            node_id=str(data["node_id"]),
            role=str(data["role"]),
            host=str(data["host"]),
            http_port=int(data["http_port"]),
            rtmp_port=int(data["rtmp_port"]),
            data_dir=Path(data["data_dir"]),
            log=Path(data["log"]),
            settings={str(k): str(v) for k, v in dict(data["settings"]).items()},
            process=None if process is None else ProcessRecord.from_json(process),
        )


@dataclass(slots=True)
class HaproxyProcess:
    """HAProxy in front of a local cluster."""

    host: str
    http_port: int
    rtmp_ingest_port: int
    rtmp_play_port: int
    config: Path
    log: Path
    stats_socket: Path
    program: str
    process: ProcessRecord | None = None

    def to_json(self) -> dict[str, Any]:
        """HAProxy's entry in cluster.json."""
        return {
            "host": self.host,
            "http_port": self.http_port,
            "rtmp_ingest_port": self.rtmp_ingest_port,
            "rtmp_play_port": self.rtmp_play_port,
            "config": str(self.config),
            "log": str(self.log),
            "stats_socket": str(self.stats_socket),
            "program": self.program,
            "process": None if self.process is None else self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HaproxyProcess:
        """Read what `to_json` wrote."""
        process = data.get("process")
        return cls(
            host=str(data["host"]),
            http_port=int(data["http_port"]),
            rtmp_ingest_port=int(data["rtmp_ingest_port"]),
            rtmp_play_port=int(data["rtmp_play_port"]),
            config=Path(data["config"]),
            log=Path(data["log"]),
            stats_socket=Path(data["stats_socket"]),
            program=str(data["program"]),
            process=None if process is None else ProcessRecord.from_json(process),
        )
