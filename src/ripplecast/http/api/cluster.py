"""The cluster over HTTP: `GET /cluster/nodes` lists the live nodes of the node registry.

Admins only: a node's internal addresses say where the origins listen inside the network,
which is worth hiding from everyone else. The listing is read from the registry at each call
(no caching: an operator looking at it wants the registry as it is). A cache failure answers
503 with Retry-After, never a 500.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from ripplecast.accounts.policy import Scope
from ripplecast.cache import CacheError
from ripplecast.cluster import NodeInfo, NodeRegistry, Role
from ripplecast.http.api.framework import ApiContext, ApiRouter
from ripplecast.http.api.problems import ApiError

__all__ = ["ClusterNode", "ClusterNodes", "NodeAddresses", "NodeLoadOut", "cluster_router"]


class NodeAddresses(BaseModel):
    """Where a node answers; an empty string means it has no such listener."""

    http: str = Field(description='Base URL of its HTTP server, e.g. "http://10.0.0.5:8080".')
    rtmp: str = Field(description='Base URL of its RTMP server, e.g. "rtmp://10.0.0.5:1935".')


class NodeLoadOut(BaseModel):
    """How busy a node is, as of its last heartbeat."""

    viewers: int = Field(ge=0, description="Viewers connected to it, over every protocol.")
    egress_bps: int = Field(ge=0, description="Bits per second it sends to viewers and edges.")
    cpu: float = Field(ge=0, description="Share of the machine's CPU: 0.0 idle, 1.0 all cores.")


class ClusterNode(BaseModel):
    """A live node of the cluster, as its last heartbeat described it."""

    node_id: str = Field(description="The node's id in the registry.")
    role: Role = Field(description="What the node does.")
    internal: NodeAddresses = Field(description="Where other nodes reach it.")
    public: NodeAddresses = Field(description="Where viewers and publishers reach it.")
    load: NodeLoadOut
    draining: bool = Field(description="True while it finishes its work: it gets nothing new.")
    version: str = Field(description="The Ripplecast version it runs (empty if not said).")
    started_at: datetime | None = Field(
        description="When its process started (UTC); null if it did not say."
    )
    heartbeat_at: datetime = Field(description="When its last heartbeat was stored (UTC).")
    age_seconds: float = Field(
        ge=0, description="Seconds since its last heartbeat, by this node's clock."
    )


class ClusterNodes(BaseModel):
    """Every live node of the cluster, by node id."""

    items: list[ClusterNode]
    ttl_seconds: float = Field(
        gt=0, description="A node leaves the list this long after its last heartbeat."
    )


def _timestamp(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def describe_node(info: NodeInfo, now: float) -> ClusterNode:
    """The API's view of `info` at Unix time `now`."""
    return ClusterNode(
        node_id=info.node_id,
        role=info.role,
        internal=NodeAddresses(http=info.internal.http, rtmp=info.internal.rtmp),
        public=NodeAddresses(http=info.public.http, rtmp=info.public.rtmp),
        load=NodeLoadOut(
            viewers=info.load.viewers, egress_bps=info.load.egress_bps, cpu=info.load.cpu
        ),
        draining=info.draining,
        version=info.version,
        started_at=_timestamp(info.started_at) if info.started_at > 0 else None,
        heartbeat_at=_timestamp(info.heartbeat_at),
        # Clocks of two machines differ: a heartbeat "from the future" is zero seconds old.
        age_seconds=round(max(0.0, now - info.heartbeat_at), 3),
    )


def cluster_router(registry: NodeRegistry, *, clock: Callable[[], float] = time.time) -> ApiRouter:
    """The /cluster operations over `registry`; `clock` gives the Unix time for ages."""
    router = ApiRouter(tags=("cluster",))
    retry_after = str(max(1, math.ceil(registry.ttl_seconds / 3)))

    @router.get(
        "/cluster/nodes",
        summary="The live nodes of the cluster (admins)",
        response=ClusterNodes,
        auth=Scope.ADMIN,
        errors=(503,),
    )
    async def list_cluster_nodes(ctx: ApiContext) -> ClusterNodes:
        """Every node whose last heartbeat is younger than the registry's TTL, sorted by node
        id, with its role, internal and public addresses, load and draining flag. A node that
        stops beating leaves the list by itself. 503 when the registry's cache (Redis) cannot
        be read."""
        try:
            nodes = await registry.nodes()
        except CacheError as exc:
            raise ApiError(
                503,
                f"the cluster registry cannot be read right now: {exc}",
                headers={"Retry-After": retry_after},
            ) from None
        now = clock()
        return ClusterNodes(
            items=[describe_node(info, now) for info in nodes], ttl_seconds=registry.ttl_seconds
        )

    return router
