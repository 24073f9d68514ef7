"""Live fan-out benchmark: N HTTP-FLV or RTMP viewers of one 720p30 stream, vs nginx-rtmp.

For each row (server, protocol, viewers, batch interval) this process:
1. starts the server under test as a subprocess (`ripplecast serve`, or nginx with
   libnginx-mod-rtmp from `nginx-rtmp.conf.template`) and the publisher (`bench.publisher`,
   real-time paced, a wall-clock SEI stamp in every video frame) as another;
2. measures the server idle (publisher only) for a few seconds, then ramps the viewers up at
   `--ramp` per second; each viewer is a cheap asyncio protocol (HTTP-FLV: raw HTTP GET and a
   chunked/FLV tag walker; RTMP: `RtmpClient` in skim mode), reading only tag headers and, on one
   video frame in `SAMPLE_EVERY`, the SEI stamp;
3. after every viewer has its first keyframe (or a timeout) and a settling pause, measures over
   `--duration` seconds: server CPU (utime+stime from /proc/PID/stat), server RSS (VmRSS), this
   generator's CPU, each viewer's media-time progress and delay samples;
4. stops everything (try/finally: no process is left behind).

A viewer kept up if, over the window, its media time advanced by at least 95 % of wall time,
its last delay sample was under 2 s and its last frame came less than 1 s before the end.
Delay = receive wall time - the publisher's wall-clock stamp in the SEI of that frame.

    python -m bench.fanout --server ripplecast,nginx --protocol flv,rtmp \\
        --viewers 100,500,1000,2000 --duration 20 --out bench/results/fanout.json
    python -m bench.fanout --server ripplecast --protocol flv --viewers 1000 \\
        --sweep-batch 20,50,100,350
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from bench.publisher import SEI_PEEK, prepare_media, read_stamp
from ripplecast.protocols.rtmp.aio import RtmpClient
from ripplecast.protocols.rtmp.client import MediaReceived, MediaSkimmed

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_TEMPLATE = Path(__file__).with_name("nginx-rtmp.conf.template")
ROOT = str(Path(__file__).resolve().parents[1])
"""The repository root, put on the publisher's PYTHONPATH so `-m bench.publisher` imports."""
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
STREAM = "bench"
SAMPLE_EVERY = 10
"""A viewer reads the SEI stamp of one video frame in this many (phase-shifted per viewer)."""
SATURATED = 85.0
"""Generator CPU % of one core above which a row is flagged: the client may be the bottleneck."""
IDLE_SECONDS = 3.0
SETTLE_SECONDS = 2.0
FIRST_KEY_TIMEOUT = 10.0


# --- viewers ---------------------------------------------------------------------------------


