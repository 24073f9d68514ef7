"""Videos on demand in the browser: an uploaded video plays on /v/ID, seeks, and its quality
menu lists the ladder's renditions."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from browser_support import PLAYER, player_state, quality_labels, wait_for_player
from playwright.async_api import Page, expect

from media import make_video
from support import NodeFactory
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_uploaded_video_plays_seeks_and_offers_its_renditions(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=8, size="640x360")
    async with make_node(**VOD_SETTINGS) as running:
        api = f"{running.http}/api/v1"
        vera = await token_for(running.node, "vera")
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(http, api, vera, source, title="Eight seconds")
            assert status == 201, video
            ready = await wait_ready(http, api, vera, video["id"], 60)
        assert ready["state"] == "ready", ready
        assert [r["name"] for r in ready["renditions"]] == ["360p", "240p"]

        await page.goto(f"{running.http}/v/{video['id']}")
        player = page.locator(PLAYER)
        await expect(player).to_have_attribute("poster", re.compile(rf"/vod/{video['id']}/poster"))
        labels = await quality_labels(page)
        assert sorted(labels) == ["240p", "360p"], labels

        # Play (as the viewer's click on play would) to past 3 s.
        await player.evaluate("v => { v.muted = true; return v.play(); }")
        await wait_for_player(page, "v.currentTime > 3", timeout_s=15)
        # Seek ahead to 5 s: playing on from ~3 s could not get there this soon.
        await player.evaluate(
            "v => new Promise(resolve => {"
            " v.addEventListener('seeked', resolve, {once: true}); v.currentTime = 5; })"
        )
        after_seek = await player_state(page)
        assert 5 <= after_seek["currentTime"] < 5.5, after_seek
        # ...and plays on from there.
        await wait_for_player(page, "v.currentTime > 5.8", timeout_s=10)
