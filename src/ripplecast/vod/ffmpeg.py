"""The ffmpeg program: finding it, its version, its `-progress` output and running it.

`ProgressParser` is sans-I/O (bytes in, `Progress` events out, any split of the input gives the
same events). `run_ffmpeg` is the one adapter that starts a process: it reads progress and the
tail of stderr, and guarantees the process is dead when it returns or raises, whether it
finished, failed, timed out or the caller was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ripplecast.errors import RipplecastError

STDERR_TAIL_LINES = 30
"""Lines of ffmpeg's stderr kept for the error message of a failed run."""
_STDERR_LINE_CHARS = 400
_READ_SIZE = 65536


class FfmpegNotFound(RipplecastError):
    """No usable ffmpeg program: the configured path is wrong, or none is installed."""


class TranscodeFailed(RipplecastError):
    """ffmpeg exited with an error, or ran too long; the message carries its last stderr lines."""

    def __init__(self, message: str, *, exit_code: int | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


def find_ffmpeg(configured: str = "") -> str:
    """The ffmpeg to run: `configured` if set, else ffmpeg from PATH, else the binary of the
    imageio-ffmpeg wheel. Raises `FfmpegNotFound`."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise FfmpegNotFound(f"the configured ffmpeg {configured!r} is not an executable")
        return found
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as error:
        raise FfmpegNotFound(
            f"no ffmpeg on PATH and none from the imageio-ffmpeg wheel ({error})"
        ) from None


def ffmpeg_version(ffmpeg: str) -> str:
    """The first line of `ffmpeg -version` (blocking; a few milliseconds)."""
    try:
        completed = subprocess.run(
            [ffmpeg, "-hide_banner", "-version"],
            capture_output=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise FfmpegNotFound(f"{ffmpeg} -version failed: {error}") from None
    lines = completed.stdout.decode("utf-8", "replace").splitlines()
    return lines[0].strip() if lines else "unknown"


@dataclass(frozen=True, slots=True)
class Progress:
    """One `-progress` report of ffmpeg (a block of key=value lines ending in `progress=`)."""

    out_time_seconds: float
    """Media time written so far, in seconds (never negative)."""
    speed: float | None
    """Media seconds encoded per wall-clock second; None while ffmpeg says N/A."""
    done: bool
    """True on the last report (`progress=end`)."""


_OUT_TIME = re.compile(r"^(-?)(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


class ProgressParser:
    """Parses ffmpeg's `-progress` output. Sans-I/O: `feed` bytes, get `Progress` events.

    A line longer than `max_line_bytes` is dropped (ffmpeg never writes one); values it cannot
    read are ignored. The time comes from `out_time_us`, else `out_time`, else `out_time_ms`
    (which ffmpeg has long written in microseconds too); a block without any keeps the last.
    """

    def __init__(self, *, max_line_bytes: int = 4096) -> None:
        self._max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False
        self._block: dict[str, str] = {}
        self._last_time = 0.0

    def feed(self, data: bytes) -> list[Progress]:
        """Take more output; return the reports it completed, in order."""
        events: list[Progress] = []
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self._max_line_bytes:
                    self._buffer.clear()
                    self._discarding = True
                return events
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._discarding:
                self._discarding = False  # the end of an overlong line
                continue
            event = self._line(line.rstrip(b"\r").decode("latin-1"))
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> Progress | None:
        key, sep, value = line.partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._block[key] = value
            return None
        block, self._block = self._block, {}
        out_time = self._time_of(block)
        if out_time is not None:
            self._last_time = max(0.0, out_time)
        return Progress(
            out_time_seconds=self._last_time, speed=_speed(block.get("speed")), done=value == "end"
        )

    @staticmethod
    def _time_of(block: dict[str, str]) -> float | None:
        for key in ("out_time_us", "out_time_ms"):
            value = block.get(key, "")
            if value.lstrip("-").isdigit():
                return int(value) / 1_000_000
            if key == "out_time_us" and (parsed := _clock(block.get("out_time", ""))) is not None:
                return parsed
        return None


def _clock(value: str) -> float | None:
    match = _OUT_TIME.match(value)
    if match is None:
        return None
    sign, hours, minutes, seconds = match.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return -total if sign else total


def _speed(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        speed = float(value.removesuffix("x"))
    except ValueError:
        return None
    return speed if speed > 0 and speed != float("inf") else None


class _LineTail:
    """The last lines of a byte stream, each cut to a bounded length."""

    def __init__(self, lines: int) -> None:
        self.lines: deque[str] = deque(maxlen=lines)
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        self._partial += data
        *complete, rest = self._partial.split(b"\n")
        for line in complete:
            self._add(line)
        self._partial = bytearray(rest[-_STDERR_LINE_CHARS * 4 :])

    def close(self) -> None:
        if self._partial:
            self._add(self._partial)
            self._partial.clear()

    def _add(self, line: bytes | bytearray) -> None:
        text = bytes(line).decode("utf-8", "replace").rstrip("\r").strip()
        if text:
            self.lines.append(text[:_STDERR_LINE_CHARS])

    def text(self) -> str:
        return "\n".join(self.lines)


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: ask the kernel to SIGKILL ffmpeg when this process
    dies, even by SIGKILL (an OOM kill, `kill -9`), so a transcode never outlives its worker
    and burns CPU beside the worker that took its job over. None where Linux's prctl is
    missing."""
    if _prctl is None:
        return None
    prctl = _prctl
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return in_child


async def run_ffmpeg(
    argv: Sequence[str],
    *,
    cwd: Path,
    time_limit: float,
    on_progress: Callable[[Progress], Awaitable[None]] | None = None,
) -> None:
    """Run ffmpeg (whose argv asks for `-progress pipe:1`) to completion.

    Progress reports are awaited in order as they arrive. Raises `TranscodeFailed` on a
    non-zero exit or when `time_limit` seconds pass. On any exit path, cancellation included,
    the process is killed if still running and reaped before this returns or raises.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own session: a Ctrl-C at our terminal is ours to handle, not ffmpeg's.
        start_new_session=True,
        preexec_fn=_die_with_parent(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    tail = _LineTail(STDERR_TAIL_LINES)
    stderr_task = asyncio.create_task(_drain(process.stderr, tail))
    parser = ProgressParser()
    timed_out = False
    try:
        async with asyncio.timeout(time_limit) as deadline:
            while chunk := await process.stdout.read(_READ_SIZE):
                for report in parser.feed(chunk):
                    if on_progress is not None:
                        await on_progress(report)
            await process.wait()
    except TimeoutError:
        if not deadline.expired():
            raise  # the progress callback's own TimeoutError
        timed_out = True
    finally:
        await _reap(process, stderr_task, tail)
    if timed_out:
        raise TranscodeFailed(
            f"ffmpeg ran longer than the limit of {time_limit:g} s and was stopped\n{tail.text()}",
            exit_code=None,
            stderr_tail=tail.text(),
        )
    if process.returncode != 0:
        raise TranscodeFailed(
            f"ffmpeg exited with code {process.returncode}:\n{tail.text()}",
            exit_code=process.returncode,
            stderr_tail=tail.text(),
        )


async def _drain(stream: asyncio.StreamReader, tail: _LineTail) -> None:
    while chunk := await stream.read(_READ_SIZE):
        tail.feed(chunk)


async def _reap(
    process: asyncio.subprocess.Process, stderr_task: asyncio.Task[None], tail: _LineTail
) -> None:
    """SIGKILL the process if it still runs and wait until it is reaped.

    Reached on every exit path, a cancellation being propagated included: this is what lets
    callers rely on "no ffmpeg left behind".
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if not stderr_task.done():
        stderr_task.cancel()
    await asyncio.wait([stderr_task])
    if not stderr_task.cancelled() and (error := stderr_task.exception()) is not None:
        tail.feed(f"(reading stderr failed: {error})".encode())
    # Reading what is left lets the pipes reach end-of-file, which `wait` needs.
    _, rest = await process.communicate()
    tail.feed(rest or b"")
    tail.close()
