"""TLS terminated by HAProxy in front of a cluster: the shipped deploy/haproxy/haproxy-tls.cfg
passes `haproxy -c` together with haproxy.cfg (with a certificate the test makes), and the real
HAProxy running its frontends in front of a real node takes RTMPS from ffmpeg and serves
HTTPS, while the node itself speaks plain RTMP and HTTP and marks cookies Secure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from ripplecast.db.models import Role
from ripplecast.devcluster import (
    DevClusterError,
    HaproxyLayout,
    Server,
    check_config,
    render_haproxy_config,
    server_states,
)
from ripplecast.devcluster.processes import spawn, stop_groups
from support import (
    NodeFactory,
    Process,
    ffmpeg_publish_args,
    free_port,
    require_program,
    run,
    wait_until,
)
from tls_support import TestCA

DEPLOY = Path(__file__).parents[2] / "deploy" / "haproxy"
SHIPPED_CERTIFICATE = "/etc/haproxy/certs/ripplecast.pem"
"""Where haproxy-tls.cfg says the certificate is; the tests point it at one they make."""


def tls_frontends(pem: Path, *, https: str = ":443", rtmps: str = ":1937") -> str:
    """haproxy-tls.cfg with the certificate at `pem` and its frontends bound to `https` and
    `rtmps` (everything else as shipped)."""
    text = (DEPLOY / "haproxy-tls.cfg").read_text()
    assert text.count(f"crt {SHIPPED_CERTIFICATE} ") == 2
    for shipped, bind in ((":443", https), (":1937", rtmps)):
        assert text.count(f"bind {shipped} ssl ") == 1, shipped
        text = text.replace(f"bind {shipped} ssl ", f"bind {bind} ssl ")
    return text.replace(SHIPPED_CERTIFICATE, str(pem))


def test_the_shipped_tls_frontends_pass_haproxy_check(haproxy: str, tmp_path: Path) -> None:
    pem = TestCA(tmp_path / "pki").issue("balancer").combined(tmp_path / "ripplecast.pem")
    config = tmp_path / "haproxy.cfg"
    # What `haproxy -f haproxy.cfg -f haproxy-tls.cfg` reads.
    config.write_text((DEPLOY / "haproxy.cfg").read_text() + "\n" + tls_frontends(pem))
    check_config(haproxy, config)
    # The check reads the certificate: without one, the same file is refused.
    pem.unlink()
    with pytest.raises(DevClusterError, match=str(pem)):
        check_config(haproxy, config)


async def log_in(http: aiohttp.ClientSession, base: str) -> str:
    body = {"username": "hana", "password": "hana has a password"}
    async with http.post(f"{base}/api/v1/auth/login", json=body) as response:
        assert response.status == 200
        return response.headers["Set-Cookie"]


async def test_haproxy_terminates_rtmps_and_https_for_a_plain_node(
    haproxy: str, make_node: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "pki")
    pem = ca.issue("balancer").combined(tmp_path / "ripplecast.pem")
    node_settings = {"trusted_proxies": ["127.0.0.1/32"], "rtmp_proxy_protocol": True}
    async with make_node(**node_settings) as running:
        node = running.node
        await node.accounts.create_user("hana", "hana has a password", role=Role.CREATOR)
        # One node stands for the origins, the edges and the web nodes.
        server = Server("node-1", "127.0.0.1", node.http_port, node.rtmp_port)
        layout = HaproxyLayout(
            bind_host="127.0.0.1",
            http_port=free_port(),
            rtmp_ingest_port=free_port(),
            rtmp_play_port=free_port(),
            origins=[server],
            edges=[server],
            web=[server],
            stats_socket=tmp_path / "haproxy.sock",
        )
        https_port, rtmps_port = free_port(), free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            render_haproxy_config(layout)
            + "\n"
            + tls_frontends(pem, https=f"127.0.0.1:{https_port}", rtmps=f"127.0.0.1:{rtmps_port}")
        )
        process, record = spawn(
            [haproxy, "-db", "-f", str(config)], env={}, log_path=tmp_path / "haproxy.log"
        )
        try:

            def all_up() -> bool:
                try:
                    states = server_states(layout.stats_socket or Path())
                except OSError:
                    return False
                return list(states.values()).count("UP") == 4

            await wait_until(all_up, 15, "HAProxy to see the node UP in every backend")
            url = f"rtmps://127.0.0.1:{rtmps_port}/live/behind"
            argv = ffmpeg_publish_args(url, seconds=20)
            argv[-1:-1] = ["-tls_verify", "1", "-ca_file", str(ca.ca_file)]
            async with await Process.start(argv):
                await wait_until(
                    lambda: (s := node.hub.get("behind")) is not None and s.stats.keyframes,
                    15,
                    "the stream published through HAProxy's RTMPS frontend",
                )
                (connection,) = node.rtmp.connections
                assert not connection.over_tls  # HAProxy decrypted it
                probe = [require_program("ffprobe"), "-v", "error", "-tls_verify", "1",
                         "-ca_file", str(ca.ca_file), "-show_entries", "stream=codec_name",
                         "-of", "csv=p=0",
                         f"https://127.0.0.1:{https_port}/live/behind.flv"]  # fmt: skip
                code, out, err = await run(probe, 30)
                assert code == 0 and out.decode().split() == ["h264", "aac"], err.decode()

            jar = aiohttp.CookieJar(unsafe=True)
            https = aiohttp.TCPConnector(ssl=ca.client_context())
            async with aiohttp.ClientSession(connector=https, cookie_jar=jar) as http:
                secure = await log_in(http, f"https://127.0.0.1:{https_port}")
            async with aiohttp.ClientSession() as http:
                plain = await log_in(http, f"http://127.0.0.1:{layout.http_port}")
            assert "; Secure" in secure, secure
            assert "Secure" not in plain, plain
        finally:
            await asyncio.to_thread(stop_groups, {"haproxy": record}, reap=process.poll)
            process.wait(5)