class Viewer:
    """What one simulated player saw."""

    __slots__ = (
        "bytes",
        "delays",
        "error",
        "first_key",
        "frames",
        "index",
        "last_delay",
        "last_ts",
        "last_wall",
        "sampling",
        "started",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.started = 0.0
        self.first_key = 0.0
        self.frames = 0
        self.bytes = 0
        self.last_ts = -1
        self.last_wall = 0.0
        self.last_delay = float("inf")
        self.delays: list[float] = []
        self.sampling = False
        self.error = ""

    def on_video(self, ts: int, head: bytes, now: float) -> None:
        """A video tag body starting with `head` (at least SEI_PEEK bytes if that long)."""
        if not self.first_key:
            if len(head) < 2 or head[0] >> 4 != 1 or head[1] != 1:
                return  # before the first keyframe: nothing to show yet
            self.first_key = now
        self.frames += 1
        self.last_ts = ts
        self.last_wall = now
        if (self.frames + self.index) % SAMPLE_EVERY == 0:
            micros = read_stamp(head)
            if micros is not None:
                delay = now - micros / 1e6
                self.last_delay = delay
                if self.sampling:
                    self.delays.append(delay)


class FlvViewer(asyncio.Protocol):
    """HTTP-FLV player: GET, then walk HTTP chunks and FLV tags without copying bodies."""

    def __init__(self, viewer: Viewer, request: bytes) -> None:
        self.viewer = viewer
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head: bytearray | None = bytearray()
        self.chunked = True
        self.chunk_left = 0
        self.crlf = 0
        self.tail = b""
        self.skip = 13  # FLV header and PreviousTagSize0
        self.hdr = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.viewer.error:
            self.viewer.error = f"closed: {exc}" if exc else "closed by server"

    def data_received(self, data: bytes) -> None:
        viewer = self.viewer
        viewer.bytes += len(data)
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.head[: self.head.find(b"\r\n")])
            if b" 200 " not in status:
                viewer.error = status.decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            self.chunked = b"chunked" in self.head[:end].lower()
            data = bytes(self.head[end + 4 :])
            self.head = None
            if not self.chunked:
                self.chunk_left = 1 << 62
        now = time.time()
        if self.tail:
            data = self.tail + data
            self.tail = b""
        pos, end = 0, len(data)
        while pos < end:
            left = self.chunk_left
            if left:
                take = left if left <= end - pos else end - pos
                self._flv(data, pos, pos + take, now)
                pos += take
                self.chunk_left = left - take
                if not self.chunk_left:
                    self.crlf = 2
                continue
            if self.crlf:
                take = min(self.crlf, end - pos)
                pos += take
                self.crlf -= take
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self.tail = data[pos:]
                return
            size = int(data[pos:eol].split(b";")[0], 16)
            pos = eol + 2
            if not size:
                return
            self.chunk_left = size

    def _flv(self, data: bytes, pos: int, end: int, now: float) -> None:
        while pos < end:
            skip = self.skip
            if skip:
                take = skip if skip <= end - pos else end - pos
                pos += take
                self.skip = skip - take
                continue
            hdr = self.hdr
            if not hdr and end - pos >= 11 + SEI_PEEK:
                # The usual case: the tag header and the bytes we read are all in this piece.
                size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
                if data[pos] == 9:
                    ts = (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]
                    ts |= data[pos + 7] << 24
                    peek = size if size < SEI_PEEK else SEI_PEEK
                    self.viewer.on_video(ts, data[pos + 11 : pos + 11 + peek], now)
                self.skip = 11 + size + 4
                continue
            # A tag header cut by a read or chunk boundary: gather it first.
            want = 11
            if len(hdr) >= 11 and hdr[0] == 9:
                size = (hdr[1] << 16) | (hdr[2] << 8) | hdr[3]
                want = 11 + (size if size < SEI_PEEK else SEI_PEEK)
            take = min(want - len(hdr), end - pos)
            hdr += data[pos : pos + take]
            pos += take
            if len(hdr) < want:
                continue
            size = (hdr[1] << 16) | (hdr[2] << 8) | hdr[3]
            if hdr[0] == 9 and len(hdr) < 11 + (size if size < SEI_PEEK else SEI_PEEK):
                continue  # now that the size is known, gather the peeked bytes too
            if hdr[0] == 9:
                ts = (hdr[4] << 16) | (hdr[5] << 8) | hdr[6] | (hdr[7] << 24)
                self.viewer.on_video(ts, bytes(hdr[11:]), now)
            self.skip = size - (len(hdr) - 11) + 4
            self.hdr = bytearray()


