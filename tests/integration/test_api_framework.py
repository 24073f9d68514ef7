"""The REST API over real HTTP: live stream reports, auth with API tokens, problem+json errors.

The API is installed (`install_api`) on an application of the test's own, next to the node's
live routes, over the running node's hub and access policy, and served on a loopback port.
Publishers are real ffmpeg processes; viewers are real HTTP-FLV clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel, Field
from sqlalchemy import select

from ripplecast.accounts.credentials import new_token, token_hash
from ripplecast.app import Node
from ripplecast.db.models import ApiToken, User
from ripplecast.http.api import ApiContext, ApiRouter, install_api, streams_router
from ripplecast.http.live import LiveRoutes
from ripplecast.protocols.rtmp.server import RtmpServer
from support import (
    FlvViewer,
    NodeFactory,
    Process,
    RunningNode,
    ffmpeg_publish_args,
    start_publisher,
    wait_until,
)

PROBLEM = "application/problem+json"
SECRET = "hunter2-do-not-echo"


class RtmpPublishers:
    """`Publishers` over the RTMP server: the same code as the proposed `RtmpServer.kick_stream`."""

    def __init__(self, rtmp: RtmpServer) -> None:
        self.rtmp = rtmp

    def kick_stream(self, name: str, reason: str) -> int:
        kicked = 0
        for connection in list(self.rtmp.connections):
            if connection.publishing is not None and connection.publishing[1].name == name:
                connection.kick("kicked", reason)
                kicked += 1
        return kicked


class Echo(BaseModel):
    title: str = Field(max_length=20)
    count: int = Field(ge=0)


def edge_router() -> ApiRouter:
    """Operations that exist only to exercise the framework's edges."""
    router = ApiRouter(tags=("test",))

    @router.post("/echo", summary="Echo a body", response=Echo, body=Echo)
    async def echo(ctx: ApiContext) -> Echo:
        return ctx.body_as(Echo)

    @router.get("/boom", summary="Fail unexpectedly", response=Echo)
    async def boom(ctx: ApiContext) -> Echo:
        raise RuntimeError(f"internal detail {SECRET}")

    return router


@contextlib.asynccontextmanager
async def serve_api(node: Node, *, extra: list[ApiRouter] | None = None) -> AsyncIterator[str]:
    """Serve the node's app with the API installed on 127.0.0.1; yield the base URL."""
    # The live routes plus the API, on an app of our own: independent of whether the node's
    # `create_app` already mounts the API.
    app = web.Application(client_max_size=node.settings.api_max_body_bytes)
    LiveRoutes(node.settings, node.hub, node.access.authorize).register(app)
    routers = [
        streams_router(
            node.hub,
            max_name_length=node.settings.stream_name_max_length,
            publishers=RtmpPublishers(node.rtmp),
        ),
        *(extra or []),
    ]
    install_api(app, routers, authorize=node.access.authorize)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def add_token(node: Node, username: str, scopes: tuple[str, ...]) -> str:
    """Store an API token for `username` straight in the database; return the secret."""
    token = new_token("rc_")
    async with node.db.transaction() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one()
        session.add(
            ApiToken(
                user_id=user.id,
                name=f"test-{token[3:11]}",
                token_hash=token_hash(token),
                prefix=token[:8],
                scopes=scopes,
            )
        )
    return token


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Check `response` is a problem+json with `status`; return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["instance"] == response.url.path
    assert set(body) <= {"type", "title", "status", "detail", "instance", "errors"}
    return body


