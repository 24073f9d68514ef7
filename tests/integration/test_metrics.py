"""`/metrics` of real nodes, read with prometheus_client's own text parser.

A node with an ffmpeg publisher, HTTP-FLV and RTMP viewers and HLS requests; a refused stream key
and a bad signature; a VOD upload through the node's own worker; an edge pulling through a TCP
relay the test cuts; 50 publishers against a label limit of 10. The values must move as the
traffic does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from media import make_video
from ripplecast import __version__
from ripplecast.db.models import JobState
from ripplecast.metrics import CATALOG, catalog
from ripplecast.protocols.rtmp.aio import RequestRefused, RtmpClient
from ripplecast.vod.uploads import source_key
from support import (
    REDIS,
    FlvViewer,
    NodeFactory,
    Process,
    RunningNode,
    ffmpeg_publish_args,
    require_program,
    require_redis,
    run,
    start_publisher,
    wait_until,
)
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


class Scrape:
    """One scrape of `/metrics`, parsed: families by name, and their samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str) -> Iterator[Sample]:
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name:
                    yield sample

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples(name)
            if all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, label: str, prefix: str = "ripplecast_") -> set[str]:
        return {
            s.labels[label]
            for f in self.families.values()
            if f.name.startswith(prefix)
            for s in f.samples
            if label in s.labels
        }


