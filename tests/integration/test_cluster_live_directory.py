"""A web node knows the live streams of the cluster from the live directory in the real Redis.

An origin, an edge and a web node run in this process (as in test_cluster_nodes.py), sharing a
SQLite file, a secret and one Redis prefix. The web node has no publishers and mirrors nothing:
its pages and streams API answer from what the origin publishes and the edge reports. On a
single box (role all, in-process cache) nothing is published and the hub answers as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from test_cluster_nodes import cluster_settings
from test_web_pages import Browser

from ripplecast.accounts.policy import Scope
from ripplecast.cluster.live import LIVE_INDEX, StreamSummary, ViewerCount
from ripplecast.db.models import Role
from support import FlvViewer, NodeFactory, RunningNode, require_redis, start_publisher, wait_until

pytestmark = pytest.mark.ffmpeg

CLAIM_TTL = 3.0
"""The claim TTL of these clusters: the directory is written every second and expires in 3."""


T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `probe` until it returns something; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await probe()) is None:
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return found


async def fetch(url: str, **kw: Any) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(kw.pop("method", "GET"), url, **kw) as r,
    ):
        return r.status, await r.text()


async def fetch_json(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as response:
        return response.status, await response.json(content_type=None)


async def admin_token(web: RunningNode, username: str, password: str) -> str:
    accounts = web.node.accounts
    await accounts.create_user(username, password, role=Role.ADMIN)
    user = await accounts.user(username)
    made = await web.node.logins.create_api_token(user.id, "kick", [Scope.ADMIN, Scope.READ])
    return made.token


async def test_a_web_node_shows_the_clusters_streams_and_kicks_at_the_origin(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings(cluster_stream_claim_ttl_seconds=CLAIM_TTL, reconnect_grace_seconds=0)
    async with (
        make_node(role="origin", cluster_node_id="origin-1", **shared) as origin,
        make_node(role="edge", cluster_node_id="edge-1", **shared) as edge,
        make_node(role="web", cluster_node_id="web-1", **shared) as web,
    ):
        password = "root's long password"
        token = await admin_token(web, "root", password)
        await web.node.accounts.create_channel("root", "show", title="The Show")
        publisher = await start_publisher(origin, "show", 60)
        async with publisher:
            viewer = FlvViewer(f"{edge.http}/live/show.flv").start()
            try:
                await wait_until(lambda: viewer.keyframes >= 1, 15, "the edge's viewer")

                directory = web.node.live_directory
                assert directory is not None

                async def counted_at_the_edge() -> StreamSummary | None:
                    found = await directory.summary("show")
                    return found if found is not None and found.edge_viewers.total else None

                summary = await until(counted_at_the_edge, 10, "the edge's viewer to be counted")
                assert summary.origin == "origin-1"
                assert summary.edge_viewers == ViewerCount(http_flv=1)
                # The edge's upstream, an HTTP-FLV reader on the origin, is not a viewer.
                assert summary.viewers == ViewerCount()
                status, page = await fetch_json(f"{web.http}/api/v1/streams")
                assert status == 200 and page["total"] == 1
                (info,) = page["items"]
                assert info["viewers"] == {"total": 1, "http_flv": 1, "rtmp": 0, "hls": 0}
                assert info["name"] == "show" and info["state"] == "live"
                assert info["origin"] == "origin-1"
                assert info["publishes"] == 1 and info["ingest_bitrate"] > 0
                assert info["video"]["codec"] == "h264"
                assert (info["video"]["width"], info["video"]["height"]) == (320, 240)
                assert info["audio"]["codec"] == "aac"
                assert web.node.hub.get("show") is None  # none of it came from the web's hub
                # The player's status URL.
                status, one = await fetch_json(f"{web.http}/api/v1/streams/show")
                assert status == 200 and one["name"] == "show" and one["state"] == "live"
                status, _ = await fetch_json(f"{web.http}/api/v1/streams/nosuch")
                assert status == 404

                async with Browser(web.http) as browser:
                    home = await browser.page("/")
                    assert 'class="live-channel" data-slug="show" href="/c/show"' in home
                    channel = await browser.page("/c/show")
                    assert '<video id="player" muted playsinline' in channel
                    assert 'data-live="true"' in channel
                    assert '<div id="offline" class="offline-slate" hidden>' in channel
                    assert '<span class="badge live">LIVE</span>' in await browser.page(
                        "/search?q=show"
                    )
                    await browser.login("root", password)
                    dashboard = await browser.page("/dashboard?channel=show")
                    assert '<dd id="stats-state">live</dd>' in dashboard
                    admin = await browser.page("/admin")
                    assert '<tr data-stream="show">' in admin
            finally:
                await viewer.stop()

            # The kick goes through the web node and ends the stream on the origin.
            kick = f"{web.http}/api/v1/streams/show/kick"
            status, body = await fetch(kick, method="POST")
            assert status == 401, body
            bearer = {"Authorization": f"Bearer {token}"}
            status, body = await fetch(kick, method="POST", headers=bearer)
            assert status == 204, body
            await publisher.wait(10)
            assert publisher.proc.returncode is not None
            await wait_until(lambda: origin.node.hub.get("show") is None, 5, "the stream to end")

        async def gone() -> bool | None:
            status, _ = await fetch_json(f"{web.http}/api/v1/streams/show")
            return True if status == 404 else None

        await until(gone, CLAIM_TTL, "the stream to leave the web node")
        status, page = await fetch_json(f"{web.http}/api/v1/streams")
        assert status == 200 and page["items"] == []
        assert 'data-live="false"' in (await fetch(f"{web.http}/c/show"))[1]
        # A kick of a stream that is not live is a 404, as on a single box.
        status, _ = await fetch(kick, method="POST", headers=bearer)
        assert status == 404


async def test_the_admin_page_kick_on_a_web_node_reaches_the_origin(
    make_node: NodeFactory,
) -> None:
    await require_redis()
    shared = cluster_settings(cluster_stream_claim_ttl_seconds=CLAIM_TTL, reconnect_grace_seconds=0)
    async with (
        make_node(role="origin", cluster_node_id="origin-1", **shared) as origin,
        make_node(role="web", cluster_node_id="web-1", **shared) as web,
    ):
        password = "ada's long password"
        await admin_token(web, "ada", password)
        async with await start_publisher(origin, "desk", 60) as publisher:
            async with Browser(web.http) as browser:
                await browser.login("ada", password)

                async def on_the_admin_page() -> bool | None:
                    return True if 'data-stream="desk"' in await browser.page("/admin") else None

                await until(on_the_admin_page, 5, "the admin page to list the stream")
                status, _, headers = await browser.post("/admin/streams/desk/kick", {})
                assert status == 303 and headers["Location"] == "/admin?msg=stream-kicked"
                await publisher.wait(10)
                assert publisher.proc.returncode is not None
                assert origin.node.hub.get("desk") is None
                status, _, _ = await browser.post("/admin/streams/desk/kick", {})
                assert status == 404


async def test_a_single_box_answers_from_its_hub_and_writes_no_directory(
    make_node: NodeFactory,
) -> None:
    async with make_node() as running:  # role all, in-process cache
        node = running.node
        assert node.live_directory is None
        async with await start_publisher(running, "solo", 30):
            status, page = await fetch_json(f"{running.http}/api/v1/streams")
            assert status == 200 and [item["name"] for item in page["items"]] == ["solo"]
            status, _ = await fetch_json(f"{running.http}/api/v1/streams/solo")
            assert status == 200
            _, home = await fetch(f"{running.http}/")
            assert 'data-slug="solo"' in home
            assert await node.cache.index_members(LIVE_INDEX, limit=10) == []
