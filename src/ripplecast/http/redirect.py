"""`/redirect/live/...` and `/redirect/vod/...`: send a viewer to the least-loaded healthy edge.

For setups without a smart balancer: a player opens `/redirect/live/NAME.flv` (or an HLS
playlist, or a VOD path) on any node and gets a 302 to the same path, with the same query
string (signed-URL parameters included), on the edge `choose_edge` picks from the node
registry. The edge itself checks access; this endpoint only chooses where to go.

Invariants:
- The Location is always an edge's public HTTP base URL + "/" + a path that `check_media_path`
  accepted (letters, digits, `_ . -` in non-empty segments under `live/` or `vod/`, none
  starting with a dot) + the request's own query. Nothing else of the request reaches it, so a
  path cannot point the viewer at another host or climb out of `/live` or `/vod` (400).
- A registry listing is reused for `listing_seconds` (1 s): a burst of redirects costs one
  cache round trip, and concurrent requests that find no fresh listing share one fetch.
- No usable edge, or a registry that cannot be read: 503 with Retry-After. Every answer says
  `Cache-Control: no-store` (the choice is good for this request only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from ripplecast.cache import CacheError
from ripplecast.cluster import NodeInfo, NodeRegistry
from ripplecast.errors import ProtocolError
from ripplecast.http.api.problems import problem_response
from ripplecast.http.live import CORS
from ripplecast.live.names import printable

__all__ = [
    "DEFAULT_LISTING_SECONDS",
    "DEFAULT_MARGIN_FRACTION",
    "DEFAULT_MARGIN_VIEWERS",
    "MAX_MEDIA_PATH_LENGTH",
    "InvalidMediaPath",
    "RedirectRoutes",
    "check_media_path",
    "choose_edge",
    "eligible_edges",
    "usable_base_url",
]

log = logging.getLogger("ripplecast.http.redirect")

MAX_MEDIA_PATH_LENGTH = 1024
"""Longest path (after /redirect/) that is redirected: far above any real media path."""
DEFAULT_LISTING_SECONDS = 1.0
"""How long one registry listing answers redirects."""
DEFAULT_MARGIN_VIEWERS = 10
"""Edges with at most this many viewers more than the least loaded one share the load..."""
DEFAULT_MARGIN_FRACTION = 0.05
"""... or this fraction of its viewers more, when that is larger (see `choose_edge`)."""

MEDIA_ROOTS = ("live", "vod")
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_NO_STORE = {"Cache-Control": "no-store", **CORS}


class InvalidMediaPath(ProtocolError):
    """A redirect asked for a path that is not a plain media path; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="bad_path")


def check_media_path(path: str) -> str:
    """Return `path` (relative, e.g. "live/cam.flv") if it is safe to append to an edge's URL.

    Safe means: at most `MAX_MEDIA_PATH_LENGTH` characters; "live/" or "vod/" and then one or
    more non-empty segments of A-Z a-z 0-9 _ . -, none starting with a dot and none holding
    "..". So no empty segment (`//host`), no `.` or `..`, no backslash, scheme, `%`, control
    character or anything a browser could read as another host. Raises `InvalidMediaPath`.
    """
    if len(path) > MAX_MEDIA_PATH_LENGTH:
        raise InvalidMediaPath(f"path longer than {MAX_MEDIA_PATH_LENGTH} characters")
    root, _, rest = path.partition("/")
    if root not in MEDIA_ROOTS or not rest:
        raise InvalidMediaPath(
            f"path {printable(path)!r} is not under live/ or vod/ (e.g. live/NAME.flv)"
        )
    for segment in rest.split("/"):
        if not _SEGMENT.fullmatch(segment) or ".." in segment:
            raise InvalidMediaPath(
                f"path {printable(path)!r} has an empty, dotted or non A-Z a-z 0-9 _ . - segment"
            )
    return path