async def scrape(node: RunningNode) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(f"{node.http}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == TEXT_FORMAT
        return Scrape(await response.text())


def exported_names(result: Scrape) -> dict[str, str]:
    """Catalog-style names of the scraped families (a counter's with `_total`) and types."""
    return {
        (name + "_total" if family.type == "counter" else name): family.type
        for name, family in result.families.items()
    }


def check_catalog(result: Scrape, role: str) -> None:
    """A node of `role` exports exactly the catalog's entries for `role`, with their types."""
    exported = exported_names(result)
    expected = {spec.name: spec.kind for spec in CATALOG if role in spec.roles}
    assert exported == expected, role


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as response:
        return response.status, await response.read()


@contextlib.asynccontextmanager
async def rtmp_player(node: RunningNode, name: str, received: list[int]) -> Any:
    client = RtmpClient(on_media=lambda event: received.append(event.timestamp))
    try:
        await client.connect(node.rtmp, timeout=10)
        await client.play(name)
        yield client
    finally:
        await client.close(grace=1)


async def test_live_metrics_follow_publisher_viewers_and_refusals(
    make_node: NodeFactory,
) -> None:
    async with make_node(publish_mode="keys") as running:
        node = running.node
        assert node.first_run is not None
        key = node.first_run.stream_key
        before = await scrape(running)
        assert before.value("ripplecast_streams_live") == 0
        info = next(before.samples("ripplecast_build_info"))
        assert info.labels == {
            "version": __version__,
            "python": platform.python_version(),
            "role": "all",
        }
        publisher = await Process.start(ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=30))
        async with publisher, aiohttp.ClientSession() as http:
            await wait_until(
                lambda: (s := node.hub.get("main")) is not None and s.stats.keyframes >= 1,
                15,
                "stream main to go live",
            )
            flv = [FlvViewer(f"{running.http}/live/main.flv").start() for _ in range(2)]
            rtmp_media: list[int] = []
            try:
                async with rtmp_player(running, "main", rtmp_media):
                    await wait_until(
                        lambda: all(v.keyframes >= 1 for v in flv) and len(rtmp_media) > 10,
                        15,
                        "viewers to get media",
                    )
                    status, playlist = await get(http, f"{running.http}/live/main/index.m3u8")
                    assert status == 200, playlist
                    first = re.findall(rb"(?m)^(\d+)\.ts$", playlist)[0].decode()
                    status, _ = await get(http, f"{running.http}/live/main/{first}.ts")
                    assert status == 200
                    # A wrong stream key (RTMP) and a forged signature (HLS) are refused.
                    intruder = RtmpClient()
                    await intruder.connect(running.rtmp, timeout=10)
                    with pytest.raises(RequestRefused):
                        await intruder.publish("not-a-key")
                    await intruder.close(grace=1)
                    forged = "rc_exp=1&rc_kid=k0&rc_sig=forged"
                    status, _ = await get(http, f"{running.http}/live/main/index.m3u8?{forged}")
                    assert status == 403
                    first_scrape = await scrape(running)
                    await asyncio.sleep(1.5)
                    second = await scrape(running)
            finally:
                for viewer in flv:
                    await viewer.stop()

    for result in (first_scrape, second):
        assert result.value("ripplecast_streams_live") == 1
        assert result.value("ripplecast_streams_waiting") == 0
        assert result.value("ripplecast_publishers") == 1
        assert result.value("ripplecast_viewers", protocol="http-flv") == 2
        assert result.value("ripplecast_viewers", protocol="rtmp") == 1
        assert result.value("ripplecast_viewers", protocol="hls") == 1
        assert result.value("ripplecast_stream_viewers", stream="main", protocol="http-flv") == 2
        assert result.value("ripplecast_stream_live", stream="main") == 1
        assert (
            result.value("ripplecast_refused_total", protocol="rtmp", reason="publish_bad_key") == 1
        )
        assert result.value("ripplecast_auth_denials_total", protocol="rtmp", reason="bad_key") == 1
        hls_denials = [
            s for s in result.samples("ripplecast_auth_denials_total")
            if s.labels["protocol"] == "hls" and s.labels["reason"].startswith("signature_")
        ]  # fmt: skip
        assert sum(s.value for s in hls_denials) == 1, hls_denials
        assert result.value("ripplecast_hls_segment_duration_seconds_count") > 0
        assert result.value("ripplecast_event_loop_lag_seconds_count") > 0
    # Bytes in and out keep moving; the rates are those of a 25 fps stream.
    for name in ("ripplecast_ingest_bytes_total", "ripplecast_sent_bytes_total"):
        assert 0 < first_scrape.value(name) < second.value(name), name
    assert second.value("ripplecast_stream_ingest_bytes_total", stream="main") > 0
    assert second.value("ripplecast_stream_ingest_bits_per_second", stream="main") > 10_000
    assert 15 <= second.value("ripplecast_stream_ingest_frames_per_second", stream="main") <= 40
    # Segments of about the 1 s target (cut on the 1 s GOP's keyframes).
    count = second.value("ripplecast_hls_segment_duration_seconds_count")
    total = second.value("ripplecast_hls_segment_duration_seconds_sum")
    assert 0.5 <= total / count <= 2.5
    # Latency by route pattern, never by raw path (no stream name, segment number or query).
    routes = second.label_values("route")
    assert {"/live/{name}.flv", "/live/{name}/index.m3u8", "/live/{name}/{number}.ts"} <= routes
    assert "/metrics" in routes
    assert not [r for r in routes if "main" in r or "?" in r or re.search(r"/\d+\.ts", r)]
    ok = second.value(
        "ripplecast_http_request_duration_seconds_count",
        route="/live/{name}/{number}.ts",
        method="GET",
        status="2xx",
    )
    assert ok == 1
    assert (
        second.value("ripplecast_http_response_bytes_total", route="/live/{name}/{number}.ts") > 0
    )
    check_catalog(second, "all")


async def test_without_metrics_there_is_no_route(make_node: NodeFactory) -> None:
    async with make_node(metrics_enabled=False) as running:
        assert running.node.metrics is None
        async with aiohttp.ClientSession() as http:
            status, _ = await get(http, f"{running.http}/metrics")
        assert status == 404


async def _publish_names(running: RunningNode, names: list[str]) -> list[RtmpClient]:
    clients = []
    for name in names:
        client = RtmpClient()
        await client.connect(running.rtmp, timeout=10)
        await client.publish(name)
        clients.append(client)
    return clients


