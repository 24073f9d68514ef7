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


NodeFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningNode]]
"""The `make_node` fixture: keyword arguments override settings."""


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
        kwargs.setdefault("stdin", asyncio.subprocess.DEVNULL)
        proc = await asyncio.create_subprocess_exec(*argv, **kwargs)
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


async def start_publisher(node: RunningNode, name: str, seconds: float = 10, **kw: Any) -> Process:
    """Start ffmpeg publishing test media as `name` and wait until the stream has a keyframe."""
    process = await Process.start(ffmpeg_publish_args(f"{node.rtmp}/{name}", seconds=seconds, **kw))
    try:
        await wait_until(
            lambda: (s := node.node.hub.get(name)) is not None and s.stats.keyframes >= 1,
            10,
            f"stream {name} to go live",
        )
    except BaseException:
        await process.kill()
        raise
    return process


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


class ScriptedRtmpClient:
    """A deliberately minimal RTMP client over a real socket, for sending exactly what a test
    wants (including what a well-behaved client never would)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from ripplecast.protocols.rtmp.chunk import ChunkReader

        self.reader = reader
        self.writer = writer
        self.chunks = ChunkReader(max_message_size=16 * 1024 * 1024)

    @classmethod
    async def connect(cls, port: int, *, handshake: bool = True) -> ScriptedRtmpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if handshake:
            await client.handshake()
        return client

    async def handshake(self) -> None:
        from ripplecast.protocols.rtmp.handshake import ClientHandshake

        hs = ClientHandshake()
        self.writer.write(hs.initial_bytes())
        while not hs.complete:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                raise ConnectionError("server closed during handshake")
            hs.receive_data(data)
            self.writer.write(hs.data_to_send())
        if leftover := hs.leftover():
            self.chunks.receive_data(leftover)

    def send(self, type_id: int, payload: bytes, *, stream_id: int = 0, csid: int = 3) -> None:
        from ripplecast.protocols.rtmp.chunk import encode_message

        self.writer.write(
            encode_message(
                chunk_stream_id=csid,
                type_id=type_id,
                stream_id=stream_id,
                timestamp=0,
                payload=payload,
                chunk_size=128,
            )
        )

    def command(self, *values: Any, stream_id: int = 0) -> None:
        from ripplecast.media import amf0

        self.send(20, amf0.encode_values(*values), stream_id=stream_id)

    async def next_message(self, timeout: float = 5) -> Any:
        """The next message from the server, or None when it closed the connection."""
        from ripplecast.protocols.rtmp.chunk import SET_CHUNK_SIZE, parse_u32

        while True:
            message = self.chunks.next_message()
            if message is not None:
                if message.type_id == SET_CHUNK_SIZE:
                    self.chunks.set_chunk_size(parse_u32(message.payload))
                return message
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return None
            self.chunks.receive_data(data)

    async def statuses(self, timeout: float = 5) -> list[str]:
        """Every command name / onStatus code the server sends until it closes or goes quiet."""
        from ripplecast.media import amf0

        found: list[str] = []
        try:
            while (message := await self.next_message(timeout)) is not None:
                if message.type_id == 20:
                    values = amf0.decode_values(message.payload)
                    found.append(str(values[0]))
                    info = values[3] if len(values) > 3 else None
                    if isinstance(info, dict) and "code" in info:
                        found.append(str(info["code"]))
        except (TimeoutError, ConnectionError):
            pass
        return found

    async def closed_by_server(self, timeout: float = 5) -> bool:
        """True if the server closes the connection within `timeout` seconds."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def connect_app(self, app: str = "live") -> list[str]:
        self.command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}"})
        found: list[str] = []
        from ripplecast.media import amf0

        while (message := await self.next_message()) is not None:
            if message.type_id == 20:
                values = amf0.decode_values(message.payload)
                found.append(str(values[0]))
                break
        return found

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class FlvViewer:
    """An HTTP-FLV viewer that keeps reading, parsing tags as a player would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received = 0
        self.video_timestamps: list[int] = []
        self.keyframes = 0
        self.status: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()

    async def _run(self) -> None:
        import aiohttp

        from ripplecast.media.flv import FlvReader, FlvTag, make_packet

        reader = FlvReader()
        try:
            async with aiohttp.ClientSession() as http, http.get(self.url) as response:
                self.status = response.status
                async for data in response.content.iter_any():
                    self.received += len(data)
                    reader.feed(data)
                    while (event := reader.next_event()) is not None:
                        if isinstance(event, FlvTag) and event.kind == 9:
                            packet = make_packet(event.kind, event.timestamp, event.payload)
                            if not packet.sequence_header:
                                self.video_timestamps.append(event.timestamp)
                                self.keyframes += packet.keyframe
        finally:
            self.ended.set()

    def start(self) -> FlvViewer:
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


REDIS = "redis://127.0.0.1:6379/0"
"""The Redis the tests use (the machine's; CI requires it)."""


async def require_redis() -> None:
    """Skip (or fail, when services are required) if Redis is not reachable at `REDIS`."""
    from ripplecast.cache import CacheUnavailable, open_cache

    cache = open_cache(REDIS, prefix="rc-probe:")
    try:
        await cache.get("probe")
    except CacheUnavailable as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis not reachable at {REDIS}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS}: {exc}")
    finally:
        await cache.close()


def free_port() -> int:
    """A loopback TCP port nobody listened on a moment ago (also usable as a closed port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def reachable_redis() -> Any:
    """A raw redis-py client of `REDIS` for tests that look behind the cache (keys, TTLs,
    CLIENT KILL); skips (fails, when services are required) if Redis does not answer."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"Redis not reachable at {REDIS}: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return client
