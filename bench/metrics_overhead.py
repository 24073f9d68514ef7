"""Metrics overhead: fan-out CPU of one server with metrics on versus off, in the same session.

The same fan-out measurement as `bench.fanout` (one 720p30 stream, N HTTP-FLV viewers, server
CPU from /proc over the window), run alternately on two server variants:

- **on**: the defaults (`metrics_enabled = true`), and this process scrapes `/metrics` every
  `--scrape-every` seconds (1 s: fifteen times as often as a usual Prometheus) from the
  publisher's start to the end of the window, so the cost of collecting is in the figure;
- **off**: `RIPPLECAST_METRICS_ENABLED=false` (no route, no middleware, no hooks, no probe).

Runs alternate (on, off, on, off, ...) so that drift of the shared machine falls on both
variants alike; each variant's figure is the median of its `--repeat` runs. The difference is
(on - off) / off of the medians of the server's CPU % of a core. Before each run the machine
must be quiet (`bench.vod_common.wait_for_quiet`); during it, the CPU the machine spent on
anything else is recorded (`others_cpu_pct`).

With `--concurrent` the two variants run at the same time instead, each with its own publisher
and viewers (this process drives both): whatever else the shared machine does then falls on
both in the same seconds, and each run's on/off pair is compared directly.

    python -m bench.metrics_overhead --viewers 1000 --duration 20 --repeat 3 \\
        --out bench/results/metrics-2026-11-25.json

`--scrape-cost` measures instead, in this process, the CPU one scrape costs a node (collecting
and encoding its registry, then through HTTP) with 1, 100 and 1000 live streams: the part of
the overhead that does not depend on the fan-out.

    python -m bench.metrics_overhead --scrape-cost --out bench/results/metrics-scrape-cost.json

`--within RATE` isolates the scrapes' share under the fan-out load: one server with metrics on,
its window cut into `WITHIN_SLICE_SECONDS` slices that alternate between scraping at RATE per
second and not scraping; the CPU difference of the two kinds of slice divided by the scrape
rate is the CPU one scrape costs that loaded server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.fanout import Server, proc_cpu_seconds, raise_nofile, run_row
from bench.publisher import prepare_media
from bench.vod_common import wait_for_quiet

VARIANTS = {
    "on": {"RIPPLECAST_METRICS_ENABLED": "true"},
    "off": {"RIPPLECAST_METRICS_ENABLED": "false"},
}


@dataclass
class Scrapes:
    """What the scraper saw during one "on" run."""

    count: int = 0
    failures: int = 0
    seconds: list[float] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)
        return {
            "scrapes": self.count,
            "failures": self.failures,
            "scrape_ms_median": round(1000 * statistics.median(ordered), 2) if ordered else None,
            "scrape_ms_max": round(1000 * ordered[-1], 2) if ordered else None,
            "body_bytes": self.bytes,
        }


def scraper(every: float, seen: Scrapes) -> Callable[[Server], Awaitable[None]]:
    """A `during` hook for `run_row`: GET /metrics every `every` seconds until cancelled."""

    async def scrape(server: Server) -> None:
        url = f"http://127.0.0.1:{server.http_port}/metrics"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            next_at = time.monotonic()
            while True:
                started = time.monotonic()
                try:
                    async with http.get(url) as response:
                        body = await response.read()
                        if response.status != 200 or b"ripplecast_streams_live" not in body:
                            raise RuntimeError(f"/metrics answered {response.status}")
                    seen.seconds.append(time.monotonic() - started)
                    seen.bytes = len(body)
                    seen.count += 1
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                    seen.failures += 1
                    print(f"  scrape failed: {exc}", file=sys.stderr, flush=True)
                next_at += every
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    return scrape


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    media = prepare_media(seconds=args.media_seconds)
    order = ["on", "off"] if not args.off_first else ["off", "on"]
    runs: list[dict[str, Any]] = []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".log").open("a") if args.out else None

    async def one(variant: str, attempt: int) -> dict[str, Any]:
        seen = Scrapes()
        scraping = variant == "on" and args.scrape_every > 0
        during = scraper(args.scrape_every, seen) if scraping else None
        row = await run_row(
            "ripplecast", args.protocol, args.viewers, duration=args.duration,
            batch_ms=args.batch_ms, media=media, env=VARIANTS[variant], during=during,
        )  # fmt: skip
        run = {"variant": variant, "run": attempt + 1, **asdict(row)}
        if variant == "on":
            run.update(seen.summary())
        return run

    try:
        for attempt in range(args.repeat):
            mode = "both at once" if args.concurrent else " then ".join(order)
            print(
                f"# metrics {mode}: {args.viewers} {args.protocol} viewers"
                f" (run {attempt + 1}/{args.repeat})",
                file=sys.stderr,
                flush=True,
            )
            if args.concurrent:
                quiet = await wait_for_quiet(args.quiet_wait)
                pair = list(await asyncio.gather(*(one(v, attempt) for v in order)))
                for run in pair:
                    run["quiet_wait_s"] = quiet["waited_s"]
                    run["others_cpu_pct"] = round(others_cpu_pct(pair), 1)
            else:
                pair = []
                for variant in order:
                    quiet = await wait_for_quiet(args.quiet_wait)
                    run = await one(variant, attempt)
                    run["quiet_wait_s"] = quiet["waited_s"]
                    run["others_cpu_pct"] = round(others_cpu_pct([run]), 1)
                    pair.append(run)
            for run in pair:
                runs.append(run)
                line = json.dumps(run)
                print("  " + line, file=sys.stderr, flush=True)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
    finally:
        if log is not None:
            log.close()
    return {"runs": runs, "summary": summarise(runs)}


def others_cpu_pct(runs: list[dict[str, Any]]) -> float:
    """CPU % of a core the machine spent on anything but these runs' servers, publishers and
    this generator during the window: other people's work, and kernel time not charged to a
    process (the softirq of the loopback traffic, a VM's steal time)."""
    machine = runs[0]["machine_busy_pct"] * (os.cpu_count() or 1)
    ours = sum(r["server_cpu_pct"] + r["publisher_cpu_pct"] for r in runs)
    return max(0.0, machine - ours - runs[0]["generator_cpu_pct"])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median CPU of each variant and the difference between them."""
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        cpu = [r["server_cpu_pct"] for r in mine]
        summary[variant] = {
            "runs": len(mine),
            "server_cpu_pct": [round(x, 2) for x in cpu],
            "server_cpu_pct_median": round(statistics.median(cpu), 2),
            "kept_up": [f"{r['kept_up']}/{r['viewers']}" for r in mine],
            "delay_p95_ms_median": statistics.median(r["delay_p95_ms"] for r in mine),
            "rss_per_viewer_kb_median": round(
                statistics.median(r["rss_per_viewer_kb"] for r in mine), 1
            ),
            "generator_cpu_pct_max": round(max(r["generator_cpu_pct"] for r in mine), 1),
        }
    on, off = summary["on"]["server_cpu_pct_median"], summary["off"]["server_cpu_pct_median"]
    summary["difference_pct"] = round(100 * (on - off) / off, 2)
    pairs = {}
    for r in runs:
        pairs.setdefault(r["run"], {})[r["variant"]] = r["server_cpu_pct"]
    paired = [100 * (p["on"] - p["off"]) / p["off"] for p in pairs.values() if len(p) == 2]
    summary["paired_differences_pct"] = [round(x, 2) for x in paired]
    summary["paired_difference_pct_median"] = round(statistics.median(paired), 2)
    summary["scrapes"] = sum(r.get("scrapes", 0) for r in runs)
    summary["scrape_failures"] = sum(r.get("failures", 0) for r in runs)
    return summary


def report(result: dict[str, Any]) -> str:
    summary = result["summary"]
    lines = [
        "| run | variant | server CPU % of a core | kept up | delay p95 ms | RSS KB/viewer"
        " | generator CPU % | others' CPU % | scrapes | scrape ms (median / max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        scrape = (
            f"{r['scrapes']} | {r['scrape_ms_median']} / {r['scrape_ms_max']}"
            if r["variant"] == "on"
            else "- | -"
        )
        lines.append(
            f"| {r['run']} | {r['variant']} | {r['server_cpu_pct']:.1f} |"
            f" {r['kept_up']}/{r['viewers']} | {r['delay_p95_ms']:.0f} |"
            f" {r['rss_per_viewer_kb']:.1f} | {r['generator_cpu_pct']:.0f} |"
            f" {r.get('others_cpu_pct', 0):.1f} |"
            f" {scrape} |"
        )
    on, off = summary["on"], summary["off"]
    lines += [
        "",
        f"Median server CPU: metrics on {on['server_cpu_pct_median']} % of a core"
        f" (runs {on['server_cpu_pct']}), off {off['server_cpu_pct_median']} %"
        f" (runs {off['server_cpu_pct']}): difference {summary['difference_pct']:+.2f} %"
        f" ({summary['scrapes']} scrapes, {summary['scrape_failures']} failed).",
    ]
    lines.append(
        f"Run by run (on against the off run of the same number):"
        f" {summary['paired_differences_pct']} %, median"
        f" {summary['paired_difference_pct_median']:+.2f} %."
    )
    return "\n".join(lines)


WITHIN_SLICE_SECONDS = 5.0
WITHIN_LEAD_SECONDS = 14.0
"""From the publisher's start to the measurement window: warm-up, idle, ramp and settling."""


async def within(args: argparse.Namespace) -> dict[str, Any]:
    """Scraping on and off in alternate slices of one server's window (see `--within`)."""
    media = prepare_media(seconds=args.media_seconds)
    slices: list[dict[str, Any]] = []

    async def alternate(server: Server) -> None:
        url = f"http://127.0.0.1:{server.http_port}/metrics"
        await asyncio.sleep(WITHIN_LEAD_SECONDS)
        async with aiohttp.ClientSession() as http:
            for n in range(int(args.duration // WITHIN_SLICE_SECONDS)):
                scraping = n % 2 == 0
                cpu0, t0 = proc_cpu_seconds(server.proc.pid), time.monotonic()
                scrapes = 0
                while time.monotonic() - t0 < WITHIN_SLICE_SECONDS:
                    if scraping:
                        async with http.get(url) as response:
                            await response.read()
                        scrapes += 1
                    await asyncio.sleep(1 / args.within if scraping else 0.1)
                cpu1, t1 = proc_cpu_seconds(server.proc.pid), time.monotonic()
                cpu = 100 * (cpu1 - cpu0) / (t1 - t0)
                slices.append({"scraping": scraping, "scrapes": scrapes, "server_cpu_pct": cpu})
                print(f"  slice {n}: {slices[-1]}", file=sys.stderr, flush=True)

    row = await run_row(
        "ripplecast", args.protocol, args.viewers, duration=args.duration + 5,
        batch_ms=args.batch_ms, media=media, env=VARIANTS["on"], during=alternate,
    )  # fmt: skip
    on = [s["server_cpu_pct"] for s in slices if s["scraping"]]
    off = [s["server_cpu_pct"] for s in slices if not s["scraping"]]
    rate = sum(s["scrapes"] for s in slices if s["scraping"]) / (len(on) * WITHIN_SLICE_SECONDS)
    extra = statistics.median(on) - statistics.median(off)
    return {
        "slices": slices,
        "row": asdict(row),
        "summary": {
            "scrapes_per_second": round(rate, 2),
            "server_cpu_pct_scraping_median": round(statistics.median(on), 2),
            "server_cpu_pct_not_scraping_median": round(statistics.median(off), 2),
            "cpu_ms_per_scrape": round(10 * extra / rate, 3),
        },
    }


KEYFRAME = bytes([0x17, 1, 0, 0, 0]) + bytes(995)
"""An AVC keyframe tag body of 1000 bytes: enough for the streams to count something."""


async def scrape_cost(streams: int, scrapes: int) -> dict[str, Any]:
    """CPU per scrape of an in-process node with `streams` live streams (ms)."""
    from ripplecast.app import Node
    from ripplecast.config import Settings
    from ripplecast.media.flv import make_packet

    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        settings = Settings(
            rtmp_host="127.0.0.1", rtmp_port=0, http_host="127.0.0.1", http_port=0,
            data_dir=Path(tmp), publish_mode="open", hls_enabled=False,
        )  # fmt: skip
        node = Node(settings)
        await node.start()
        try:
            assert node.metrics is not None
            for n in range(streams):
                stream = node.hub.start_publish(f"s{n}")
                for i in range(30):
                    stream.push(make_packet(9, 33 * i, KEYFRAME))
            url = f"http://127.0.0.1:{node.http_port}/metrics"
            async with aiohttp.ClientSession() as http:
                for _ in range(10):  # warm up, and the routes have been seen
                    async with http.get(url) as response:
                        body = await response.read()
                started = time.process_time()
                for _ in range(scrapes):
                    node.metrics.exposition()
                collect = (time.process_time() - started) / scrapes
                started = time.process_time()
                for _ in range(scrapes):
                    async with http.get(url) as response:
                        body = await response.read()
                over_http = (time.process_time() - started) / scrapes
        finally:
            await node.close()
    return {
        "streams": streams,
        "collect_encode_ms": round(1000 * collect, 3),
        "http_scrape_ms_incl_client": round(1000 * over_http, 3),
        "body_bytes": len(body),
    }


async def scrape_costs() -> dict[str, Any]:
    rows = [await scrape_cost(streams, 200 if streams < 1000 else 50) for streams in (1, 100, 1000)]
    return {"scrape_cost": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--protocol", default="flv", choices=["flv", "rtmp"])
    parser.add_argument("--duration", type=float, default=20.0, help="measurement seconds")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant")
    parser.add_argument("--batch-ms", type=int, default=30, help="batch interval (the default)")
    parser.add_argument(
        "--scrape-every", type=float, default=1.0, help="seconds (on runs); 0: no scraping"
    )
    parser.add_argument("--off-first", action="store_true", help="start with the off variant")
    parser.add_argument(
        "--concurrent", action="store_true", help="run both variants at once, in pairs"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="most seconds to wait for a quiet machine"
    )
    parser.add_argument("--media-seconds", type=int, default=60, help="length of the media file")
    parser.add_argument("--out", type=Path, help="write JSON here (and .md, .log beside it)")
    parser.add_argument("--scrape-cost", action="store_true", help="CPU per scrape, in-process")
    parser.add_argument(
        "--within", type=float, default=0.0, metavar="RATE", help="scrape cost under load"
    )
    args = parser.parse_args(argv)
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.scrape_cost or args.within:
        found = asyncio.run(scrape_costs() if args.scrape_cost else within(args))
        print(json.dumps(found.get("summary", found), indent=2))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"argv": sys.argv, **found}, indent=2) + "\n")
        return
    result = asyncio.run(run_all(args))
    text = report(result)
    print(text)
    if args.out:
        doc = {
            "argv": sys.argv,
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
            **result,
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
