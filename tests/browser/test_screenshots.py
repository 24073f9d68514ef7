"""Screenshots of the main pages for the README, taken from a real node with a channel live and
a video uploaded through the upload page.

The PNGs go to test-artifacts/screenshots/ (1280x800, and one channel page at phone width,
390x844). docs/screenshots/ holds compressed copies of one run; after a change to the pages, run
this test and copy them again (see README, "Web interface").
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from browser_support import log_in, make_creator, publish, wait_for_player, wait_playing
from playwright.async_api import Browser, Page, ViewportSize, expect

from media import make_video
from ripplecast.db.models import Visibility
from support import NodeFactory, ffmpeg_publish_args
from vod_support import VOD_SETTINGS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SCREENSHOTS = Path("test-artifacts") / "screenshots"
DESKTOP = ViewportSize(width=1280, height=800)
"""The `page` fixture's viewport."""
PHONE = ViewportSize(width=390, height=844)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", header[16:24])
    return width, height


async def images_loaded(page: Page) -> None:
    """Wait until every <img> of the page has loaded (thumbnails on the cards)."""
    await page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )


async def test_screenshots_of_the_main_pages(
    make_node: NodeFactory,
    page: Page,
    browser: Browser,
    tmp_path: Path,
    pytestconfig: pytest.Config,
) -> None:
    folder = pytestconfig.rootpath / SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    shots: dict[str, tuple[int, int]] = {}

    async def shoot(target: Page, name: str) -> None:
        await target.screenshot(path=str(folder / f"{name}.png"))
        size = target.viewport_size
        assert size is not None
        shots[name] = (size["width"], size["height"])

    source = tmp_path / "sea-trial.mp4"
    await asyncio.to_thread(make_video, source, seconds=6, size="640x360", pattern="testsrc2")
    async with make_node(**VOD_SETTINGS, public_host="127.0.0.1") as running:
        node, base = running.node, running.http
        await make_creator(running, "ada")
        await node.accounts.create_channel(
            "ada", "harbour", title="Harbour cam", visibility=Visibility.PUBLIC
        )
        key = (await node.accounts.create_stream_key("harbour", label="studio PC")).key
        argv = ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=60, size="640x360")
        async with await publish(running, key, "harbour", argv=argv):
            await log_in(page, base, "ada")

            # The upload page, caught mid-upload: the uplink is slowed so the bar is seen moving.
            await page.goto(f"{base}/dashboard/upload")
            cdp = await page.context.new_cdp_session(page)
            throttle = {"offline": False, "latency": 0, "downloadThroughput": -1}
            await cdp.send(
                "Network.emulateNetworkConditions",
                {**throttle, "uploadThroughput": source.stat().st_size / 3},
            )
            form = page.locator("#upload-form")
            await form.get_by_label("Title").fill("Sea trial")
            await form.get_by_label("Description").fill("Six seconds of test pattern.")
            await page.locator("#file").set_input_files(source)
            await form.locator("button[type=submit]").click()
            await page.wait_for_function(
                "() => { const v = document.getElementById('upload-progress').value;"
                " return v >= 30 && v <= 80; }",
                timeout=10_000,
                polling=50,
            )
            await shoot(page, "upload")
            await cdp.send("Network.emulateNetworkConditions", {**throttle, "uploadThroughput": -1})
            status = page.locator("#upload-status")
            await expect(status).to_contain_text("ready", timeout=30_000)
            video_path = await status.locator("a").get_attribute("href")
            assert video_path and video_path.startswith("/v/"), video_path

            # Home: the live channel and the video's card.
            await page.goto(f"{base}/")
            await expect(page.locator("a.live-channel[data-slug='harbour']")).to_be_visible()
            await expect(page.locator(f"a.video-card[href='{video_path}']")).to_be_visible()
            await images_loaded(page)
            await shoot(page, "home")

            # The live channel, playing over HLS.
            await page.goto(f"{base}/c/harbour")
            await wait_playing(page)
            await expect(page.locator("#live-indicator")).to_have_text("LIVE")
            await shoot(page, "channel")

            # The video, paused at 2 s, with the scrub preview of 4.5 s under the mouse.
            await page.goto(f"{base}{video_path}")
            player = page.locator("#player")
            await wait_for_player(page, "v.readyState >= 1", timeout_s=15)
            await player.evaluate("v => { v.muted = true; return v.play(); }")
            await wait_for_player(page, "v.currentTime > 2", timeout_s=10)
            await player.evaluate("v => v.pause()")
            seek = page.locator("#seek")
            box = await seek.bounding_box()
            assert box is not None
            maximum = float(await seek.evaluate("s => s.max"))
            y = box["y"] + box["height"] / 2
            await page.mouse.move(box["x"], y)
            await page.mouse.move(box["x"] + box["width"] * 4.5 / maximum, y, steps=3)
            await expect(page.locator("#scrub-preview")).to_be_visible()
            await page.wait_for_timeout(300)  # the sprite image paints
            await shoot(page, "video")

            # The creator's dashboard: a throwaway key made for the picture, the OBS fields and
            # the live stats with a few points on the chart.
            await page.goto(f"{base}/dashboard?channel=harbour")
            channel = page.locator("article.channel[data-slug='harbour']")
            await channel.get_by_label("New key label").fill("laptop")
            await channel.locator("button.create-key").click()
            await expect(page.locator("#new-key")).to_be_visible()
            await expect(page.locator("#obs-server")).to_have_text(running.rtmp)
            await expect(page.locator("#stats-state")).to_have_text("live")
            await page.wait_for_timeout(4500)  # two or three refreshes of the stats
            # From the OBS fields down: they and the stats with the chart fit in the picture.
            await page.locator("#obs").evaluate("e => e.scrollIntoView({block: 'start'})")
            await expect(page.locator("#stats-chart")).to_be_in_viewport()
            await shoot(page, "dashboard")

            # A phone: the channel page at 390x844.
            phone = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            try:
                small = await phone.new_page()
                await small.goto(f"{base}/c/harbour")
                await wait_playing(small)
                await shoot(small, "channel-phone")
            finally:
                await phone.close()

    assert set(shots) == {"upload", "home", "channel", "video", "dashboard", "channel-phone"}
    for name, size in shots.items():
        path = folder / f"{name}.png"
        assert png_size(path) == size, (name, png_size(path))
        assert path.stat().st_size > 10_000, name  # a picture, not a blank page
    assert shots["home"] == (DESKTOP["width"], DESKTOP["height"])
    assert shots["channel-phone"] == (PHONE["width"], PHONE["height"])
