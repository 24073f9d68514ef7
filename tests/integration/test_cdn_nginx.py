"""nginx (Debian's package) as a caching reverse proxy in front of a node, configured by
deploy/nginx/cdn.conf itself: many viewers cost the node one fetch per segment, live playback
through the cache stays current, and a private video plays from a signed URL while its path
without the signature stays refused, even with the signed copies in the cache.

The node counts what it answers (`LiveRoutes.served`, `VodRoutes.served`); nginx's access log
says, per viewer request, whether the node was asked (`upstream=`) and what the cache did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media import make_video
from ripplecast.http.app import LIVE_ROUTES, VOD_ROUTES
from ripplecast.live.hls import HlsPackager
from support import (
    REQUIRE_SERVICES,
    NodeFactory,
    Process,
    free_port,
    require_program,
    run,
    start_publisher,
    wait_until,
)
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

TEMPLATE = Path(__file__).parents[2] / "deploy" / "nginx" / "cdn.conf"
VIEWERS = 50
WATCH_SECONDS = 8.0
RELOAD_SECONDS = 0.5
"""How often a viewer reloads the live playlist (hls.js: half a target duration when stale)."""
TIMEOUT = aiohttp.ClientTimeout(total=15)


def nginx_program() -> str:
    """Debian installs nginx in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        message = "nginx is not installed (apt-get install nginx)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return found


def render_template(*, listen: str, origin: str, cache_dir: Path, log_dir: Path) -> str:
    """deploy/nginx/cdn.conf with its placeholders filled in (every one must be)."""
    text = TEMPLATE.read_text()
    for placeholder, value in {
        "@LISTEN@": listen,
        "@ORIGIN@": origin,
        "@CACHE_DIR@": str(cache_dir),
        "@LOG_DIR@": str(log_dir),
    }.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder the test does not know"
    return text