def usable_base_url(url: str) -> bool:
    """Whether `url` can start a redirect: http(s), a host, no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and not parts.query
        and not parts.fragment
        and "?" not in url
        and "#" not in url
    )


def eligible_edges(nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    """The nodes a viewer may be sent to, least loaded first.

    Edges (role "edge"); nodes of role "all" only when no edge is registered at all, so a
    cluster with dedicated edges never sends viewers to its origins, even while every edge
    drains. Of those, the ones not draining and with a usable public HTTP address, sorted by
    viewers, then egress bit/s, then node id.
    """
    role = "edge" if any(n.role == "edge" for n in nodes) else "all"
    usable = [
        n for n in nodes if n.role == role and not n.draining and usable_base_url(n.public.http)
    ]
    return sorted(usable, key=lambda n: (n.load.viewers, n.load.egress_bps, n.node_id))


def choose_edge(
    nodes: Sequence[NodeInfo],
    *,
    margin_viewers: int = DEFAULT_MARGIN_VIEWERS,
    margin_fraction: float = DEFAULT_MARGIN_FRACTION,
    pick: Callable[[Sequence[NodeInfo]], NodeInfo] = random.choice,
) -> NodeInfo | None:
    """The edge to send one viewer to, or None when no node is eligible (`eligible_edges`).

    The least loaded edge has the fewest viewers (then the least egress, then the smallest
    id). But the loads are as of each edge's last heartbeat, seconds old: every request in
    between sees the same figures, so always taking the minimum would send a whole burst of
    viewers to one edge (herding) and overshoot it by the burst's size. So `pick` (a uniform
    random choice by default) chooses among the eligible edges whose viewers are within
    max(`margin_viewers`, `margin_fraction` x the minimum) of the minimum; they come in
    least-loaded order, so `pick=lambda pool: pool[0]` is the strict minimum.

    Why this rather than power-of-two-choices: with stale loads, two random probes may both
    land on busy edges (it only ever avoids the busiest), while this bounds how far above the
    minimum any choice can be (the margin) and still spreads a burst evenly over the edges
    that are nearly as idle.
    """
    ranked = eligible_edges(nodes)
    if not ranked:
        return None
    least = ranked[0].load.viewers
    limit = least + max(margin_viewers, math.floor(least * margin_fraction))
    pool = [n for n in ranked if n.load.viewers <= limit]
    return pick(pool)


class RedirectRoutes:
    """`GET /redirect/{path}`: a 302 to the chosen edge (see the module docstring).

    `listing_seconds` is how long one registry listing is reused; `clock` is monotonic time
    for that; `pick` and the margins are passed to `choose_edge`.
    """

    def __init__(
        self,
        registry: NodeRegistry,
        *,
        listing_seconds: float = DEFAULT_LISTING_SECONDS,
        margin_viewers: int = DEFAULT_MARGIN_VIEWERS,
        margin_fraction: float = DEFAULT_MARGIN_FRACTION,
        pick: Callable[[Sequence[NodeInfo]], NodeInfo] = random.choice,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._listing_seconds = listing_seconds
        self._margin_viewers = margin_viewers
        self._margin_fraction = margin_fraction
        self._pick = pick
        self._clock = clock
        self._listing: list[NodeInfo] | None = None
        self._listed_at = 0.0
        self._fetch: asyncio.Task[list[NodeInfo]] | None = None
        # Until the registry can have changed: the next heartbeat of any node.
        self._retry_after = str(max(1, math.ceil(registry.ttl_seconds / 3)))
        self.redirected = 0
        """Viewers sent to an edge."""
        self.refused: dict[str, int] = {}
        """Requests answered with an error, by reason (bad_path, no_edge, registry_error)."""
        self.fetches = 0
        """Registry listings read (one per `listing_seconds` at most, under load)."""
        self._failing = False

    def register(self, app: web.Application) -> None:
        """Add the route to `app` (and the cleanup of a listing still being fetched)."""
        # Every path (newlines too), not only live/ and vod/: a hostile one gets a precise
        # 400, not a 404.
        app.router.add_get(r"/redirect/{path:[\s\S]*}", self.redirect)
        app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, _app: web.Application) -> None:
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, CacheError):
                await fetch

    def _refuse(self, request: web.Request, reason: str, message: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        path = printable(request.path, 128)
        log.info("redirect peer=%s %s refused: %s (%s)", request.remote, path, message, reason)

    async def nodes(self) -> list[NodeInfo]:
        """The registry's nodes, at most `listing_seconds` old. Raises `CacheError`."""
        if self._listing is not None and self._clock() - self._listed_at < self._listing_seconds:
            return self._listing
        if self._fetch is None:
            self._fetch = asyncio.create_task(self._read_registry(), name="redirect:registry")
        # Shielded: a viewer who hangs up must not cancel the fetch the others wait for.
        return await asyncio.shield(self._fetch)

    async def _read_registry(self) -> list[NodeInfo]:
        started = self._clock()
        try:
            nodes = await self._registry.nodes()
        except CacheError as exc:
            if not self._failing:  # once per outage, not once per viewer
                log.warning("redirect: cannot read the node registry: %s", exc)
            self._failing = True
            raise
        finally:
            self._fetch = None
        if self._failing:
            log.info("redirect: the node registry answers again")
        self._failing = False
        self.fetches += 1
        self._listing, self._listed_at = nodes, started
        return nodes

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """302 to the chosen edge; 400 for a hostile path; 503 when no edge can take it."""
        try:
            path = check_media_path(request.match_info["path"])
        except InvalidMediaPath as exc:
            self._refuse(request, "bad_path", str(exc))
            return problem_response(request, 400, str(exc), headers=_NO_STORE)
        unavailable = {"Retry-After": self._retry_after, **_NO_STORE}
        try:
            nodes = await self.nodes()
        except CacheError:
            self.refused["registry_error"] = self.refused.get("registry_error", 0) + 1
            return problem_response(
                request, 503, "the cluster registry cannot be read right now", headers=unavailable
            )
        edge = choose_edge(
            nodes,
            margin_viewers=self._margin_viewers,
            margin_fraction=self._margin_fraction,
            pick=self._pick,
        )
        if edge is None:
            self._refuse(request, "no_edge", "no healthy edge")
            return problem_response(
                request,
                503,
                "no healthy edge can take this viewer now (none registered, or all draining)",
                headers=unavailable,
            )
        location = edge.public.http.rstrip("/") + "/" + path
        # The query exactly as sent (yarl's would re-encode it): a signed URL's parameters
        # reach the edge byte for byte. It follows the "?", so it cannot change the host.
        query = request.raw_path.partition("?")[2].partition("#")[0]
        if query:
            location += "?" + query
        self.redirected += 1
        # Not web.HTTPFound: it passes the Location through yarl, which re-encodes the query.
        return web.Response(status=302, headers={"Location": location, **_NO_STORE})