@pytest.mark.parametrize("stream_labels", [True, False])
async def test_stream_labels_stay_bounded(make_node: NodeFactory, stream_labels: bool) -> None:
    names = [f"cam{n:02d}" for n in range(50)]
    async with make_node(
        metrics_max_labelled_streams=10, metrics_stream_labels=stream_labels, hls_enabled=False
    ) as running:
        clients = await _publish_names(running, names)
        try:
            await wait_until(lambda: len(running.node.hub) == 50, 10, "50 streams")
            result = await scrape(running)
        finally:
            for client in clients:
                client.abort()
    assert result.value("ripplecast_streams_live") == 50
    assert result.value("ripplecast_publishers") == 50
    labelled = result.label_values("stream")
    if stream_labels:
        assert len(labelled) == 11, labelled
        assert labelled == {*names[:10], "_other"}  # the first ten keep their labels
        assert result.value("ripplecast_stream_live", stream="_other") == 40
        assert result.value("ripplecast_stream_live", stream="cam00") == 1
    else:
        assert labelled == set()
        assert [s.value for s in result.samples("ripplecast_stream_live")] == [50]


async def test_job_and_upload_metrics(make_node: NodeFactory, tmp_path: Path) -> None:
    require_program("ffmpeg")
    # Long enough (a few seconds of transcoding) for the second upload to come while it runs.
    good = make_video(tmp_path / "good.mp4", seconds=12, size="640x360")
    doomed = make_video(tmp_path / "doomed.mp4", seconds=1, size="160x120")
    async with make_node(**VOD_SETTINGS, job_max_attempts=1) as running:
        node = running.node
        api = f"{running.http}/api/v1"
        async with aiohttp.ClientSession() as http:
            headers = await token_for(node, "uploader", admin=True)
            status, first = await upload_file(http, api, headers, good)
            assert status == 201, first

            await _wait_for_running_job(node)
            # While the only worker slot transcodes the first video, the second one's source
            # disappears from storage: its attempt fails, for good (one attempt allowed).
            status, second = await upload_file(http, api, headers, doomed)
            assert status == 201, second
            await node.storage.delete(source_key(second["id"]))
            counts = await node.jobs.counts()  # the first job still runs: the second waits
            assert (counts[JobState.RUNNING], counts[JobState.DONE]) == (1, 0)
            done = await wait_ready(http, api, headers, first["id"], 120)
            failed = await wait_ready(http, api, headers, second["id"], 120)
            assert (done["state"], failed["state"]) == ("ready", "failed")
            result = await scrape(running)
    assert (
        result.value("ripplecast_upload_bytes_total") == good.stat().st_size + doomed.stat().st_size
    )
    assert result.value("ripplecast_jobs", state="done") == 1
    assert result.value("ripplecast_jobs", state="failed") == 1
    assert result.value("ripplecast_jobs", state="queued") == 0
    assert result.value("ripplecast_job_duration_seconds_count", outcome="done") == 1
    assert result.value("ripplecast_job_duration_seconds_count", outcome="failed") == 1
    assert result.value("ripplecast_job_duration_seconds_sum", outcome="done") > 0
    assert result.value("ripplecast_job_failures_total", outcome="failed") == 1
    assert result.value("ripplecast_job_failures_total", outcome="retried") == 0


async def _wait_for_running_job(node: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await node.jobs.counts())[JobState.RUNNING] != 1:
        if loop.time() > deadline:
            pytest.fail("the first job did not start")
        await asyncio.sleep(0.05)