def main_config(prefix: Path, include: Path) -> str:
    """The nginx.conf around the template: everything nginx writes stays under `prefix`; one
    process, in the foreground, as the user running the tests (no root-owned default paths)."""
    temp = {
        name: prefix / "temp" / name
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    return f"""
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {include};
}}
"""


@dataclass(frozen=True)
class LogLine:
    method: str
    uri: str
    status: int
    cache: str
    upstream: str

    @property
    def asked_origin(self) -> bool:
        return self.upstream != "-"


_LOG_LINE = re.compile(
    r"^\S+ \S+ (?P<method>\S+) (?P<uri>\S+) (?P<status>\d+) cache=(?P<cache>\S+) "
    r"upstream=(?P<upstream>\S+) upstream_status=\S+$"
)


@dataclass
class Nginx:
    url: str
    log: Path
    process: Process

    def lines(self) -> list[LogLine]:
        found = []
        for raw in self.log.read_text().splitlines():
            matched = _LOG_LINE.match(raw)
            assert matched is not None, raw
            found.append(
                LogLine(
                    matched["method"],
                    matched["uri"],
                    int(matched["status"]),
                    matched["cache"],
                    matched["upstream"],
                )
            )
        return found

    def origin_fetches(self) -> Counter[str]:
        """Per URI, how many viewer requests nginx passed on to the node."""
        return Counter(line.uri for line in self.lines() if line.asked_origin)


@contextlib.asynccontextmanager
async def running_nginx(tmp_path: Path, origin_port: int) -> AsyncIterator[Nginx]:
    """nginx with deploy/nginx/cdn.conf in front of 127.0.0.1:`origin_port`, stopped after."""
    program = nginx_program()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    include = prefix / "cdn.conf"
    include.write_text(
        render_template(
            listen=f"127.0.0.1:{port}",
            origin=f"127.0.0.1:{origin_port}",
            cache_dir=prefix / "cache",
            log_dir=prefix,
        )
    )
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, include))
    # -e: even before reading the config, nginx writes nothing outside the prefix.
    argv = [program, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    code, out, err = await run([*argv, "-t"], timeout=20)
    assert code == 0, (out + err).decode()
    process = await Process.start(argv)
    try:
        await wait_listening(process, port, prefix / "error.log")
        yield Nginx(f"http://127.0.0.1:{port}", prefix / "ripplecast-cdn.log", process)
    finally:
        # QUIT: finish the requests in hand, then exit; killed if it takes too long.
        await process.kill(signal.SIGQUIT)
        await process.kill()


async def wait_listening(process: Process, port: int, error_log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        if process.proc.returncode is not None:
            log = await asyncio.to_thread(error_log.read_text)
            pytest.fail(f"nginx exited with {process.proc.returncode}: {log}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                pytest.fail("nginx did not listen within 10 s")
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


def packager_of(node: Any, name: str) -> HlsPackager | None:
    stream = node.hub.get(name)
    if stream is None:
        return None
    return next((x for x in stream.listeners if isinstance(x, HlsPackager)), None)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class LiveViewer:
    """Reloads the live playlist through the cache and fetches each new segment once."""

    sequences: list[int] = field(default_factory=list)
    """EXT-X-MEDIA-SEQUENCE of each playlist received."""
    lag: list[int] = field(default_factory=list)
    """Per reload: how many segments the origin had made beyond the newest one listed."""
    segments: dict[str, str] = field(default_factory=dict)
    """Segment URI -> digest of the bytes received."""
    playlist_requests: int = 0

    async def watch(
        self, http: aiohttp.ClientSession, cdn: str, packager: HlsPackager, until: float
    ) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            async with http.get(f"{cdn}/live/show/index.m3u8") as r:
                assert r.status == 200, await r.text()
                playlist = await r.text()
            self.playlist_requests += 1
            origin_newest = packager.segments[-1].sequence
            found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist)
            assert found is not None, playlist
            names = [line for line in playlist.splitlines() if line.endswith(".ts")]
            sequence = int(found[1])
            self.sequences.append(sequence)
            self.lag.append(origin_newest - (sequence + len(names) - 1))
            for name in names:
                if name not in self.segments:
                    async with http.get(f"{cdn}/live/show/{name}") as r:
                        assert r.status == 200, (name, r.status)
                        self.segments[name] = digest(await r.read())
            await asyncio.sleep(RELOAD_SECONDS)  # the player's reload timer


async def test_many_live_viewers_cost_the_origin_one_fetch_per_segment(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    # 2 s segments, a 3-segment playlist: it is fresh 1 s at a time, segments 12 s.
    async with make_node(hls_segment_seconds=2.0, hls_window_segments=3) as running:
        node = running.node
        routes = node.http_app[LIVE_ROUTES]
        async with (
            await start_publisher(running, "show", seconds=40),
            running_nginx(tmp_path, node.http_port) as cdn,
        ):
            await wait_until(
                lambda: (p := packager_of(node, "show")) is not None and len(p.segments) == 3,
                20,
                "a full live playlist",
            )
            packager = packager_of(node, "show")
            assert packager is not None
            made: dict[str, str] = {}

            def remember_origin_segments() -> None:
                for segment in packager.segments:
                    made.setdefault(segment.uri, digest(segment.data))

            remember_origin_segments()
            viewers = [LiveViewer() for _ in range(VIEWERS)]
            loop = asyncio.get_running_loop()
            started = loop.time()
            until = started + WATCH_SECONDS
            async with aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0)
            ) as http:
                watching = asyncio.gather(
                    *(viewer.watch(http, cdn.url, packager, until) for viewer in viewers)
                )
                while not watching.done():
                    remember_origin_segments()
                    await asyncio.wait([watching], timeout=0.2)
                await watching
            elapsed = loop.time() - started

        # Every viewer saw the same bytes the origin made, for every segment.
        fetched = {name for viewer in viewers for name in viewer.segments}
        for name in fetched:
            assert {viewer.segments[name] for viewer in viewers if name in viewer.segments} == {
                made[name]
            }, name
        by_everyone = [name for name in fetched if all(name in v.segments for v in viewers)]
        assert len(by_everyone) >= 4, (len(by_everyone), len(fetched))
        viewer_segment_requests = sum(len(viewer.segments) for viewer in viewers)

        # The node answered each segment once: nginx collapsed the viewers' requests.
        assert routes.served["segment"] == len(fetched), routes.served
        assert routes.served["segment_not_modified"] == 0
        origin = cdn.origin_fetches()
        for name in fetched:
            assert origin[f"/live/show/{name}"] == 1, name

        # Live stayed live: the cache asked the node for the playlist about once a second (it
        # is fresh for 1 s; nginx counts whole seconds, so 1 to 2 s), so a viewer's playlist
        # was at most a segment or two behind the origin's and kept moving on.
        playlist_requests = sum(viewer.playlist_requests for viewer in viewers)
        origin_playlists = routes.served["playlist"] + routes.served["playlist_not_modified"]
        assert origin_playlists == origin["/live/show/index.m3u8"]
        assert 2 <= origin_playlists <= elapsed + 3
        lags = Counter(lag for viewer in viewers for lag in viewer.lag)
        assert max(lags) <= 2, lags
        for viewer in viewers:
            assert viewer.sequences == sorted(viewer.sequences)
            assert viewer.sequences[-1] - viewer.sequences[0] >= 2, viewer.sequences
        print(
            f"\nlive through nginx: {VIEWERS} viewers, {len(fetched)} segments,"
            f" {viewer_segment_requests} segment requests -> {routes.served['segment']} at the"
            f" origin; {playlist_requests} playlist requests -> {origin_playlists} at the origin"
            f" ({routes.served['playlist_not_modified']} answered 304); segments behind the"
            f" origin per reload: {dict(sorted(lags.items()))}"
        )


async def fetch_video(
    http: aiohttp.ClientSession, base: str, master: str, query: str = ""
) -> dict[str, bytes]:
    """Every object a player reads for a one-rendition video: URI -> bytes."""
    got: dict[str, bytes] = {}

    async def read(uri: str) -> bytes:
        async with http.get(base + uri) as r:
            assert r.status == 200, (uri, r.status)
            got[uri] = await r.read()
            return got[uri]

    text = (await read(master)).decode()
    folder = master.split("?", 1)[0].rsplit("/", 1)[0]
    rendition = f"{folder}/" + text.strip().splitlines()[-1]
    media = (await read(rendition)).decode()
    rendition_folder = rendition.split("?", 1)[0].rsplit("/", 1)[0]
    for line in media.splitlines():
        if line and not line.startswith("#"):
            await read(f"{rendition_folder}/{line}")
    return got


async def test_vod_through_nginx_one_fetch_per_file_and_private_stays_private(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    require_program("ffmpeg")
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=3, size="320x240")
    # Shared caches revalidate public videos after 3 s (an hour by default), to see it happen.
    settings = {**VOD_SETTINGS, "vod_ladder": ["240:250k:48k"], "vod_cdn_max_age_seconds": 3}
    async with make_node(**settings) as running:
        node, api = running.node, f"{running.http}/api/v1"
        routes = node.http_app[VOD_ROUTES]
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession(
            timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0)
        ) as http:
            uploaded = [
                await upload_file(http, api, jill, source, visibility=visibility)
                for visibility in ("public", "private")
            ]
            assert [status for status, _ in uploaded] == [201, 201]
            public, private = [
                await wait_ready(http, api, jill, video["id"], 90) for _, video in uploaded
            ]
            async with running_nginx(tmp_path, node.http_port) as cdn:
                await check_public_video(http, cdn, routes, public["playlist"])
                await check_private_video(http, cdn, private, jill)
                await check_revalidation_and_withdrawal(http, cdn, routes, api, public, jill)


