"""Worker throughput: N short jobs done by one worker or by two sharing one job queue.

Each run starts a fresh node in this process (worker off; SQLite in its data dir, or a scratch
PostgreSQL database made and dropped here), uploads N copies of a short 720p source through
`Uploads.upload` (probe, storage, video + job), and only then starts the workers: K `Worker`
instances built by `app.worker_for` on the node's one `JobQueue` and storage, each running one
job at a time, as K `ripplecast worker` processes would (the Python side of a worker is light:
the work is ffmpeg's, in child processes either way). The clock runs from the workers' start to
the moment every job is DONE. The order of 1 and 2 workers rotates from run to run.

CPU: the whole machine's busy share over the window (/proc/stat, all cores), the reaped ffmpeg
children's CPU time (RUSAGE_CHILDREN) and this process's (the node and the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.vod_common import (
    CACHE_DIR,
    QUIET_SHARE,
    SourceSpec,
    Usage,
    ensure_source,
    machine_busy,
    quiet_runs,
    rotated,
    setting_default,
    summary,
    wait_for_quiet,
)
from bench.vod_node import node_settings, running_node, scratch_postgresql
from ripplecast.app import worker_for
from ripplecast.db.migrate import upgrade
from ripplecast.db.models import JobState, Role
from ripplecast.vod.ladder import parse_ladder, plan_renditions
from ripplecast.vod.probe import probe
from ripplecast.vod.uploads import Uploader

FULL_SOURCE = SourceSpec(seconds=10, width=1280, height=720, video_kbps=4000)
QUICK_SOURCE = SourceSpec(seconds=2, width=320, height=240, video_kbps=600, preset="ultrafast")
WORKER_COUNTS = (1, 2)
RUN_TIMEOUT = 1800.0
"""Seconds one run (all its jobs) may take."""
POLL_SECONDS = 0.1
QUIET_WAIT = 120.0
"""Longest wait for the shared machine to calm down before a run."""


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    """ "" (the node's own SQLite file) or the URL of a migrated scratch PostgreSQL database."""
    if kind == "sqlite":
        yield ""
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database {kind!r}: sqlite or postgresql")
    async with scratch_postgresql() as url:
        await upgrade(url)
        yield url


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(256 * 1024):
            yield block


async def one_run(
    source: Path, jobs: int, workers: int, kind: str, scratch: Path, quick: bool
) -> dict[str, Any]:
    """Queue `jobs` videos, then time `workers` workers until all are done."""
    data_dir = scratch / f"{kind}-{workers}"
    shutil.rmtree(data_dir, ignore_errors=True)
    async with database(kind) as url, asyncio.timeout(RUN_TIMEOUT):
        extra: dict[str, Any] = {"database_url": url} if url else {}
        if quick:
            extra["vod_x264_preset"] = "ultrafast"
        settings = node_settings(data_dir, **extra)
        async with running_node(settings) as node:
            user = await node.accounts.create_user("bencher", "bench password", role=Role.ADMIN)
            uploader = Uploader(user.id, admin=True)
            for number in range(jobs):
                await node.uploads.upload(
                    uploader, _chunks(source), filename=f"job{number}.mp4", title=f"job {number}"
                )
            await asyncio.to_thread(os.sync)
            running = [worker_for(settings, node.jobs, node.storage) for _ in range(workers)]
            quiet = await wait_for_quiet(0 if quick else QUIET_WAIT)
            busy_before = machine_busy()
            start = Usage.now()
            for worker in running:
                worker.start()
            try:
                while True:
                    counts = await node.jobs.counts()
                    if counts[JobState.FAILED]:
                        raise RuntimeError(f"a job failed: {counts}")
                    if counts[JobState.DONE] == jobs:
                        break
                    await asyncio.sleep(POLL_SECONDS)
                used = Usage.now().since(start)
                busy_after = machine_busy()
            finally:
                for worker in running:
                    await worker.close()
            done_by = [worker.completed for worker in running]
    shutil.rmtree(data_dir, ignore_errors=True)
    busy = (busy_after[0] - busy_before[0]) / max(1.0, busy_after[1] - busy_before[1])
    return {
        "wall_s": used.wall,
        "jobs_per_min": jobs / used.wall * 60,
        "ffmpeg_cpu_s": used.children_cpu,
        "self_cpu_s": used.self_cpu,
        "foreign_cpu_s": used.foreign_cpu,
        "machine_busy": busy,
        "jobs_per_worker": done_by,
        "quiet_wait_s": quiet["waited_s"],
        "cores_busy_before": quiet["cores_busy"],
    }


def add_quiet_figures(section: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Add jobs/min over the quiet runs only, and the speed-up of quiet pairs (a run of 1 and
    a run of 2 workers, same round, both quiet). See `bench.vod_common.quiet_runs`."""
    flags: dict[tuple[str, int], list[bool]] = {}
    for row in section["rows"]:
        if "foreign_cpu_s" not in row:
            return section
        key = (row["database"], row["workers"])
        flags[key] = quiet_runs(row["wall_s"]["runs"], row["foreign_cpu_s"]["runs"], nproc)
        rates = [r for r, ok in zip(row["jobs_per_min"]["runs"], flags[key], strict=True) if ok]
        row["quiet_runs"] = flags[key]
        row["jobs_per_min_quiet"] = summary(rates) if rates else None
    by_key = {(row["database"], row["workers"]): row for row in section["rows"]}
    for (kind, workers), row in by_key.items():
        single = by_key.get((kind, 1))
        if workers == 1 or single is None:
            continue
        pairs = [
            one / many
            for one, many, ok_one, ok_many in zip(
                single["wall_s"]["runs"],
                row["wall_s"]["runs"],
                flags[(kind, 1)],
                flags[(kind, workers)],
                strict=True,
            )
            if ok_one and ok_many
        ]
        row["speedup_quiet"] = summary(pairs) if pairs else None
    section["quiet_rule"] = f"others used < {QUIET_SHARE:.0%} of the machine's CPU during the run"
    return section


async def run_workers_bench(
    *,
    runs: int,
    quick: bool,
    jobs: int | None = None,
    databases: list[str] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Measure 1 and 2 workers `runs` times per database; return the JSON-able section."""
    spec = QUICK_SOURCE if quick else FULL_SOURCE
    jobs = jobs or (2 if quick else 6)
    kinds = databases or ["sqlite"]
    log(f"workers: {jobs} jobs of {spec.describe()} (cached in {CACHE_DIR})")
    source = await asyncio.to_thread(ensure_source, spec)
    info = await asyncio.to_thread(probe, source, max_duration=3600, max_pixels=8192**2)
    renditions = plan_renditions(info, parse_ladder(setting_default("vod_ladder")))
    scratch = CACHE_DIR / f"work-workers-{os.getpid()}"
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for kind in kinds:
            for run in range(runs):
                for count in rotated([str(n) for n in WORKER_COUNTS], run):
                    result = await one_run(source, jobs, int(count), kind, scratch, quick)
                    measured.setdefault((kind, int(count)), []).append(result)
                    log(
                        f"  {kind:<10} run {run + 1}/{runs} {count} worker(s):"
                        f" {result['jobs_per_min']:6.2f} jobs/min, wall {result['wall_s']:6.1f} s,"
                        f" machine busy {result['machine_busy'] * 100:3.0f} %,"
                        f" jobs per worker {result['jobs_per_worker']}"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows: list[dict[str, Any]] = []
    for (kind, workers), results in measured.items():
        row: dict[str, Any] = {"database": kind, "workers": workers}
        for key in (
            "jobs_per_min",
            "wall_s",
            "ffmpeg_cpu_s",
            "self_cpu_s",
            "foreign_cpu_s",
            "machine_busy",
        ):
            row[key] = summary([float(result[key]) for result in results])
        row["jobs_per_worker_runs"] = [result["jobs_per_worker"] for result in results]
        single = measured.get((kind, 1))
        if workers != 1 and single:
            row["speedup"] = summary(
                [one["wall_s"] / many["wall_s"] for one, many in zip(single, results, strict=True)]
            )
        rows.append(row)
    section = {
        "source": {**asdict(spec), "description": spec.describe()},
        "renditions": [r.name for r in renditions],
        "preset": "ultrafast" if quick else setting_default("vod_x264_preset"),
        "jobs": jobs,
        "runs": runs,
        "rows": rows,
    }
    return add_quiet_figures(section, os.cpu_count() or 1)
