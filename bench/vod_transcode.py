"""Transcode benchmark: Ripplecast's `transcode()` against the same ffmpeg command run bare,
and against the usual one-ffmpeg-per-rendition pattern.

Each run measures four variants on the same source, in an order rotated from run to run:

- `ripplecast`: `transcode()` as the worker calls it (progress callback included): the one
  ffmpeg process, the sprite tiling run, reading the outputs back and writing the playlists.
- `bare`: the argv of `build_command` (same plan, same thumbnails) run with `subprocess.run`,
  then the same `sprite_command`; timed separately, so the overhead can be taken against the
  main command alone (the brief's definition) or against both.
- `one_process`: `build_command` without poster and thumbnails: every rendition from one
  decode, nothing else, the fair counterpart of `separate`.
- `separate`: one ffmpeg per rendition, each decoding the source itself, one after the other.
  Each is `build_command` for that single rendition, so the x264 and AAC settings are identical.
- `parallel`: the same per-rendition commands all started at once (what a farm of
  one-rendition jobs does on one machine): the wall time to compare with `one_process`.

Wall time comes from `time.perf_counter`, CPU time of ffmpeg from `getrusage(RUSAGE_CHILDREN)`
deltas (every ffmpeg is a reaped child of this process), and this process's own CPU from
`RUSAGE_SELF` (the Python side of `transcode()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.vod_common import (
    CACHE_DIR,
    QUIET_SHARE,
    SourceSpec,
    Usage,
    ensure_source,
    quiet_runs,
    rotated,
    run_checked,
    setting_default,
    summary,
    wait_for_quiet,
)
from ripplecast.vod import transcode as transcode_module
from ripplecast.vod.ffmpeg import find_ffmpeg
from ripplecast.vod.ladder import Rendition, parse_ladder, plan_renditions
from ripplecast.vod.probe import MediaInfo, probe
from ripplecast.vod.thumbnails import FRAMES_DIR, SPRITE_DIR, ThumbnailPlan, plan_thumbnails
from ripplecast.vod.thumbnails import sprite_command as make_sprite_command
from ripplecast.vod.transcode import TranscodeOptions, build_command, transcode

FULL_SOURCE = SourceSpec(seconds=60, width=1920, height=1080)
QUICK_SOURCE = SourceSpec(seconds=2, width=320, height=240, video_kbps=600, preset="ultrafast")
VARIANTS = ("ripplecast", "bare", "one_process", "separate", "parallel")
QUIET_WAIT = 60.0
"""Longest wait for the shared machine to calm down before a variant."""
FFMPEG_TIMEOUT = 1800.0
"""Seconds one ffmpeg run may take before the benchmark gives up."""


@dataclass(frozen=True)
class Plan:
    """Everything a variant needs: the probed source and Ripplecast's own plan for it."""

    source: Path
    info: MediaInfo
    renditions: list[Rendition]
    options: TranscodeOptions
    thumbnails: ThumbnailPlan

    def command(self, *, thumbnails: bool = True) -> list[str]:
        return build_command(
            self.source,
            self.info,
            self.renditions,
            self.options,
            self.thumbnails if thumbnails else None,
        )

    def per_rendition_commands(self) -> list[list[str]]:
        """One argv per rendition, same settings, each decoding the whole source."""
        return [
            build_command(self.source, self.info, [rendition], self.options, None)
            for rendition in self.renditions
        ]

    def sprite_command(self) -> list[str]:
        return make_sprite_command(self.options.ffmpeg, self.thumbnails)


def make_plan(source: Path, preset: str | None = None) -> Plan:
    """Probe `source` and plan it with the default ladder and transcode settings."""
    info = probe(source, max_duration=12 * 3600, max_pixels=8192 * 8192)
    renditions = plan_renditions(info, parse_ladder(setting_default("vod_ladder")))
    options = TranscodeOptions(
        ffmpeg=find_ffmpeg(""),
        segment_seconds=setting_default("vod_segment_seconds"),
        preset=preset or setting_default("vod_x264_preset"),
        thumbnail_interval=setting_default("vod_thumbnail_interval_seconds"),
        thumbnail_width=setting_default("vod_thumbnail_width"),
        timeout=FFMPEG_TIMEOUT,
    )
    thumbnails = plan_thumbnails(
        info.duration,
        renditions[0],
        interval=options.thumbnail_interval,
        width=options.thumbnail_width,
    )
    return Plan(source, info, renditions, options, thumbnails)