async def check_public_video(
    http: aiohttp.ClientSession, cdn: Nginx, routes: Any, master: str
) -> None:
    before = sum(routes.served.values())
    seen = await asyncio.gather(*(fetch_video(http, cdn.url, master) for _ in range(VIEWERS)))
    objects = set(seen[0])
    assert len(objects) >= 4  # master, media playlist, segments
    for uri in objects:
        assert len({digest(copy[uri]) for copy in seen}) == 1, uri
    # One request per object reached the node, however many viewers.
    assert sum(routes.served.values()) - before == len(objects), routes.served
    origin = cdn.origin_fetches()
    assert {uri: origin[uri] for uri in objects} == dict.fromkeys(objects, 1)
    # A byte range is cut from the cached copy, without asking the node.
    segment = next(uri for uri in objects if uri.endswith(".ts"))
    async with http.get(cdn.url + segment, headers={"Range": "bytes=188-375"}) as r:
        assert r.status == 206 and r.headers["X-Cache-Status"] == "HIT"
        assert await r.read() == seen[0][segment][188:376]
    assert sum(routes.served.values()) - before == len(objects)
    print(
        f"\nVOD through nginx: {VIEWERS} viewers x {len(objects)} objects ="
        f" {VIEWERS * len(objects)} requests -> {len(objects)} at the origin"
    )


