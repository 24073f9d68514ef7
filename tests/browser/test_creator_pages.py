"""A creator's first day, all in the browser: register, log in, create a channel, copy its
stream key, go live with it (ffmpeg, as OBS would), and find the channel live on the home page.
The upload page: a file goes up with a visible progress bar and shows in the creator's videos."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from browser_support import log_in, make_creator, password_for
from playwright.async_api import Page, expect

from media import make_video
from support import NodeFactory, Process, ffmpeg_publish_args, wait_until
from vod_support import VOD_SETTINGS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def field_text(page: Page, selector: str) -> str:
    """The text a read-only field shows (an <input>'s value, or an element's text)."""
    text: str = await page.locator(selector).evaluate(
        "e => ('value' in e && e.tagName !== 'BUTTON' ? e.value : e.textContent).trim()"
    )
    return text


async def test_register_create_a_channel_and_go_live(make_node: NodeFactory, page: Page) -> None:
    async with make_node(publish_mode="keys", public_host="127.0.0.1") as running:
        base = running.http
        await page.goto(f"{base}/register")
        await page.get_by_label("User name").fill("nina")
        await page.get_by_label("Password", exact=True).fill(password_for("nina"))
        await page.get_by_label("Password again").fill(password_for("nina"))
        await page.get_by_role("button", name="Register").click()
        await page.wait_for_url("**/login**")

        await log_in(page, base, "nina")
        await page.goto(f"{base}/dashboard")
        create = page.locator("form[action='/dashboard/channels']")
        await create.get_by_label("Channel name").fill("ninalive")
        await create.get_by_label("Title").fill("Nina live")
        await create.locator("button[type=submit]").click()

        # The key is shown once; the copy button puts exactly it on the clipboard.
        key = await field_text(page, "#new-key")
        assert len(key) > 16, key
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.locator("#copy-key").click()
        copied = await page.evaluate("() => navigator.clipboard.readText()")
        assert copied == key
        server = await field_text(page, "#obs-server")
        assert server == running.rtmp, server

        # The OBS fields are all a publisher needs.
        publisher = await Process.start(ffmpeg_publish_args(f"{server}/{copied}", seconds=30))
        async with publisher:
            await wait_until(
                lambda: running.node.hub.get("ninalive") is not None, 15, "ninalive to go live"
            )
            live = page.locator("a.live-channel[data-slug='ninalive']")
            for _ in range(20):  # the home page lists what is live when it is loaded
                await page.goto(f"{base}/")
                if await live.count():
                    break
                await asyncio.sleep(0.5)
            await expect(live).to_be_visible()
            await expect(live).to_have_attribute("href", "/c/ninalive")


async def test_upload_page_shows_progress_and_lists_the_video(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    source = tmp_path / "holiday.mp4"
    await asyncio.to_thread(make_video, source, seconds=4, size="640x360", pattern="testsrc2")
    async with make_node(**{**VOD_SETTINGS, "worker_enabled": False}) as running:
        base = running.http
        await make_creator(running, "uma")
        await log_in(page, base, "uma")
        await page.goto(f"{base}/dashboard/upload")
        progress = page.locator("#upload-progress")
        # Slow the upload down (as a real uplink is) so the bar has time to be seen moving.
        cdp = await page.context.new_cdp_session(page)
        await cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": source.stat().st_size / 2,
            },
        )
        # Record every value the bar shows, and whether it is visible then.
        await progress.evaluate(
            "bar => { window.seenProgress = [];"
            " const note = () => window.seenProgress.push([bar.value, bar.checkVisibility()]);"
            " new MutationObserver(note).observe(bar, {attributes: true}); note(); }"
        )
        await page.locator("#file").set_input_files(source)
        form = page.locator("#upload-form")
        await form.get_by_label("Title").fill("Holiday")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#upload-status")).to_contain_text("Uploaded", timeout=20_000)
        seen: list[list[float | bool]] = await page.evaluate("() => window.seenProgress")
        values = [value for value, _ in seen]
        assert values[0] == 0 and values[-1] == 100, seen
        assert values == sorted(values), seen
        assert any(0 < value < 100 for value in values), seen  # it moved, not just jumped
        assert all(visible for value, visible in seen if 0 < value < 100), seen

        await page.goto(f"{base}/dashboard/videos")
        link = page.get_by_role("link", name="Holiday", exact=True)
        await expect(link).to_be_visible()
        await expect(link).to_have_attribute("href", re.compile(r"^/v/[A-Za-z0-9_-]+$"))
