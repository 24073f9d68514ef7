"""The HAProxy configuration: the shipped example and the generated one pass `haproxy -c`, say
the same thing, and the generated one routes as documented when the real HAProxy runs it.

The routing test puts small HTTP and TCP servers that answer with their own name behind the
real HAProxy: the thing under test is HAProxy's configuration (hashing, upload stickiness,
health checks), not the nodes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ripplecast.devcluster import (
    DevClusterError,
    HaproxyLayout,
    Server,
    check_config,
    render_haproxy_config,
    server_states,
)
from ripplecast.devcluster.processes import spawn, stop_groups
from support import wait_until

SHIPPED = Path(__file__).parents[2] / "deploy" / "haproxy" / "haproxy.cfg"


def layout(origins: int, edges: int, web: int, **kw: object) -> HaproxyLayout:
    def servers(role: str, count: int, base: int) -> list[Server]:
        rtmp = role in ("origin", "edge")
        return [
            Server(f"{role}-{n}", "127.0.0.1", base + 2 * n, base + 2 * n + 1 if rtmp else 0)
            for n in range(1, count + 1)
        ]

    return HaproxyLayout(
        bind_host="127.0.0.1",
        http_port=kw.pop("http_port", 18080),  # type: ignore[arg-type]
        rtmp_ingest_port=kw.pop("rtmp_ingest_port", 11935),  # type: ignore[arg-type]
        rtmp_play_port=kw.pop("rtmp_play_port", 11936),  # type: ignore[arg-type]
        origins=servers("origin", origins, 20000),
        edges=servers("edge", edges, 21000),
        web=servers("web", web, 22000),
        **kw,  # type: ignore[arg-type]
    )


def directives(text: str) -> dict[str, list[str]]:
    """Each section's directives in order, without comments, `bind` and `server` lines, and
    without the `global` section (where a local run and a deployment differ)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif line.split()[0] not in ("bind", "server"):
            sections[current].append(" ".join(line.split()))
    sections.pop("global")
    return sections


def test_the_shipped_example_passes_haproxy_check(haproxy: str) -> None:
    check_config(haproxy, SHIPPED)


@pytest.mark.parametrize("counts", [(1, 1, 1), (2, 2, 2), (1, 0, 0), (3, 2, 0)])
def test_the_generated_config_passes_haproxy_check(
    haproxy: str, tmp_path: Path, counts: tuple[int, int, int]
) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(layout(*counts, stats_socket=tmp_path / "s.sock")))
    check_config(haproxy, config)


def test_haproxy_check_refuses_a_broken_config(haproxy: str, tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(layout(1, 1, 1)) + "    balance nonsense\n")
    with pytest.raises(DevClusterError, match=r"haproxy\.cfg:\d+\] : balance only supports"):
        check_config(haproxy, config)


def test_the_generated_config_says_what_the_shipped_example_says() -> None:
    generated = directives(render_haproxy_config(layout(2, 2, 2)))
    shipped = directives(SHIPPED.read_text())
    assert list(generated) == list(shipped)
    for section, lines in shipped.items():
        assert generated[section] == lines, section


def test_servers_are_checked_on_their_http_port() -> None:
    text = render_haproxy_config(layout(1, 1, 1))
    assert "server origin-1 127.0.0.1:20003 send-proxy-v2 check port 20002" in text
    assert "server edge-1 127.0.0.1:21003 send-proxy-v2 check port 21002" in text  # RTMP
    assert "server edge-1 127.0.0.1:21002 check" in text  # edges (HTTP)
    assert "server web-1 127.0.0.1:22002 check" in text


# --- the real HAProxy in front of stand-in servers -------------------------------------------


@dataclass
class StandIn:
    """A server that answers every request with its name; `ready` is what /readyz says."""

    name: str
    ready: bool = True
    uploads: set[str] = field(default_factory=set)

    def app(self) -> web.Application:
        async def readyz(_request: web.Request) -> web.Response:
            return web.Response(status=200 if self.ready else 503)

        async def create_upload(_request: web.Request) -> web.Response:
            upload_id = secrets.token_hex(8)
            self.uploads.add(upload_id)
            return web.Response(status=201, headers={"Location": f"/api/v1/uploads/{upload_id}"})

        async def anything(request: web.Request) -> web.Response:
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        app.router.add_post("/api/v1/uploads", create_upload)
        app.router.add_route("*", "/{tail:.*}", anything)
        return app


async def _tcp_name_server(name: str) -> tuple[asyncio.Server, int]:
    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name.encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@dataclass
class Fleet:
    standins: dict[str, StandIn]
    layout: HaproxyLayout