def _prepare_out(out: Path, names: Sequence[str]) -> None:
    """An empty output folder with the sub-folders ffmpeg's HLS muxer expects (as `transcode`
    makes them)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)


def _bytes_under(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _figures(used: Usage, out: Path) -> dict[str, float]:
    return {
        "wall_s": used.wall,
        "ffmpeg_cpu_s": used.children_cpu,
        "foreign_cpu_s": used.foreign_cpu,
        "bytes_out": _bytes_under(out),
    }


def _timed(argv: list[str], cwd: Path) -> Usage:
    start = Usage.now()
    run_checked(argv, cwd=cwd, timeout=FFMPEG_TIMEOUT)
    return Usage.now().since(start)


@contextlib.contextmanager
def timing_ffmpeg_runs(calls: list[float]) -> Iterator[None]:
    """Wrap the `run_ffmpeg` that `transcode()` calls so that each ffmpeg run's wall time is
    appended to `calls`: what is left of `transcode()`'s wall time is Ripplecast's own work,
    a figure the noise of a shared machine hardly touches (unlike the difference of two
    separately timed ffmpeg runs)."""
    # The module's namespace, as a dict: the name is not part of its public interface.
    namespace = vars(transcode_module)
    original = namespace["run_ffmpeg"]

    async def timed(argv: Sequence[str], **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            await original(argv, **kwargs)
        finally:
            calls.append(time.perf_counter() - started)

    namespace["run_ffmpeg"] = timed
    try:
        yield
    finally:
        namespace["run_ffmpeg"] = original


async def run_ripplecast(plan: Plan, out: Path) -> dict[str, float]:
    """`transcode()` with a progress callback, as the worker runs it."""
    await asyncio.to_thread(_prepare_out, out, [])
    reports = 0

    async def on_progress(fraction: float, eta: float | None) -> None:
        nonlocal reports
        reports += 1

    calls: list[float] = []
    with timing_ffmpeg_runs(calls):
        start = Usage.now()
        result = await transcode(
            plan.source, out, plan.info, plan.renditions, plan.options, on_progress
        )
        used = Usage.now().since(start)
    if "master.m3u8" not in result.files or len(calls) != 2:
        raise RuntimeError(f"transcode() did not run as planned ({len(calls)} ffmpeg runs)")
    main_wall, sprite_wall = calls
    return {
        "wall_s": used.wall,
        "ffmpeg_cpu_s": used.children_cpu,
        "main_ffmpeg_wall_s": main_wall,
        "sprite_wall_s": sprite_wall,
        "own_wall_s": used.wall - main_wall - sprite_wall,
        "python_cpu_s": used.self_cpu,
        "foreign_cpu_s": used.foreign_cpu,
        "progress_reports": reports,
        "bytes_out": _bytes_under(out),
    }


def run_bare(plan: Plan, out: Path) -> dict[str, float]:
    """The same main command, then the same sprite command, each with `subprocess.run`."""
    names = [r.name for r in plan.renditions] + [SPRITE_DIR, FRAMES_DIR]
    _prepare_out(out, names)
    main = _timed(plan.command(), out)
    sprites = _timed(plan.sprite_command(), out)
    return {
        "wall_s": main.wall,
        "ffmpeg_cpu_s": main.children_cpu,
        "sprite_wall_s": sprites.wall,
        "sprite_cpu_s": sprites.children_cpu,
        "foreign_cpu_s": main.foreign_cpu + sprites.foreign_cpu,
        "bytes_out": _bytes_under(out),
    }


def run_one_process(plan: Plan, out: Path) -> dict[str, float]:
    """Every rendition from one ffmpeg, without poster and thumbnails."""
    _prepare_out(out, [r.name for r in plan.renditions])
    used = _timed(plan.command(thumbnails=False), out)
    return _figures(used, out)


def run_separate(plan: Plan, out: Path) -> dict[str, Any]:
    """One ffmpeg per rendition, one after the other; times summed."""
    _prepare_out(out, [r.name for r in plan.renditions])
    wall = cpu = foreign = 0.0
    per_rendition: dict[str, dict[str, float]] = {}
    for rendition, argv in zip(plan.renditions, plan.per_rendition_commands(), strict=True):
        used = _timed(argv, out)
        wall += used.wall
        cpu += used.children_cpu
        foreign += used.foreign_cpu
        per_rendition[rendition.name] = {
            "wall_s": round(used.wall, 3),
            "cpu_s": round(used.children_cpu, 3),
        }
    return {
        "wall_s": wall,
        "ffmpeg_cpu_s": cpu,
        "foreign_cpu_s": foreign,
        "per_rendition": per_rendition,
        "bytes_out": _bytes_under(out),
    }


def run_parallel(plan: Plan, out: Path) -> dict[str, Any]:
    """The per-rendition commands all at once; wall time until the last one ends."""
    _prepare_out(out, [r.name for r in plan.renditions])
    start = Usage.now()
    processes = [
        subprocess.Popen(
            argv,
            cwd=out,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for argv in plan.per_rendition_commands()
    ]
    try:
        codes = [process.wait(FFMPEG_TIMEOUT) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    used = Usage.now().since(start)
    if any(codes):
        raise RuntimeError(f"a per-rendition ffmpeg failed: exit codes {codes}")
    return _figures(used, out)


async def _run_variant(name: str, plan: Plan, out: Path) -> dict[str, Any]:
    if name == "ripplecast":
        return await run_ripplecast(plan, out)
    runner = {
        "bare": run_bare,
        "one_process": run_one_process,
        "separate": run_separate,
        "parallel": run_parallel,
    }[name]
    return await asyncio.to_thread(runner, plan, out)


def _ratios(numerators: list[float], denominators: list[float]) -> dict[str, Any]:
    return summary([n / d for n, d in zip(numerators, denominators, strict=True)], 4)


def add_quiet_figures(section: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Add the wall-time figures of the quiet runs only (derived from the per-run lists, so
    older results files can be given them too). On a shared machine the wall time of a run
    during which someone else's tests took a core says nothing about the code measured; the
    CPU times and the instrumented own-work figure hardly move, the wall times do."""
    variants = section["variants"]
    quiet: dict[str, list[bool]] = {}
    for name, figures in variants.items():
        if "foreign_cpu_s" not in figures:
            return section
        quiet[name] = quiet_runs(figures["wall_s"]["runs"], figures["foreign_cpu_s"]["runs"], nproc)
        walls = [w for w, ok in zip(figures["wall_s"]["runs"], quiet[name], strict=True) if ok]
        figures["quiet_runs"] = quiet[name]
        figures["wall_quiet_s"] = summary(walls) if walls else None

    def paired(numerator: str, denominator: str) -> dict[str, Any] | None:
        pairs = [
            (a, b)
            for a, b, ok_a, ok_b in zip(
                variants[numerator]["wall_s"]["runs"],
                variants[denominator]["wall_s"]["runs"],
                quiet[numerator],
                quiet[denominator],
                strict=True,
            )
            if ok_a and ok_b
        ]
        return summary([a / b for a, b in pairs], 4) if pairs else None

    section["quiet"] = {
        "rule": f"others used < {QUIET_SHARE:.0%} of the machine's CPU during the run",
        "wall_ripplecast_vs_bare_main": paired("ripplecast", "bare"),
        "wall_one_process_vs_separate": paired("one_process", "separate"),
        "wall_one_process_vs_parallel": paired("one_process", "parallel"),
    }
    return section


