"""Origins and edges in one test process, on the real Redis: stream ownership and edge pull.

Every node is a real `Node` with its own RTMP and HTTP listeners on loopback; they share a SQLite
file, a secret and one Redis (a unique key prefix per test), as a cluster's nodes do. Failures
with real processes (kill -9, Redis restart, HAProxy) are in tests/cluster/.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp

from ripplecast.accounts.cached_directory import CachedDirectory
from ripplecast.cluster import StreamOwnership
from ripplecast.db.models import Visibility
from ripplecast.http.live import HTTP_FLV
from ripplecast.storage import CachingStorage
from support import (
    REDIS,
    FlvViewer,
    NodeFactory,
    Process,
    ffmpeg_publish_args,
    free_port,
    require_program,
    require_redis,
    run,
    start_publisher,
    wait_until,
)

SEGMENT = re.compile(r"(?m)^(\d+)\.ts$")


def cluster_settings(**extra: Any) -> dict[str, Any]:
    return {
        "cache_url": REDIS,
        "cache_prefix": f"rc-test-{secrets.token_hex(4)}:",
        "worker_enabled": False,
        "cluster_stream_claim_ttl_seconds": 3.0,
        **extra,
    }


async def fetch(url: str, **kw: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as response:
        return response.status, await response.read()


async def test_edge_pulls_one_upstream_for_every_viewer_and_protocol(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings()
    async with (
        make_node(role="origin", cluster_node_id="origin-1", **shared) as origin,
        make_node(role="edge", cluster_node_id="edge-1", **shared) as edge,
    ):
        async with await start_publisher(origin, "show", 30):
            viewers = [FlvViewer(f"{edge.http}/live/show.flv").start() for _ in range(4)]
            try:
                await wait_until(lambda: all(v.keyframes >= 2 for v in viewers), 15, "viewers")
                # RTMP and HLS from the edge, read by ffprobe.
                ffprobe = require_program("ffprobe")
                for url in (f"{edge.rtmp}/show", f"{edge.http}/live/show/index.m3u8"):
                    code, out, err = await run(
                        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name",
                         "-of", "csv=p=0", url], timeout=30,
                    )  # fmt: skip
                    assert code == 0, err.decode()
                    assert set(out.decode().split()) == {"h264", "aac"}, (url, out)
                assert edge.node.puller is not None
                upstreams = edge.node.puller.upstreams
                assert list(upstreams) == ["show"]
                assert upstreams["show"].connects == 1
                stream = origin.node.hub.get("show")
                assert stream is not None
                # The origin serves one HTTP-FLV reader: the edge, not its four viewers.
                assert stream.readers_of(HTTP_FLV) == 1
                mirror = edge.node.hub.get("show")
                assert mirror is not None and mirror.readers_of(HTTP_FLV) == 4
                # HLS segment names are the origin's (media-clock numbers).
                await asyncio.sleep(2.5)
                _, origin_list = await fetch(f"{origin.http}/live/show/index.m3u8")
                _, edge_list = await fetch(f"{edge.http}/live/show/index.m3u8")
                origin_names = set(SEGMENT.findall(origin_list.decode()))
                edge_names = set(SEGMENT.findall(edge_list.decode()))
                assert len(edge_names) >= 2
                assert len(edge_names & origin_names) >= 2, (origin_names, edge_names)
                common = sorted(edge_names & origin_names, key=int)[0]
                _, origin_ts = await fetch(f"{origin.http}/live/show/{common}.ts")
                _, edge_ts = await fetch(f"{edge.http}/live/show/{common}.ts")
                assert origin_ts == edge_ts  # same packets, same muxer: the same bytes
                # The edge asked the database about the channel far less than once a request.
                directory = edge.node.directory
                assert isinstance(directory, CachedDirectory)
                assert directory.hits > directory.misses > 0
            finally:
                for viewer in viewers:
                    await viewer.stop()


async def test_unknown_stream_at_an_edge_is_a_fast_404(make_node: NodeFactory) -> None:
    await require_redis()
    shared = cluster_settings(edge_connect_timeout_seconds=30.0)
    async with make_node(role="edge", cluster_node_id="edge-1", **shared) as edge:
        timeout = aiohttp.ClientTimeout(total=5)  # far below the 30 s connect timeout
        for path in ("/live/nobody.flv", "/live/nobody/index.m3u8", "/live/nobody/1.ts"):
            status, body = await fetch(f"{edge.http}{path}", timeout=timeout)
            assert status == 404, (path, body)
        assert edge.node.puller is not None
        assert edge.node.puller.events["not_found"] == 3
        assert edge.node.puller.upstreams == {}


async def test_a_second_publisher_of_the_name_on_another_origin_is_refused(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings()
    async with (
        make_node(role="origin", cluster_node_id="origin-a", **shared) as first,
        make_node(role="origin", cluster_node_id="origin-b", **shared) as second,
    ):
        async with await start_publisher(first, "taken", 30):
            rival = await Process.start(ffmpeg_publish_args(f"{second.rtmp}/taken", seconds=10))
            async with rival:
                code, _, _ = await rival.wait(20)
            assert code != 0
            assert second.node.rtmp.refused["publish_stream_owned_elsewhere"] == 1
            assert second.node.hub.get("taken") is None
            assert first.node.claims is not None and "taken" in first.node.claims.held()
        # The first origin released the name when its stream ended: the second may take it.
        await wait_until(lambda: first.node.hub.get("taken") is None, 20, "stream to end")
        await wait_until(lambda: not first.node.claims.held(), 10, "claim released")  # type: ignore[union-attr]
        async with await start_publisher(second, "taken", 5):
            assert second.node.claims is not None and "taken" in second.node.claims.held()


async def test_a_stale_owner_stops_when_another_node_holds_the_claim(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings(cluster_stream_claim_ttl_seconds=1.5, reconnect_grace_seconds=0)
    async with make_node(role="origin", cluster_node_id="origin-a", **shared) as origin:
        publisher = await start_publisher(origin, "contested", 60)
        async with publisher:
            assert origin.node.claims is not None
            old = origin.node.claims.held()["contested"]
            # Origin A's claim is lost (as after a partition longer than the TTL) and another
            # node claims the name with a larger fencing token.
            rival = StreamOwnership(origin.node.cache, ttl_seconds=30, node_id="origin-z")
            await origin.node.cache.delete("cluster:owner:contested")
            new = await rival.claim("contested")
            assert new is not None and new.token > old.token
            # A's next renewal finds out: it kicks its publisher and ends the stream.
            code, _, _ = await publisher.wait(10)
            assert code != 0
            await wait_until(lambda: origin.node.hub.get("contested") is None, 5, "stream end")
            assert origin.node.claims.lost == 1
            assert await rival.is_current(new)  # the stale owner did not touch the new claim


async def test_claim_that_vanished_from_redis_is_taken_again(make_node: NodeFactory) -> None:
    await require_redis()
    shared = cluster_settings(cluster_stream_claim_ttl_seconds=1.5)
    async with make_node(role="origin", cluster_node_id="origin-a", **shared) as origin:
        async with await start_publisher(origin, "kept", 30):
            assert origin.node.claims is not None
            # Redis restarted empty: the claim is gone but the stream is live here.
            await origin.node.cache.delete("cluster:owner:kept")
            await wait_until(lambda: origin.node.claims.reclaimed == 1, 5, "reclaim")  # type: ignore[union-attr]
            ownership = StreamOwnership(origin.node.cache, ttl_seconds=5, node_id="probe")
            owner = await ownership.owner("kept")
            assert owner is not None and owner.node_id == "origin-a"
            assert origin.node.hub.get("kept") is not None


async def test_edge_closes_the_upstream_after_the_last_viewer_left(make_node: NodeFactory) -> None:
    await require_redis()
    shared = cluster_settings(edge_idle_seconds=1.0)
    async with (
        make_node(role="origin", cluster_node_id="origin-1", **shared) as origin,
        make_node(role="edge", cluster_node_id="edge-1", **shared) as edge,
    ):
        async with await start_publisher(origin, "brief", 30):
            viewer = FlvViewer(f"{edge.http}/live/brief.flv").start()
            await wait_until(lambda: viewer.keyframes >= 1, 10, "viewer")
            stream = origin.node.hub.get("brief")
            assert stream is not None and stream.readers_of(HTTP_FLV) == 1
            await viewer.stop()
            await wait_until(lambda: stream.readers_of(HTTP_FLV) == 0, 10, "upstream closed")
            assert edge.node.hub.get("brief") is None
            assert edge.node.puller is not None and edge.node.puller.upstreams == {}
            # A new viewer opens a new upstream.
            again = FlvViewer(f"{edge.http}/live/brief.flv").start()
            try:
                await wait_until(lambda: again.keyframes >= 1, 10, "second viewer")
            finally:
                await again.stop()


async def test_the_origin_refuses_pulls_without_a_valid_cluster_token(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings(publish_mode="keys")
    async with make_node(role="origin", cluster_node_id="origin-1", **shared) as origin:
        node = origin.node
        await node.accounts.create_user("pat", "pat's password")
        await node.accounts.create_channel("pat", "pats", visibility=Visibility.PRIVATE)
        key = await node.accounts.create_stream_key("pats")
        rtmp = f"rtmp://127.0.0.1:{node.rtmp_port}/live/{key.key}"
        async with Process(
            await asyncio.create_subprocess_exec(
                *ffmpeg_publish_args(rtmp, seconds=30), stderr=asyncio.subprocess.DEVNULL
            ),
            [],
        ):
            await wait_until(lambda: node.hub.get("pats") is not None, 10, "live")
            url = f"{origin.http}/live/pats.flv"
            forged = {"X-Ripplecast-Cluster": "9999999999." + "0" * 64}
            status, _ = await fetch(url, headers=forged)
            assert status == 403
            status, _ = await fetch(url)
            assert status == 404  # private: refused like an unknown stream
            from ripplecast.accounts.cluster_tokens import pull_token
            from ripplecast.app import cluster_secret

            secret = cluster_secret(node.settings, node.secret)
            expired = {"X-Ripplecast-Cluster": pull_token(secret, "/live/pats", expires_at=1)}
            status, _ = await fetch(url, headers=expired)
            assert status == 403
            assert node.access.denials["http-flv:cluster_bad_signature"] == 1
            assert node.access.denials["http-flv:cluster_expired"] == 1


async def test_events_survive_a_dropped_redis_subscription(make_node: NodeFactory) -> None:
    """Redis drops the pub/sub connection (as on a restart): the node subscribes again, and a
    key revoked afterwards still kicks its publisher."""
    await require_redis()
    import redis.asyncio as redis

    shared = cluster_settings(publish_mode="keys", reconnect_grace_seconds=0)
    async with make_node(role="all", cluster_node_id="all-1", **shared) as running:
        node = running.node
        await node.accounts.create_user("kim", "kim's password")
        await node.accounts.create_channel("kim", "kims")
        key = await node.accounts.create_stream_key("kims")
        client = redis.Redis.from_url(REDIS)
        channel = f"{shared['cache_prefix']}events"
        try:

            async def subscribers() -> int:
                counts = await client.pubsub_numsub(channel)
                return int(counts[0][1])

            assert await subscribers() == 1
            killed = await client.client_kill_filter(_type="pubsub")
            assert killed >= 1
            for _ in range(100):  # the node notices and subscribes again within seconds
                await asyncio.sleep(0.1)
                if await subscribers() == 1:
                    break
            assert await subscribers() == 1
            publisher = await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key.key}", seconds=30)
            )
            async with publisher:
                await wait_until(lambda: node.hub.get("kims") is not None, 10, "live")
                await node.accounts.revoke_stream_key(key.id)
                code, _, _ = await publisher.wait(20)
                assert code != 0
            assert node.rtmp.refused["key_revoked"] == 1
        finally:
            await client.aclose()


async def test_edge_serves_vod_from_its_cache_with_one_fetch_per_segment(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """A web+worker node transcodes an upload into the shared storage; an edge serves the
    video's files through its cache: a burst of requests for one segment costs one fetch."""
    await require_redis()
    from media import make_video
    from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

    shared = cluster_settings(
        **{**VOD_SETTINGS, "worker_enabled": True, "storage_url": str(tmp_path / "media")}
    )
    source = await asyncio.to_thread(make_video, tmp_path / "clip.mp4", seconds=4, size="320x240")
    async with (
        make_node(role="all", cluster_node_id="all-1", **shared) as home,
        make_node(role="edge", cluster_node_id="edge-1", **shared) as edge,
    ):
        headers = await token_for(home.node, "vera")
        api = f"{home.http}/api/v1"
        async with aiohttp.ClientSession() as http:
            status, created = await upload_file(http, api, headers, source)
            assert status == 201, created
            video = await wait_ready(http, api, headers, created["id"], 90)
            assert video["state"] == "ready", video
            cache = edge.node.vod_media
            assert isinstance(cache, CachingStorage)
            master = f"{edge.http}/vod/{created['id']}/master.m3u8"
            async with http.get(master) as r:
                assert r.status == 200, await r.text()
                variant = next(
                    line for line in (await r.text()).splitlines() if line.endswith(".m3u8")
                )
            base = master.rsplit("/", 1)[0]
            async with http.get(f"{base}/{variant}") as r:
                assert r.status == 200
                segment = next(
                    line for line in (await r.text()).splitlines() if line.endswith(".ts")
                )
            segment_url = f"{base}/{variant.rsplit('/', 1)[0]}/{segment}"
            if "/" not in variant:
                segment_url = f"{base}/{segment}"
            misses_before = cache.misses

            async def get() -> bytes:
                async with http.get(segment_url) as r:
                    assert r.status == 200
                    return await r.read()

            bodies = await asyncio.gather(*(get() for _ in range(50)))
            assert len(set(bodies)) == 1 and len(bodies[0]) > 1000
            assert cache.misses - misses_before == 1  # 50 requests, one fetch from storage
            assert cache.coalesced + cache.hits_memory >= 49
        # The whole video plays from the edge.
        ffmpeg = require_program("ffmpeg")
        code, _, err = await run([ffmpeg, "-v", "error", "-i", master, "-f", "null", "-"], 60)
        assert code == 0 and not err.strip(), err.decode()