async def check_private_video(
    http: aiohttp.ClientSession, cdn: Nginx, video: dict[str, Any], owner: dict[str, str]
) -> None:
    signed_master = video["playlist"]
    assert "rc_sig=" in signed_master
    path = signed_master.split("?", 1)[0]

    # The signed URL plays through the cache; a second viewer with it is served the copy.
    statuses, request_ids = [], set()
    for _ in range(2):
        async with http.get(cdn.url + signed_master) as r:
            assert r.status == 200
            statuses.append(r.headers["X-Cache-Status"])
            request_ids.add(r.headers["X-Request-Id"])
    assert statuses == ["MISS", "HIT"]
    assert len(request_ids) == 1  # a cached copy repeats the id of the request that filled it
    copies = await fetch_video(http, cdn.url, signed_master)
    signed_segment = next(uri for uri in copies if ".ts?" in uri)
    async with http.get(cdn.url + signed_segment) as r:
        assert r.status == 200 and r.headers["X-Cache-Status"] == "HIT"
    code, _, err = await run(
        ["ffmpeg", "-v", "error", "-i", cdn.url + signed_master, "-map", "0", "-f", "null", "-"],
        timeout=60,
    )
    assert code == 0 and err == b"", err.decode()

    # Without the signature: refused by the node every time, never served from the cache.
    unsigned_segment = signed_segment.split("?", 1)[0]
    for uri in (path, unsigned_segment, path, unsigned_segment):
        async with http.get(cdn.url + uri) as r:
            assert r.status == 404, uri
            assert r.headers["X-Cache-Status"] == "MISS", uri
            assert r.headers["Cache-Control"] == "no-store"
    forged = re.sub(r"rc_sig=[^&]+", "rc_sig=AAAA", signed_master)
    async with http.get(cdn.url + forged) as r:
        assert r.status == 403 and r.headers["X-Cache-Status"] == "MISS"

    # The owner's own requests pass through and are kept by nobody.
    for _ in range(2):
        async with http.get(cdn.url + path, headers=owner) as r:
            assert r.status == 200 and r.headers["X-Cache-Status"] == "MISS"
            assert r.headers["Cache-Control"].startswith("private")
    async with http.get(cdn.url + path) as r:
        assert r.status == 404 and r.headers["X-Cache-Status"] == "MISS"


async def cdn_status_when(
    http: aiohttp.ClientSession, url: str, done: Any, what: str, timeout: float = 10
) -> list[tuple[int, str]]:
    """Fetch `url` every 0.2 s until `done(status, cache_status)`; every answer, in order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    answers: list[tuple[int, str]] = []
    while True:
        async with http.get(url) as r:
            await r.read()
            answers.append((r.status, r.headers.get("X-Cache-Status", "")))
        if done(*answers[-1]):
            return answers
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}: {answers}")
        await asyncio.sleep(0.2)


async def check_revalidation_and_withdrawal(
    http: aiohttp.ClientSession,
    cdn: Nginx,
    routes: Any,
    api: str,
    video: dict[str, Any],
    owner: dict[str, str],
) -> None:
    master = cdn.url + video["playlist"]
    # Past its s-maxage the copy is revalidated with If-None-Match: the node answers 304.
    before = routes.served["not_modified"]
    answers = await cdn_status_when(
        http, master, lambda status, cache: cache == "REVALIDATED", "a revalidation"
    )
    assert all(answer == (200, "HIT") for answer in answers[:-1]), answers
    assert answers[-1][0] == 200 and routes.served["not_modified"] == before + 1
    # Made private, the video stops being served through the cache at the next revalidation,
    # within vod_cdn_max_age_seconds (3 s here; nginx counts whole seconds, so up to 4).
    async with http.patch(
        f"{api}/videos/{video['id']}", json={"visibility": "private"}, headers=owner
    ) as r:
        assert r.status == 200
    loop = asyncio.get_running_loop()
    made_private = loop.time()
    answers = await cdn_status_when(http, master, lambda status, cache: status == 404, "a 404")
    assert loop.time() - made_private <= 5
    assert all(answer == (200, "HIT") for answer in answers[:-1]), answers
