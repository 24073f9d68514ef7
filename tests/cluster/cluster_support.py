"""Helpers of the cluster tests: the `ripplecast` command as a user runs it, and finding the
processes started for a run dir (so "nothing left running" is checked, not assumed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from support import Process

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]


def started_in(run_dir: Path) -> list[int]:
    """Pids of live processes started for `run_dir`: nodes (their data dir is inside it) and
    HAProxy (its configuration is)."""
    marker = str(run_dir.resolve()).encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        data_dir = b"RIPPLECAST_DATA_DIR=" + marker + b"/"
        if any(item.startswith(data_dir) for item in environ.split(b"\0")) or marker in cmdline:
            found.append(int(entry.name))
    return found


def cli_env() -> dict[str, str]:
    """The test's environment without RIPPLECAST_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}


def ripplecast(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `ripplecast ARGS...` to completion (killed after `timeout`); return (exit code,
    stdout, stderr)."""
    result = subprocess.run(
        [*RIPPLECAST, *args],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


async def ripplecast_async(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`ripplecast` for async tests: the same, without blocking the event loop."""
    process = await Process.start(
        [*RIPPLECAST, *args], stdout=asyncio.subprocess.PIPE, env=cli_env()
    )
    code, out, err = await process.wait(timeout)
    return code, out.decode(), err.decode()
