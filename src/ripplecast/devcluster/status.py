"""`ripplecast cluster status`: the node registry of a cluster, as a table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ripplecast.cache import open_cache
from ripplecast.cluster import NodeInfo, NodeRegistry

__all__ = ["format_table", "nodes_as_json", "registry_nodes"]

_COLUMNS = ("NODE", "ROLE", "PUBLIC HTTP", "VIEWERS", "EGRESS", "CPU", "DRAINING", "BEAT")


async def registry_nodes(
    cache_url: str, *, prefix: str, ttl_seconds: float, max_nodes: int
) -> list[NodeInfo]:
    """The live nodes registered in the cache at `cache_url` under `prefix`, by node id.

    Raises `CacheError` when the cache does not answer.
    """
    cache = open_cache(cache_url, prefix=prefix)
    try:
        registry = NodeRegistry(cache, ttl_seconds=ttl_seconds, max_nodes=max_nodes)
        return await registry.nodes()
    finally:
        await cache.close()


def nodes_as_json(nodes: Sequence[NodeInfo], now: float) -> list[dict[str, Any]]:
    """Each node's registry record, plus `heartbeat_age_seconds` (at `now`, Unix time)."""
    listed = []
    for node in nodes:
        record: dict[str, Any] = json.loads(node.to_json())
        record.pop("v", None)
        record["heartbeat_age_seconds"] = round(max(0.0, now - node.heartbeat_at), 3)
        listed.append(record)
    return listed


def _bits(bps: int) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps} bit/s"


def format_table(nodes: Sequence[NodeInfo], now: float) -> str:
    """The nodes as an aligned text table, one line each (CPU as a share of the machine)."""
    rows = [_COLUMNS] + [
        (
            node.node_id,
            node.role,
            node.public.http or "-",
            str(node.load.viewers),
            _bits(node.load.egress_bps),
            f"{node.load.cpu * 100:.0f}%",
            "yes" if node.draining else "no",
            f"{max(0.0, now - node.heartbeat_at):.1f}s ago",
        )
        for node in nodes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
