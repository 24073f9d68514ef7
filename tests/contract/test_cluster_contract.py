"""The node registry, stream ownership and the live directory, each test run on `MemoryCache`
(with a fake clock, moved by the test) and on `RedisCache` against the real Redis at
127.0.0.1:6379 (real short TTLs; skipped if Redis is down, failed under
RIPPLECAST_REQUIRE_SERVICES=1).

On Redis every test uses a fresh random prefix, several clients (as separate nodes would) and
deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from ripplecast.cache import Cache, CacheUnavailable, MemoryCache, RedisCache
from ripplecast.cluster import (
    Addresses,
    Claim,
    ClusterError,
    ClusterInputError,
    Heartbeat,
    NodeInfo,
    NodeLoad,
    NodeRegistry,
    RegistryFull,
    StreamOwnership,
)
from ripplecast.cluster.live import (
    LIVE_INDEX,
    MAX_SUMMARY_BYTES,
    STREAM_KEY_PREFIX,
    VIEWERS_KEY_PREFIX,
    AudioSummary,
    DirectoryFull,
    EdgeViewers,
    LiveDirectory,
    StreamSummary,
    VideoSummary,
    ViewerCount,
)
from ripplecast.cluster.ownership import OWNER_KEY_PREFIX
from ripplecast.cluster.registry import NODE_INDEX, NODE_KEY_PREFIX
from ripplecast.errors import UsageError
from support import reachable_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_URL = "redis://127.0.0.1:1/0"
TTL = 0.3
"""Seconds a heartbeat or claim lives where a test waits for it to expire."""
PAST_TTL = TTL + 0.1
"""A wait after which a TTL of `TTL` has surely run out (Redis expires to the millisecond)."""
LONG_TTL = 1.0
"""The TTL where a test also checks that something is still alive after a wait: the margin
keeps the test steady on a loaded machine (the Redis server's time runs on while we stall)."""
STABLE_TTL = 30.0
"""The TTL where a test does not look at expiry at all."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """The caches of one test and its notion of time.

    `client()` is one more node's connection to the shared cache (the same `MemoryCache` in
    memory, a new Redis client on Redis); `advance(s)` lets `s` seconds pass for expiry (the fake
    clock jumps, or real time passes); `wait(s)` lets real time pass for tasks, with the fake
    clock following.
    """

    def __init__(self, kind: str, admin: aioredis.Redis | None) -> None:
        self.kind = kind
        self.clock: Callable[[], float] = time.time
        self.fake: FakeClock | None = None
        self._admin = admin
        self._prefix = f"rctest:{secrets.token_hex(6)}:"
        self._clients: list[Cache] = []
        if kind == "memory":
            self.fake = FakeClock()
            self.clock = self.fake
            self._clients.append(MemoryCache(prefix=self._prefix, clock=self.fake))

    def client(self) -> Cache:
        if self.kind == "memory":
            return self._clients[0]
        cache = RedisCache(REDIS_URL, prefix=self._prefix)
        self._clients.append(cache)
        return cache

    async def advance(self, seconds: float) -> None:
        if self.fake is not None:
            self.fake.now += seconds
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    async def wait(self, seconds: float) -> None:
        if self.fake is not None:
            self.fake.now += seconds
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        for cache in self._clients:
            await cache.close()
        if self._admin is not None:
            async for key in self._admin.scan_iter(match=self._prefix + "*"):
                await self._admin.delete(key)
            await self._admin.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind: str = request.param
    admin = await reachable_redis() if kind == "redis" else None
    made = Backend(kind, admin)
    try:
        yield made
    finally:
        await made.close()


def node_info(node_id: str, **changes: object) -> NodeInfo:
    values: dict[str, object] = {
        "node_id": node_id,
        "role": "edge",
        "internal": Addresses(http="http://10.0.0.1:8080", rtmp="rtmp://10.0.0.1:1935"),
        "public": Addresses(http="https://edge.example.com", rtmp=""),
        "load": NodeLoad(viewers=3, egress_bps=4_500_000, cpu=0.25),
        "draining": False,
        "version": "0.1.0",
        "started_at": 1_699_999_000.5,
    }
    values.update(changes)
    return NodeInfo(**values)  # type: ignore[arg-type]


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> None:
    """Poll until `predicate()` is true; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110  # the condition lives in the cache
            await asyncio.sleep(0.02)