@pytest.mark.ffmpeg
async def test_streams_report_codecs_rates_and_viewers(make_node: NodeFactory) -> None:
    async with make_node() as running, serve_api(running.node) as base:
        async with await start_publisher(running, "cam", seconds=30) as publisher:
            viewer = FlvViewer(f"{base}/live/cam.flv").start()
            stream = running.node.hub.get("cam")
            assert stream is not None
            await wait_until(lambda: stream.reader_count == 1, 10, "the viewer to attach")
            await asyncio.sleep(2)  # a few seconds of frames for the rates
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/api/v1/streams") as response:
                    assert response.status == 200
                    assert response.content_type == "application/json"
                    page = await response.json()
                assert page["total"] == 1 and page["limit"] == 20 and page["offset"] == 0
                (info,) = page["items"]
                assert info["name"] == "cam" and info["state"] == "live"
                assert info["publishes"] == 1
                video, audio = info["video"], info["audio"]
                assert video["codec"] == "h264" and video["codecs"].startswith("avc1.")
                assert (video["width"], video["height"]) == (320, 240)
                assert 18 <= video["fps"] <= 32, video
                assert audio == {
                    "codec": "aac",
                    "codecs": "mp4a.40.2",
                    "sample_rate": 44100,
                    "channels": 1,
                }
                assert info["ingest_bitrate"] > 10_000
                assert info["uptime_seconds"] >= 2
                assert info["viewers"] == {"total": 1, "http_flv": 1, "rtmp": 0, "hls": 0}
                # Two HLS players (told apart by address and browser) and one reloading.
                for agent in ("player-a", "player-b", "player-a"):
                    async with http.get(
                        f"{base}/live/cam/index.m3u8", headers={"User-Agent": agent}
                    ) as response:
                        assert response.status == 200
                async with http.get(f"{base}/api/v1/streams/cam") as response:
                    counted = (await response.json())["viewers"]
                assert counted == {"total": 3, "http_flv": 1, "rtmp": 0, "hls": 2}

                async with http.get(f"{base}/api/v1/streams/cam") as response:
                    assert response.status == 200
                    one = await response.json()
                assert one["name"] == "cam" and one["video"]["width"] == 320

                async with http.get(f"{base}/api/v1/streams?offset=1&limit=5") as response:
                    assert await response.json() == {
                        "items": [],
                        "total": 1,
                        "limit": 5,
                        "offset": 1,
                    }
                for name in ("nosuch", "..", "a%20b"):
                    async with http.get(f"{base}/api/v1/streams/{name}") as response:
                        await problem(response, 404)
            await viewer.stop()
            assert publisher.proc.returncode is None


