"""Failures of a real cluster: origins, edges and a web node as `ripplecast serve --role`
processes behind the real HAProxy, on a fresh PostgreSQL database and Redis, loopback only.

- kill -9 the origin that owns a stream under viewers: the publisher (ffmpeg, restarted as OBS
  does) lands on the other origin through HAProxy; the edges' viewers stay connected and resume.
  The gap each viewer sees after the publisher is back is measured and printed.
- kill -9 an edge: HAProxy sends new viewers to the other edge; the other edge's viewers and the
  publisher are not disturbed.
- Restart Redis (a private redis-server, so no other test's Redis is touched): the nodes
  register again, the origin claims its stream again and the stream keeps playing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ripplecast.cache import open_cache
from ripplecast.cluster import NodeRegistry, StreamOwnership
from ripplecast.devcluster import ClusterSpec, LocalCluster
from support import (
    REDIS,
    REQUIRE_SERVICES,
    Process,
    ffmpeg_publish_args,
    free_port,
    require_program,
    require_redis,
    run,
    wait_until,
)

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
SEGMENT_SECONDS = 2.0
CLAIM_TTL = 3.0
BASE_SETTINGS = {
    "publish_mode": "open",
    "worker_enabled": "false",
    "hls_segment_seconds": str(SEGMENT_SECONDS),
    "cluster_stream_claim_ttl_seconds": str(CLAIM_TTL),
    "cluster_node_ttl_seconds": "4",
}


class TimedViewer:
    """An HTTP-FLV viewer noting when each video frame arrives (monotonic clock)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrivals: list[float] = []
        self.status: int | None = None
        self.ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        from ripplecast.media.flv import FlvReader, FlvTag

        reader = FlvReader()
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self.url) as response,
            ):
                self.status = response.status
                async for data in response.content.iter_any():
                    reader.feed(data)
                    now = time.monotonic()
                    while (event := reader.next_event()) is not None:
                        # A video tag with AVC NALUs (AVCPacketType 1), not a header.
                        video = isinstance(event, FlvTag) and event.kind == 9
                        if video and event.payload[1:2] == b"\x01":  # type: ignore[union-attr]
                            self.arrivals.append(now)
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            self.ended.set()

    def start(self) -> TimedViewer:
        self.task = asyncio.create_task(self._run())
        return self

    def frames_after(self, moment: float) -> int:
        return sum(1 for arrival in self.arrivals if arrival > moment)

    def first_after(self, moment: float) -> float | None:
        return next((arrival for arrival in self.arrivals if arrival > moment), None)

    def longest_pause(self, since: float) -> float:
        times = [since, *(a for a in self.arrivals if a > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def publishing(url: str) -> AsyncIterator[list[float]]:
    """ffmpeg publishing to `url`, started again whenever it exits (as OBS reconnects); yields
    the monotonic times at which it exited."""
    exits: list[float] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            process = await Process.start(
                ffmpeg_publish_args(url, seconds=300), stderr=asyncio.subprocess.DEVNULL
            )
            async with process:
                waiter = asyncio.create_task(process.proc.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not waiter.done():
                    waiter.cancel()
                    return
            exits.append(time.monotonic())
            await asyncio.sleep(0.3)

    task = asyncio.create_task(loop())
    try:
        yield exits
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def client_sockets_to(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections each of `pids` holds to local `port` (from
    /proc/net/tcp and the processes' file descriptors)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    inodes.add(fields[9])
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        counts[pid] += 1
    return counts


async def owner_of(cluster: LocalCluster, name: str, cache_url: str = REDIS) -> str | None:
    cache = open_cache(cache_url, prefix=cluster.cache_prefix)
    try:
        claim = await StreamOwnership(cache, ttl_seconds=5, node_id="test-probe").owner(name)
        return None if claim is None else claim.node_id
    finally:
        await cache.close()


async def registered(cluster: LocalCluster, cache_url: str = REDIS) -> set[str]:
    cache = open_cache(cache_url, prefix=cluster.cache_prefix)
    try:
        return {node.node_id for node in await NodeRegistry(cache, ttl_seconds=5).nodes()}
    finally:
        await cache.close()


async def poll(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def ffprobe_codecs(url: str) -> set[str]:
    ffprobe = require_program("ffprobe")
    code, out, err = await run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url],
        timeout=30,
    )
    assert code == 0, (url, err.decode())
    return set(out.decode().split())


async def up(spec: ClusterSpec) -> LocalCluster:
    return await asyncio.to_thread(LocalCluster.up, spec)


@pytest.mark.slow
@ON_POSTGRESQL
async def test_origin_and_edge_killed_under_viewers(
    db_url: str, run_dir: Path, haproxy: str
) -> None:
    await require_redis()
    spec = ClusterSpec(
        database_url=db_url, cache_url=REDIS, origins=2, edges=2, workers=0, web=1,
        run_dir=run_dir, settings=BASE_SETTINGS, timeout=30,
    )  # fmt: skip
    cluster = await up(spec)
    name = "failover"
    edges = {node_id: cluster.nodes[node_id] for node_id in ("edge-1", "edge-2")}
    async with publishing(f"{cluster.rtmp_ingest_url}/{name}") as exits:
        first_owner = await poll(lambda: owner_of(cluster, name), 20, "a publisher")
        viewers = [
            TimedViewer(f"{edges['edge-1'].http_url}/live/{name}.flv").start() for _ in range(3)
        ] + [TimedViewer(f"{edges['edge-2'].http_url}/live/{name}.flv").start() for _ in range(2)]
        viewers.append(TimedViewer(f"{cluster.http_url}/live/{name}.flv").start())  # HAProxy
        try:
            await wait_until(lambda: all(len(v.arrivals) >= 50 for v in viewers), 20, "viewers")
            # Every protocol from each edge.
            for edge in edges.values():
                for url in (f"{edge.rtmp_url}/{name}", f"{edge.http_url}/live/{name}/index.m3u8"):
                    assert await ffprobe_codecs(url) == {"h264", "aac"}, url
            # One upstream per edge, however many viewers.
            owner = cluster.nodes[first_owner]
            edge_pids = {e.process.pid: e.node_id for e in edges.values() if e.process}
            held = client_sockets_to(owner.http_port, list(edge_pids))
            assert sorted(held.values()) == [1, 1], held

            # --- kill -9 the origin that owns the stream -------------------------------------
            await asyncio.to_thread(cluster.kill, first_owner, signal.SIGKILL)
            killed_at = time.monotonic()
            other = next(n for n in cluster.by_role("origin") if n.node_id != first_owner)
            await poll(lambda: _is(owner_of(cluster, name), other.node_id), 30, "the other origin")
            back_at = time.monotonic()  # the new origin has just accepted the publisher
            await wait_until(
                lambda: all(v.frames_after(back_at) >= 25 for v in viewers), 20, "resume"
            )
            gaps = [v.first_after(back_at) - back_at for v in viewers]  # type: ignore[operator]
            outages = [v.longest_pause(killed_at - 1) for v in viewers]
            print(
                f"\norigin failover: publisher back {back_at - killed_at:.2f} s after the kill "
                f"(claim TTL {CLAIM_TTL} s, {len(exits)} publisher restarts); gap after the "
                f"publisher was back per viewer: {', '.join(f'{g:.3f}' for g in gaps)} s "
                f"(median {statistics.median(gaps):.3f}); longest pause per viewer: "
                f"{', '.join(f'{o:.2f}' for o in outages)} s"
            )
            assert not any(v.ended.is_set() for v in viewers), "a viewer was disconnected"
            assert statistics.median(gaps) < SEGMENT_SECONDS, gaps
            # The edges pull from the new owner, still once each.
            held = client_sockets_to(other.http_port, list(edge_pids))
            assert sorted(held.values()) == [1, 1], held
            # HLS at the edges marks the change.
            async with aiohttp.ClientSession() as http:

                async def discontinuity() -> bool:
                    url = f"{edges['edge-1'].http_url}/live/{name}/index.m3u8"
                    async with http.get(url) as response:
                        return b"#EXT-X-DISCONTINUITY" in await response.read()

                await poll(discontinuity, 10, "a discontinuity in the edge's playlist", 0.5)

            # --- kill -9 an edge -------------------------------------------------------------
            await asyncio.to_thread(cluster.kill, "edge-1", signal.SIGKILL)
            edge_killed_at = time.monotonic()
            await asyncio.to_thread(cluster.wait_haproxy, {"edges/edge-1": "DOWN"}, timeout=10)
            on_edge_2 = viewers[3:5]
            await asyncio.sleep(3)
            for viewer in on_edge_2:
                assert not viewer.ended.is_set()
                assert viewer.frames_after(edge_killed_at) >= 50
                assert viewer.longest_pause(edge_killed_at) < 1.0
            assert all(v.ended.is_set() for v in viewers[:3])  # edge-1's own viewers
            assert await owner_of(cluster, name) == other.node_id  # the publisher stayed
            newcomer = TimedViewer(f"{cluster.http_url}/live/{name}.flv").start()
            try:
                await wait_until(lambda: len(newcomer.arrivals) >= 25, 15, "a new viewer")
                assert newcomer.status == 200
            finally:
                await newcomer.stop()
            edge_2 = edges["edge-2"]
            assert edge_2.process is not None
            assert client_sockets_to(other.http_port, [edge_2.process.pid]) == {
                edge_2.process.pid: 1
            }
            # Once edge-1 has left the registry, the redirect sends viewers to edge-2.
            await poll(lambda: _absent(registered(cluster), "edge-1"), 15, "edge-1 to expire", 0.5)
            async with (
                aiohttp.ClientSession() as http,
                http.get(cluster.redirect_url(f"live/{name}.flv"), allow_redirects=False) as r,
            ):
                assert r.status == 302
                assert r.headers["Location"].startswith(edge_2.http_url + "/live/")
        finally:
            for viewer in viewers:
                await viewer.stop()
    await asyncio.to_thread(cluster.down)


async def _is(value: Any, expected: str) -> bool:
    return await value == expected


async def _absent(members: Any, node_id: str) -> bool:
    return node_id not in await members


class PrivateRedis:
    """A redis-server of this test's own (nothing on disk), stopped and started at will."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.directory = directory
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await Process.start(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
        )  # fmt: skip
        cache = open_cache(self.url, prefix="probe:")
        try:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    await cache.get("x")
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the private redis-server did not start")
        finally:
            await cache.close()

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.kill(signal.SIGKILL)
            self.process = None


@pytest.mark.slow
@ON_POSTGRESQL
async def test_redis_restart_nodes_register_again_and_the_stream_keeps_playing(
    db_url: str, run_dir: Path, haproxy: str, tmp_path: Path
) -> None:
    program = shutil.which("redis-server")
    if program is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(program, tmp_path)
    await redis.start()
    try:
        spec = ClusterSpec(
            database_url=db_url, cache_url=redis.url, origins=1, edges=1, workers=0, web=1,
            run_dir=run_dir, settings=BASE_SETTINGS, timeout=30,
        )  # fmt: skip
        cluster = await up(spec)
        name = "steady"
        async with publishing(f"{cluster.rtmp_ingest_url}/{name}"):
            await poll(lambda: owner_of(cluster, name, redis.url), 20, "a publisher")
            edge = cluster.nodes["edge-1"]
            viewer = TimedViewer(f"{edge.http_url}/live/{name}.flv").start()
            try:
                await wait_until(lambda: len(viewer.arrivals) >= 25, 20, "the viewer")
                assert await registered(cluster, redis.url) == ALL_THREE
                await redis.stop()  # everything in Redis is lost: nodes, claims
                stopped_at = time.monotonic()
                await asyncio.sleep(2)
                await redis.start()
                # Every node registers again within a heartbeat interval or two.
                await poll(
                    lambda: _equals(registered(cluster, redis.url), ALL_THREE),
                    10, "the nodes to register again", 0.2,
                )  # fmt: skip
                # The origin claims its stream again, so edges (and a second origin) find it.
                await poll(
                    lambda: _is(owner_of(cluster, name, redis.url), "origin-1"), 10, "the claim"
                )
                await asyncio.sleep(2)
                assert not viewer.ended.is_set()
                assert viewer.longest_pause(stopped_at) < 1.0  # it kept playing throughout
                assert viewer.frames_after(stopped_at) >= 75
                # A new viewer on the edge after the restart gets the stream.
                newcomer = TimedViewer(f"{cluster.http_url}/live/{name}.flv").start()
                try:
                    await wait_until(lambda: len(newcomer.arrivals) >= 10, 15, "a new viewer")
                finally:
                    await newcomer.stop()
            finally:
                await viewer.stop()
        await asyncio.to_thread(cluster.down)
    finally:
        await redis.stop()


ALL_THREE = {"origin-1", "edge-1", "web-1"}


async def _equals(value: Any, expected: set[str]) -> bool:
    return await value == expected
