"""Video-on-demand benchmark: transcoding, upload throughput and worker throughput.

    python -m bench.vod transcode [--quick] [--runs 3] [--seconds 60]
    python -m bench.vod upload    [--quick] [--runs 3] [--size-mb 200]
    python -m bench.vod workers   [--quick] [--runs 3] [--jobs 6] [--db sqlite,postgresql]
    python -m bench.vod all       [--quick]
    python -m bench.vod report    # only re-render the .md from the .json

Each command measures its variants `--runs` times in interleaved order, prints every run and
updates its own section of `--out` (default bench/results/vod-DATE.json; with --quick a file
in the bench cache, so quick runs never touch the committed results), then rewrites the .md
table next to it from the whole JSON. Media is generated with ffmpeg and cached outside the
repository (see `bench.vod_common.CACHE_DIR`). `--quick` uses tiny sources and one run: it
checks the code works, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.vod_common import CACHE_DIR, machine
from bench.vod_report import render_markdown

RESULTS_DIR = Path(__file__).with_name("results")
SECTIONS = ("transcode", "upload", "workers")
SECTION_TIMEOUT = {"transcode": 4 * 3600.0, "upload": 1800.0, "workers": 3600.0}
"""Seconds one section may run in full mode before it is abandoned."""
QUICK_TIMEOUT = 180.0


def default_out(quick: bool) -> Path:
    if quick:
        return CACHE_DIR / "vod-quick.json"
    return RESULTS_DIR / f"vod-{dt.date.today().isoformat()}.json"


def load(path: Path) -> dict[str, Any]:
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data
    return {}


def save(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON and its Markdown table next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    path.with_suffix(".md").write_text(render_markdown(data), "utf-8")


def log(message: str) -> None:
    print(message, flush=True)


async def run_section(name: str, args: argparse.Namespace) -> dict[str, Any]:
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if name == "transcode":
        from bench.vod_transcode import run_transcode_bench

        return await run_transcode_bench(runs=runs, quick=args.quick, seconds=args.seconds, log=log)
    if name == "upload":
        from bench.vod_upload import run_upload_bench

        return await run_upload_bench(runs=runs, quick=args.quick, size_mb=args.size_mb, log=log)
    from bench.vod_workers import run_workers_bench

    return await run_workers_bench(
        runs=runs, quick=args.quick, jobs=args.jobs, databases=args.db.split(","), log=log
    )


async def run_all(args: argparse.Namespace, out: Path) -> None:
    names = SECTIONS if args.command == "all" else (args.command,)
    for name in names:
        started = time.monotonic()
        limit = QUICK_TIMEOUT if args.quick else SECTION_TIMEOUT[name]
        async with asyncio.timeout(limit):
            section = await run_section(name, args)
        section["elapsed_s"] = round(time.monotonic() - started, 1)
        section["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        section["command"] = "python -m bench.vod " + " ".join(sys.argv[1:] or [name])
        data = load(out)
        data["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        data["machine"] = machine()
        data["quick"] = bool(args.quick)
        data[name] = section
        save(out, data)
        log(f"{name}: written to {out} ({section['elapsed_s']} s)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vod", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=[*SECTIONS, "all", "report"])
    parser.add_argument("--quick", action="store_true", help="tiny media, one run (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs per variant (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (updated in place)")
    parser.add_argument("--seconds", type=float, default=None, help="transcode source length")
    parser.add_argument("--size-mb", type=int, default=None, help="upload file size (about)")
    parser.add_argument("--jobs", type=int, default=None, help="worker jobs per run (default 6)")
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="databases for `workers` (sqlite,postgresql)"
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out: Path = args.out or default_out(args.quick)
    if args.command == "report":
        data = load(out)
        if "transcode" in data:
            from bench.vod_transcode import add_quiet_figures

            add_quiet_figures(data["transcode"], int(data["machine"]["nproc"]))
        if "workers" in data:
            from bench.vod_workers import add_quiet_figures as add_quiet_workers

            add_quiet_workers(data["workers"], int(data["machine"]["nproc"]))
        save(out, data)
        log(f"rewrote {out.with_suffix('.md')}")
        return
    asyncio.run(run_all(args, out))


if __name__ == "__main__":
    main()
