"""Shared pieces of the video-on-demand benchmark: generated sources, machine facts, timing.

Sources are made with ffmpeg's lavfi `testsrc2` plus temporal noise (so x264 has real work and
the file has a realistic bit rate) and a sine tone as AAC, cached by their parameters under
`CACHE_DIR` (never committed). Every child process runs under a timeout.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ripplecast.config import Settings

CACHE_DIR = Path(os.environ.get("RIPPLECAST_BENCH_CACHE", "/tmp/ripplecast-bench")) / "vod"
"""Generated sources (and scratch folders) live here, outside the repository."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SOURCE_TIMEOUT = 900.0
"""Seconds one source may take to generate."""


@dataclass(frozen=True)
class SourceSpec:
    """A generated test video: H.264 + AAC in MP4."""

    seconds: float
    width: int
    height: int
    fps: int = 25
    video_kbps: int = 8000
    """Target video bit rate of the source (what a camera or an editor export might give)."""
    noise: int = 12
    """Strength of the temporal noise added to testsrc2 (0: none)."""
    preset: str = "veryfast"
    """x264 preset used to make the source (only its speed of generation depends on it)."""

    @property
    def name(self) -> str:
        """A file name unique to these parameters (the cache key)."""
        return (
            f"src-{self.width}x{self.height}p{self.fps}-{self.seconds:g}s-{self.video_kbps}k"
            f"-n{self.noise}-{self.preset}.mp4"
        )

    def describe(self) -> str:
        return (
            f"{self.seconds:g} s {self.width}x{self.height} {self.fps} fps, H.264"
            f" ~{self.video_kbps / 1000:g} Mbit/s (testsrc2 + noise {self.noise}) + AAC 128k"
        )


def source_args(spec: SourceSpec, path: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    """The ffmpeg argv that writes `spec` to `path` (pure)."""
    kbps = spec.video_kbps
    video_filter = f"noise=alls={spec.noise}:allf=t" if spec.noise else "null"
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{spec.seconds:g}",
        "-vf", video_filter,
        "-c:v", "libx264", "-preset", spec.preset, "-pix_fmt", "yuv420p",
        "-b:v", f"{kbps}k", "-maxrate", f"{kbps * 3 // 2}k", "-bufsize", f"{kbps * 2}k",
        "-g", str(spec.fps * 2),
        "-c:a", "aac", "-b:a", "128k", "-ac", "2",
        "-movflags", "+faststart",
        str(path),
    ]  # fmt: skip


def ensure_source(spec: SourceSpec, cache_dir: Path = CACHE_DIR) -> Path:
    """The cached file of `spec`, generated first if missing (blocking)."""
    path = cache_dir / spec.name
    if path.is_file() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.mp4")
    try:
        run_checked(source_args(spec, temporary), timeout=SOURCE_TIMEOUT)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def setting_default(name: str) -> Any:
    """The default of a Settings field, whatever the environment says (reproducible runs)."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


def run_checked(argv: Sequence[str], *, timeout: float, cwd: Path | None = None) -> None:
    """Run a program to completion; raise RuntimeError with its stderr tail if it fails."""
    completed = subprocess.run(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{argv[0]} exited with {completed.returncode}: {tail}")


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Wall clock and CPU seconds at one moment (subtract two to measure a span)."""

    wall: float
    self_cpu: float
    """user + system of this process (all its threads)."""
    children_cpu: float
    """user + system of the reaped child processes (ffmpeg, cp, curl ...)."""
    machine_cpu: float
    """CPU seconds every process of the machine was busy (/proc/stat)."""

    @classmethod
    def now(cls) -> Usage:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.perf_counter(),
            self_cpu=me.ru_utime + me.ru_stime,
            children_cpu=children.ru_utime + children.ru_stime,
            machine_cpu=machine_busy()[0] / CLOCK_TICKS,
        )

    def since(self, start: Usage) -> Usage:
        return Usage(
            wall=self.wall - start.wall,
            self_cpu=self.self_cpu - start.self_cpu,
            children_cpu=self.children_cpu - start.children_cpu,
            machine_cpu=self.machine_cpu - start.machine_cpu,
        )

    @property
    def foreign_cpu(self) -> float:
        """CPU seconds used by everything else on the machine over a span (other people's
        work on a shared machine; a few tenths per minute of kernel threads and daemons).
        Children still running at the end of the span are not reaped yet, so count here."""
        return max(0.0, self.machine_cpu - self.self_cpu - self.children_cpu)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [float(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


QUIET_CORES = 0.25
"""Below this many cores busy (the whole machine) the machine counts as quiet."""


async def wait_for_quiet(max_wait: float, *, window: float = 1.0) -> dict[str, float]:
    """Wait (at most `max_wait` seconds) until the machine has been quiet for two `window`s
    in a row: on a shared machine, other people's tests would otherwise land inside a
    measurement. Returns how long it waited and the load it last saw (cores busy)."""
    started = time.monotonic()
    quiet_windows = 0
    cores = 0.0
    while time.monotonic() - started < max_wait:
        busy_before, total_before = machine_busy()
        await asyncio.sleep(window)
        busy_after, total_after = machine_busy()
        cores = (
            (busy_after - busy_before)
            / max(1.0, total_after - total_before)
            * (os.cpu_count() or 1)
        )
        quiet_windows = quiet_windows + 1 if cores < QUIET_CORES else 0
        if quiet_windows >= 2:
            break
    return {"waited_s": round(time.monotonic() - started, 1), "cores_busy": round(cores, 2)}


QUIET_SHARE = 0.02
"""A measured span counts as quiet when other processes used less than this share of the
machine's CPU capacity during it."""


def quiet_runs(walls: Sequence[float], foreign: Sequence[float], nproc: int) -> list[bool]:
    """Per run: were other people's processes quiet during it (see `QUIET_SHARE`)?"""
    return [other < QUIET_SHARE * wall * nproc for wall, other in zip(walls, foreign, strict=True)]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min, max and every run of `values` (rounded)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(value, digits) for value in values],
    }


def rotated(items: Sequence[str], run: int) -> list[str]:
    """`items` started at position `run`: successive runs interleave the order of the variants,
    so a drift of the machine's speed does not favour whichever always runs first."""
    shift = run % len(items)
    return [*items[shift:], *items[:shift]]


# --- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(argv: list[str]) -> str:
    try:
        completed = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable ({error})"
    lines = completed.stdout.decode("utf-8", "replace").splitlines()
    return lines[0].strip() if lines else "unknown"


def machine(ffmpeg: str = "ffmpeg") -> dict[str, Any]:
    """The facts a reader needs to compare these figures with theirs."""
    memory_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(memory_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ffmpeg": _first_line(
            [shutil.which(ffmpeg) or ffmpeg, "-hide_banner", "-version"]
        ).partition(" Copyright")[0],
    }
