"""TLS on a single box: HTTPS on the HTTP port, RTMPS on its own port, the certificate reloaded on
SIGHUP. Real clients with a certificate the tests make (tls_support): ffmpeg publishes over
rtmps://, ffprobe and aiohttp read over https:// trusting only the test CA, rtmpdump plays
over rtmps://.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from ripplecast.app import Node
from ripplecast.config import Settings
from ripplecast.media.flv import FlvReader, FlvTag, make_packet
from ripplecast.media.packet import PacketKind
from ripplecast.tls import TlsError
from support import NodeFactory, Process, ffmpeg_publish_args, require_program, run, wait_until
from tls_support import Leaf, TestCA, encrypted_key, served_certificate

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def leaf(ca: TestCA) -> Leaf:
    return ca.issue("server")


def tls_settings(leaf: Leaf, **extra: Any) -> dict[str, Any]:
    return {**leaf.settings(), "rtmps_port": 0, **extra}


def ffprobe_codecs(url: str, ca: TestCA) -> list[str]:
    return [require_program("ffprobe"), "-v", "error", "-tls_verify", "1",
            "-ca_file", str(ca.ca_file), "-show_entries", "stream=codec_name",
            "-of", "csv=p=0", url]  # fmt: skip


async def start_rtmps_publisher(node: Node, ca: TestCA, name: str, seconds: float = 20) -> Process:
    """ffmpeg publishing `name` over RTMPS, checking the server's certificate against `ca`;
    returns once the stream has had a keyframe."""
    url = f"rtmps://127.0.0.1:{node.rtmps_port}/live/{name}"
    argv = ffmpeg_publish_args(url, seconds=seconds)
    # Options of the output's protocol go before its URL.
    argv[-1:-1] = ["-tls_verify", "1", "-ca_file", str(ca.ca_file)]
    process = await Process.start(argv)
    try:
        await wait_until(
            lambda: (s := node.hub.get(name)) is not None and s.stats.keyframes >= 1,
            15,
            f"stream {name} to go live over RTMPS",
        )
    except BaseException:
        await process.kill()
        raise
    return process


def video_tags(path: Path) -> list[bool]:
    """The keyframe flag of each video tag of the FLV file at `path` (so far)."""
    if not path.exists():
        return []
    reader = FlvReader()
    reader.feed(path.read_bytes())
    found = []
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag) and event.kind == PacketKind.VIDEO:
            found.append(make_packet(event.kind, event.timestamp, event.payload).keyframe)
    return found


# --- settings and certificate files -------------------------------------------------------


def test_the_certificate_and_its_key_go_together(leaf: Leaf, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert_file is set but tls_key_file is not"):
        Settings(tls_cert_file=leaf.cert_file)
    with pytest.raises(ValidationError, match="tls_key_file is set but tls_cert_file is not"):
        Settings(tls_key_file=leaf.key_file)
    with pytest.raises(ValidationError, match="rtmps_port and rtmp_port are both 1935"):
        Settings(**leaf.settings(), rtmps_port=1935)
    with pytest.raises(ValidationError, match="tls_min_version"):
        Settings(**leaf.settings(), tls_min_version="TLSv1.1")
    assert not Settings(tls_cert_file="", tls_key_file="").tls_enabled  # empty: no TLS
    assert Settings(**leaf.settings()).tls_enabled


def test_unusable_certificate_files_are_refused_naming_the_file(
    ca: TestCA, leaf: Leaf, tmp_path: Path
) -> None:
    other = ca.issue("other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    missing = tmp_path / "missing.pem"
    cases = [
        (missing, leaf.key_file, f"tls_cert_file {missing}: cannot read it"),
        (leaf.key_file, leaf.key_file, f"tls_cert_file {leaf.key_file}: no PEM certificate"),
        (garbage, leaf.key_file, f"tls_cert_file {garbage}: not a valid PEM certificate"),
        (leaf.cert_file, leaf.cert_file, f"tls_key_file {leaf.cert_file}: no usable PEM"),
        (leaf.cert_file, other.key_file, f"tls_key_file {other.key_file} is not the key of"),
        (
            leaf.cert_file,
            encrypted_key(leaf, tmp_path / "encrypted.key"),
            "the key is encrypted",
        ),
    ]
    for cert_file, key_file, message in cases:
        settings = Settings(
            tls_cert_file=cert_file, tls_key_file=key_file, data_dir=tmp_path / "data"
        )
        with pytest.raises(TlsError) as raised:
            Node(settings)
        assert message in str(raised.value), (message, str(raised.value))


async def test_serve_refuses_to_start_with_an_unusable_key(leaf: Leaf, tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    environment.update(
        RIPPLECAST_TLS_CERT_FILE=str(leaf.cert_file),
        RIPPLECAST_TLS_KEY_FILE=str(leaf.cert_file),  # a certificate where the key should be
        RIPPLECAST_DATA_DIR=str(tmp_path / "data"),
    )
    process = await Process.start([*RIPPLECAST, "serve"], env=environment)
    code, _, err = await process.wait(30)
    assert code == 2, err.decode()
    assert f"cannot start: tls_key_file {leaf.cert_file}: no usable PEM private key" in (
        err.decode()
    )
    assert "Traceback" not in err.decode()


# --- media over TLS -----------------------------------------------------------------------


async def test_rtmps_publish_and_playback_over_https_and_rtmps(
    make_node: NodeFactory, ca: TestCA, leaf: Leaf, tmp_path: Path
) -> None:
    async with make_node(**tls_settings(leaf)) as running:
        node = running.node
        assert node.rtmps_port and node.rtmps_port != node.rtmp_port
        publisher = await start_rtmps_publisher(node, ca, "secure")
        async with publisher:
            (connection,) = node.rtmp.connections
            assert connection.over_tls and connection.publishing is not None
            base = f"https://127.0.0.1:{node.http_port}"
            for url in (f"{base}/live/secure.flv", f"{base}/live/secure/index.m3u8"):
                code, out, err = await run(ffprobe_codecs(url, ca), 30)
                assert code == 0, (url, err.decode())
                # (HLS lists its program's streams as well: the same two codecs again.)
                assert set(out.decode().split()) == {"h264", "aac"}, (url, out)

            # RTMPS playback with librtmp (GnuTLS), and the plain RTMP port still plays.
            dump = tmp_path / "dump.flv"
            url = f"rtmps://127.0.0.1:{node.rtmps_port}/live/secure"
            rtmpdump = [require_program("rtmpdump"), "-q", "--live", "-r", url, "-o", str(dump)]
            async with await Process.start(rtmpdump):
                await wait_until(
                    lambda: len(video_tags(dump)) >= 25, 15, "a second of video from rtmpdump"
                )
            assert any(keyframe for keyframe in video_tags(dump))
            code, out, err = await run(ffprobe_codecs(f"{running.rtmp}/secure", ca), 30)
            assert code == 0 and out.decode().split() == ["h264", "aac"], err.decode()

            # The API and the pages are on the same HTTPS port.
            https = aiohttp.TCPConnector(ssl=ca.client_context())
            async with aiohttp.ClientSession(connector=https) as http:
                async with http.get(f"{base}/api/v1/streams") as response:
                    assert response.status == 200
                    names = [s["name"] for s in (await response.json())["items"]]
                    assert names == ["secure"]
                async with http.get(f"{base}/") as response:
                    assert response.status == 200
                    assert "text/html" in response.headers["Content-Type"]
        certificate = await served_certificate(node.rtmps_port, ca.client_context())
        assert certificate.serial_number == leaf.serial


async def test_a_video_uploads_and_plays_over_https(
    make_node: NodeFactory, ca: TestCA, leaf: Leaf, tmp_path: Path
) -> None:
    from media import make_video
    from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=1, size="320x180")
    settings = {**VOD_SETTINGS, "vod_ladder": ["180:200k:48k"], **tls_settings(leaf)}
    async with make_node(**settings) as running:
        node = running.node
        api = f"https://127.0.0.1:{node.http_port}/api/v1"
        headers = await token_for(node, "vera")
        https = aiohttp.TCPConnector(ssl=ca.client_context())
        async with aiohttp.ClientSession(connector=https) as http:
            status, video = await upload_file(http, api, headers, source, title="over TLS")
            assert status == 201, video
            ready = await wait_ready(http, api, headers, video["id"], 60)
            assert ready["state"] == "ready", ready
        # Segments are files: served without sendfile, which cannot encrypt.
        master = f"https://127.0.0.1:{node.http_port}{ready['playlist']}"
        probe = [require_program("ffmpeg"), "-v", "error", "-tls_verify", "1",
                 "-ca_file", str(ca.ca_file), "-i", master,
                 "-map", "0", "-f", "null", "-"]  # fmt: skip
        code, _, err = await run(probe, 60)
        assert code == 0 and err == b"", err.decode()


# --- cookies and pages ------------------------------------------------------------------


async def log_in(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str:
    """Log in as `tess` through the API; returns the session cookie's Set-Cookie header."""
    body = {"username": "tess", "password": "tess has a password"}
    async with http.post(f"{base}/api/v1/auth/login", json=body, headers=headers) as response:
        assert response.status == 200
        return response.headers["Set-Cookie"]


