"""`ripplecast cluster up/status/down` end to end: real node processes by role, the real HAProxy,
a fresh PostgreSQL database and the machine's Redis; and the `LocalCluster` API the failover
tests build on (kill a node, watch HAProxy notice, start it again)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from cluster_support import ripplecast_async, started_in

from ripplecast.devcluster import (
    CLUSTER_FILE,
    ClusterSpec,
    DevClusterError,
    Liveness,
    LocalCluster,
    StopOutcome,
)
from ripplecast.devcluster.processes import liveness
from support import REDIS, require_redis

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
"""A fresh PostgreSQL database for the test (tests/databases.py)."""


async def status_of(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(url) as response,
    ):
        return response.status


@pytest.mark.slow
@ON_POSTGRESQL
async def test_cluster_up_serves_through_haproxy_lists_its_nodes_and_goes_down(
    db_url: str, run_dir: Path, haproxy: str
) -> None:
    await require_redis()
    code, out, err = await ripplecast_async(
        "cluster", "up", "--origins", "1", "--edges", "1", "--workers", "0", "--web", "1",
        "--database-url", db_url, "--cache-url", REDIS, "--run-dir", str(run_dir),
        "--timeout", "25",
        timeout=45,
    )  # fmt: skip
    assert code == 0, err
    cluster = LocalCluster.load(run_dir)
    assert cluster is not None
    assert f"OBS Server:     {cluster.rtmp_ingest_url}" in out
    assert cluster.http_url in out and str(cluster.run_dir / "logs") in out
    assert list(cluster.nodes) == ["origin-1", "edge-1", "web-1"]
    # The command has returned; what it started keeps running.
    assert set(cluster.running().values()) == {Liveness.RUNNING}
    for node in cluster.nodes.values():
        assert await status_of(f"{node.http_url}/readyz") == 200, node.node_id
    assert await status_of(f"{cluster.http_url}/readyz") == 200
    assert await status_of(f"{cluster.http_url}/live/nobody.flv") == 404  # an edge's fast 404

    status = ("cluster", "status", "--run-dir", str(run_dir))
    code, out, err = await ripplecast_async(*status, "--json")
    assert code == 0, err
    listed = {node["node_id"]: node for node in json.loads(out)}
    assert {name: node["role"] for name, node in listed.items()} == {
        "origin-1": "origin",
        "edge-1": "edge",
        "web-1": "web",
    }
    assert listed["edge-1"]["public"]["http"] == cluster.nodes["edge-1"].http_url
    code, out, err = await ripplecast_async(*status)
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["NODE", "ROLE"] and "origin-1  origin" in out

    records = cluster.processes()
    code, out, err = await ripplecast_async("cluster", "down", "--run-dir", str(run_dir))
    assert code == 0, err
    assert out.count(": stopped") == 4, out
    assert {name: liveness(record) for name, record in records.items()} == dict.fromkeys(
        records, Liveness.GONE
    )
    assert started_in(run_dir) == []
    assert not (run_dir / CLUSTER_FILE).exists()


@pytest.mark.slow
@ON_POSTGRESQL
async def test_a_killed_node_is_noticed_by_haproxy_and_can_be_started_again(
    db_url: str, run_dir: Path, haproxy: str
) -> None:
    await require_redis()
    spec = ClusterSpec(
        database_url=db_url, cache_url=REDIS, origins=1, edges=1, workers=0, web=0,
        run_dir=run_dir, timeout=25,
    )  # fmt: skip
    cluster = await asyncio.to_thread(LocalCluster.up, spec)
    try:
        assert cluster.haproxy_states() == {
            "origins/origin-1": "UP",
            "edges_rtmp/edge-1": "UP",
            "edges/edge-1": "UP",
        }
        killed = cluster.nodes["edge-1"].process
        assert killed is not None
        await asyncio.to_thread(cluster.kill, "edge-1")
        assert liveness(killed) is Liveness.GONE
        assert cluster.nodes["edge-1"].process is None
        await asyncio.to_thread(cluster.wait_haproxy, {"edges/edge-1": "DOWN"}, timeout=10)
        assert await status_of(f"{cluster.http_url}/live/nobody.flv") == 503

        await asyncio.to_thread(cluster.start_node, "edge-1")
        await asyncio.to_thread(cluster.wait_haproxy, {"edges/edge-1": "UP"}, timeout=10)
        assert await status_of(f"{cluster.http_url}/live/nobody.flv") == 404
        recorded = LocalCluster.load(run_dir)
        assert recorded is not None
        assert recorded.nodes["edge-1"].process == cluster.nodes["edge-1"].process != killed
    finally:
        outcomes = await asyncio.to_thread(cluster.down)
    assert set(outcomes.values()) == {StopOutcome.STOPPED}
    assert started_in(run_dir) == []


@pytest.mark.slow
@ON_POSTGRESQL
async def test_a_node_that_does_not_come_up_is_named_and_nothing_is_left_running(
    db_url: str, run_dir: Path, haproxy: str
) -> None:
    await require_redis()
    code, _, err = await ripplecast_async(
        "cluster", "up", "--origins", "1", "--edges", "1", "--workers", "0", "--web", "0",
        "--database-url", db_url, "--run-dir", str(run_dir), "--timeout", "20",
        "--set", "rtmp_max_chunk_size=1",
        timeout=40,
    )  # fmt: skip
    assert code == 1
    # Both nodes refuse the setting; the first one found is named, with its log.
    assert re.search(
        r"cluster: node (origin|edge)-1 \((origin|edge)\) exited before it was ready", err
    )
    assert "rtmp_max_chunk_size" in err  # the end of its log says why
    assert started_in(run_dir) == []
    assert not (run_dir / CLUSTER_FILE).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cache_url": "memory://"}, "share one Redis"),
        ({"settings": {"http_port": "9"}}, "'http_port' is set by `cluster up` itself"),
        ({"settings": {"no_such_setting": "1"}}, "'no_such_setting' is not a setting"),
        ({"origins": 0, "edges": 0, "web": 0}, "at least one node"),
        ({"edges": 33}, "--edges must be 0 to 32"),
        ({"database_url": ""}, "give --database-url"),
        ({"run_dir": Path("/tmp/" + "d" * 100)}, "too long a path for HAProxy's socket"),
    ],
)
def test_unusable_requests_are_refused_before_anything_starts(
    change: dict[str, object], message: str, tmp_path: Path
) -> None:
    values: dict[str, object] = {"database_url": "postgresql://unused", "run_dir": tmp_path / "c"}
    spec = ClusterSpec(**(values | change))  # type: ignore[arg-type]
    with pytest.raises(DevClusterError, match=re.escape(message)):
        LocalCluster.up(spec)
    assert not spec.run_dir.exists()