@pytest.mark.ffmpeg
async def test_private_streams_and_kick_need_the_right_token(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys") as running, serve_api(running.node) as base:
        node = running.node
        assert node.first_run is not None  # user "admin" (an admin) and public channel "main"
        await node.accounts.create_user("dave", "a long password")
        await node.accounts.create_channel("dave", "hidden", visibility="private")  # type: ignore[arg-type]
        hidden_key = (await node.accounts.create_stream_key("hidden")).key
        admin = await add_token(node, "admin", ("admin", "read"))
        admin_read_only = await add_token(node, "admin", ("read",))
        dave = await add_token(node, "dave", ("admin", "read"))  # scopes alone make no admin

        async def names(http: aiohttp.ClientSession, token: str | None) -> list[str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(f"{base}/api/v1/streams", headers=headers) as response:
                assert response.status == 200
                return [item["name"] for item in (await response.json())["items"]]

        async with contextlib.AsyncExitStack() as stack:
            main = await stack.enter_async_context(
                await _publish_with_key(running, node.first_run.stream_key, "main")
            )
            await stack.enter_async_context(await _publish_with_key(running, hidden_key, "hidden"))
            async with aiohttp.ClientSession() as http:
                assert await names(http, None) == ["main"]
                assert await names(http, "not-a-token") == ["main"]
                assert await names(http, dave) == ["hidden", "main"]
                assert await names(http, admin) == ["hidden", "main"]
                async with http.get(f"{base}/api/v1/streams/hidden") as response:
                    await problem(response, 404)

                kick = f"{base}/api/v1/streams/main/kick"
                async with http.post(kick) as response:
                    await problem(response, 401)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                bad = {"Authorization": "Bearer rc_nonsense"}
                async with http.post(kick, headers=bad) as response:
                    await problem(response, 401)
                for token in (dave, admin_read_only):
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.post(kick, headers=headers) as response:
                        await problem(response, 403)
                assert node.hub.get("main") is not None

                headers = {"Authorization": f"Bearer {admin}"}
                async with http.post(kick, headers=headers) as response:
                    assert response.status == 204
                    assert await response.read() == b""
                assert node.hub.get("main") is None
                # The publisher was disconnected, not left pushing into an ended stream.
                code, _, _ = await main.wait(10)
                assert code != 0
                async with http.post(kick, headers=headers) as response:
                    await problem(response, 404)
                assert await names(http, None) == []
                assert node.hub.get("hidden") is not None


async def _publish_with_key(running: RunningNode, key: str, name: str) -> Process:
    """Publish with stream key `key`; wait until stream `name` has a keyframe."""
    node = running.node
    process = await Process.start(ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=30))
    try:
        await wait_until(
            lambda: (s := node.hub.get(name)) is not None and s.stats.keyframes >= 1,
            10,
            f"stream {name} to go live",
        )
    except BaseException:
        await process.kill()
        raise
    return process


async def test_every_error_is_one_problem_shape(make_node: NodeFactory) -> None:
    async with make_node(api_max_body_bytes=4096) as running:
        async with serve_api(running.node, extra=[edge_router()]) as base:
            api = f"{base}/api/v1"
            async with aiohttp.ClientSession() as http:
                for url in (f"{api}/nope", f"{base}/api/other", f"{api}/streams/a/b/c"):
                    async with http.get(url) as response:
                        await problem(response, 404)
                async with http.delete(f"{api}/streams") as response:
                    await problem(response, 405)
                    assert response.headers["Allow"] == "GET"
                # Outside /api/ the node's own answers are unchanged.
                async with http.get(f"{base}/live/nosuch.flv") as response:
                    assert response.status == 404 and response.content_type == "text/plain"

                async with http.post(f"{api}/echo", json={"title": "hi", "count": 2}) as response:
                    assert response.status == 200
                    assert await response.json() == {"title": "hi", "count": 2}
                async with http.post(f"{api}/echo", data=b"title=hi") as response:
                    await problem(response, 415)
                async with http.post(
                    f"{api}/echo", data=b"{}", headers={"Content-Type": "text/plain"}
                ) as response:
                    await problem(response, 415)
                async with http.post(f"{api}/echo") as response:
                    body = await problem(response, 422)
                    assert body["errors"][0]["loc"] == ["body"]
                async with http.post(f"{api}/echo", json={"title": SECRET * 3}) as response:
                    body = await problem(response, 422)
                    assert SECRET not in await response.text()
                    issues = {(tuple(e["loc"]), e["type"]) for e in body["errors"]}
                    assert issues == {
                        (("body", "title"), "string_too_long"),
                        (("body", "count"), "missing"),
                    }
                async with http.post(f"{api}/echo", json=[SECRET]) as response:
                    body = await problem(response, 422)
                    assert SECRET not in await response.text()
                for raw in (
                    b'{"title": "x", ',
                    b"\xff\xfe{}",
                    b'{"title": "\xc3\x28", "count": 1}',
                ):
                    async with http.post(
                        f"{api}/echo", data=raw, headers={"Content-Type": "application/json"}
                    ) as response:
                        body = await problem(response, 400)
                        assert body["errors"][0]["type"] == "json_invalid"
                big = json.dumps({"title": "x", "count": 1, "pad": "x" * 10_000})
                async with http.post(
                    f"{api}/echo", data=big, headers={"Content-Type": "application/json"}
                ) as response:
                    await problem(response, 413)

                for query in ("limit=0", "limit=101", "limit=abc", "offset=-1"):
                    async with http.get(f"{api}/streams?{query}") as response:
                        body = await problem(response, 422)
                        assert body["errors"][0]["loc"][0] == "query"

                async with http.get(f"{api}/boom") as response:
                    body = await problem(response, 500)
                    assert SECRET not in await response.text()
                    assert "RuntimeError" not in await response.text()


async def test_openapi_document_and_docs_page(make_node: NodeFactory) -> None:
    async with make_node() as running, serve_api(running.node, extra=[edge_router()]) as base:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/openapi.json") as response:
                assert response.status == 200
                doc = await response.json()
            async with http.get(f"{base}/api/v1/docs") as response:
                assert response.status == 200
                assert response.content_type == "text/html"
                page = await response.text()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/api/v1/streams",
        "/api/v1/streams/{name}",
        "/api/v1/streams/{name}/kick",
        "/api/v1/echo",
        "/api/v1/boom",
    }
    schemas = doc["components"]["schemas"]
    assert {"Problem", "FieldIssue", "StreamInfo", "Page_StreamInfo_", "Echo"} <= set(schemas)
    assert not {"PageQuery", "StreamName"} & set(schemas)  # they became parameters
    assert doc["components"]["securitySchemes"]["sessionCookie"]["name"] == "rc_session"
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for operations in doc["paths"].values():
        for op in operations.values():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    assert answer["content"][PROBLEM]["schema"] == problem_ref
    kick = doc["paths"]["/api/v1/streams/{name}/kick"]["post"]
    assert set(kick["responses"]) == {"204", "401", "403", "404", "500"}
    assert kick["security"] == [{"bearerAuth": []}, {"sessionCookie": []}]
    echo = doc["paths"]["/api/v1/echo"]["post"]
    assert {"400", "413", "415", "422"} <= set(echo["responses"])
    (name,) = kick["parameters"]
    assert name["in"] == "path" and name["schema"]["pattern"].startswith("^[A-Za-z0-9_-]")
    listing = doc["paths"]["/api/v1/streams"]["get"]
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 100
    assert "<script" not in page
    assert "POST /api/v1/streams/{name}/kick" in page
    assert "Needs scope: <code>admin</code>" in page


def test_a_duplicate_operation_is_refused() -> None:
    router = ApiRouter()

    @router.get("/x", summary="x", response=None, status=204)
    async def first(ctx: ApiContext) -> None:
        return None

    @router.get("/x", summary="x again", response=None, status=204)
    async def second(ctx: ApiContext) -> None:
        return None

    async def authorize(request: Any) -> Any:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="duplicate API operation GET /api/v1/x"):
        install_api(web.Application(), [router], authorize=authorize)
