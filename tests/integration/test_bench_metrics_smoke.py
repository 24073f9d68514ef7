"""Keeps the metrics-overhead benchmark from rotting: both variants with 5 viewers, not timed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from bench.fanout import Server, run_row
from bench.metrics_overhead import VARIANTS, Scrapes, report, scraper, summarise
from bench.publisher import prepare_media

from support import require_program

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]


async def test_both_variants_run_and_only_on_serves_metrics(tmp_path: Path) -> None:
    require_program("ffmpeg")
    media = prepare_media(tmp_path / "media.flv", seconds=4)
    short = {"duration": 2.0, "media": media, "warmup": 1.5, "idle": 0.5, "settle": 0.5}
    seen = Scrapes()
    on = await run_row(
        "ripplecast", "flv", 5, env=VARIANTS["on"], during=scraper(0.2, seen), **short
    )
    statuses: list[int] = []

    async def probe(server: Server) -> None:
        url = f"http://127.0.0.1:{server.http_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            statuses.append(response.status)

    off = await run_row("ripplecast", "flv", 5, env=VARIANTS["off"], during=probe, **short)
    assert on.kept_up == off.kept_up == 5, (on, off)
    assert seen.count >= 5 and seen.failures == 0, seen
    assert seen.bytes > 1000
    assert statuses == [404]  # the off variant really has no metrics
    runs = [
        {"variant": "on", "run": 1, **vars(on), **seen.summary()},
        {"variant": "off", "run": 1, **vars(off)},
    ]
    summary = summarise(runs)
    assert summary["on"]["server_cpu_pct_median"] == pytest.approx(on.server_cpu_pct, abs=0.01)
    assert "difference" in report({"runs": runs, "summary": summary})
