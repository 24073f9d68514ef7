"""`ripplecast upload` as a user runs it, against a real node: resumable tus uploads.

The CLI runs as a subprocess. Between it and the node sits `WireTap`, a plain TCP proxy that
records the head of every HTTP request the CLI sends (method, path, Upload-Offset,
Content-Length): the honest witness of which bytes crossed the wire in which run. It can also
slow the upload down (so a test can interrupt it half-way) and cut a connection mid-request
(a network failure the CLI must ride out on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from ripplecast.accounts.policy import Scope
from ripplecast.db.models import Role, Upload, Video
from support import NodeFactory, Process, require_program, run

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]
CHUNK = 256 * 1024

pytestmark = pytest.mark.ffmpeg


# ------------------------------------------------------------------------------------------
# Helpers


async def make_video(path: Path, *, seconds: float, noisy: bool = True) -> Path:
    """An H.264/AAC MP4 from lavfi; `noisy` makes it big (~1.1 MB a second at 320x240)."""
    argv = [require_program("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds)]  # fmt: skip
    if noisy:
        argv += ["-vf", "noise=alls=30:allf=t"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-g", "25",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path)]  # fmt: skip
    code, _, err = await run(argv, 60)
    assert code == 0, err.decode()
    return path


async def publisher_token(node: Any, username: str = "uploader") -> str:
    await node.accounts.create_user(username, f"{username} password", role=Role.CREATOR)
    user = await node.accounts.user(username)
    made = await node.logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
    token: str = made.token
    return token


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    clean.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), COLUMNS="100", **extra)
    return clean


@dataclass
class UploadRun:
    """One `ripplecast upload` invocation."""

    file: Path
    server: str
    token: str
    state_file: Path
    extra: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return [*RIPPLECAST, "upload", str(self.file), "--title", "A test upload",
                "--server", self.server, "--token", self.token,
                "--state-file", str(self.state_file), *self.extra]  # fmt: skip

    async def start(self) -> Process:
        return await Process.start(
            self.argv(),
            stdout=asyncio.subprocess.PIPE,
            env=cli_env(self.state_file.parent),
        )

    async def run(self, timeout: float = 60) -> tuple[int, str, str]:
        code, out, err = await (await self.start()).wait(timeout)
        return code, out.decode(), err.decode()


def saved_uploads(state_file: Path) -> dict[str, Any]:
    if not state_file.exists():
        return {}
    uploads: dict[str, Any] = json.loads(state_file.read_text())["uploads"]
    return uploads


async def upload_rows(node: Any) -> list[Upload]:
    async with node.db.session() as session:
        return list((await session.execute(select(Upload))).scalars())


async def video_rows(node: Any) -> list[Video]:
    async with node.db.session() as session:
        return list((await session.execute(select(Video))).scalars())


def video_id_from(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1].split()
    assert last[0] == "video" and last[2] in ("queued", "ready"), stdout
    return last[1]


async def file_size(path: Path) -> int:
    return (await asyncio.to_thread(path.stat)).st_size


async def assert_source_is(node: Any, video_id: str, path: Path) -> None:
    stored = await node.storage.read_bytes(f"sources/{video_id}")
    original = await asyncio.to_thread(path.read_bytes)
    assert len(stored) == len(original)
    assert stored == original


# ------------------------------------------------------------------------------------------
# The wire tap


@dataclass(frozen=True)
class RequestHead:
    run: str
    method: str
    path: str
    headers: dict[str, str]

    @property
    def offset(self) -> int:
        return int(self.headers["upload-offset"])

    @property
    def length(self) -> int:
        return int(self.headers.get("content-length", "0"))


@dataclass
class WireTap:
    """A loopback TCP proxy to `upstream_port` that records HTTP request heads."""

    upstream_port: int
    run: str = "first"
    """Label of the requests recorded from now on."""
    rate: float | None = None
    """Bytes per second from the client to the server (None: as fast as it goes)."""
    cut_after: int | None = None
    """Abort the connection once, when this many client bytes have been forwarded in all."""
    requests: list[RequestHead] = field(default_factory=list)
    forwarded: int = 0
    cuts: int = 0
    _server: asyncio.Server | None = None
    _transports: set[asyncio.BaseTransport] = field(default_factory=set)
    _connections: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def of_run(self, run: str, method: str | None = None) -> list[RequestHead]:
        return [r for r in self.requests if r.run == run and method in (None, r.method)]

    async def __aenter__(self) -> WireTap:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.abort()  # the pumps see the end and each connection finishes by itself
        if self._connections:
            await asyncio.wait(self._connections, timeout=10)
        await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        self._transports.add(client_w.transport)
        server_w: asyncio.StreamWriter | None = None
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._transports.add(server_w.transport)
            pumps = {
                asyncio.create_task(self._to_server(client_r, server_w)),
                asyncio.create_task(self._pump(server_r, client_w)),
            }
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the node is gone: the client sees its connection reset
        finally:
            # The server gets what was forwarded, then the end of the stream (as when the
            # client's process dies); the client sees a reset (as when a network drops).
            client_w.transport.abort()
            self._transports.discard(client_w.transport)
            if server_w is not None:
                server_w.transport.close()
                self._transports.discard(server_w.transport)
            self._connections.discard(connection)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer, body_left = b"", 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(16384 if self.rate else 65536):
                if self.cut_after is not None and self.forwarded + len(data) > self.cut_after:
                    data = data[: self.cut_after - self.forwarded]
                    writer.write(data)
                    self.forwarded += len(data)
                    self.cut_after = None
                    self.cuts += 1
                    return
                # Parse request heads; skip bodies by their Content-Length.
                buffer += data
                while buffer:
                    if body_left:
                        skipped = min(body_left, len(buffer))
                        buffer, body_left = buffer[skipped:], body_left - skipped
                        continue
                    head, found, rest = buffer.partition(b"\r\n\r\n")
                    if not found:
                        break
                    lines = head.decode("latin-1").split("\r\n")
                    method, path, _ = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                    self.requests.append(RequestHead(self.run, method, path, headers))
                    buffer, body_left = rest, int(headers.get("content-length", "0"))
                writer.write(data)
                await writer.drain()
                self.forwarded += len(data)
                if self.rate:
                    await asyncio.sleep(len(data) / self.rate)


@pytest.fixture
async def big_video(tmp_path: Path) -> Path:
    return await make_video(tmp_path / "holiday.mp4", seconds=3)


@contextlib.asynccontextmanager
async def tapped_node(
    make_node: NodeFactory, **settings: Any
) -> AsyncIterator[tuple[Any, WireTap]]:
    settings.setdefault("worker_enabled", False)
    async with make_node(**settings) as running, WireTap(running.node.http_port) as tap:
        yield running.node, tap


# ------------------------------------------------------------------------------------------
# Tests


async def test_upload_in_chunks_and_the_video_exists(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    async with tapped_node(make_node) as (node, tap):
        token = await publisher_token(node)
        state = tmp_path / "state" / "uploads.json"
        argv = [*RIPPLECAST, "upload", str(big_video), "--title", "Holiday, day 2 — été",
                "--description", "by the sea", "--visibility", "unlisted",
                "--chunk-size", str(CHUNK)]  # fmt: skip
        # Server, token and state file from the environment this time.
        env = cli_env(
            tmp_path, RIPPLECAST_SERVER=tap.url, RIPPLECAST_TOKEN=token,
            RIPPLECAST_UPLOAD_STATE=str(state),
        )  # fmt: skip
        process = await Process.start(argv, stdout=asyncio.subprocess.PIPE, env=env)
        code, out, err = await process.wait(60)
        assert code == 0, err.decode()
        assert token not in out.decode() + err.decode()
        video_id = video_id_from(out.decode())
        assert out.decode().strip().splitlines()[-1] == f"video {video_id} queued"

        size = await file_size(big_video)
        patches = tap.of_run("first", "PATCH")
        assert len(patches) == -(-size // CHUNK)  # ceil: every chunk once
        assert all(p.length <= CHUNK for p in patches)
        assert [p.offset for p in patches] == [i * CHUNK for i in range(len(patches))]
        assert [r.method for r in tap.of_run("first")][:2] == ["POST", "PATCH"]

        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{tap.url}/api/v1/videos/{video_id}", headers=headers) as r:
                assert r.status == 200
                video = await r.json()
        assert video["title"] == "Holiday, day 2 — été"
        assert video["description"] == "by the sea"
        assert video["visibility"] == "unlisted"
        assert video["source_name"] == "holiday.mp4"
        assert video["source_bytes"] == size
        assert video["state"] == "processing" and video["job"]["state"] == "queued"
        await assert_source_is(node, video_id, big_video)
        assert saved_uploads(state) == {}  # finished: nothing left to resume
        assert await upload_rows(node) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
async def test_an_interrupted_upload_resumes_where_the_server_stands(
    make_node: NodeFactory, big_video: Path, tmp_path: Path, sig: int
) -> None:
    async with tapped_node(make_node) as (node, tap):
        token = await publisher_token(node)
        size = await file_size(big_video)
        upload = UploadRun(big_video, tap.url, token, tmp_path / "uploads.json",
                         ("--chunk-size", str(CHUNK)))  # fmt: skip
        tap.rate = 1_000_000  # ~3 s for the whole file: time to interrupt it half-way
        first = await upload.start()
        async with first:
            received = 0

            async def some_bytes_arrived() -> bool:
                nonlocal received
                rows = await upload_rows(node)
                received = rows[0].received if rows else 0
                return received > 0

            for _ in range(200):
                if await some_bytes_arrived():
                    break
                await asyncio.sleep(0.05)
            assert 0 < received < size, "the server never showed part of the file"
            await asyncio.sleep(0.1)  # into the body of the next PATCH
            first.proc.send_signal(sig)
            code, _, err = await first.wait(15)
        if sig == signal.SIGINT:
            assert code == 130, err.decode()
            assert "run the same command again to resume" in err.decode()
        else:
            assert code == -signal.SIGKILL
        saved = saved_uploads(upload.state_file)
        assert len(saved) == 1  # remembered for the next run
        rows = await upload_rows(node)
        assert len(rows) == 1 and rows[0].received < size
        assert next(iter(saved.values()))["url"].endswith(f"/api/v1/uploads/{rows[0].public_id}")

        tap.rate, tap.run = None, "second"
        code, out, err = await upload.run()
        assert code == 0, err.decode()
        video_id = video_id_from(out)
        assert "resuming" in err

        second = tap.of_run("second")
        assert [r.method for r in second][:2] == ["HEAD", "PATCH"]
        assert not tap.of_run("second", "POST")  # the same upload, not a new one
        patches = tap.of_run("second", "PATCH")
        # The first `received` bytes crossed the wire in the first run only.
        assert all(p.offset >= received for p in patches)
        assert sum(p.length for p in patches) < size
        assert patches[-1].offset + patches[-1].length == size
        await assert_source_is(node, video_id, big_video)
        assert [v.public_id for v in await video_rows(node)] == [video_id]
        assert await upload_rows(node) == []
        assert saved_uploads(upload.state_file) == {}


async def test_an_upload_the_server_forgot_starts_over(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    async with tapped_node(make_node) as (node, tap):
        token = await publisher_token(node)
        upload = UploadRun(big_video, tap.url, token, tmp_path / "uploads.json",
                           ("--chunk-size", str(CHUNK)))  # fmt: skip
        tap.rate = 1_000_000
        async with await upload.start() as first:
            for _ in range(200):
                if (rows := await upload_rows(node)) and rows[0].received > 0:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the server never showed part of the file")
            await first.kill()
        (stored,) = saved_uploads(upload.state_file).values()
        # The upload is terminated behind the client's back (tus termination).
        headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        async with (
            aiohttp.ClientSession() as http,
            http.delete(stored["url"], headers=headers) as r,
        ):
            assert r.status == 204
        tap.rate, tap.run = None, "second"
        code, out, err = await upload.run()
        assert code == 0, err
        assert "starting over" in err
        assert [r.method for r in tap.of_run("second")][:3] == ["HEAD", "POST", "PATCH"]
        assert tap.of_run("second", "PATCH")[0].offset == 0
        await assert_source_is(node, video_id_from(out), big_video)
        assert saved_uploads(upload.state_file) == {}


async def test_network_failures_are_ridden_out_in_one_run(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    async with tapped_node(make_node) as (node, tap):
        token = await publisher_token(node)
        size = await file_size(big_video)
        tap.cut_after = size // 2  # the connection drops in the middle of a PATCH body
        upload = UploadRun(big_video, tap.url, token, tmp_path / "uploads.json",
                         ("--chunk-size", str(1024 * 1024)))  # fmt: skip
        code, out, err = await upload.run()
        assert code == 0, err
        assert tap.cuts == 1
        assert "retrying in" in err
        methods = [r.method for r in tap.requests]
        assert methods.count("POST") == 1
        assert "HEAD" in methods  # asked the server where to go on, did not guess
        await assert_source_is(node, video_id_from(out), big_video)


async def test_a_server_restart_is_ridden_out_in_one_run(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    size = await file_size(big_video)
    async with WireTap(0, rate=1_000_000) as tap:
        async with make_node(worker_enabled=False) as running:
            node = running.node
            tap.upstream_port = node.http_port
            token = await publisher_token(node)
            upload = UploadRun(big_video, tap.url, token, tmp_path / "uploads.json",
                               ("--chunk-size", str(CHUNK), "--retries", "8"))  # fmt: skip
            process = await upload.start()
            for _ in range(200):
                if (rows := await upload_rows(node)) and rows[0].received > 0:
                    break
                await asyncio.sleep(0.05)
            else:
                await process.kill()
                pytest.fail("the server never showed part of the file")
        # The node is down (mid-upload); a new one starts on the same data folder.
        async with process, make_node(worker_enabled=False) as running:
            node = running.node
            tap.upstream_port, tap.rate, tap.run = node.http_port, None, "after restart"
            code, out, err = await process.wait(60)
            assert code == 0, err.decode()
            assert "retrying in" in err.decode()
            assert not tap.of_run("after restart", "POST")
            assert tap.of_run("after restart", "HEAD")
            patches = tap.of_run("after restart", "PATCH")
            assert patches and all(p.offset > 0 for p in patches)
            assert patches[-1].offset + patches[-1].length == size
            await assert_source_is(node, video_id_from(out.decode()), big_video)


async def test_server_gone_for_a_while(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    async with tapped_node(make_node) as (node, _):
        token = await publisher_token(node)
        # Nothing listens there: connection refused, retried a bounded number of times.
        upload = UploadRun(big_video, "http://127.0.0.1:9", token, tmp_path / "uploads.json",
                         ("--retries", "2"))  # fmt: skip
        code, _, err = await upload.run()
        assert code == 1
        assert err.count("retrying in") == 2
        assert "giving up after 3 failures in a row" in err


async def test_a_file_that_is_not_media_is_refused_with_the_servers_reason(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    from ripplecast.vod.probe import InvalidMedia, probe

    junk = tmp_path / "notes.mp4"
    junk.write_bytes(os.urandom(300_000))
    with pytest.raises(InvalidMedia) as refused:
        probe(junk, max_duration=3600, max_pixels=8192 * 8192)
    async with tapped_node(make_node) as (node, tap):
        token = await publisher_token(node)
        upload = UploadRun(junk, tap.url, token, tmp_path / "uploads.json",
                         ("--chunk-size", str(CHUNK)))  # fmt: skip
        code, out, err = await upload.run()
        assert code == 1
        assert "422" in err and str(refused.value) in err
        assert out == ""
        assert saved_uploads(upload.state_file) == {}  # the server dropped it: nothing to resume
        assert await upload_rows(node) == [] and await video_rows(node) == []


async def test_over_quota_is_refused_before_any_byte(
    make_node: NodeFactory, big_video: Path, tmp_path: Path
) -> None:
    async with tapped_node(make_node, upload_quota_bytes=1024 * 1024) as (node, tap):
        token = await publisher_token(node)
        upload = UploadRun(big_video, tap.url, token, tmp_path / "uploads.json")
        code, _, err = await upload.run()
        assert code == 1
        assert "413" in err and "over quota" in err
        assert not tap.of_run("first", "PATCH")


async def test_a_wrong_token_is_refused_and_never_printed(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    video = await make_video(tmp_path / "small.mp4", seconds=1, noisy=False)
    async with tapped_node(make_node) as (node, tap):
        await publisher_token(node)
        wrong = "rc_" + "x" * 40
        code, out, err = await UploadRun(video, tap.url, wrong, tmp_path / "uploads.json").run()
        assert code == 1
        assert "does not accept this token (401)" in err
        assert wrong not in out + err
        assert await upload_rows(node) == []


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "uploads.json"
    missing = UploadRun(tmp_path / "nothing.mp4", "http://127.0.0.1:9", "t" * 20, state)
    code, _, err = await missing.run()
    assert code == 2 and "nothing.mp4" in err
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    bad_visibility = UploadRun(video, "http://127.0.0.1:9", "t" * 20, state,
                             ("--visibility", "secret"))  # fmt: skip
    code, _, err = await bad_visibility.run()
    assert code == 2 and "visibility" in err
    code, _, err = await UploadRun(video, "127.0.0.1:9", "t" * 20, state).run()
    assert code == 2 and "http://HOST" in err
    assert not state.exists()


async def test_wait_follows_transcoding_to_the_playlist(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    video = await make_video(tmp_path / "short.mp4", seconds=2, noisy=False)
    settings: dict[str, Any] = {
        "worker_enabled": True,
        "vod_ladder": ["240:250k:48k"],
        "vod_x264_preset": "ultrafast",
        "vod_segment_seconds": 1.0,
        "vod_thumbnail_interval_seconds": 1.0,
        "job_poll_seconds": 0.2,
    }
    async with tapped_node(make_node, **settings) as (node, tap):
        token = await publisher_token(node)
        upload = UploadRun(video, tap.url, token, tmp_path / "uploads.json", ("--wait",))
        code, out, err = await upload.run(90)
        assert code == 0, err
        video_id = video_id_from(out)
        playlist = f"{tap.url}/vod/{video_id}/master.m3u8"
        assert out.strip().splitlines()[-1] == f"video {video_id} ready {playlist}"
        assert "transcode" in err
        async with aiohttp.ClientSession() as http, http.get(playlist) as r:
            assert r.status == 200
            assert (await r.text()).startswith("#EXTM3U")
        polls = [r.path for r in tap.of_run("first", "GET") if r.path.startswith("/api/")]
        assert polls and set(polls) == {f"/api/v1/videos/{video_id}"}