async def run_flv_viewer(viewer: Viewer, host: str, port: int) -> asyncio.Transport | None:
    request = (
        f"GET /live/{STREAM}.flv HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "User-Agent: ripplecast-bench\r\nAccept: */*\r\n\r\n"
    ).encode()
    viewer.started = time.time()
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_connection(lambda: FlvViewer(viewer, request), host, port)
    except OSError as exc:
        viewer.error = f"connect: {exc}"
        return None
    return transport


async def run_rtmp_viewer(viewer: Viewer, url: str) -> RtmpClient | None:
    def on_media(event: MediaReceived | MediaSkimmed) -> None:
        if event.type_id == 9 and isinstance(event, MediaSkimmed):
            viewer.on_video(event.timestamp, event.head, time.time())

    viewer.started = time.time()
    client = RtmpClient(skim_media=SEI_PEEK, on_media=on_media, request_timeout=20)
    try:
        await client.connect(url, timeout=20)
        await client.play(STREAM)
    except Exception as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"
        client.abort()
        return None
    return client


# --- measuring processes from outside ----------------------------------------------------------


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` in seconds."""
    return sum(proc_cpu_split(pid))


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: asyncio.subprocess.Process
    rtmp_port: int
    http_port: int
    log: Path

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def start_server(
    name: str, workdir: Path, batch_ms: int, hls: bool, env_extra: Mapping[str, str] = {}
) -> Server:
    """Start the server under test; `env_extra` is added to Ripplecast's environment."""
    rtmp_port, http_port = free_port(), free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        if name == "ripplecast":
            env = dict(os.environ)
            env.update(
                RIPPLECAST_PUBLISH_MODE="open",
                RIPPLECAST_BATCH_INTERVAL_MS=str(batch_ms),
                RIPPLECAST_HLS_ENABLED="true" if hls else "false",
                RIPPLECAST_RTMP_HOST="127.0.0.1",
                RIPPLECAST_HTTP_HOST="127.0.0.1",
            )
            env.update(env_extra)
            argv = [
                sys.executable, "-m", "ripplecast.cli", "serve",
                "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
                "--data-dir", str(workdir / "data"),
            ]  # fmt: skip
        elif name == "nginx":
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            conf = workdir / "nginx.conf"
            conf.write_text(
                Template(NGINX_TEMPLATE.read_text()).substitute(
                    prefix=workdir, port=rtmp_port, module=NGINX_MODULE
                )
            )
            env = dict(os.environ)
            argv = [nginx, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")]
        else:
            raise ValueError(f"unknown server {name!r}")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
    server = Server(name, proc, rtmp_port, http_port, log)
    try:
        await wait_port(rtmp_port, 20)
        if name == "ripplecast":
            await wait_port(http_port, 20)
    except BaseException:
        await server.stop()
        raise
    return server


async def start_publisher(
    rtmp_port: int, media: Path, duration: float
) -> asyncio.subprocess.Process:
    argv = [
        sys.executable, "-m", "bench.publisher",
        "--url", f"rtmp://127.0.0.1:{rtmp_port}/live", "--name", STREAM,
        "--duration", str(duration), "--media", str(media),
    ]  # fmt: skip
    root = ROOT
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if b"publishing" not in line:
            rest = await asyncio.wait_for(proc.stdout.read(), 5)
            raise RuntimeError(f"publisher failed: {(line + rest).decode(errors='replace')}")
    except BaseException:
        await stop_process(proc)
        raise
    return proc


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.communicate(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()


# --- one row ---------------------------------------------------------------------------------


@dataclass
class Row:
    server: str
    protocol: str
    viewers: int
    batch_ms: int | None
    duration: float
    kept_up: int = 0
    connected: int = 0
    errors: int = 0
    server_cpu_pct: float = 0.0
    server_cpu_per_100: float = 0.0
    server_idle_cpu_pct: float = 0.0
    server_kernel_share_pct: float = 0.0
    rss_base_kb: int = 0
    rss_steady_kb: int = 0
    rss_per_viewer_kb: float = 0.0
    startup_p50_ms: float = 0.0
    startup_p95_ms: float = 0.0
    startup_max_ms: float = 0.0
    delay_p50_ms: float = 0.0
    delay_p95_ms: float = 0.0
    delay_p99_ms: float = 0.0
    delay_samples: int = 0
    generator_cpu_pct: float = 0.0
    publisher_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    saturated: bool = False
    mbit_per_viewer: float = 0.0
    notes: list[str] = field(default_factory=list)


def viewer_kept_up(viewer: Viewer, start_ts: int, span: float, wall_end: float) -> bool:
    """Whether `viewer` kept up over a window of `span` seconds ending at wall time `wall_end`,
    `start_ts` being its media time (ms) when the window opened: no error, media time advanced
    by at least 95 % of wall time, last delay sample under 2 s, last frame under 1 s old."""
    progress = (viewer.last_ts - start_ts) / 1000 / span if start_ts >= 0 else 0.0
    return (
        not viewer.error
        and progress >= 0.95
        and viewer.last_delay < 2.0
        and wall_end - viewer.last_wall < 1.0
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_row(
    server_name: str,
    protocol: str,
    viewers: int,
    *,
    duration: float,
    batch_ms: int = 50,
    ramp: float = 200.0,
    hls: bool = True,
    media: Path,
    warmup: float = 2.5,
    idle: float = IDLE_SECONDS,
    settle: float = SETTLE_SECONDS,
    env: Mapping[str, str] = {},
    during: Callable[[Server], Awaitable[None]] | None = None,
) -> Row:
    """Run one measurement; every process it starts is stopped before it returns. `env` is
    added to the server's environment; `during(server)` runs from the publisher's start to the
    end of the window (e.g. a scraper), then is cancelled."""
    row = Row(server_name, protocol, viewers, batch_ms if server_name == "ripplecast" else None,
              duration)  # fmt: skip
    ramp_seconds = viewers / ramp
    publish_for = warmup + idle + ramp_seconds + FIRST_KEY_TIMEOUT + settle + duration + 30
    handles: list[Any] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{server_name}-") as tmp:
        server = await start_server(server_name, Path(tmp), batch_ms, hls, env)
        publisher: asyncio.subprocess.Process | None = None
        side: asyncio.Task[None] | None = None
        try:
            publisher = await start_publisher(server.rtmp_port, media, publish_for)
            if during is not None:
                side = asyncio.create_task(during(server))
            await asyncio.sleep(warmup)  # the first keyframe and GOP reach the server
            pid = server.proc.pid
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(idle)
            row.server_idle_cpu_pct = 100 * (proc_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            row.rss_base_kb = proc_rss_kb(pid)

            people = [Viewer(i) for i in range(viewers)]
            url = f"rtmp://127.0.0.1:{server.rtmp_port}/live"
            tasks: list[asyncio.Future[Any]] = []
            started = time.monotonic()
            for i, viewer in enumerate(people):
                if protocol == "flv":
                    tasks.append(
                        asyncio.ensure_future(run_flv_viewer(viewer, "127.0.0.1", server.http_port))
                    )
                else:
                    tasks.append(asyncio.ensure_future(run_rtmp_viewer(viewer, url)))
                ahead = started + (i + 1) / ramp - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            handles = list(await asyncio.gather(*tasks))
            for _ in range(int(FIRST_KEY_TIMEOUT * 10)):
                if all(v.first_key or v.error for v in people):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(settle)

            # --- the measurement window ---
            for v in people:
                v.sampling = True
            ts0 = [v.last_ts for v in people]
            bytes0 = sum(v.bytes for v in people)
            (u0, k0), g0 = proc_cpu_split(pid), self_cpu_seconds()
            s0 = u0 + k0
            p0 = proc_cpu_seconds(publisher.pid)
            m0 = machine_busy()
            w0 = time.monotonic()
            await asyncio.sleep(duration)
            w1 = time.monotonic()
            (u1, k1), g1 = proc_cpu_split(pid), self_cpu_seconds()
            s1 = u1 + k1
            p1 = proc_cpu_seconds(publisher.pid)
            m1 = machine_busy()
            wall_end = time.time()
            row.rss_steady_kb = proc_rss_kb(pid)
            for v in people:
                v.sampling = False
            span = w1 - w0

            if protocol == "rtmp":
                for v, handle in zip(people, handles, strict=True):
                    if isinstance(handle, RtmpClient):
                        v.bytes = handle.session.bytes_received
            bytes1 = sum(v.bytes for v in people)
            row.server_cpu_pct = 100 * (s1 - s0) / span
            row.server_cpu_per_100 = row.server_cpu_pct / viewers * 100
            row.server_kernel_share_pct = 100 * (k1 - k0) / max(1e-9, s1 - s0)
            row.generator_cpu_pct = 100 * (g1 - g0) / span
            row.publisher_cpu_pct = 100 * (p1 - p0) / span
            row.machine_busy_pct = 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
            row.saturated = row.generator_cpu_pct > SATURATED
            row.rss_per_viewer_kb = (row.rss_steady_kb - row.rss_base_kb) / viewers
            if protocol == "flv":
                row.mbit_per_viewer = (bytes1 - bytes0) * 8 / span / 1e6 / viewers
            startups, delays = [], []
            for v, start_ts in zip(people, ts0, strict=True):
                if v.first_key:
                    row.connected += 1
                    startups.append(1000 * (v.first_key - v.started))
                if v.error and not v.first_key:
                    row.errors += 1
                delays.extend(v.delays)
                if viewer_kept_up(v, start_ts, span, wall_end):
                    row.kept_up += 1
            errors = sorted({v.error for v in people if v.error})
            if errors:
                row.notes.append(f"errors: {errors[:3]}")
            row.startup_p50_ms = percentile(startups, 50)
            row.startup_p95_ms = percentile(startups, 95)
            row.startup_max_ms = max(startups, default=float("nan"))
            ms = [1000 * d for d in delays]
            row.delay_samples = len(ms)
            row.delay_p50_ms = percentile(ms, 50)
            row.delay_p95_ms = percentile(ms, 95)
            row.delay_p99_ms = percentile(ms, 99)
            if server.proc.returncode is not None:
                row.notes.append(f"server exited with {server.proc.returncode}")
        finally:
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
            for handle in handles:
                if handle is not None:
                    handle.abort()
            if publisher is not None:
                await stop_process(publisher)
            await server.stop()
            await asyncio.sleep(0.2)  # let aborted transports finish closing
    return row


# --- reporting -------------------------------------------------------------------------------

COLUMNS = [
    ("viewers", "viewers", "{}"),
    ("protocol", "protocol", "{}"),
    ("server", "server", "{}"),
    ("batch_ms", "batch ms", "{}"),
    ("server_cpu_pct", "CPU % of a core", "{:.1f}"),
    ("server_cpu_per_100", "CPU %/100 viewers", "{:.2f}"),
    ("server_idle_cpu_pct", "idle CPU %", "{:.1f}"),
    ("kept_up", "kept up", "{}"),
    ("rss_per_viewer_kb", "RSS KB/viewer", "{:.1f}"),
    ("startup_p50_ms", "startup p50 ms", "{:.0f}"),
    ("startup_p95_ms", "startup p95 ms", "{:.0f}"),
    ("delay_p50_ms", "delay p50 ms", "{:.0f}"),
    ("delay_p95_ms", "delay p95 ms", "{:.0f}"),
    ("delay_p99_ms", "delay p99 ms", "{:.0f}"),
    ("generator_cpu_pct", "generator CPU %", "{:.0f}"),
    ("saturated", "saturated", "{}"),
]


def median_row(rows: list[Row]) -> Row:
    """Field-wise median of repeated runs of one configuration (notes joined)."""
    if len(rows) == 1:
        return rows[0]
    base = asdict(rows[0])
    for key, value in base.items():
        if isinstance(value, bool):
            base[key] = any(asdict(r)[key] for r in rows)
        elif isinstance(value, int | float) and key not in ("viewers", "batch_ms", "duration"):
            base[key] = statistics.median(asdict(r)[key] for r in rows)
    base["notes"] = [f"median of {len(rows)} runs"] + [n for r in rows for n in r.notes]
    return Row(**base)


def table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    for row in rows:
        data = asdict(row)
        cells = []
        for key, _, fmt in COLUMNS:
            value = data[key]
            if key == "kept_up":
                cells.append(f"{value}/{row.viewers}")
            elif key == "saturated":
                cells.append("**yes**" if value else "no")
            elif value is None:
                cells.append("-")
            else:
                cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """CPU per viewer of each Ripplecast row against nginx-rtmp RTMP at the same viewer count."""
    nginx = {r.viewers: r for r in rows if r.server == "nginx" and r.protocol == "rtmp"}
    lines = []
    for row in rows:
        base = nginx.get(row.viewers)
        if row.server != "ripplecast" or base is None or not base.server_cpu_pct:
            continue
        lines.append(
            f"- {row.viewers} {row.protocol} viewers, batch {row.batch_ms} ms: CPU "
            f"{row.server_cpu_pct / base.server_cpu_pct:.2f}x nginx-rtmp RTMP "
            f"({row.server_cpu_pct:.1f} % vs {base.server_cpu_pct:.1f} %), delay p95 "
            f"{row.delay_p95_ms:.0f} ms vs {base.delay_p95_ms:.0f} ms, RSS/viewer "
            f"{row.rss_per_viewer_kb:.1f} vs {base.rss_per_viewer_kb:.1f} KB"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


async def run_all(args: argparse.Namespace) -> list[Row]:
    media = prepare_media(seconds=args.media_seconds)
    plan: list[tuple[str, str, int, int]] = []
    batches = _ints(args.sweep_batch) if args.sweep_batch else [args.batch_ms]
    for viewers in _ints(args.viewers):
        for protocol in _names(args.protocol):
            for server in _names(args.server):
                if server == "nginx" and protocol == "flv":
                    continue  # nginx-rtmp has no HTTP-FLV; the baseline is its RTMP
                for batch in batches if server == "ripplecast" else [args.batch_ms]:
                    plan.append((server, protocol, viewers, batch))
    results: list[Row] = []
    for server, protocol, viewers, batch in plan:
        runs = []
        for attempt in range(args.repeat):
            print(
                f"# {server} {protocol} {viewers} viewers batch {batch} ms"
                f" (run {attempt + 1}/{args.repeat})",
                file=sys.stderr,
                flush=True,
            )
            row = await run_row(
                server, protocol, viewers, duration=args.duration, batch_ms=batch,
                ramp=args.ramp, hls=not args.no_hls, media=media, env=parse_env(args.env),
            )  # fmt: skip
            print("  " + json.dumps(asdict(row)), file=sys.stderr, flush=True)
            runs.append(row)
        results.append(median_row(runs))
        if args.out:
            write(args.out, results, args)
    return results


def write(path: Path, rows: list[Row], args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "argv": sys.argv,
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`--env KEY=VALUE` options as a mapping (for the Ripplecast server)."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--server", default="ripplecast", help="ripplecast,nginx")
    parser.add_argument("--protocol", default="flv", help="flv,rtmp")
    parser.add_argument("--viewers", default="100,500,1000,2000")
    parser.add_argument("--duration", type=float, default=20.0, help="measurement seconds")
    parser.add_argument("--batch-ms", type=int, default=50, help="Ripplecast batch interval")
    parser.add_argument("--sweep-batch", default="", help="e.g. 20,50,100,350 (Ripplecast)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median kept)")
    parser.add_argument("--ramp", type=float, default=200.0, help="new viewers per second")
    parser.add_argument("--no-hls", action="store_true", help="RIPPLECAST_HLS_ENABLED=false")
    parser.add_argument("--media-seconds", type=int, default=60, help="length of the media file")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add to Ripplecast's environment, e.g. RIPPLECAST_METRICS_ENABLED=false",
    )
    args = parser.parse_args(argv)
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    rows = asyncio.run(run_all(args))
    print(table(rows))
    extra = ratios(rows)
    if extra:
        print("\nRatios against nginx-rtmp (RTMP) in the same run:\n" + extra)


if __name__ == "__main__":
    main()
