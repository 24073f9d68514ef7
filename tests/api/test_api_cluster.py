"""The cluster over HTTP: `GET /api/v1/cluster/nodes` (admins) and the `/redirect/...` endpoint
that sends a viewer to the least-loaded healthy edge, on a real node registry.

The behaviour tests run with the registry on `MemoryCache` (expiry by a fake clock) and on
the real Redis at 127.0.0.1:6379 (real TTLs, a fresh key prefix per test, its keys deleted
afterwards; skipped if Redis is down, failed under RIPPLECAST_REQUIRE_SERVICES=1). The API
tests build the application with `create_app(..., cluster=registry)` from a real node
(accounts, access policy, database of the engine under test); a registry on a Redis port where
nothing listens gives the 503s; Schemathesis checks the operation against its OpenAPI
document. Everything is called over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from yarl import URL

from ripplecast.accounts.policy import Scope
from ripplecast.app import Node
from ripplecast.cache import Cache, MemoryCache, RedisCache
from ripplecast.cluster import Addresses, NodeInfo, NodeLoad, NodeRegistry
from ripplecast.http.api import install_api
from ripplecast.http.api.cluster import cluster_router
from ripplecast.http.app import create_app
from ripplecast.http.redirect import RedirectRoutes
from support import NodeFactory, reachable_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
STABLE_TTL = 30.0
"""Registry TTL where a test does not look at expiry."""
SHORT_TTL = 0.5
"""Registry TTL where a test waits for a record to expire (real time on Redis)."""
SIGNED_QUERY = "exp=1999999999&kid=k1&sig=a%2Bb%2F%3D&ip=127.0.0.1"
"""A signed-URL query as a player sends it, percent-encoding included."""


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Expiring:
    """A cache for a registry, and a way to let its TTLs run out: a fake clock in memory,
    real time on Redis."""

    def __init__(self, cache: Cache, clock: FakeClock | None) -> None:
        self.cache = cache
        self._clock = clock

    async def expire(self, seconds: float) -> None:
        if self._clock is not None:
            self._clock.now += seconds
        else:
            await asyncio.sleep(seconds)  # Redis expires by its own clock: real time must pass


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Expiring]:
    if request.param == "memory":
        clock = FakeClock()
        yield Expiring(MemoryCache(prefix="rctest:", clock=clock), clock)
        return
    admin = await reachable_redis()
    prefix = f"rctest:{secrets.token_hex(6)}:"
    cache = RedisCache(REDIS_URL, prefix=prefix)
    try:
        yield Expiring(cache, None)
    finally:
        await cache.close()
        async for key in admin.scan_iter(match=prefix + "*"):
            await admin.delete(key)
        await admin.aclose()


def node_info(
    node_id: str,
    viewers: int = 0,
    *,
    role: str = "edge",
    public: str | None = None,
    draining: bool = False,
    egress: int = 0,
) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        role=role,  # type: ignore[arg-type]
        internal=Addresses(http=f"http://10.0.0.9:8080/{node_id}", rtmp="rtmp://10.0.0.9:1935"),
        public=Addresses(
            http=f"https://{node_id}.example.com" if public is None else public,
            rtmp=f"rtmp://{node_id}.example.com",
        ),
        load=NodeLoad(viewers=viewers, egress_bps=egress, cpu=0.5),
        draining=draining,
        version="9.9.9",
        started_at=1_700_000_000.25,
    )


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def raw_get(base: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET `target` exactly as written (no client-side normalisation of `..` or `//`)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110  # the condition lives in the registry
            await asyncio.sleep(0.05)


# -- GET /api/v1/cluster/nodes through create_app -------------------------------------------


async def bearer(node: Node, username: str, scopes: list[Scope]) -> dict[str, str]:
    await node.accounts.create_user(username, f"{username} password")
    user = await node.accounts.user(username)
    made = await node.logins.create_api_token(user.id, "t", scopes)
    return {"Authorization": f"Bearer {made.token}"}


def cluster_app(node: Node, registry: NodeRegistry) -> web.Application:
    return create_app(
        node.settings,
        node.hub,
        node.access.authorize,
        ready=node.readiness,
        accounts=(node.accounts, node.logins, node.secret),
        db=node.db,
        cluster=registry,
    )


async def test_admins_see_the_live_nodes_and_nobody_else_does(
    make_node: NodeFactory, backend: Expiring
) -> None:
    async with make_node() as running:
        node = running.node
        # The registry has a cache of its own: the node's heartbeat stays out of the listing.
        registry = NodeRegistry(backend.cache, ttl_seconds=STABLE_TTL)
        short = NodeRegistry(backend.cache, ttl_seconds=SHORT_TTL)
        # The first account is the install's admin; the next ones are creators.
        admin = await bearer(node, "root", [Scope.READ, Scope.ADMIN])
        creator = await bearer(node, "carl", [Scope.READ, Scope.PUBLISH, Scope.ADMIN])
        reader = await bearer(node, "rita", [Scope.READ])
        before = time.time()
        await registry.heartbeat(node_info("origin-1", 0, role="origin"))
        await registry.heartbeat(node_info("edge-b", 12, draining=True, egress=3_000_000))
        await short.heartbeat(node_info("edge-a", 4))
        after = time.time()
        jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP-address host
        async with (
            serve(cluster_app(node, registry)) as base,
            aiohttp.ClientSession(cookie_jar=jar) as http,
        ):
            url = f"{base}/api/v1/cluster/nodes"
            async with http.get(url, headers=admin) as r:
                assert r.status == 200, await r.text()
                listed = await r.json()
            assert [n["node_id"] for n in listed["items"]] == ["edge-a", "edge-b", "origin-1"]
            assert listed["ttl_seconds"] == STABLE_TTL
            edge_b = listed["items"][1]
            heartbeat_at = edge_b.pop("heartbeat_at")
            age = edge_b.pop("age_seconds")
            assert edge_b == {
                "node_id": "edge-b",
                "role": "edge",
                "internal": {"http": "http://10.0.0.9:8080/edge-b", "rtmp": "rtmp://10.0.0.9:1935"},
                "public": {
                    "http": "https://edge-b.example.com",
                    "rtmp": "rtmp://edge-b.example.com",
                },
                "load": {"viewers": 12, "egress_bps": 3_000_000, "cpu": 0.5},
                "draining": True,
                "version": "9.9.9",
                "started_at": "2023-11-14T22:13:20.250000Z",
            }
            beat = datetime.fromisoformat(heartbeat_at.replace("Z", "+00:00")).timestamp()
            assert before - 0.01 <= beat <= after + 0.01
            assert 0 <= age <= time.time() - before + 0.01

            # Admin by session works too (a cookie, no token).
            login = {"username": "root", "password": "root password"}
            async with http.post(f"{base}/api/v1/auth/login", json=login) as r:
                assert r.status == 200
            async with http.get(url) as r:
                assert r.status == 200
                assert len((await r.json())["items"]) == 3
            http.cookie_jar.clear()

            # Internal addresses are for admins only: a creator, even with an admin-scoped
            # token, and a read token are refused; anonymous and bad tokens are 401.
            for headers, status in (
                (creator, 403),
                (reader, 403),
                ({}, 401),
                ({"Authorization": "Bearer not-a-token"}, 401),
            ):
                async with http.get(url, headers=headers) as r:
                    assert r.status == status, headers
                    assert r.content_type == "application/problem+json"
                    text = await r.text()
                    assert "10.0.0.9" not in text and "edge-a" not in text
                    if status == 401:
                        assert r.headers["WWW-Authenticate"].startswith("Bearer")

            # A node that stops beating leaves the list by itself.
            await backend.expire(SHORT_TTL + 0.2)
            async with http.get(url, headers=admin) as r:
                ids = [n["node_id"] for n in (await r.json())["items"]]
            assert ids == ["edge-b", "origin-1"]

            # The redirect endpoint is wired by the same parameter.
            async with http.get(
                f"{base}/redirect/live/cam.flv?{SIGNED_QUERY}", allow_redirects=False
            ) as r:
                assert r.status == 503  # edge-a expired, edge-b drains
            await registry.heartbeat(node_info("edge-c", 1))
            await eventually(lambda: _redirects_to(http, base, "https://edge-c.example.com"))


async def _redirects_to(http: aiohttp.ClientSession, base: str, edge: str) -> bool:
    url = URL(f"{base}/redirect/live/cam.flv?{SIGNED_QUERY}", encoded=True)
    async with http.get(url, allow_redirects=False) as r:
        return r.status == 302 and r.headers["Location"] == f"{edge}/live/cam.flv?{SIGNED_QUERY}"


# -- the redirect endpoint ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def redirector(
    backend: Expiring, *, ttl: float = STABLE_TTL, **options: Any
) -> AsyncIterator[tuple[str, NodeRegistry, RedirectRoutes, FakeClock]]:
    """The redirect routes on a registry over `backend`, served on loopback; the routes'
    listing clock is a fake one the test moves."""
    registry = NodeRegistry(backend.cache, ttl_seconds=ttl)
    clock = FakeClock()
    routes = RedirectRoutes(registry, clock=clock, **options)
    app = web.Application()
    routes.register(app)
    async with serve(app) as base:
        yield base, registry, routes, clock


async def location(http: aiohttp.ClientSession, url: str) -> str:
    """The Location of the 302 answering `url` (sent as written: no re-encoding)."""
    async with http.get(URL(url, encoded=True), allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        return r.headers["Location"]


async def test_a_viewer_goes_to_the_least_loaded_healthy_edge_with_its_query(
    backend: Expiring,
) -> None:
    async with redirector(backend) as (base, registry, routes, _clock):
        for info in (
            node_info("busy", 900),
            node_info("idle-but-draining", 0, draining=True),
            node_info("no-public-address", 0, public=""),
            node_info("quiet", 40, public="https://cdn.example.com/quiet/"),
            node_info("origin", 0, role="origin"),
            node_info("box", 0, role="all"),
        ):
            await registry.heartbeat(info)
        async with aiohttp.ClientSession() as http:
            for path in (
                "live/cam.flv",
                "live/cam/index.m3u8",
                "live/cam/ll.m3u8",
                "vod/Xy_9-a/master.m3u8",
                "vod/Xy_9-a/720p/seg_00001.ts",
            ):
                assert await location(http, f"{base}/redirect/{path}") == (
                    f"https://cdn.example.com/quiet/{path}"
                )
                # Signed-URL parameters reach the edge byte for byte.
                assert await location(http, f"{base}/redirect/{path}?{SIGNED_QUERY}") == (
                    f"https://cdn.example.com/quiet/{path}?{SIGNED_QUERY}"
                )
            async with http.head(f"{base}/redirect/live/cam.flv", allow_redirects=False) as r:
                assert r.status == 302
                assert r.headers["Location"] == "https://cdn.example.com/quiet/live/cam.flv"
            # A browser-side player follows it cross-origin.
            async with http.get(f"{base}/redirect/live/cam.flv", allow_redirects=False) as r:
                assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert routes.redirected == 12 and routes.refused == {}


async def test_a_burst_spreads_over_nearly_idle_edges_and_never_hits_a_draining_one(
    backend: Expiring,
) -> None:
    async with redirector(backend) as (base, registry, routes, _clock):
        await registry.heartbeat(node_info("a", 100))
        await registry.heartbeat(node_info("b", 103))  # within the margin of a
        await registry.heartbeat(node_info("c", 500))  # far above it
        await registry.heartbeat(node_info("d", 0, draining=True))
        async with aiohttp.ClientSession() as http:
            seen = [await location(http, f"{base}/redirect/live/cam.flv") for _ in range(60)]
        assert set(seen) == {
            "https://a.example.com/live/cam.flv",
            "https://b.example.com/live/cam.flv",
        }
        # All of them were answered from one registry listing.
        assert routes.fetches == 1


async def test_a_burst_costs_one_registry_read_per_listing_period(backend: Expiring) -> None:
    async with redirector(backend) as (base, registry, routes, clock):
        await registry.heartbeat(node_info("first", 0))
        url = f"{base}/redirect/live/cam/index.m3u8"
        async with aiohttp.ClientSession() as http:
            burst = await asyncio.gather(*(location(http, url) for _ in range(40)))
            assert set(burst) == {"https://first.example.com/live/cam/index.m3u8"}
            assert routes.fetches == 1  # concurrent misses shared one fetch
            # The registry changes; within the listing period the answer does not.
            await registry.heartbeat(node_info("first", 0, draining=True))
            await registry.heartbeat(node_info("second", 0))
            clock.now += 0.9
            assert await location(http, url) == "https://first.example.com/live/cam/index.m3u8"
            assert routes.fetches == 1
            clock.now += 0.2
            assert await location(http, url) == "https://second.example.com/live/cam/index.m3u8"
            assert routes.fetches == 2


async def test_an_edge_whose_record_expired_gets_no_more_viewers(backend: Expiring) -> None:
    async with redirector(backend, ttl=SHORT_TTL) as (base, registry, routes, clock):
        keeper = NodeRegistry(backend.cache, ttl_seconds=STABLE_TTL)
        await registry.heartbeat(node_info("vanishing", 0))  # killed right after this beat
        await keeper.heartbeat(node_info("steady", 300))
        url = f"{base}/redirect/live/cam.flv"
        async with aiohttp.ClientSession() as http:
            assert await location(http, url) == "https://vanishing.example.com/live/cam.flv"
            await backend.expire(SHORT_TTL + 0.2)
            clock.now += 1.1
            assert await location(http, url) == "https://steady.example.com/live/cam.flv"
            await keeper.remove("steady")
            clock.now += 1.1
            async with http.get(url, allow_redirects=False) as r:
                assert r.status == 503
        assert routes.refused == {"no_edge": 1}


async def test_no_healthy_edge_is_a_503_problem_with_retry_after(backend: Expiring) -> None:
    async with redirector(backend, ttl=9.0) as (base, registry, routes, clock):
        async with aiohttp.ClientSession() as http:
            url = f"{base}/redirect/live/cam.flv?{SIGNED_QUERY}"
            # An empty registry, then one where the only edge drains while an all-in-one
            # node and an origin are idle: a cluster with edges sends viewers to edges only.
            for infos in (
                [],
                [
                    node_info("e", 0, draining=True),
                    node_info("box", 0, role="all"),
                    node_info("o", 0, role="origin"),
                ],
            ):
                for info in infos:
                    await registry.heartbeat(info)
                clock.now += 1.1
                async with http.get(url, allow_redirects=False) as r:
                    assert r.status == 503
                    assert r.content_type == "application/problem+json"
                    assert r.headers["Retry-After"] == "3"  # the heartbeat interval, TTL / 3
                    assert r.headers["Cache-Control"] == "no-store"
                    problem = await r.json()
                    assert problem["status"] == 503 and "no healthy edge" in problem["detail"]
                    assert problem["instance"] == "/redirect/live/cam.flv"
            # Without any edge registered, an all-in-one node serves.
            await registry.remove("e")
            clock.now += 1.1
            assert (
                await location(http, url) == f"https://box.example.com/live/cam.flv?{SIGNED_QUERY}"
            )
        assert routes.refused == {"no_edge": 2}


HOSTILE_TARGETS = [
    "/redirect/",
    "/redirect//evil.com",
    "/redirect//evil.com/live/cam.flv",
    "/redirect/%2F%2Fevil.com",
    "/redirect/%2f%2fevil.com/live/x.flv",
    "/redirect/live//evil.com",
    "/redirect/live/a%2F%2Fevil.com",
    "/redirect/live/../../x",
    "/redirect/live/%2e%2e/%2E%2E/x",
    "/redirect/live/cam/..",
    "/redirect/live/./cam.flv",
    "/redirect/vod/../admin",
    "/redirect/https://evil.com/live/x.flv",
    "/redirect/live/https:%2F%2Fevil.com",
    "/redirect/live/%5Cevil.com",
    "/redirect/live/cam%00.flv",
    "/redirect/live/cam%0d%0aSet-Cookie:%20x=1",
    "/redirect/live/a@evil.com",
    "/redirect/live/caf%C3%A9.flv",
    "/redirect/admin/users",
    "/redirect/live",
    "/redirect/live/" + "a" * 2000 + ".flv",
]


async def test_hostile_paths_are_refused_with_400(backend: Expiring) -> None:
    async with redirector(backend) as (base, registry, routes, _clock):
        await registry.heartbeat(node_info("edge", 0))
        for target in HOSTILE_TARGETS:
            status, headers, body = await raw_get(base, target)
            assert status == 400, (target, status, body)
            assert headers["content-type"] == "application/problem+json"
            assert "location" not in headers
        assert routes.refused == {"bad_path": len(HOSTILE_TARGETS)}
        assert routes.redirected == 0
        # The same server still redirects a plain path.
        status, headers, _ = await raw_get(base, "/redirect/live/cam.flv")
        assert status == 302 and headers["location"] == "https://edge.example.com/live/cam.flv"


# -- the registry unreachable: 503, never a 500 ---------------------------------------------


async def test_an_unreachable_registry_is_a_503_for_the_api_and_the_redirect(
    make_node: NodeFactory,
) -> None:
    down = RedisCache(UNREACHABLE_REDIS_URL, prefix="rctest:", timeout=2)
    async with make_node() as running:
        node = running.node
        admin = await bearer(node, "root", [Scope.READ, Scope.ADMIN])
        registry = NodeRegistry(down, ttl_seconds=STABLE_TTL)
        try:
            async with serve(cluster_app(node, registry)) as base:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/api/v1/cluster/nodes", headers=admin) as r:
                        assert r.status == 503
                        assert r.content_type == "application/problem+json"
                        assert r.headers["Retry-After"] == "10"
                        assert "registry cannot be read" in (await r.json())["detail"]
                    async with http.get(f"{base}/api/v1/cluster/nodes") as r:
                        assert r.status == 401  # the failure is shown to admins only
                    async with http.get(
                        f"{base}/redirect/live/cam.flv", allow_redirects=False
                    ) as r:
                        assert r.status == 503
                        assert r.content_type == "application/problem+json"
                        assert r.headers["Retry-After"] == "10"
                        assert "redis" not in (await r.text()).lower()  # no detail for viewers
        finally:
            await down.close()


# -- the OpenAPI document -------------------------------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz_operation(
    operation: schemathesis.APIOperation, mode: GenerationMode, base: str, http: requests.Session
) -> None:
    """Up to 20 generated requests in `mode`; raises on the first failed check."""
    checks = CHECKS + ([negative_data_rejection] if mode.is_negative else [])

    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=base, session=http, checks=checks)
        if mode.is_positive:
            assert response.status_code == 200

    fuzz()


def fuzz_cluster_operation(base: str, headers: dict[str, str]) -> list[str]:
    """Schemathesis over `GET /api/v1/cluster/nodes` of the served document, as `headers`
    (an admin, so the 200 answers are checked against the schema too)."""
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    ran = []
    with requests.Session() as http:
        http.headers.update(headers)
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz_operation(operation, mode, base, http)
                except Unsatisfiable:
                    assert mode.is_negative  # no parameter at all: nothing to make invalid
                    ran.append(f"{label} nothing to negate")
                else:
                    ran.append(f"{label} {mode.value}")
    return ran


async def test_the_operation_matches_its_openapi_document(make_node: NodeFactory) -> None:
    async with make_node() as running:
        node = running.node
        admin = await bearer(node, "root", [Scope.READ, Scope.ADMIN])
        registry = NodeRegistry(MemoryCache(prefix="rctest:"), ttl_seconds=STABLE_TTL)
        await registry.heartbeat(node_info("edge-1", 3))
        await registry.heartbeat(node_info("origin-1", role="origin", public=""))
        app = web.Application()
        install_api(app, [cluster_router(registry)], authorize=node.access.authorize)
        async with serve(app) as base:
            ran = await asyncio.to_thread(fuzz_cluster_operation, base, admin)
            document = await asyncio.to_thread(
                lambda: requests.get(f"{base}/api/v1/openapi.json", timeout=5).json()
            )
    assert ran == [
        "GET /api/v1/cluster/nodes positive",
        "GET /api/v1/cluster/nodes negative",  # bad credentials: 401s, checked too
    ]
    operation = document["paths"]["/api/v1/cluster/nodes"]["get"]
    assert operation["x-required-scope"] == "admin"
    assert sorted(operation["responses"]) == ["200", "401", "403", "500", "503"]
    node_schema = document["components"]["schemas"]["ClusterNode"]
    assert {"internal", "public", "load", "draining", "age_seconds"} <= set(
        node_schema["properties"]
    )
