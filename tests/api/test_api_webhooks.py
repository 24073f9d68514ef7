"""Webhooks registered over the API receive signed events; only their owner manages them."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web

from ripplecast.accounts.policy import Scope
from ripplecast.webhooks import SIGNATURE_HEADER, verify
from support import NodeFactory, Process, ffmpeg_publish_args, wait_until


async def test_registered_webhook_gets_signed_events(make_node: NodeFactory) -> None:
    received: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers[SIGNATURE_HEADER]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with make_node(publish_mode="keys", webhook_allow_private_addresses=True) as running:
            node, api = running.node, f"{running.http}/api/v1"
            headers = {}
            for name in ("mia", "ned"):
                await node.accounts.create_user(name, f"{name} password")
                user = await node.accounts.user(name)
                token = await node.logins.create_api_token(
                    user.id, "t", [Scope.READ, Scope.PUBLISH]
                )
                headers[name] = {"Authorization": f"Bearer {token.token}"}
            await node.accounts.create_channel("mia", "mias")
            key = (await node.accounts.create_stream_key("mias")).key
            async with aiohttp.ClientSession() as http:
                bad = {"url": "ftp://127.0.0.1/x", "events": ["on_publish"]}
                async with http.post(f"{api}/webhooks", json=bad, headers=headers["mia"]) as r:
                    assert r.status == 422
                bad = {"url": f"http://127.0.0.1:{port}/hook", "events": ["on_nothing"]}
                async with http.post(f"{api}/webhooks", json=bad, headers=headers["mia"]) as r:
                    assert r.status == 422
                body = {"url": f"http://127.0.0.1:{port}/hook", "events": ["on_publish"]}
                async with http.post(f"{api}/webhooks", json=body, headers=headers["mia"]) as r:
                    assert r.status == 201
                    hook = await r.json()
                secret = hook["secret"].encode()
                async with http.get(f"{api}/webhooks", headers=headers["mia"]) as r:
                    listed = await r.json()
                assert "secret" not in listed["items"][0]
                url = f"{api}/webhooks/{hook['id']}"
                for method in ("PATCH", "DELETE"):
                    change = {"enabled": False}
                    async with http.request(method, url, json=change, headers=headers["ned"]) as r:
                        assert r.status == 404
                async with http.get(f"{api}/webhooks", headers=headers["ned"]) as r:
                    assert (await r.json())["items"] == []
            async with await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=20)
            ):
                await wait_until(lambda: bool(received), 15, "the on_publish delivery")
            raw, signature = received[0]
            assert verify(secret, signature, raw, now=time.time())
            event = json.loads(raw)
            assert event["event"] == "on_publish" and event["data"]["stream"] == "mias"
            assert key not in raw.decode()
            await asyncio.sleep(0)
    finally:
        await runner.cleanup()