# -- node registry ---------------------------------------------------------------------------


async def test_heartbeat_registers_and_every_client_lists_the_nodes(backend: Backend) -> None:
    one = NodeRegistry(backend.client(), ttl_seconds=STABLE_TTL, clock=backend.clock)
    other = NodeRegistry(backend.client(), ttl_seconds=STABLE_TTL, clock=backend.clock)
    before = backend.clock()
    stored = await one.heartbeat(node_info("edge-b"))
    await other.heartbeat(node_info("origin-a", role="origin", draining=True))
    assert before <= stored.heartbeat_at <= backend.clock()
    assert stored == node_info("edge-b", heartbeat_at=stored.heartbeat_at)
    for registry in (one, other):
        listed = await registry.nodes()
        assert [n.node_id for n in listed] == ["edge-b", "origin-a"]
        assert listed[0] == stored
        assert listed[1].role == "origin" and listed[1].draining is True
        assert await registry.node("edge-b") == stored
        assert await registry.node("nobody") is None


async def test_a_node_without_heartbeat_expires(backend: Backend) -> None:
    registry = NodeRegistry(backend.client(), ttl_seconds=LONG_TTL, clock=backend.clock)
    await registry.heartbeat(node_info("quiet"))
    await registry.heartbeat(node_info("beating"))
    await backend.advance(LONG_TTL / 2)
    assert [n.node_id for n in await registry.nodes()] == ["beating", "quiet"]
    await registry.heartbeat(node_info("beating"))
    await backend.advance(LONG_TTL / 2 + 0.1)
    assert [n.node_id for n in await registry.nodes()] == ["beating"]
    assert await registry.node("quiet") is None
    await backend.advance(LONG_TTL)
    assert await registry.nodes() == []


async def test_remove_unregisters_at_once(backend: Backend) -> None:
    registry = NodeRegistry(backend.client(), ttl_seconds=STABLE_TTL, clock=backend.clock)
    await registry.heartbeat(node_info("leaving"))
    await registry.heartbeat(node_info("staying"))
    assert await registry.remove("leaving") is True
    assert await registry.remove("leaving") is False
    assert await registry.node("leaving") is None
    assert [n.node_id for n in await registry.nodes()] == ["staying"]


async def test_a_heartbeat_updates_load_and_draining(backend: Backend) -> None:
    registry = NodeRegistry(backend.client(), ttl_seconds=STABLE_TTL, clock=backend.clock)
    await registry.heartbeat(node_info("edge-1"))
    await backend.advance(0.05)
    busier = node_info("edge-1", load=NodeLoad(viewers=900, egress_bps=10**9, cpu=0.97))
    stored = await registry.heartbeat(replace_draining(busier))
    listed = await registry.nodes()
    assert listed == [stored]
    assert listed[0].load == NodeLoad(viewers=900, egress_bps=10**9, cpu=0.97)
    assert listed[0].draining is True


def replace_draining(info: NodeInfo) -> NodeInfo:
    return NodeInfo(
        node_id=info.node_id,
        role=info.role,
        internal=info.internal,
        public=info.public,
        load=info.load,
        draining=True,
        version=info.version,
        started_at=info.started_at,
    )