class Relay:
    """A TCP relay the test can cut: the edge reaches the origin through it, as through a
    network that can fail. While cut, open connections are closed and new ones refused."""

    def __init__(self) -> None:
        self.target = 0
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut or not self.target:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut_off(self) -> None:
        self.cut = True
        for writer in self._writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut_off()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_edge_upstream_state_and_reconnects(make_node: NodeFactory) -> None:
    await require_redis()
    shared = {
        "cache_url": REDIS,
        "cache_prefix": f"rc-test-{secrets.token_hex(4)}:",
        "worker_enabled": False,
        "cluster_stream_claim_ttl_seconds": 3.0,
    }
    relay = Relay()
    port = await relay.start()
    try:
        async with (
            make_node(
                role="origin",
                cluster_node_id="origin-1",
                cluster_internal_http_url=f"http://127.0.0.1:{port}",
                **shared,
            ) as origin,
            make_node(
                role="edge", cluster_node_id="edge-1", edge_retry_seconds=0.2, **shared
            ) as edge,
        ):
            relay.target = origin.node.http_port
            async with await start_publisher(origin, "show", 30):
                viewer = FlvViewer(f"{edge.http}/live/show.flv").start()
                try:
                    await wait_until(lambda: viewer.keyframes >= 1, 15, "the edge's viewer")
                    connected = await scrape(edge)
                    relay.cut_off()
                    failing = await _scrape_until(
                        edge, "ripplecast_edge_upstream_state", {"state": "failing"}
                    )
                    relay.cut = False
                    back = await _scrape_until(
                        edge, "ripplecast_edge_upstream_reconnects_total", {}
                    )
                    seen = len(viewer.video_timestamps)
                    await wait_until(lambda: len(viewer.video_timestamps) > seen, 10, "media")
                    after = await scrape(edge)
                    origin_result = await scrape(origin)
                finally:
                    await viewer.stop()
    finally:
        await relay.close()
    state = "ripplecast_edge_upstream_state"
    assert connected.value(state, stream="show", state="connected") == 1
    assert connected.value(state, stream="show", state="failing") == 0
    assert connected.value("ripplecast_edge_upstream_reconnects_total") == 0
    assert failing.value(state, stream="show", state="failing") == 1
    assert failing.value(state, stream="show", state="connected") == 0
    assert failing.value("ripplecast_streams_waiting") == 1
    assert back.value("ripplecast_edge_upstream_reconnects_total") >= 1
    assert after.value("ripplecast_edge_upstream_events_total", event="upstream_broken") >= 1
    assert after.value(state, stream="show", state="connected") == 1
    assert after.value("ripplecast_viewers", protocol="http-flv") == 1
    check_catalog(after, "edge")
    # The origin sees the edge's pull as one HTTP-FLV viewer, and holds the stream's claim.
    assert origin_result.value("ripplecast_viewers", protocol="http-flv") == 1
    assert origin_result.value("ripplecast_cluster_claims") == 1
    assert origin_result.value("ripplecast_cluster_heartbeats_total") >= 1
    check_catalog(origin_result, "origin")


async def _scrape_until(node: RunningNode, name: str, labels: dict[str, str]) -> Scrape:
    """Scrape until a sample of `name` with `labels` is positive (10 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        result = await scrape(node)
        if result.value(name, **labels) > 0:
            return result
        if loop.time() > deadline:
            pytest.fail(f"{name}{labels} stayed 0:\n{result.text}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("role", ["worker", "web"])
async def test_every_role_serves_metrics(make_node: NodeFactory, role: str) -> None:
    async with make_node(role=role) as running:
        result = await scrape(running)
    assert next(result.samples("ripplecast_build_info")).labels["role"] == role
    check_catalog(result, role)


async def test_catalog_is_documented_and_printed_by_the_cli() -> None:
    entries = catalog()
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names))
    docs = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for entry in entries:
        name = entry["name"]
        assert f"`{name}`" in docs, name
        if entry["standard"]:
            continue
        assert name.startswith("ripplecast_"), name
        if entry["type"] == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if entry["type"] == "histogram":
            assert name.endswith(("_seconds", "_bytes")), name
    code, out, err = await run([*_ripplecast(), "metrics", "catalog"], timeout=30)
    assert code == 0, err.decode()
    assert json.loads(out) == entries


def _ripplecast() -> list[str]:
    import sys

    return [sys.executable, "-m", "ripplecast.cli"]
