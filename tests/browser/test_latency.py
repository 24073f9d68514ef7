"""Glass-to-glass delay in the browser: HTTP-FLV under 1 s, HLS (1 s segments) under 4 s.

ffmpeg publishes a picture carrying its wall clock (see latency.py); the channel page plays it
and the page itself reads the clock back from the <video> through a canvas. The figures are
printed and kept in test-artifacts/browser/glass-to-glass.txt (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path

import pytest
from browser_support import (
    ARTIFACTS,
    make_channel,
    make_creator,
    publish,
    wait_for_player,
    wait_playing,
)
from latency import BITS, Delay, clock_publish_args, fixed_clock_clip_args, measure
from playwright.async_api import Page, expect

from support import NodeFactory, run

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_the_clock_reader_decodes_what_ffmpeg_draws(page: Page, tmp_path: Path) -> None:
    # The instrument first: a clip whose frames all show one known value, through the same
    # drawing filter and encoder as the live publisher, read back by the same page function.
    value = 0b101101001110001011010011
    assert value < 2**BITS
    clip = tmp_path / "clock.mp4"
    code, _, err = await run(fixed_clock_clip_args(str(clip), value_ms=value), timeout=30)
    assert code == 0, err.decode()
    data = base64.b64encode(clip.read_bytes()).decode()
    await page.set_content(
        f'<video id="player" muted loop autoplay src="data:video/mp4;base64,{data}"></video>'
    )
    await wait_for_player(page, "v.currentTime > 0.1", timeout_s=10)
    delay = await measure(page, epoch_ms=0, count=5, every_ms=50, timeout_ms=5000)
    assert delay.values == (value,) * 5, delay


async def test_glass_to_glass_delay_on_loopback(
    make_node: NodeFactory, page: Page, pytestconfig: pytest.Config
) -> None:
    async with make_node(publish_mode="keys", hls_segment_seconds=1.0) as running:
        await make_creator(running, "clara")
        key = await make_channel(running, "clara", "clock")
        epoch_us = time.time_ns() // 1000
        argv = clock_publish_args(f"{running.rtmp}/{key}", epoch_us=epoch_us, seconds=50)
        delays: dict[str, Delay] = {}
        estimates: dict[str, float] = {}
        async with await publish(running, key, "clock", argv=argv):
            for protocol, query in (("flv", "?p=flv"), ("hls", "")):
                await page.goto(f"{running.http}/c/clock{query}")
                await wait_playing(page)
                assert await page.evaluate("() => window.ripplecast.protocol") == protocol
                # Let the player settle at its live position (mpegts.js chases the live
                # edge; hls.js starts at its sync point) before reading the clock.
                await asyncio.sleep(2)
                delays[protocol] = await measure(page, epoch_ms=epoch_us / 1000)
                # The page's own figure (#delay): what it can know without the drawn clock.
                estimates[protocol] = await page.evaluate("() => window.ripplecast.latency()")
                await expect(page.locator("#delay")).to_have_text(re.compile(r"^\d+\.\d s$"))

    report = "\n".join(
        f"{protocol}: {delay}; the page's own estimate {estimates[protocol]:.2f} s"
        for protocol, delay in delays.items()
    )
    print(f"\nglass-to-glass on loopback\n{report}")
    folder = pytestconfig.rootpath / ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "glass-to-glass.txt").write_text(report + "\n", "utf-8")
    for protocol, delay in delays.items():
        assert len(delay.samples) >= 15, (protocol, delay)
        assert min(delay.samples) > 0, (protocol, delay)  # nothing arrives before it is sent
    assert delays["flv"].median < 1000, report
    assert delays["hls"].median < 4000, report