async def test_the_registry_is_bounded(backend: Backend) -> None:
    registry = NodeRegistry(
        backend.client(), ttl_seconds=LONG_TTL, clock=backend.clock, max_nodes=2
    )
    await registry.heartbeat(node_info("a"))
    await backend.advance(LONG_TTL / 2)
    await registry.heartbeat(node_info("b"))
    with pytest.raises(RegistryFull, match="2 nodes"):
        await registry.heartbeat(node_info("c"))
    assert await registry.node("c") is None
    await registry.heartbeat(node_info("b"))  # a registered node may always beat
    await backend.advance(LONG_TTL / 2 + 0.1)  # "a" expired: room for "c"
    await registry.heartbeat(node_info("c"))
    assert [n.node_id for n in await registry.nodes()] == ["b", "c"]


async def test_an_undecodable_record_is_skipped_and_counted(backend: Backend) -> None:
    cache = backend.client()
    registry = NodeRegistry(cache, ttl_seconds=STABLE_TTL, clock=backend.clock)
    await registry.heartbeat(node_info("good"))
    for node_id, record in (
        ("garbage", b"\xff not json"),
        ("future", node_info("future").to_json().replace(b'"v":1', b'"v":2')),
        ("impostor", node_info("someone-else").to_json()),
    ):
        await cache.index_add(NODE_INDEX, node_id, ttl=30, max_members=10)
        await cache.set(NODE_KEY_PREFIX + node_id, record, ttl=30)
    assert [n.node_id for n in await registry.nodes()] == ["good"]
    assert registry.invalid_records == 3
    assert await registry.node("garbage") is None
    assert registry.invalid_records == 4


async def test_heartbeat_task_keeps_the_node_alive_then_removes_it(backend: Backend) -> None:
    registry = NodeRegistry(backend.client(), ttl_seconds=LONG_TTL, clock=backend.clock)
    observer = NodeRegistry(backend.client(), ttl_seconds=LONG_TTL, clock=backend.clock)
    viewers = 0

    def current() -> NodeInfo:
        return node_info("edge-7", load=NodeLoad(viewers=viewers))

    async with Heartbeat(registry, current) as heartbeat:
        assert heartbeat.interval == pytest.approx(LONG_TTL / 3)
        assert await observer.node("edge-7") is not None  # registered when start() returns
        for viewers in range(1, 5):  # noqa: B007  # read by current()
            await backend.wait(LONG_TTL / 2)  # 2 TTLs in all: only renewal keeps it
            assert [n.node_id for n in await observer.nodes()] == ["edge-7"]
        await eventually(lambda: _viewers_are(observer, "edge-7", 4))
        assert heartbeat.beats >= 4 and heartbeat.failures == 0
    assert await observer.node("edge-7") is None
    assert await observer.nodes() == []
    await heartbeat.close()  # idempotent


async def _viewers_are(registry: NodeRegistry, node_id: str, viewers: int) -> bool:
    info = await registry.node(node_id)
    return info is not None and info.load.viewers == viewers


async def test_heartbeat_registers_again_after_the_registry_lost_it(backend: Backend) -> None:
    """As after a Redis restart without persistence: the next beat brings the node back."""
    registry = NodeRegistry(backend.client(), ttl_seconds=TTL, clock=backend.clock)
    observer = NodeRegistry(backend.client(), ttl_seconds=TTL, clock=backend.clock)
    async with Heartbeat(registry, lambda: node_info("origin-1", role="origin")):
        assert await observer.remove("origin-1") is True
        assert await observer.node("origin-1") is None
        await backend.wait(TTL / 3 + 0.1)
        await eventually(lambda: _is_listed(observer, "origin-1"))


async def _is_listed(registry: NodeRegistry, node_id: str) -> bool:
    return node_id in [n.node_id for n in await registry.nodes()]