async def test_edge_processes_share_their_ports_with_reuse_port(make_node: NodeFactory) -> None:
    """Two edges bound to the same HTTP and RTMP ports (SO_REUSEPORT): the kernel spreads the
    viewers over both, and each edge pulls the stream once."""
    await require_redis()
    shared = cluster_settings()
    ports = {"http_port": free_port(), "rtmp_port": free_port(), "reuse_port": True}
    async with (
        make_node(role="origin", cluster_node_id="origin-1", **shared) as origin,
        make_node(role="edge", cluster_node_id="edge-a", **shared, **ports) as first,
        make_node(role="edge", cluster_node_id="edge-b", **shared, **ports) as second,
    ):
        assert first.node.http_port == second.node.http_port == ports["http_port"]
        async with await start_publisher(origin, "spread", 30):
            viewers = [FlvViewer(f"{first.http}/live/spread.flv").start() for _ in range(24)]
            try:
                await wait_until(lambda: all(v.keyframes >= 1 for v in viewers), 15, "viewers")
                counts = []
                for edge in (first, second):
                    mirror = edge.node.hub.get("spread")
                    counts.append(mirror.readers_of(HTTP_FLV) if mirror is not None else 0)
                assert sum(counts) == 24 and min(counts) >= 1, counts  # 2 * 2**-24 to fail
                stream = origin.node.hub.get("spread")
                assert stream is not None and stream.readers_of(HTTP_FLV) == 2
            finally:
                for viewer in viewers:
                    await viewer.stop()
