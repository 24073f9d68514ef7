"""Behind the real HAProxy, a node sees its clients' own addresses: HTTP through
X-Forwarded-For, RTMP through the PROXY v2 header, both believed only from `trusted_proxies`.
The client connects from 127.0.0.2 (any 127/8 address is this host), HAProxy from 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from ripplecast.db.models import Visibility
from ripplecast.devcluster import HaproxyLayout, Server, render_haproxy_config, server_states
from ripplecast.devcluster.processes import spawn, stop_groups
from support import NodeFactory, Process, RunningNode, ffmpeg_publish_args, free_port, wait_until

CLIENT = "127.0.0.2"


@contextlib.asynccontextmanager
async def haproxy_in_front(
    haproxy: str, node: RunningNode, tmp_path: Path
) -> AsyncIterator[HaproxyLayout]:
    """HAProxy with the generated configuration; the node is origin, edge and web node."""
    server = Server("node-1", "127.0.0.1", node.node.http_port, node.node.rtmp_port)
    layout = HaproxyLayout(
        bind_host="127.0.0.1", http_port=free_port(), rtmp_ingest_port=free_port(),
        rtmp_play_port=free_port(), origins=[server], edges=[server], web=[server],
        stats_socket=tmp_path / "haproxy.sock",
    )  # fmt: skip
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(layout))
    process, record = spawn(
        [haproxy, "-db", "-f", str(config)], env={}, log_path=tmp_path / "haproxy.log"
    )
    try:

        def all_up() -> bool:
            try:
                states = server_states(tmp_path / "haproxy.sock")
            except OSError:
                return False
            return list(states.values()).count("UP") == 4

        await wait_until(all_up, 15, "HAProxy to see the node UP")
        yield layout
    finally:
        await asyncio.to_thread(stop_groups, {"haproxy": record}, reap=process.poll)


async def get_status(url: str, local: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, headers={"X-Forwarded-For": "127.0.0.2"}) as response,
    ):
        return response.status


async def test_clients_keep_their_address_through_haproxy(
    make_node: NodeFactory, haproxy: str, tmp_path: Path
) -> None:
    settings = {
        "publish_mode": "keys",
        "trusted_proxies": ["127.0.0.1"],
        "rtmp_proxy_protocol": True,
        "worker_enabled": False,
    }
    async with make_node(**settings) as running:
        node = running.node
        await node.accounts.create_user("ada", "ada's password")
        await node.accounts.create_channel("ada", "adas", visibility=Visibility.PRIVATE)
        key = await node.accounts.create_stream_key("adas")
        async with haproxy_in_front(haproxy, running, tmp_path) as front:
            # A raw RTMP client from 127.0.0.2 through HAProxy: the node knows its address.
            loop = asyncio.get_running_loop()
            sock = socket.socket()
            sock.bind((CLIENT, 0))
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", front.rtmp_play_port))
                await loop.sock_sendall(sock, b"\x03" + bytes(1536))
                await wait_until(
                    lambda: any(c.peer_ip == CLIENT for c in node.rtmp.connections),
                    10,
                    "the RTMP connection from 127.0.0.2",
                )
            finally:
                sock.close()
            # An HLS URL signed for 127.0.0.2 plays through HAProxy from there, not from the
            # proxy's own address, and a forged X-Forwarded-For from an untrusted peer is
            # ignored.
            # ffmpeg publishes through HAProxy: the node reads the PROXY header, then RTMP.
            ingest_url = f"rtmp://127.0.0.1:{front.rtmp_ingest_port}/live/{key.key}"
            async with await Process.start(ffmpeg_publish_args(ingest_url, seconds=30)):
                await wait_until(lambda: node.hub.get("adas") is not None, 15, "the publisher")
                query = node.signed_query("/live/adas", ip=CLIENT)
                path = f"/live/adas/index.m3u8?{query}"
                through = f"http://127.0.0.1:{front.http_port}{path}"
                assert await get_status(through, CLIENT) == 200
                assert await get_status(through, "127.0.0.3") == 403
                direct = f"http://127.0.0.1:{node.http_port}{path}"
                assert await get_status(direct, "127.0.0.3") == 403  # its header is ignored
            assert node.rtmp.refused["proxy_header"] == 0
