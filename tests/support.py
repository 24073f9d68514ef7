"""Helpers for tests: real programs (ffmpeg, ffprobe, rtmpdump) and a node on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ripplecast.app import Node

REQUIRE_SERVICES = os.environ.get("RIPPLECAST_REQUIRE_SERVICES") == "1"


def require_program(name: str) -> str:
    """Return the path of `name`, or skip (fail under RIPPLECAST_REQUIRE_SERVICES=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RunningNode:
    node: Node

    @property
    def rtmp(self) -> str:
        return f"rtmp://127.0.0.1:{self.node.rtmp_port}/live"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}"


def ffmpeg_publish_args(
    url: str,
    *,
    seconds: float = 6,
    size: str = "320x240",
    rate: int = 25,
    gop: int = 25,
    realtime: bool = True,
    extra_video: tuple[str, ...] = (
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ),
) -> list[str]:
    """argv for ffmpeg publishing generated test media (testsrc + sine) to `url`."""
    args = [require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error"]
    if realtime:
        args.append("-re")
    args += [
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        *extra_video,
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", url,
    ]  # fmt: skip
    return args


class Process:
    """A child process that is always reaped (killed if still running) on exit."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str]) -> None:
        self.proc = proc
        self.argv = argv

    @classmethod
    async def start(cls, argv: list[str], **kwargs: Any) -> Process:
        kwargs.setdefault("stdout", asyncio.subprocess.DEVNULL)
        kwargs.setdefault("stderr", asyncio.subprocess.PIPE)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, **kwargs
        )
        return cls(proc, argv)

    async def wait(self, timeout: float) -> tuple[int, bytes, bytes]:
        """Wait for exit; kill on timeout. Returns (returncode, stdout, stderr)."""
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            await self.kill()
            raise
        assert self.proc.returncode is not None
        return self.proc.returncode, out or b"", err or b""

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.communicate(), 10)

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()


async def run(argv: list[str], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run a program to completion with a bound on time."""
    process = await Process.start(argv, stdout=asyncio.subprocess.PIPE)
    return await process.wait(timeout)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