async def test_session_cookies_are_secure_over_https_and_pages_say_rtmps(
    make_node: NodeFactory, ca: TestCA, leaf: Leaf
) -> None:
    from ripplecast.db.models import Role

    async with make_node(**tls_settings(leaf, public_host="127.0.0.1")) as running:
        node = running.node
        await node.accounts.create_user("tess", "tess has a password", role=Role.CREATOR)
        await node.accounts.create_channel("tess", "tesslive", title="Tess")
        base = f"https://127.0.0.1:{node.http_port}"
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
        https = aiohttp.TCPConnector(ssl=ca.client_context())
        async with aiohttp.ClientSession(connector=https, cookie_jar=jar) as http:
            cookie = await log_in(http, base, {})
            assert "; Secure" in cookie and "HttpOnly" in cookie, cookie
            async with http.get(f"{base}/dashboard") as response:
                assert response.status == 200
                page = await response.text()
        obs = f"rtmps://127.0.0.1:{node.rtmps_port}/live"
        assert f'<code id="obs-server">{obs}</code>' in page


async def test_a_trusted_balancer_that_terminated_tls_makes_cookies_secure(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    from ripplecast.db.models import Role

    async with make_node(trusted_proxies=["127.0.0.1/32"]) as running:
        await running.node.accounts.create_user("tess", "tess has a password", role=Role.CREATOR)
        async with aiohttp.ClientSession() as http:
            plain = await log_in(http, running.http, {})
            behind_tls = await log_in(http, running.http, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in plain
        assert "; Secure" in behind_tls
    # From a peer that is not a trusted balancer, the header is anybody's word: ignored.
    async with make_node(trusted_proxies=["10.9.8.7/32"], data_dir=tmp_path / "b") as running:
        await running.node.accounts.create_user("tess", "tess has a password", role=Role.CREATOR)
        async with aiohttp.ClientSession() as http:
            claimed = await log_in(http, running.http, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in claimed


# --- bad clients ------------------------------------------------------------------------


async def test_plain_http_to_the_https_port_fails_cleanly(
    make_node: NodeFactory, ca: TestCA, leaf: Leaf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with make_node(**tls_settings(leaf)) as running:
        port = running.node.http_port
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    await response.read()
        # A client that does not trust the certificate is refused by its own side.
        https = aiohttp.TCPConnector(ssl=ssl.create_default_context())
        async with aiohttp.ClientSession(connector=https) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{port}/healthz")
        https = aiohttp.TCPConnector(ssl=ca.client_context())
        async with aiohttp.ClientSession(connector=https) as http:
            async with http.get(f"https://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_silent_clients_are_dropped_after_the_handshake_timeout(
    make_node: NodeFactory, ca: TestCA, leaf: Leaf
) -> None:
    timeout = 0.5
    async with make_node(**tls_settings(leaf, tls_handshake_timeout=timeout)) as running:
        node = running.node
        async with await start_rtmps_publisher(node, ca, "steady") as _publisher:
            stream = node.hub.get("steady")
            assert stream is not None
            loop = asyncio.get_running_loop()

            async def silent(port: int) -> float:
                """Connect, send nothing; seconds until the server hangs up."""
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                opened = loop.time()
                try:
                    assert await asyncio.wait_for(reader.read(1), 10) == b""
                except ConnectionResetError:
                    pass
                finally:
                    writer.close()
                return loop.time() - opened

            before = stream.stats.packets_in
            lasted = await asyncio.gather(
                *(silent(port) for port in [node.rtmps_port] * 5 + [node.http_port] * 5)
            )
            assert all(timeout * 0.8 <= seconds < timeout + 3 for seconds in lasted), lasted
            # They never became RTMP connections, and the publisher went on meanwhile.
            assert len(node.rtmp.connections) == 1
            await wait_until(
                lambda: stream.stats.packets_in > before + 25, 5, "the publisher to go on"
            )
            assert node.hub.get("steady") is stream


# --- certificate reload -------------------------------------------------------------------


async def test_reload_keeps_the_certificate_in_use_when_the_new_files_fail(
    make_node: NodeFactory, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = ca.issue("first"), ca.issue("second")
    live = Leaf(tmp_path / "live.crt", tmp_path / "live.key", first.serial)
    shutil.copy(first.cert_file, live.cert_file)
    shutil.copy(first.key_file, live.key_file)
    async with make_node(**tls_settings(live)) as running:
        node = running.node
        client = ca.client_context()
        for port in (node.http_port, node.rtmps_port):
            assert (await served_certificate(port, client)).serial_number == first.serial
        # A renewal caught half-way: the new certificate with the old key.
        shutil.copy(second.cert_file, live.cert_file)
        assert not node.reload_tls()
        assert "TLS certificate NOT reloaded" in caplog.text
        assert f"tls_key_file {live.key_file} is not the key of the certificate" in caplog.text
        for port in (node.http_port, node.rtmps_port):
            assert (await served_certificate(port, client)).serial_number == first.serial
        shutil.copy(second.key_file, live.key_file)
        assert node.reload_tls()
        for port in (node.http_port, node.rtmps_port):
            assert (await served_certificate(port, client)).serial_number == second.serial


async def _lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace"))


@pytest.fixture
async def serving(ca: TestCA, tmp_path: Path) -> AsyncIterator[tuple[Process, Leaf, list[str]]]:
    """`ripplecast serve` on free ports with certificate `first` copied to live.crt/.key;
    yields the process, the live files and its log lines as they come."""
    first = ca.issue("first")
    live = Leaf(tmp_path / "live.crt", tmp_path / "live.key", first.serial)
    shutil.copy(first.cert_file, live.cert_file)
    shutil.copy(first.key_file, live.key_file)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    environment.update(
        RIPPLECAST_TLS_CERT_FILE=str(live.cert_file),
        RIPPLECAST_TLS_KEY_FILE=str(live.key_file),
        RIPPLECAST_DATA_DIR=str(tmp_path / "data"),
        RIPPLECAST_RTMP_HOST="127.0.0.1",
        RIPPLECAST_HTTP_HOST="127.0.0.1",
        RIPPLECAST_RTMP_PORT="0",
        RIPPLECAST_RTMPS_PORT="0",
        RIPPLECAST_HTTP_PORT="0",
        RIPPLECAST_PUBLISH_MODE="open",
        RIPPLECAST_WORKER_ENABLED="false",
    )
    process = await Process.start([*RIPPLECAST, "serve"], env=environment)
    log: list[str] = []
    assert process.proc.stderr is not None
    reading = asyncio.create_task(_lines(process.proc.stderr, log))
    try:
        yield process, live, log
    finally:
        await process.kill()
        reading.cancel()


def port_from(log: list[str], word: str) -> int:
    for line in log:
        if " listening: " in line:
            return int(line.split(f"{word} port ")[1].split(",")[0].split()[0])
    raise AssertionError(f"no listening line in {log}")


async def test_sighup_reloads_the_certificate_of_a_running_server(
    serving: tuple[Process, Leaf, list[str]], ca: TestCA
) -> None:
    process, live, log = serving
    await wait_until(lambda: any(" listening: " in line for line in log), 30, "the server")
    https_port, rtmps_port = port_from(log, "https"), port_from(log, "rtmps")
    client = ca.client_context()
    for port in (https_port, rtmps_port):
        assert (await served_certificate(port, client)).serial_number == live.serial

    second = ca.issue("second")
    shutil.copy(second.cert_file, live.cert_file)
    shutil.copy(second.key_file, live.key_file)
    process.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any("reloaded from" in line for line in log), 10, "the reload")
    for port in (https_port, rtmps_port):
        assert (await served_certificate(port, client)).serial_number == second.serial

    live.cert_file.write_text("damaged in transit\n")
    process.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: any("NOT reloaded" in line for line in log), 10, "the refusal")
    refusal = next(line for line in log if "NOT reloaded" in line)
    assert f"tls_cert_file {live.cert_file}: no PEM certificate in it" in refusal
    assert "ERROR" in refusal
    for port in (https_port, rtmps_port):
        assert (await served_certificate(port, client)).serial_number == second.serial
    assert process.proc.returncode is None  # the signal did not stop it
    process.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.proc.wait(), 15)
    assert code == 0
