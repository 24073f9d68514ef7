"""How the pages behave around playback, in the browser: a channel page that waits offline and
starts playing when the stream begins (and shows the slate again when it ends), scrub previews
from the sprite map, switching a video's quality, resuming an interrupted upload after a reload,
and the login form's rate-limit message."""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from browser_support import (
    PLAYER,
    log_in,
    make_channel,
    make_creator,
    password_for,
    player_state,
    publish,
    wait_for_player,
    wait_playing,
)
from playwright.async_api import Page, Request, Route, expect

from media import make_video
from support import NodeFactory, RunningNode
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


# --- live: the offline slate -------------------------------------------------------------------


async def test_offline_channel_page_starts_playing_when_the_stream_begins(
    make_node: NodeFactory, page: Page
) -> None:
    # A short grace period: the slate's return after the publisher leaves is part of the test.
    async with make_node(publish_mode="keys", reconnect_grace_seconds=1.0) as running:
        await make_creator(running, "otto")
        key = await make_channel(running, "otto", "ottolive")
        await page.goto(f"{running.http}/c/ottolive")
        offline = page.locator("#offline")
        indicator = page.locator("#live-indicator")
        await expect(offline).to_be_visible()
        # The indicator's `hidden` property, not its visibility: app.css shows a hidden badge
        # (see test_a_hidden_live_indicator_is_not_shown).
        await expect(indicator).to_have_js_property("hidden", True)
        # The page has polled the stream's status at least once (every 2 s) and still waits.
        await page.wait_for_timeout(2500)
        await expect(offline).to_be_visible()
        assert await page.evaluate("() => window.ripplecast.player") is None
        assert (await player_state(page))["readyState"] == 0
        # A mark on this document: if the page reloaded, it would be gone.
        await page.evaluate("() => { window.sameDocument = true; }")

        publisher = await publish(running, key, "ottolive", seconds=40)
        async with publisher:
            await wait_playing(page, timeout_s=20)
            assert await page.evaluate("() => window.sameDocument === true")
            await expect(offline).to_be_hidden()
            await expect(indicator).to_be_visible()
            await expect(indicator).to_have_text("LIVE")
            assert await page.evaluate("() => window.ripplecast.protocol") == "hls"

        # The publisher is gone (killed): after the grace period the stream ends, the player
        # stops and the slate comes back, still without a reload.
        stopped_at = (await player_state(page))["currentTime"]
        await expect(offline).to_be_visible(timeout=15_000)
        await expect(indicator).to_have_js_property("hidden", True)
        assert await page.evaluate("() => window.ripplecast.player") is None
        assert await page.evaluate("() => window.sameDocument === true")
        state = await player_state(page)
        await page.wait_for_timeout(1000)
        assert (await player_state(page))["currentTime"] == state["currentTime"], stopped_at


# --- videos on demand: scrub previews and quality --------------------------------------------


async def ready_video(running: RunningNode, tmp_path: Path, title: str) -> str:
    """An 8 s video uploaded through the API and transcoded (360p and 240p, 1 s thumbnails);
    returns its id."""
    source = tmp_path / "eight.mp4"
    await asyncio.to_thread(make_video, source, seconds=8, size="640x360", pattern="testsrc2")
    api = f"{running.http}/api/v1"
    headers = await token_for(running.node, "viv")
    async with aiohttp.ClientSession() as http:
        status, video = await upload_file(http, api, headers, source, title=title)
        assert status == 201, video
        ready = await wait_ready(http, api, headers, video["id"], 60)
    assert ready["state"] == "ready", ready
    video_id: str = video["id"]
    return video_id


@dataclass(frozen=True)
class SpriteCue:
    """One WebVTT cue of the thumbnails track: a time range and its tile in a sprite."""

    start: float
    end: float
    image: str
    """The sprite's file name as the cue writes it (relative to the VTT)."""
    x: int
    y: int
    w: int
    h: int


def vtt_seconds(text: str) -> float:
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def sprite_cues(vtt: str) -> list[SpriteCue]:
    """The cues of a thumbnails WebVTT file (`start --> end` then `sprite.jpg#xywh=X,Y,W,H`)."""
    cues = []
    lines = vtt.replace("\r", "").split("\n")
    for timing, ref in itertools.pairwise(lines):
        if "-->" not in timing:
            continue
        match = re.fullmatch(r"(.*)#xywh=(\d+),(\d+),(\d+),(\d+)", ref.strip())
        assert match is not None, ref
        start, end = timing.split("-->")
        x, y, w, h = (int(match[i]) for i in range(2, 6))
        times = vtt_seconds(start), vtt_seconds(end.split()[0])
        cues.append(SpriteCue(*times, match[1], x, y, w, h))
    return cues