@pytest.fixture
async def fleet(haproxy: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """HAProxy on the generated config, in front of 2 origins, 2 edges and 2 web stand-ins."""
    runners: list[web.AppRunner] = []
    tcp_servers: list[asyncio.Server] = []
    standins: dict[str, StandIn] = {}
    groups: dict[str, list[Server]] = {"origin": [], "edge": [], "web": []}
    for role in groups:
        for number in (1, 2):
            standin = StandIn(f"{role}-{number}")
            standins[standin.name] = standin
            runner = web.AppRunner(standin.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            http_port = runner.addresses[0][1]
            rtmp_port = 0
            if role != "web":
                tcp, rtmp_port = await _tcp_name_server(standin.name)
                tcp_servers.append(tcp)
            groups[role].append(Server(standin.name, "127.0.0.1", http_port, rtmp_port))
    ports = []
    for _ in range(3):
        tcp, port = await _tcp_name_server("placeholder")
        tcp.close()
        await tcp.wait_closed()
        ports.append(port)
    chosen = HaproxyLayout(
        bind_host="127.0.0.1",
        http_port=ports[0],
        rtmp_ingest_port=ports[1],
        rtmp_play_port=ports[2],
        origins=groups["origin"],
        edges=groups["edge"],
        web=groups["web"],
        stats_socket=tmp_path / "haproxy.sock",
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(chosen))
    process, record = spawn(
        [haproxy, "-db", "-f", str(config)], env={}, log_path=tmp_path / "haproxy.log"
    )
    try:
        expected = 8  # 2 origins, 2 edges twice (HTTP and RTMP), 2 web

        def all_up() -> bool:
            try:
                states = server_states(tmp_path / "haproxy.sock")
            except OSError:
                return False
            return list(states.values()).count("UP") == expected

        await wait_until(all_up, 15, "HAProxy to see every server UP")
        yield Fleet(standins, chosen)
    finally:
        await asyncio.to_thread(stop_groups, {"haproxy": record}, reap=process.poll)
        process.wait(5)
        for tcp in tcp_servers:
            tcp.close()
        for runner in runners:
            await runner.cleanup()


async def _who(http: aiohttp.ClientSession, method: str, url: str) -> str:
    async with http.request(method, url) as response:
        assert response.status == 200, (method, url, response.status)
        return await response.text()


async def test_one_streams_viewers_meet_on_one_edge_and_streams_spread(fleet: Fleet) -> None:
    base = f"http://127.0.0.1:{fleet.layout.http_port}"
    chosen: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for number in range(40):
            name = f"show-{number}.x"  # a dot in the name: only a final .flv is cut
            paths = [f"/live/{name}.flv", f"/live/{name}/index.m3u8", f"/live/{name}/7.ts"]
            edges = {await _who(http, "GET", base + path) for path in paths}
            assert len(edges) == 1, (name, edges)
            chosen[name] = edges.pop()
        video = {await _who(http, "GET", f"{base}/vod/v{n}/{p}") for n in [1] for p in
                 ("master.m3u8", "720p/index.m3u8", "720p/3.ts")}  # fmt: skip
        assert len(video) == 1 and video.pop().startswith("edge-")
    assert set(chosen.values()) == {"edge-1", "edge-2"}


async def test_pages_and_api_go_to_the_web_nodes_and_uploads_stick(fleet: Fleet) -> None:
    base = f"http://127.0.0.1:{fleet.layout.http_port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/c/show", "/api/v1/streams", "/redirect/live/show.flv"):
            assert (await _who(http, "GET", base + path)).startswith("web-")
        created: dict[str, str] = {}
        for _ in range(10):
            async with http.post(f"{base}/api/v1/uploads") as response:
                assert response.status == 201
                upload_id = response.headers["Location"].rsplit("/", 1)[1]
            owner = next(s.name for s in fleet.standins.values() if upload_id in s.uploads)
            created[upload_id] = owner
        # Without the stick table, the ten upload paths would hash across both web nodes.
        for upload_id, owner in created.items():
            for method in ("PATCH", "HEAD", "PATCH", "DELETE"):
                async with http.request(method, f"{base}/api/v1/uploads/{upload_id}") as response:
                    assert response.status == 200
                    if method != "HEAD":
                        assert await response.text() == owner, (upload_id, method)


async def test_rtmp_goes_to_origins_for_publishing_and_edges_for_playing(fleet: Fleet) -> None:
    async def first_bytes(port: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return (await asyncio.wait_for(reader.read(100), 5)).decode()
        finally:
            writer.close()

    ingest = {await first_bytes(fleet.layout.rtmp_ingest_port) for _ in range(6)}
    assert ingest and ingest <= {"origin-1", "origin-2"}
    play = {await first_bytes(fleet.layout.rtmp_play_port) for _ in range(6)}
    assert play and play <= {"edge-1", "edge-2"}


async def test_a_node_that_is_not_ready_gets_no_traffic(fleet: Fleet, tmp_path: Path) -> None:
    fleet.standins["edge-1"].ready = False
    fleet.standins["origin-2"].ready = False
    socket_path = tmp_path / "haproxy.sock"

    def marked_down() -> bool:
        states = server_states(socket_path)
        names = ("edges/edge-1", "edges_rtmp/edge-1", "origins/origin-2")
        return all(states[name] == "DOWN" for name in names)

    await wait_until(marked_down, 10, "HAProxy to mark edge-1 and origin-2 DOWN")
    base = f"http://127.0.0.1:{fleet.layout.http_port}"
    async with aiohttp.ClientSession() as http:
        edges = {await _who(http, "GET", f"{base}/live/s{n}.flv") for n in range(20)}
    assert edges == {"edge-2"}
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.layout.rtmp_ingest_port)
    assert await asyncio.wait_for(reader.read(100), 5) == b"origin-1"
    writer.close()


async def test_metrics_are_not_served_through_the_balancer(fleet: Fleet) -> None:
    base = f"http://127.0.0.1:{fleet.layout.http_port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/metrics?x=1"):
            async with http.get(base + path) as response:
                assert response.status == 404, path  # a stand-in would answer 200, its name
        assert (await _who(http, "GET", base + "/metricsfoo")).startswith("web-")