async def test_heartbeat_failures_are_counted_and_beating_goes_on(backend: Backend) -> None:
    registry = NodeRegistry(backend.client(), ttl_seconds=TTL, clock=backend.clock, max_nodes=1)
    squatter = NodeRegistry(backend.client(), ttl_seconds=STABLE_TTL, clock=backend.clock)
    heartbeat = Heartbeat(registry, lambda: node_info("late"))
    await squatter.heartbeat(node_info("first"))
    with pytest.raises(RegistryFull):
        await heartbeat.start()  # the first beat's error reaches the caller
    await registry.remove("first")
    await heartbeat.start()
    try:
        # "first" takes the only place (the squatter's own bound is larger): once "late" is
        # gone, its beats fail
        await squatter.heartbeat(node_info("first"))
        await squatter.remove("late")
        await backend.wait(TTL)
        await eventually(lambda: _failed(heartbeat))
        assert await registry.node("late") is None
        await squatter.remove("first")
        await eventually(lambda: _is_listed(squatter, "late"))
        assert heartbeat.failures >= 1
    finally:
        await heartbeat.close()
    assert await squatter.node("late") is None


async def _failed(heartbeat: Heartbeat) -> bool:
    return heartbeat.failures > 0


async def test_heartbeat_on_an_unreachable_redis_fails_to_start() -> None:
    cache = RedisCache(UNREACHABLE_URL, prefix="rctest:", timeout=1)
    registry = NodeRegistry(cache, ttl_seconds=TTL)
    heartbeat = Heartbeat(registry, lambda: node_info("lonely"))
    try:
        with pytest.raises(CacheUnavailable, match=re.escape("127.0.0.1:1")):
            await heartbeat.start()
        with pytest.raises(CacheUnavailable):
            await registry.nodes()
        with pytest.raises(CacheUnavailable):
            await StreamOwnership(cache, ttl_seconds=TTL, node_id="lonely").claim("s")
    finally:
        await heartbeat.close()
        await cache.close()


async def test_memory_registry_expiry_is_exact_with_a_fake_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    registry = NodeRegistry(cache, ttl_seconds=5, clock=clock)
    stored = await registry.heartbeat(node_info("n1"))
    assert stored.heartbeat_at == clock.now
    clock.now += 4.999
    assert await registry.nodes() == [stored]
    clock.now += 0.001
    assert await registry.nodes() == []
    # both the record and the index are gone
    assert await cache.get(NODE_KEY_PREFIX + "n1") is None
    assert await cache.ttl(NODE_INDEX) is None
    await cache.close()


def test_node_info_refuses_unusable_fields() -> None:
    unusable: list[tuple[Callable[[], object], str]] = [
        (lambda: node_info(""), "node id ''"),
        (lambda: node_info("-leading-dash"), "starting with a letter or digit"),
        (lambda: node_info("a" * 65), "1-64 characters"),
        (lambda: node_info("has space"), "node id 'has space'"),
        (lambda: node_info("n", role="master"), "role 'master' is not one of"),
        (lambda: Addresses(http="http://x y"), "HTTP address"),
        (lambda: Addresses(rtmp="rtmp://" + "x" * 300), "at most 256"),
        (lambda: NodeLoad(viewers=-1), "viewers"),
        (lambda: NodeLoad(cpu=math.nan), "cpu"),
        (lambda: NodeLoad(egress_bps=-5), "egress_bps"),
        (lambda: node_info("n", version="1.0\n"), "version"),
        (lambda: node_info("n", started_at=-1.0), "started_at"),
    ]
    for make, reason in unusable:
        with pytest.raises(ClusterInputError, match=re.escape(reason)):
            make()
    assert node_info("a.b_c-9").node_id == "a.b_c-9"


def test_node_record_round_trips_and_refuses_malformed_json() -> None:
    info = node_info("edge-1", heartbeat_at=1_700_000_001.25, draining=True)
    assert NodeInfo.from_json(info.to_json()) == info
    assert len(info.to_json()) < 1024
    record = info.to_json()
    for broken, reason in (
        (b"[]", "not a JSON object"),
        (b"{", "not JSON"),
        (record.replace(b'"viewers":3', b'"viewers":true'), "'viewers' is not a int"),
        (record.replace(b'"viewers":3', b'"viewers":3.5'), "'viewers' is not a int"),
        (record.replace(b'"cpu":0.25', b'"cpu":"high"'), "'cpu' is not a number"),
        (record.replace(b'"role":"edge"', b'"role":"boss"'), "role 'boss'"),
        (record.replace(b'"internal":', b'"inside":'), "'internal' is not a JSON object"),
        (b" " * 5000, "5000 bytes"),
    ):
        with pytest.raises(ClusterInputError, match=reason):
            NodeInfo.from_json(broken)
    extended = record.replace(b'"v":1', b'"v":1,"added_later":[1,2]')
    assert NodeInfo.from_json(extended) == info


