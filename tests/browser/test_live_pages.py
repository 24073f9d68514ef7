"""Live channels in the browser: /c/SLUG plays over HLS (hls.js) and HTTP-FLV (mpegts.js);
a private channel plays for its owner and for nobody else."""

from __future__ import annotations

import aiohttp
import pytest
from browser_support import (
    log_in,
    make_channel,
    make_creator,
    publish,
    quality_labels,
    wait_playing,
)
from playwright.async_api import Page, Request, expect

from ripplecast.db.models import Visibility
from ripplecast.http.live import HTTP_FLV
from support import NodeFactory

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def media_requests(page: Page) -> list[str]:
    """The paths of /live/ requests the page makes from now on (to see which protocol plays)."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        path = request.url.split("://", 1)[-1].split("/", 1)[-1]
        if path.startswith("live/"):
            seen.append("/" + path.split("?", 1)[0])

    page.on("request", on_request)
    return seen


async def test_live_stream_plays_over_hls_and_http_flv(make_node: NodeFactory, page: Page) -> None:
    async with make_node(publish_mode="keys") as running:
        await make_creator(running, "lena")
        key = await make_channel(running, "lena", "lenalive")
        base = running.http
        async with await publish(running, key, "lenalive"):
            requests = media_requests(page)
            await page.goto(f"{base}/c/lenalive")
            await wait_playing(page)
            assert await page.evaluate("() => window.ripplecast.protocol") == "hls"
            assert "/live/lenalive/index.m3u8" in requests
            assert any(path.endswith(".ts") for path in requests), requests
            indicator = page.locator("#live-indicator")
            await expect(indicator).to_be_visible()
            await expect(indicator).to_have_text("LIVE")

            # The quality menu lists what the HLS playlist offers: live has one rendition.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/live/lenalive/index.m3u8") as response:
                    assert response.status == 200
                    playlist = await response.text()
            variants = playlist.count("#EXT-X-STREAM-INF") or 1  # a media playlist is one
            assert len(await quality_labels(page)) == variants
            assert await page.evaluate("() => window.ripplecast.player.levels.length") == variants

            # Leave the HLS page first: its player may have a fetch in flight that would land
            # after the list is cleared.
            await page.goto("about:blank")
            requests.clear()
            await page.goto(f"{base}/c/lenalive?p=flv")
            await wait_playing(page)
            assert await page.evaluate("() => window.ripplecast.protocol") == "flv"
            await expect(page.locator("#protocol")).to_have_value("flv")
            assert requests == ["/live/lenalive.flv"], requests
            stream = running.node.hub.get("lenalive")
            assert stream is not None and stream.readers_of(HTTP_FLV) == 1  # the browser's


async def test_private_stream_plays_for_its_owner_only(make_node: NodeFactory, page: Page) -> None:
    async with make_node(publish_mode="keys") as running:
        await make_creator(running, "olga")
        key = await make_channel(running, "olga", "olgaonly", visibility=Visibility.PRIVATE)
        base = running.http
        async with await publish(running, key, "olgaonly"):
            # Anonymous: as if the channel did not exist, page and media alike.
            response = await page.goto(f"{base}/c/olgaonly")
            assert response is not None and response.status == 404
            assert await page.locator("#player").count() == 0
            for media in ("/live/olgaonly/index.m3u8", "/live/olgaonly.flv"):
                answer = await page.request.get(base + media, timeout=5_000)
                assert answer.status == 404, media

            await log_in(page, base, "olga")
            response = await page.goto(f"{base}/c/olgaonly")
            assert response is not None and response.status == 200
            await wait_playing(page)