async def run_transcode_bench(
    *, runs: int, quick: bool, seconds: float | None = None, log: Any = print
) -> dict[str, Any]:
    """Measure every variant `runs` times; return the JSON-able section of the results."""
    spec = QUICK_SOURCE if quick else FULL_SOURCE
    if seconds is not None:
        spec = SourceSpec(
            seconds, spec.width, spec.height, spec.fps, spec.video_kbps, spec.noise, spec.preset
        )
    log(f"transcode: source {spec.describe()} (cached in {CACHE_DIR})")
    source = await asyncio.to_thread(ensure_source, spec)
    plan = await asyncio.to_thread(make_plan, source)
    scratch = CACHE_DIR / "work-transcode"
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    try:
        for run in range(runs):
            for name in rotated(VARIANTS, run):
                quiet = await wait_for_quiet(0 if quick else QUIET_WAIT)
                result = await _run_variant(name, plan, scratch / name)
                result["quiet_wait_s"] = quiet["waited_s"]
                result["cores_busy_before"] = quiet["cores_busy"]
                measured[name].append(result)
                log(
                    f"  run {run + 1}/{runs} {name:<11} wall {result['wall_s']:7.2f} s"
                    f"  ffmpeg CPU {result['ffmpeg_cpu_s']:7.2f} s"
                )
                shutil.rmtree(scratch / name, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def column(variant: str, key: str) -> list[float]:
        return [float(result[key]) for result in measured[variant]]

    rc_wall, rc_cpu = column("ripplecast", "wall_s"), column("ripplecast", "ffmpeg_cpu_s")
    rc_main, rc_own = column("ripplecast", "main_ffmpeg_wall_s"), column("ripplecast", "own_wall_s")
    bare_wall, bare_cpu = column("bare", "wall_s"), column("bare", "ffmpeg_cpu_s")
    bare_all_wall = [w + s for w, s in zip(bare_wall, column("bare", "sprite_wall_s"), strict=True)]
    bare_all_cpu = [c + s for c, s in zip(bare_cpu, column("bare", "sprite_cpu_s"), strict=True)]
    one_cpu, sep_cpu = column("one_process", "ffmpeg_cpu_s"), column("separate", "ffmpeg_cpu_s")
    variants: dict[str, Any] = {}
    for name in VARIANTS:
        keys = [k for k, v in measured[name][0].items() if isinstance(v, int | float)]
        variants[name] = {key: summary(column(name, key)) for key in keys}
    variants["separate"]["per_rendition_runs"] = [r["per_rendition"] for r in measured["separate"]]
    info = plan.info
    section = {
        "source": {
            **asdict(spec),
            "bytes": source.stat().st_size,
            "duration_s": round(info.duration, 3),
            "bit_rate": info.bit_rate,
        },
        "plan": {
            "renditions": [asdict(r) for r in plan.renditions],
            "preset": plan.options.preset,
            "segment_seconds": plan.options.segment_seconds,
            "thumbnail_interval_s": plan.options.thumbnail_interval,
            "command": plan.command(),
        },
        "runs": runs,
        "order": "rotated each run: "
        + "; ".join(",".join(rotated(VARIANTS, r)) for r in range(runs)),
        "variants": variants,
        "overhead": {
            # (main ffmpeg + own work) / main ffmpeg, and the same with the sprite run: as
            # ratios, so that ratio - 1 is the overhead like every other figure here.
            "own_work_vs_main_ffmpeg": _ratios(
                [main + own for main, own in zip(rc_main, rc_own, strict=True)], rc_main
            ),
            "own_work_and_sprites_vs_main_ffmpeg": _ratios(rc_wall, rc_main),
            "wall_vs_bare_main": _ratios(rc_wall, bare_wall),
            "main_ffmpeg_vs_bare_main": _ratios(rc_main, bare_wall),
            "wall_vs_bare_main_and_sprites": _ratios(rc_wall, bare_all_wall),
            "ffmpeg_cpu_vs_bare_main": _ratios(rc_cpu, bare_cpu),
            "ffmpeg_cpu_vs_bare_main_and_sprites": _ratios(rc_cpu, bare_all_cpu),
        },
        "cpu_ratio": {
            "one_process_vs_separate": _ratios(one_cpu, sep_cpu),
            "ripplecast_command_vs_separate": _ratios(bare_cpu, sep_cpu),
        },
        "wall_ratio": {
            "one_process_vs_separate_sequential": _ratios(
                column("one_process", "wall_s"), column("separate", "wall_s")
            ),
            "one_process_vs_parallel": _ratios(
                column("one_process", "wall_s"), column("parallel", "wall_s")
            ),
        },
        "speed_x": summary([info.duration / wall for wall in rc_wall], 2),
    }
    return add_quiet_figures(section, os.cpu_count() or 1)