def test_registry_and_heartbeat_refuse_unusable_settings() -> None:
    cache = MemoryCache()
    for ttl in (0, -1, math.inf, math.nan):
        with pytest.raises(UsageError):
            NodeRegistry(cache, ttl_seconds=ttl)
    with pytest.raises(UsageError):
        NodeRegistry(cache, ttl_seconds=1, max_nodes=0)
    registry = NodeRegistry(cache, ttl_seconds=1)
    for interval in (0, 1, 2):
        with pytest.raises(UsageError):
            Heartbeat(registry, lambda: node_info("n"), interval=interval)
    with pytest.raises(UsageError):
        StreamOwnership(cache, ttl_seconds=10, node_id="n", fence_ttl_seconds=60)
    with pytest.raises(ClusterInputError):
        StreamOwnership(cache, ttl_seconds=10, node_id="bad id")


# -- stream ownership ------------------------------------------------------------------------


def ownership(backend: Backend, node_id: str, ttl: float = STABLE_TTL) -> StreamOwnership:
    return StreamOwnership(backend.client(), ttl_seconds=ttl, node_id=node_id)


async def test_claim_owner_release(backend: Backend) -> None:
    a = ownership(backend, "origin-a")
    b = ownership(backend, "origin-b")
    claim = await a.claim("news")
    assert claim == Claim("news", "origin-a", 1)
    assert await b.owner("news") == claim
    assert await b.is_current(claim) is True
    assert await b.claim("news") is None  # a second publisher elsewhere is refused
    assert await a.claim("news") is None  # and a node holds a name once
    assert await a.release(claim) is True  # frees the name at once
    assert await b.owner("news") is None
    assert await a.is_current(claim) is False
    again = await b.claim("news")
    assert again == Claim("news", "origin-b", 2)
    assert await a.release(claim) is False
    assert await a.owner("news") == again


async def test_each_stream_name_is_claimed_separately(backend: Backend) -> None:
    a = ownership(backend, "origin-a")
    b = ownership(backend, "origin-b")
    assert await a.claim("one") == Claim("one", "origin-a", 1)
    assert await b.claim("two") == Claim("two", "origin-b", 1)
    assert await a.claim("two") is None
    assert await b.claim("one") is None
    assert await a.owner("three") is None


async def test_concurrent_claims_have_exactly_one_winner(backend: Backend) -> None:
    contenders = [ownership(backend, f"origin-{i:02}") for i in range(20)]
    claims = await asyncio.gather(*(o.claim("race") for o in contenders))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert winners[0].token == 1
    assert await contenders[0].owner("race") == winners[0]
    # and again once the winner lets go: one new winner, with a larger token
    loser = next(o for o in contenders if o.node_id != winners[0].node_id)
    winner = next(o for o in contenders if o.node_id == winners[0].node_id)
    assert await loser.release(Claim("race", loser.node_id, 1)) is False
    assert await winner.release(winners[0]) is True
    claims = await asyncio.gather(*(o.claim("race") for o in contenders))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].token == 2


async def test_renewal_keeps_a_claim_past_its_ttl(backend: Backend) -> None:
    a = ownership(backend, "origin-a", LONG_TTL)
    b = ownership(backend, "origin-b", LONG_TTL)
    claim = await a.claim("long-show")
    assert claim is not None
    for _ in range(3):  # 1.5 TTLs in all
        await backend.advance(LONG_TTL / 2)
        assert await a.renew(claim) is True
    assert await b.claim("long-show") is None
    assert await b.owner("long-show") == claim
    await backend.advance(LONG_TTL + 0.1)  # no more renewals: it expires
    assert await b.owner("long-show") is None


