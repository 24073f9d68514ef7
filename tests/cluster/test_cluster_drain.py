"""A rolling restart without dropped viewers: SIGTERM an edge behind the real HAProxy. Its
/readyz turns 503, HAProxy sends new viewers to the other edge, the edge's own viewers keep
watching until drain_timeout_seconds, then it stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from test_cluster_failover import BASE_SETTINGS, ON_POSTGRESQL, TimedViewer, owner_of, poll, up

from ripplecast.devcluster import ClusterSpec
from ripplecast.devcluster.processes import Liveness, liveness
from support import REDIS, require_redis, wait_until

DRAIN_SECONDS = 5.0


@pytest.mark.slow
@ON_POSTGRESQL
async def test_a_draining_edge_keeps_its_viewers_while_haproxy_sends_new_ones_away(
    db_url: str, run_dir: Path, haproxy: str
) -> None:
    await require_redis()
    from test_cluster_failover import publishing

    settings = {**BASE_SETTINGS, "drain_timeout_seconds": str(DRAIN_SECONDS)}
    spec = ClusterSpec(
        database_url=db_url, cache_url=REDIS, origins=1, edges=2, workers=0, web=1,
        run_dir=run_dir, settings=settings, timeout=30,
    )  # fmt: skip
    cluster = await up(spec)
    name = "rolling"
    edge_1, edge_2 = cluster.nodes["edge-1"], cluster.nodes["edge-2"]
    async with publishing(f"{cluster.rtmp_ingest_url}/{name}"):
        await poll(lambda: owner_of(cluster, name), 20, "a publisher")
        old = TimedViewer(f"{edge_1.http_url}/live/{name}.flv").start()
        try:
            await wait_until(lambda: len(old.arrivals) >= 25, 20, "edge-1's viewer")
            record = edge_1.process
            assert record is not None
            os.killpg(record.pgid, signal.SIGTERM)
            sent = time.monotonic()
            await asyncio.to_thread(cluster.wait_haproxy, {"edges/edge-1": "DOWN"}, timeout=10)
            # New viewers through HAProxy all land on edge-2 and play.
            newcomers = [
                TimedViewer(f"{cluster.http_url}/live/{name}.flv").start() for _ in range(5)
            ]
            try:
                await wait_until(lambda: all(len(v.arrivals) >= 10 for v in newcomers), 15, "new")
                assert all(v.status == 200 for v in newcomers)
            finally:
                for viewer in newcomers:
                    await viewer.stop()
            assert edge_2.process is not None
            # The old viewer kept watching on the draining edge the whole time (25 fps; half of
            # that allows for a busy machine).
            await asyncio.sleep(max(0.0, sent + 3 - time.monotonic()))
            assert not old.ended.is_set(), "the draining edge dropped its viewer"
            assert old.frames_after(sent + 1) >= 25, old.frames_after(sent + 1)
            # After the drain timeout the edge closes and exits cleanly.
            await asyncio.wait_for(old.ended.wait(), DRAIN_SECONDS + 10)
            assert time.monotonic() - sent >= DRAIN_SECONDS - 0.5
            for _ in range(100):
                if liveness(record) is not Liveness.RUNNING:
                    break
                await asyncio.sleep(0.1)
            assert liveness(record) is not Liveness.RUNNING
            assert "drained" in edge_1.log.read_text()
        finally:
            await old.stop()
    await asyncio.to_thread(cluster.down)