async def scrub_preview_at(page: Page, seconds: float) -> dict[str, str]:
    """Move the mouse over the seek bar where it stands for `seconds`; returns the preview's
    style (backgroundImage, backgroundPosition, width, height) once it is shown."""
    seek = page.locator("#seek")
    box = await seek.bounding_box()
    assert box is not None
    maximum = float(await seek.evaluate("s => s.max"))
    x = box["x"] + box["width"] * seconds / maximum
    y = box["y"] + box["height"] / 2
    await page.mouse.move(x - 5, y)
    await page.mouse.move(x, y, steps=2)
    preview = page.locator("#scrub-preview")
    await expect(preview).to_be_visible()
    style: dict[str, str] = await preview.evaluate(
        "p => ({backgroundImage: p.style.backgroundImage,"
        " backgroundPosition: p.style.backgroundPosition,"
        " width: p.style.width, height: p.style.height,"
        " time: p.querySelector('.scrub-time').textContent})"
    )
    return style


async def test_scrub_preview_shows_the_sprite_tile_of_the_time_under_the_mouse(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    async with make_node(**VOD_SETTINGS) as running:
        video_id = await ready_video(running, tmp_path, "Scrub me")
        await page.goto(f"{running.http}/v/{video_id}")
        thumbnails = await page.locator("#watch").get_attribute("data-thumbnails")
        assert thumbnails, "the page names no thumbnails track"
        answer = await page.request.get(f"{running.http}{thumbnails}")
        assert answer.ok, answer.status
        cues = sprite_cues(await answer.text())
        assert len(cues) >= 7, cues  # 8 s at one thumbnail a second
        # The seek bar's range is the video's duration once the player knows it.
        await wait_for_player(page, "v.readyState >= 1", timeout_s=15)
        await expect(page.locator("#scrub-preview")).to_be_hidden()

        seen = set()
        for seconds in (1.5, 5.5):
            cue = next(c for c in cues if c.start <= seconds < c.end)
            style = await scrub_preview_at(page, seconds)
            sprite = re.fullmatch(r'url\("(.+)"\)', style["backgroundImage"])
            assert sprite is not None, style
            sprite_url = sprite[1]
            assert re.search(r"/thumbs/sprite_[^/]*\.jpg$", sprite_url), sprite_url
            assert sprite_url.endswith("/" + cue.image.rsplit("/", 1)[-1]), (sprite_url, cue)
            # (the browser writes "-0px" as "0px")
            assert style["backgroundPosition"] == f"{-cue.x}px {-cue.y}px", (style, cue)
            assert (style["width"], style["height"]) == (f"{cue.w}px", f"{cue.h}px"), style
            assert style["time"] == f"0:{int(seconds):02d}", style
            seen.add(style["backgroundPosition"])
            image = await page.request.get(sprite_url)
            assert image.ok and image.headers["content-type"] == "image/jpeg", image.status
        assert len(seen) == 2  # two times, two tiles

        await page.mouse.move(0, 0)  # away from the bar: the preview goes
        await expect(page.locator("#scrub-preview")).to_be_hidden()


async def test_choosing_240p_switches_the_player_to_that_rendition(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    async with make_node(**VOD_SETTINGS) as running:
        video_id = await ready_video(running, tmp_path, "Switch me")
        segments: list[str] = []

        def on_request(request: Request) -> None:
            path = request.url.split("?", 1)[0]
            if f"/vod/{video_id}/" in path and not path.endswith(".m3u8"):
                segments.append(path.split(f"/vod/{video_id}/", 1)[1])

        page.on("request", on_request)
        await page.goto(f"{running.http}/v/{video_id}")
        player = page.locator(PLAYER)
        await wait_for_player(page, "v.readyState >= 1", timeout_s=15)
        await player.evaluate("v => { v.muted = true; return v.play(); }")
        await wait_for_player(page, "v.currentTime > 0.5", timeout_s=10)

        segments.clear()
        await page.locator("#quality").select_option(label="240p")
        # The menu pins hls.js to the 240p level (manualLevel); currentLevel, the level of what
        # is on screen, follows once the new rendition's first segment plays.
        level = await page.evaluate("() => window.ripplecast.player.manualLevel")
        height = await page.evaluate(f"() => window.ripplecast.player.levels[{level}].height")
        assert height == 240, (level, height)
        switched_at = (await player_state(page))["currentTime"]
        await page.wait_for_function(
            f"() => window.ripplecast.player.currentLevel === {level}", timeout=10_000
        )
        # Playback goes on, now fed from the 240p rendition.
        await wait_for_player(page, f"v.currentTime > {switched_at + 1.5}", timeout_s=10)
        media = [path for path in segments if not path.startswith("thumbs/")]
        assert media, segments
        assert all(path.startswith("240p/") for path in media), media
        assert await page.evaluate("() => window.ripplecast.player.currentLevel") == level
        assert await page.locator("#quality").evaluate("q => q.selectedOptions[0].text") == "240p"


# --- uploads: resume after an interruption and a reload ------------------------------------


async def test_an_interrupted_upload_resumes_after_a_reload(
    make_node: NodeFactory, page: Page, tmp_path: Path
) -> None:
    source = tmp_path / "long-take.mp4"
    await asyncio.to_thread(
        make_video, source, seconds=6, size="1280x720", pattern="testsrc2", rate=30
    )
    size = source.stat().st_size
    chunk = 256 * 1024
    assert size > 8 * chunk, size  # a good few PATCHes, so "mid-way" means something
    settings = {**VOD_SETTINGS, "worker_enabled": False, "upload_chunk_max_bytes": chunk}
    async with make_node(**settings) as running:
        base = running.http
        await make_creator(running, "rita")
        await log_in(page, base, "rita")
        await page.goto(f"{base}/dashboard/upload")

        # Let three PATCHes through, then cut the network off for the rest.
        patches_passed = 0
        cut = asyncio.Event()

        async def cut_after_three(route: Route) -> None:
            nonlocal patches_passed
            if route.request.method != "PATCH":
                await route.fallback()
            elif patches_passed < 3:
                patches_passed += 1
                await route.continue_()
            else:
                cut.set()
                await route.abort("internetdisconnected")

        await page.route("**/api/v1/uploads/**", cut_after_three)
        await page.locator("#file").set_input_files(source)
        await page.locator("#upload-form").get_by_label("Title").fill("Long take")
        await page.locator("#upload-form button[type=submit]").click()
        await asyncio.wait_for(cut.wait(), 15)
        await expect(page.locator("#upload-status")).to_contain_text("Interrupted")
        await page.unroute("**/api/v1/uploads/**")

        # The viewer gives up on this tab: reload, and choose the same file again.
        requests: list[tuple[str, str, str | None]] = []

        def on_request(request: Request) -> None:
            if "/api/v1/uploads" in request.url:
                offset = request.headers.get("upload-offset")
                requests.append((request.method, request.url, offset))

        await page.reload()
        page.on("request", on_request)
        await page.locator("#file").set_input_files(source)
        await page.locator("#upload-form button[type=submit]").click()
        await expect(page.locator("#upload-status")).to_contain_text("Uploaded", timeout=20_000)

        methods = [method for method, _, _ in requests]
        assert "POST" not in methods, requests  # the same upload, not a new one
        patches = [int(offset or -1) for method, _, offset in requests if method == "PATCH"]
        assert patches and patches[0] == 3 * chunk, patches  # from where it had stopped
        assert patches == sorted(patches), patches

        await page.goto(f"{base}/dashboard/videos")
        await expect(page.get_by_role("link", name="Long take", exact=True)).to_be_visible()


# --- accounts: the login rate limit ---------------------------------------------------------


async def test_too_many_failed_logins_show_the_rate_limit_message(
    make_node: NodeFactory, page: Page
) -> None:
    async with make_node(login_max_failures_per_account=2) as running:
        await make_creator(running, "lou")
        await page.goto(f"{running.http}/login")
        alert = page.locator("p.error[role=alert]")
        for attempt in range(3):
            await page.get_by_label("User name").fill("lou")
            await page.get_by_label("Password").fill(f"not the password {attempt}")
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_load_state()
            await expect(alert).to_be_visible()
            if attempt == 0:
                await expect(alert).not_to_contain_text("try again in")
        await expect(alert).to_have_text(re.compile(r"Too many failed logins: try again in \d+ s"))
        # Locked: even the right password is refused now, with the same message.
        await page.get_by_label("User name").fill("lou")
        await page.get_by_label("Password").fill(password_for("lou"))
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_load_state()
        await expect(alert).to_contain_text("try again in")
        assert "/login" in page.url


async def test_a_hidden_live_indicator_is_not_shown(make_node: NodeFactory, page: Page) -> None:
    async with make_node(publish_mode="keys") as running:
        await make_creator(running, "ivo")
        await make_channel(running, "ivo", "ivooff")
        await page.goto(f"{running.http}/c/ivooff")
        indicator = page.locator("#live-indicator")
        await expect(indicator).to_have_js_property("hidden", True)
        await expect(indicator).to_be_hidden(timeout=1000)
