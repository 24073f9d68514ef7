"""Health and drain: /readyz follows the node's dependencies; SIGTERM drains (readyz 503, nothing
new accepted, the connected go on until drain_timeout_seconds) and a second one stops at once;
JSON logs carry the node, request and stream ids and never a stream key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from support import (
    REQUIRE_SERVICES,
    FlvViewer,
    NodeFactory,
    Process,
    ffmpeg_publish_args,
    free_port,
    start_publisher,
    wait_until,
)

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]


async def get(url: str, **kw: Any) -> tuple[int, dict[str, Any] | str, CIMultiDict[str]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url, **kw) as r:
        body: dict[str, Any] | str
        try:
            body = await r.json(content_type=None)
        except ValueError:
            body = await r.text()
        return r.status, body, r.headers.copy()


async def test_readyz_follows_the_cache(make_node: NodeFactory, tmp_path: Path) -> None:
    program = shutil.which("redis-server")
    if program is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip

    async def start_redis() -> Process:
        redis = await Process.start(argv)
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return redis
            await asyncio.sleep(0.05)
        raise AssertionError("redis-server did not start")

    redis = await start_redis()
    try:
        settings = {"cache_url": f"redis://127.0.0.1:{port}/0", "readyz_timeout_seconds": 1.0}
        async with make_node(**settings) as node:
            status, body, headers = await get(f"{node.http}/readyz")
            assert status == 200 and body == {"status": "ready", "role": "all", "streams": 0}
            assert headers["Cache-Control"] == "no-store"
            await redis.kill()
            await asyncio.sleep(1.1)  # past the one-second memory of the last check
            status, body, _ = await get(f"{node.http}/readyz")
            assert status == 503, body
            assert isinstance(body, dict) and set(body["failing"]) == {"cache"}
            status, _, _ = await get(f"{node.http}/healthz")
            assert status == 200  # alive, just not ready
            redis = await start_redis()
            await asyncio.sleep(1.1)
            for _ in range(50):
                status, body, _ = await get(f"{node.http}/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.2)
            assert status == 200, body
    finally:
        await redis.kill()


async def test_drain_keeps_the_connected_and_refuses_newcomers(make_node: NodeFactory) -> None:
    async with make_node(drain_timeout_seconds=3.0, worker_enabled=False) as running:
        node = running.node
        async with await start_publisher(running, "going", 30):
            viewer = FlvViewer(f"{running.http}/live/going.flv").start()
            try:
                await wait_until(lambda: viewer.keyframes >= 1, 10, "the viewer")
                started = time.monotonic()
                drain = asyncio.create_task(node.drain())
                await wait_until(lambda: node.draining, 5, "the drain to begin")
                status, body, _ = await get(f"{running.http}/readyz")
                assert (status, body) == (503, {"status": "draining"})
                status, _, headers = await get(f"{running.http}/live/going.flv")
                assert status == 503 and headers["Retry-After"] == "1"
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", node.rtmp_port), 2).close()
                frames = len(viewer.video_timestamps)
                await asyncio.sleep(1.5)
                assert len(viewer.video_timestamps) > frames + 20  # still watching
                assert not viewer.ended.is_set()
                await asyncio.wait_for(drain, 10)
                took = time.monotonic() - started
                assert 2.5 < took < 6, took  # it waited for the viewer, up to the timeout
                assert node.busy()  # the viewer was still there: close() ends it
            finally:
                await viewer.stop()


def cli_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    return clean | extra


async def test_sigterm_drains_then_exits_and_logs_are_json(tmp_path: Path) -> None:
    rtmp_port, http_port = free_port(), free_port()
    env = cli_env(
        RIPPLECAST_RTMP_PORT=str(rtmp_port), RIPPLECAST_HTTP_PORT=str(http_port),
        RIPPLECAST_RTMP_HOST="127.0.0.1", RIPPLECAST_HTTP_HOST="127.0.0.1",
        RIPPLECAST_DATA_DIR=str(tmp_path / "data"), RIPPLECAST_WORKER_ENABLED="false",
        RIPPLECAST_DRAIN_TIMEOUT_SECONDS="4", RIPPLECAST_LOG_FORMAT="json",
        RIPPLECAST_CLUSTER_NODE_ID="solo-1", RIPPLECAST_PUBLISH_MODE="keys",
    )  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        server = await Process.start(
            [*RIPPLECAST, "serve"], env=env, stdout=asyncio.subprocess.PIPE, stderr=log_file
        )
    async with server:
        assert server.proc.stdout is not None
        key = ""
        while not key:
            line = (await asyncio.wait_for(server.proc.stdout.readline(), 30)).decode()
            if "Stream Key:" in line:
                key = line.split("Stream Key:")[1].split()[0]
        base = f"http://127.0.0.1:{http_port}"
        status, _, headers = await get(f"{base}/live/nobody.flv", headers={"X-Request-Id": "r-42"})
        assert status == 404 and headers["X-Request-Id"] == "r-42"
        publisher = await Process.start(
            ffmpeg_publish_args(f"rtmp://127.0.0.1:{rtmp_port}/live/{key}", seconds=30)
        )
        async with publisher:
            for _ in range(100):  # /readyz counts the live streams
                _, body, _ = await get(f"{base}/readyz")
                if isinstance(body, dict) and body.get("streams") == 1:
                    break
                await asyncio.sleep(0.1)
            viewer = FlvViewer(f"{base}/live/main.flv").start()
            try:
                await wait_until(lambda: viewer.keyframes >= 1, 15, "the viewer")
                server.proc.send_signal(signal.SIGTERM)
                sent = time.monotonic()
                for _ in range(50):
                    status, body, _ = await get(f"{base}/readyz")
                    if status == 503:
                        break
                    await asyncio.sleep(0.1)
                assert (status, body) == (503, {"status": "draining"})
                frames = len(viewer.video_timestamps)
                await asyncio.sleep(1.5)
                assert len(viewer.video_timestamps) > frames  # the old viewer goes on
                code = await asyncio.wait_for(server.proc.wait(), 20)
                assert code == 0
                assert 3.5 < time.monotonic() - sent < 15  # it drained, then stopped
            finally:
                await viewer.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert lines and all(entry["node"] == "solo-1" for entry in lines)
    refused = [e for e in lines if e.get("request_id") == "r-42"]
    assert refused and refused[0]["stream"] == "nobody"
    assert any("draining" in entry["msg"] for entry in lines)
    assert key not in log_path.read_text()  # the stream key is never logged


async def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    http_port = free_port()
    env = cli_env(
        RIPPLECAST_RTMP_PORT=str(free_port()), RIPPLECAST_HTTP_PORT=str(http_port),
        RIPPLECAST_RTMP_HOST="127.0.0.1", RIPPLECAST_HTTP_HOST="127.0.0.1",
        RIPPLECAST_DATA_DIR=str(tmp_path / "data"), RIPPLECAST_WORKER_ENABLED="false",
        RIPPLECAST_DRAIN_TIMEOUT_SECONDS="60", RIPPLECAST_PUBLISH_MODE="open",
    )  # fmt: skip
    server = await Process.start([*RIPPLECAST, "serve"], env=env)
    async with server:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                if (await get(f"http://127.0.0.1:{http_port}/readyz"))[0] == 200:
                    break
            await asyncio.sleep(0.1)
        viewer_stream = await Process.start(
            ffmpeg_publish_args(
                f"rtmp://127.0.0.1:{env['RIPPLECAST_RTMP_PORT']}/live/x", seconds=30
            )
        )
        async with viewer_stream:
            await asyncio.sleep(2)  # a publisher keeps the node busy: the drain would wait
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert server.proc.returncode is None  # draining
            server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(server.proc.wait(), 15)
            assert code == 0