async def test_a_stale_owner_learns_it_lost_the_stream(backend: Backend) -> None:
    a = ownership(backend, "origin-a", TTL)
    b = ownership(backend, "origin-b")
    old = await a.claim("show")
    assert old is not None
    await backend.advance(PAST_TTL)  # origin-a stalled past its TTL (GC pause, partition)
    assert await b.owner("show") is None
    new = await b.claim("show")
    assert new is not None and new.token > old.token
    assert await a.is_current(old) is False
    assert await a.renew(old) is False
    assert await a.release(old) is False
    assert await a.owner("show") == new
    assert await b.is_current(new) is True
    assert await b.renew(new) is True


async def test_an_old_claim_of_the_same_node_is_stale_too(backend: Backend) -> None:
    a = ownership(backend, "origin-a")
    first = await a.claim("show")
    assert first is not None and await a.release(first)
    second = await a.claim("show")
    assert second is not None and second.token > first.token
    assert await a.is_current(first) is False
    assert await a.renew(first) is False
    assert await a.release(first) is False
    assert await a.is_current(second) is True


async def test_after_expiry_the_next_claim_gets_a_larger_token(backend: Backend) -> None:
    nodes = [ownership(backend, f"origin-{i}", TTL) for i in range(3)]
    tokens = []
    for i in range(6):
        claim = await nodes[i % 3].claim("relay")
        assert claim is not None
        tokens.append(claim.token)
        await backend.advance(PAST_TTL)
    assert tokens == sorted(set(tokens)) and tokens[0] == 1


async def test_a_claim_of_another_node_cannot_be_renewed_or_released(backend: Backend) -> None:
    a = ownership(backend, "origin-a")
    b = ownership(backend, "origin-b")
    claim = await a.claim("show")
    assert claim is not None
    with pytest.raises(UsageError, match="origin-a"):
        await b.renew(claim)
    with pytest.raises(UsageError):
        await b.release(claim)
    assert await b.is_current(claim) is True


async def test_unusable_stream_names_are_refused(backend: Backend) -> None:
    a = ownership(backend, "origin-a")
    for name in ("", "a/b", "a b", "x" * 256, ".hidden", "-dash", "line\n", "ünï"):
        with pytest.raises(ClusterInputError):
            await a.claim(name)
        with pytest.raises(ClusterInputError):
            await a.owner(name)
    assert await a.claim("x" * 255) is not None
    short = StreamOwnership(
        backend.client(), ttl_seconds=STABLE_TTL, node_id="n", max_name_length=8
    )
    with pytest.raises(ClusterInputError, match="1-8 characters"):
        await short.claim("ninechars")


async def test_a_damaged_ownership_record_is_a_cluster_error(backend: Backend) -> None:
    cache = backend.client()
    a = StreamOwnership(cache, ttl_seconds=STABLE_TTL, node_id="origin-a")
    for value in (b"garbage", b"3 not a node id", b"4 \xff"):
        await cache.set(OWNER_KEY_PREFIX + "show", value, ttl=30)
        with pytest.raises(ClusterError, match="damaged"):
            await a.owner("show")
        assert await a.claim("show") is None  # still held: nobody can take it


# -- live directory --------------------------------------------------------------------------


def summary(name: str = "show", origin: str = "origin-a", **changes: object) -> StreamSummary:
    values: dict[str, object] = {
        "name": name,
        "origin": origin,
        "state": "live",
        "started_at": 1_699_999_500.25,
        "ingest_bitrate": 2_500_000.5,
        "publishes": 2,
        "video": VideoSummary("h264", "avc1.64001f", 1280, 720, 29.97),
        "audio": AudioSummary("aac", "mp4a.40.2", 48_000, 2),
        "viewers": ViewerCount(http_flv=3, rtmp=1, hls=0),
    }
    values.update(changes)
    return StreamSummary(**values)  # type: ignore[arg-type]


