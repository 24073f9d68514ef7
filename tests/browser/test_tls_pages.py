"""The browser over HTTPS: a channel page served with the node's certificate plays the live
stream, published over RTMPS, through HLS and HTTP-FLV on the same HTTPS port.

Chromium does not know the test CA, so the context ignores certificate errors; what the page
does with it is what a viewer's browser does on a trusted certificate (a secure context, every
media request over https://).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import make_channel, make_creator, publish, wait_playing
from playwright.async_api import Page, Request

from support import NodeFactory, ffmpeg_publish_args
from tls_support import TestCA

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CONTEXT_OPTIONS = {"ignore_https_errors": True}
"""For the `page` fixture (conftest)."""


async def test_channel_page_plays_over_https(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "pki")
    leaf = ca.issue("server")
    async with make_node(publish_mode="keys", rtmps_port=0, **leaf.settings()) as running:
        node = running.node
        await make_creator(running, "tina")
        key = await make_channel(running, "tina", "tinalive")
        url = f"rtmps://127.0.0.1:{node.rtmps_port}/live/{key}"
        argv = ffmpeg_publish_args(url, seconds=40)
        argv[-1:-1] = ["-tls_verify", "1", "-ca_file", str(ca.ca_file)]
        base = f"https://127.0.0.1:{node.http_port}"
        media: list[str] = []

        def on_request(request: Request) -> None:
            if "/live/" in request.url:
                media.append(request.url)

        page.on("request", on_request)
        async with await publish(running, key, "tinalive", argv=argv):
            await page.goto(f"{base}/c/tinalive")
            await wait_playing(page)
            assert await page.evaluate("() => window.isSecureContext")
            assert await page.evaluate("() => window.ripplecast.protocol") == "hls"
            await page.goto(f"{base}/c/tinalive?p=flv")
            await wait_playing(page)
            assert await page.evaluate("() => window.ripplecast.protocol") == "flv"
        assert any(u.endswith("/live/tinalive/index.m3u8") for u in media), media
        assert any(u.endswith("/live/tinalive.flv") for u in media), media
        assert all(u.startswith(f"{base}/live/") for u in media), media
