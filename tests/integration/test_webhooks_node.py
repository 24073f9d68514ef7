"""A node with webhooks: a real publish and play cause signed deliveries; admission can deny."""

from __future__ import annotations

import json
import time

import aiohttp
from aiohttp import web

from ripplecast.db.models import Webhook
from ripplecast.webhooks import SIGNATURE_HEADER, verify
from support import NodeFactory, Process, ffmpeg_publish_args, wait_until


async def test_publish_and_play_are_delivered_and_admission_can_deny(
    make_node: NodeFactory,
) -> None:
    got: list[tuple[str, dict[str, object]]] = []
    deny = {"on": False}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        assert verify(b"s3cret", request.headers[SIGNATURE_HEADER], body, now=time.time())
        envelope = json.loads(body)
        got.append((envelope["event"], envelope["data"]))
        if envelope["event"] == "on_publish_admission" and deny["on"]:
            return web.json_response({"allow": False, "reason": "not today"})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    url = f"http://127.0.0.1:{port}/hook"
    try:
        async with make_node(
            publish_mode="keys",
            webhook_allow_private_addresses=True,
            webhook_cache_seconds=0,
            admission_webhook_url=url,
            admission_webhook_secret="s3cret",
        ) as running:
            node = running.node
            assert node.first_run is not None
            async with node.db.transaction() as session:
                session.add(
                    Webhook(
                        owner_id=1,
                        url=url,
                        secret="s3cret",
                        events=("on_publish", "on_unpublish", "on_play", "on_stop"),
                    )
                )
            key = node.first_run.stream_key
            async with await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=4)
            ) as publisher:
                await wait_until(lambda: any(e == "on_publish" for e, _ in got), 15, "on_publish")
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{running.http}/live/main.flv") as response,
                ):
                    await response.content.read(1000)
                await wait_until(lambda: any(e == "on_stop" for e, _ in got), 10, "on_stop")
                await publisher.wait(20)
            await wait_until(lambda: any(e == "on_unpublish" for e, _ in got), 10, "unpublish")
            events = [e for e, _ in got]
            assert events[:2] == ["on_publish_admission", "on_publish"]
            data = dict(got)["on_publish"]
            assert data["stream"] == "main" and data["protocol"] == "rtmp"
            assert key not in json.dumps(got)
            assert dict(got)["on_play"]["protocol"] == "http-flv"
            deny["on"] = True
            refused_before = node.rtmp.refused["publish_admission_denied"]
            async with await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=2)
            ) as again:
                await again.wait(20)
            assert node.rtmp.refused["publish_admission_denied"] == refused_before + 1
    finally:
        await runner.cleanup()