def directory(backend: Backend, ttl: float = STABLE_TTL, **kw: int) -> LiveDirectory:
    return LiveDirectory(backend.client(), ttl_seconds=ttl, clock=backend.clock, **kw)


async def test_a_published_summary_is_read_by_every_client(backend: Backend) -> None:
    origin = directory(backend)
    web = directory(backend)
    before = backend.clock()
    stored = await origin.publish(summary())
    await origin.publish(summary("alpha", video=None, audio=None, state="waiting"))
    assert before <= stored.updated_at <= backend.clock()
    assert stored == summary(updated_at=stored.updated_at)  # no edge: counts unchanged
    assert await web.names() == ["alpha", "show"]
    listed = await web.summaries(["show", "nosuch", "../x", "alpha"])
    assert [s.name for s in listed] == ["show", "alpha"]
    assert listed[0] == stored
    assert listed[1].video is None and listed[1].state == "waiting"
    assert await web.summary("nosuch") is None
    assert await web.summary("") is None  # not a stream name: not live either


async def test_edges_viewers_are_summed_and_their_upstreams_not_counted(backend: Backend) -> None:
    origin = directory(backend)
    edge_1, edge_2, web = directory(backend), directory(backend), directory(backend)
    await edge_1.report_viewers(
        "show", EdgeViewers("edge-1", ViewerCount(10, 2, 5), pulling_from="origin-a")
    )
    await edge_2.report_viewers(
        "show", EdgeViewers("edge-2", ViewerCount(1, 0, 0), pulling_from="origin-a")
    )
    # An edge still reading the stream's previous origin: its upstream is not one of ours.
    await edge_2.report_viewers(
        "other", EdgeViewers("edge-2", ViewerCount(4, 0, 0), pulling_from="origin-old")
    )
    assert [r.node_id for r in await web.edge_viewers("show")] == ["edge-1", "edge-2"]
    # The origin counts three HTTP-FLV readers: the two edges' upstreams and one viewer.
    stored = await origin.publish(summary(viewers=ViewerCount(http_flv=3, rtmp=1)))
    assert stored.viewers == ViewerCount(http_flv=1, rtmp=1)
    assert stored.edge_viewers == ViewerCount(11, 2, 5)
    assert stored.total_viewers == ViewerCount(12, 3, 5)
    assert (await web.summary("show")) == stored
    other = await origin.publish(summary("other", viewers=ViewerCount()))
    assert other.viewers == ViewerCount() and other.edge_viewers == ViewerCount(4, 0, 0)
    # Counts never go below zero when a report is newer than the origin's count.
    assert await edge_1.withdraw_viewers("show", "edge-1") is True
    assert await edge_1.withdraw_viewers("show", "edge-1") is False
    stored = await origin.publish(summary(viewers=ViewerCount()))
    assert stored.viewers == ViewerCount() and stored.edge_viewers == ViewerCount(1, 0, 0)


async def test_summaries_and_reports_expire_without_renewal(backend: Backend) -> None:
    origin = directory(backend, LONG_TTL)
    edge = directory(backend, LONG_TTL)
    await origin.publish(summary("quiet"))
    await origin.publish(summary("renewed"))
    await edge.report_viewers("renewed", EdgeViewers("edge-1", ViewerCount(7, 0, 0)))
    await backend.advance(LONG_TTL / 2)
    await origin.publish(summary("renewed"))
    await backend.advance(LONG_TTL / 2 + 0.1)
    assert await origin.names() == ["renewed"]
    assert await origin.summary("quiet") is None
    assert await origin.edge_viewers("renewed") == []  # the edge stopped reporting
    stored = await origin.publish(summary("renewed"))
    assert stored.edge_viewers == ViewerCount()
    await backend.advance(LONG_TTL + 0.1)
    assert await origin.names() == []


