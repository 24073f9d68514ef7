"""The redirect endpoint's pure parts: which edge a viewer goes to, which paths may be appended
to an edge's URL, which base URLs are usable. Property tests over generated clusters and paths."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripplecast.cluster import ROLES, Addresses, NodeInfo, NodeLoad
from ripplecast.http.redirect import (
    MAX_MEDIA_PATH_LENGTH,
    InvalidMediaPath,
    check_media_path,
    choose_edge,
    eligible_edges,
    usable_base_url,
)


def node(
    node_id: str,
    viewers: int = 0,
    *,
    role: str = "edge",
    egress: int = 0,
    draining: bool = False,
    public: str | None = None,
) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        role=role,  # type: ignore[arg-type]
        internal=Addresses(http=f"http://10.0.0.1/{node_id}"),
        public=Addresses(http=f"https://{node_id}.example.com" if public is None else public),
        load=NodeLoad(viewers=viewers, egress_bps=egress),
        draining=draining,
    )


def first(pool: Sequence[NodeInfo]) -> NodeInfo:
    return pool[0]


nodes_strategy = st.lists(
    st.builds(
        node,
        st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True),
        st.integers(0, 2_000),
        role=st.sampled_from(ROLES),
        egress=st.integers(0, 10**9),
        draining=st.booleans(),
        public=st.sampled_from([None, "", "ftp://x.example.com", "http://u:p@x.example.com"]),
    ),
    max_size=12,
    unique_by=lambda n: n.node_id,
)


@given(nodes_strategy, st.integers(0, 50), st.floats(0, 0.5), st.randoms())
def test_the_choice_is_a_healthy_edge_within_the_margin_of_the_least_loaded(
    nodes: list[NodeInfo], margin: int, fraction: float, rng: random.Random
) -> None:
    pools: list[Sequence[NodeInfo]] = []

    def pick(pool: Sequence[NodeInfo]) -> NodeInfo:
        pools.append(pool)
        return rng.choice(pool)

    chosen = choose_edge(nodes, margin_viewers=margin, margin_fraction=fraction, pick=pick)
    has_edge = any(n.role == "edge" for n in nodes)
    healthy = [
        n
        for n in nodes
        if n.role == ("edge" if has_edge else "all")
        and not n.draining
        and usable_base_url(n.public.http)
    ]
    if not healthy:
        assert chosen is None and pools == []
        return
    assert chosen is not None
    assert chosen in healthy and not chosen.draining
    least = min(n.load.viewers for n in healthy)
    limit = least + max(margin, int(least * fraction))
    assert chosen.load.viewers <= limit
    # The pool is every healthy edge within the margin, least loaded first.
    (pool,) = pools
    assert sorted(pool, key=lambda n: n.node_id) == sorted(
        (n for n in healthy if n.load.viewers <= limit), key=lambda n: n.node_id
    )
    keys = [(n.load.viewers, n.load.egress_bps, n.node_id) for n in pool]
    assert keys == sorted(keys)


@given(nodes_strategy)
def test_without_margin_the_strict_least_loaded_edge_wins(nodes: list[NodeInfo]) -> None:
    chosen = choose_edge(nodes, margin_viewers=0, margin_fraction=0, pick=first)
    ranked = eligible_edges(nodes)
    assert chosen == (ranked[0] if ranked else None)
    if chosen is not None:
        assert all(
            (chosen.load.viewers, chosen.load.egress_bps, chosen.node_id)
            <= (n.load.viewers, n.load.egress_bps, n.node_id)
            for n in ranked
        )


def test_ties_break_on_egress_then_node_id() -> None:
    nodes = [node("c", 5, egress=10), node("b", 5, egress=20), node("a", 5, egress=10)]
    assert [n.node_id for n in eligible_edges(nodes)] == ["a", "c", "b"]
    assert choose_edge(nodes, margin_viewers=0, pick=first) == nodes[2]


def test_draining_and_addressless_edges_are_never_chosen() -> None:
    nodes = [
        node("idle-but-draining", 0, draining=True),
        node("no-public-http", 0, public=""),
        node("busy", 500),
    ]
    for _ in range(50):
        chosen = choose_edge(nodes)
        assert chosen is not None and chosen.node_id == "busy"
    assert choose_edge([node("only", 0, draining=True)]) is None
    assert choose_edge([]) is None


def test_all_in_one_nodes_serve_only_when_no_edge_is_registered() -> None:
    single_box = [node("box", 7, role="all"), node("origin", 0, role="origin")]
    chosen = choose_edge(single_box)
    assert chosen is not None and chosen.node_id == "box"
    # A cluster with edges never sends viewers elsewhere, even when every edge drains.
    with_edge = [*single_box, node("edge", 0, draining=True)]
    assert choose_edge(with_edge) is None
    assert choose_edge([node("w", role="worker"), node("o", role="origin")]) is None


def chosen_id(nodes: Sequence[NodeInfo], **options: Any) -> str:
    chosen = choose_edge(nodes, **options)
    assert chosen is not None
    return chosen.node_id


def test_a_burst_spreads_over_the_nearly_idle_edges() -> None:
    nodes = [node("a", 100), node("b", 104), node("c", 109), node("d", 111), node("e", 400)]
    rng = random.Random(7)
    options = {"margin_viewers": 10, "margin_fraction": 0.0, "pick": rng.choice}
    chosen = Counter(chosen_id(nodes, **options) for _ in range(3_000))
    assert set(chosen) == {"a", "b", "c"}  # d is 11 above the minimum, e far above
    assert min(chosen.values()) > 800  # about 1000 each: uniform over the pool
    # The margin grows with the load: 5 % of 1000 viewers is 50.
    big = [node("x", 1_000), node("y", 1_049), node("z", 1_051)]
    picked = {chosen_id(big, margin_viewers=10, pick=rng.choice) for _ in range(200)}
    assert picked == {"x", "y"}


GOOD_PATHS = [
    "live/cam.flv",
    "live/cam/index.m3u8",
    "live/cam/ll.m3u8",
    "live/my_cam-2.v1/42.ts",
    "vod/Ab3_-x/master.m3u8",
    "vod/Ab3_-x/720p/seg_00001.ts",
    "vod/abc/thumbs/sprite_001.jpg",
]
HOSTILE_PATHS = [
    "",
    "/evil.com",
    "//evil.com",
    "live",
    "live/",
    "live//evil.com",
    "live/a//evil.com",
    "live/../../x",
    "live/./cam.flv",
    "live/cam/..",
    "live/.hidden",
    "live/a..b.flv",
    "vod/..",
    "https://evil.com/x",
    "live/https://evil.com",
    "live/cam.flv?x=1",
    "live/cam.flv#x",
    "live/%2e%2e/x",
    "live/\\evil.com",
    "live/a\\..\\b",
    "live/a@evil.com",
    "live/cam\x00.flv",
    "live/cam\r\nSet-Cookie: x",
    "live/cam flv",
    "live/cäm.flv",
    "admin/users",
    "Live/cam.flv",
    "live/" + "a" * MAX_MEDIA_PATH_LENGTH,
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_media_paths_are_accepted_unchanged(path: str) -> None:
    assert check_media_path(path) == path


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidMediaPath) as refused:
        check_media_path(path)
    assert refused.value.reason == "bad_path"


@given(
    st.sampled_from(["live/", "vod/", "live", "/", ""]),
    st.text(alphabet=st.sampled_from("/.:@%?#\\ab_-\x00 "), max_size=40),
)
def test_an_accepted_path_always_stays_on_the_edge_and_under_live_or_vod(
    root: str, rest: str
) -> None:
    path = root + rest
    base = "https://edge-1.example.com:8443/prefix"
    try:
        check_media_path(path)
    except InvalidMediaPath:
        return
    location = base + "/" + path
    resolved = urlsplit(urljoin("https://origin.example.com/redirect/x", location))
    assert resolved.netloc == "edge-1.example.com:8443"
    assert resolved.path == "/prefix/" + path
    segments = path.split("/")
    assert segments[0] in ("live", "vod") and len(segments) >= 2
    assert all(s and not s.startswith(".") for s in segments)
    assert not resolved.query and not resolved.fragment


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        ("http://10.0.0.5:8080", True),
        ("https://edge.example.com", True),
        ("https://cdn.example.com/ripplecast/", True),
        ("", False),
        ("edge.example.com:8080", False),
        ("ftp://edge.example.com", False),
        ("javascript:alert(1)", False),
        ("http://", False),
        ("http://user:pass@edge.example.com", False),
        ("http://edge.example.com:notaport", False),
        ("http://edge.example.com/?x=1", False),
        ("http://edge.example.com/#x", False),
        ("http://edge.example.com?", False),
    ],
)
def test_usable_base_urls(url: str, usable: bool) -> None:
    assert usable_base_url(url) is usable