async def test_remove_unlists_only_the_summary_this_origin_wrote(backend: Backend) -> None:
    old = directory(backend)
    new = directory(backend)
    await old.publish(summary("show", origin="origin-a"))
    await old.publish(summary("gone", origin="origin-a"))
    assert await old.remove("gone") is True
    assert await old.remove("gone") is False
    # The publisher moved to origin-b, which published before origin-a noticed its stream end.
    taken = await new.publish(summary("show", origin="origin-b"))
    assert await old.remove("show") is False
    assert await new.names() == ["show"]
    assert await new.summary("show") == taken
    assert await new.remove("show") is True
    assert await old.names() == []


async def test_the_directory_is_bounded(backend: Backend) -> None:
    origin = directory(backend, LONG_TTL, max_streams=2, max_edges=1)
    await origin.publish(summary("a"))
    await origin.publish(summary("b"))
    with pytest.raises(DirectoryFull, match="2 streams"):
        await origin.publish(summary("c"))
    assert await origin.summary("c") is None
    await origin.publish(summary("b"))  # a listed stream may always be refreshed
    assert await origin.report_viewers("a", EdgeViewers("edge-1", ViewerCount())) is True
    assert await origin.report_viewers("a", EdgeViewers("edge-2", ViewerCount())) is False
    assert [r.node_id for r in await origin.edge_viewers("a")] == ["edge-1"]
    # More names than max_streams are read in several round trips, not refused.
    assert [s.name for s in await origin.summaries(["a", "b", "c", "a"])] == ["a", "b", "a"]
    short = directory(backend, max_name_length=4)
    with pytest.raises(ClusterInputError, match="1-4 characters"):
        await short.publish(summary("toolong"))


async def test_an_undecodable_summary_or_report_is_skipped_and_counted(backend: Backend) -> None:
    cache = backend.client()
    live = LiveDirectory(cache, ttl_seconds=STABLE_TTL, clock=backend.clock)
    await live.publish(summary("good"))
    for name, record in (
        ("garbage", b"\xff not json"),
        ("future", summary("future").to_json().replace(b'"v":1', b'"v":2')),
        ("impostor", summary("someone-else").to_json()),
        ("huge", b" " * (MAX_SUMMARY_BYTES + 1)),
        ("negative", summary("negative").to_json().replace(b'"viewers":[3,', b'"viewers":[-3,')),
    ):
        await cache.index_add(LIVE_INDEX, name, ttl=30, max_members=10)
        await cache.set(STREAM_KEY_PREFIX + name, record, ttl=30)
    names = await live.names()
    assert [s.name for s in await live.summaries(names)] == ["good"]
    assert live.invalid_records == 5
    await cache.index_add(VIEWERS_KEY_PREFIX + "good", "edge-x", ttl=30, max_members=10)
    await cache.set(VIEWERS_KEY_PREFIX + "good:edge-x", b"[]", ttl=30)
    assert await live.edge_viewers("good") == []
    assert live.invalid_records == 6


def test_summaries_refuse_values_the_directory_cannot_hold() -> None:
    for bad in (
        {"name": "a/b"},
        {"origin": "no spaces"},
        {"state": "ended"},
        {"started_at": math.nan},
        {"publishes": -1},
    ):
        with pytest.raises(ClusterInputError):
            summary(**bad)
    with pytest.raises(ClusterInputError):
        VideoSummary("h264", "avc1 with spaces")
    with pytest.raises(ClusterInputError):
        AudioSummary("x" * 65)
    with pytest.raises(ClusterInputError):
        ViewerCount(http_flv=-1)
    with pytest.raises(ClusterInputError):
        EdgeViewers("edge-1", ViewerCount(), pulling_from="bad id")
    whole = summary(edge_viewers=ViewerCount(1, 2, 3), updated_at=1_700_000_000.5)
    assert StreamSummary.from_json(whole.to_json()) == whole
    assert len(summary(name="x" * 255).to_json()) < MAX_SUMMARY_BYTES
