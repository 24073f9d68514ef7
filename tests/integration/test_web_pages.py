"""The web pages over real HTTP, without a browser: who sees what, forms, CSRF, escaping.

A real node on loopback; an aiohttp client with its own cookie jar plays the browser (forms are
posted as a browser posts them, CSRF token included). Media is made by ffmpeg on the spot and
published or uploaded for real. Playback itself is tested in Chromium (tests/browser).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from media import make_video
from ripplecast.accounts.policy import AccessRequest, Action, Credentials, Scope, Via
from ripplecast.db.models import Channel, Role, StreamKey, User, UserSession, Video, Visibility
from ripplecast.http.pages import FORM_COOKIE
from ripplecast.vod.uploads import Uploader
from ripplecast.web import default_vendor_dir
from support import (
    REQUIRE_SERVICES,
    NodeFactory,
    Process,
    RunningNode,
    ffmpeg_publish_args,
    require_program,
    wait_until,
)
from vod_support import VOD_SETTINGS, wait_ready

KEYS = {"publish_mode": "keys", "worker_enabled": False}
"""Stream keys required; no transcoding worker unless a test needs ready videos."""
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
_NEW_KEY = re.compile(r'<code id="new-key">([^<]+)</code>')


class Browser:
    """An HTTP client keeping cookies like a browser, with helpers for forms."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.token = ""

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            body = await r.text()
            headers = {k: v for k, v in r.headers.items() if k.lower() != "set-cookie"}
            headers["set-cookie"] = "\n".join(r.headers.getall("Set-Cookie", []))
            if token := _CSRF.search(body):
                self.token = html.unescape(token.group(1))
            return r.status, body, headers

    async def page(self, path: str) -> str:
        status, body, _ = await self.get(path)
        assert status == 200, (path, status, body[:500])
        return body

    async def post(
        self, path: str, data: dict[str, str] | aiohttp.FormData, *, token: str | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """POST a form; `token` is the CSRF token to send (default: the last page's)."""
        if isinstance(data, dict):
            data = {"csrf_token": self.token if token is None else token, **data}
            if token == "":
                del data["csrf_token"]
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as r:
            body = await r.text()
            headers = {k: v for k, v in r.headers.items() if k.lower() != "set-cookie"}
            headers["set-cookie"] = "\n".join(r.headers.getall("Set-Cookie", []))
            return r.status, body, headers

    async def login(self, username: str, password: str) -> None:
        await self.page("/login")
        status, body, headers = await self.post(
            "/login", {"username": username, "password": password, "next": "/dashboard"}
        )
        assert status == 303, body
        assert headers["Location"] == "/dashboard"
        await self.page("/dashboard")  # picks up the session's CSRF token


async def make_user(node: Any, username: str, role: Role = Role.CREATOR) -> str:
    password = f"{username} long password"
    await node.accounts.create_user(username, password, role=role)
    return password


async def signed_in(running: RunningNode, username: str, role: Role = Role.CREATOR) -> Browser:
    password = await make_user(running.node, username, role)
    browser = Browser(running.http)
    await browser.login(username, password)
    return browser


def without_inline_scripts(body: str) -> bool:
    """True if every <script> has a src (the CSP allows no inline script)."""
    return all(
        "src=" in tag or 'type="application/json"' in tag
        for tag in re.findall(r"<script[^>]*>", body)
    )


async def count(node: Any, model: Any, *where: Any) -> int:
    async with node.db.session() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)
        return int((await session.execute(query)).scalar_one())


# ----------------------------------------------------------------------------------------------


async def test_public_pages_render_with_a_strict_policy(make_node: NodeFactory) -> None:
    async with make_node(**KEYS) as running, Browser(running.http) as browser:
        for path in ("/", "/search?q=anything", "/search", "/login", "/register"):
            status, body, headers = await browser.get(path)
            assert status == 200, path
            assert headers["Content-Type"].startswith("text/html"), path
            policy = headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert without_inline_scripts(body), path
            assert '<a href="/login">Log in</a>' in body
        # The login form's CSRF token is bound to an HttpOnly, SameSite=Lax pre-login cookie.
        async with Browser(running.http) as fresh:
            _, body, headers = await fresh.get("/login")
        cookie = headers["set-cookie"]
        assert f"{FORM_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert 'type="hidden" name="csrf_token"' in body and '<label for="username">' in body
        assert '<button type="submit">Log in</button>' in body
        # Pages for signed-in users send anonymous visitors to the login form, and back.
        for path in ("/dashboard", "/dashboard/upload", "/dashboard/videos", "/admin"):
            status, _, headers = await browser.get(path)
            assert status == 303, path
            location = urlsplit(headers["Location"])
            assert location.path == "/login"
            assert parse_qs(location.query)["next"] == [path]
        status, _, headers = await browser.get("/account/password")
        assert status == 303
        # Unknown channels and videos are 404 pages.
        for path in ("/c/nosuch", "/c/.dot", "/v/nosuch", "/v/%3Cscript%3E"):
            status, body, _ = await browser.get(path)
            assert status == 404, path
            assert '<p class="error" role="alert">' in body
        # Static files: a fixed set of names, nothing else.
        status, css, headers = await browser.get("/static/app.css")
        assert status == 200 and headers["Content-Type"].startswith("text/css") and ".cards" in css
        for name in ("player.js", "upload.js", "dashboard.js"):
            assert (await browser.get(f"/static/{name}"))[0] == 200, name
        for path in ("/static/nosuch.js", "/static/..%2Fpages.py", "/static/vendor/nosuch.js"):
            assert (await browser.get(path))[0] == 404, path


async def test_player_libraries_come_from_npm(make_node: NodeFactory) -> None:
    vendor = default_vendor_dir()
    if not (vendor / "hls.js").is_dir():
        message = "web/node_modules is missing: run `npm ci --prefix web` (make does)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    async with make_node(**KEYS) as running, Browser(running.http) as browser:
        status, body, headers = await browser.get("/static/vendor/hls.min.js")
        assert status == 200 and "javascript" in headers["Content-Type"] and "Hls" in body
        status, body, _ = await browser.get("/static/vendor/hls.worker.js")
        assert status == 200
        status, body, _ = await browser.get("/static/vendor/mpegts.js")
        assert status == 200 and "mpegts" in body


async def test_the_player_libraries_folder_is_a_setting(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    vendor = tmp_path / "elsewhere" / "node_modules"
    (vendor / "hls.js" / "dist").mkdir(parents=True)
    (vendor / "hls.js" / "dist" / "hls.min.js").write_text("/* an installed copy */")
    async with (
        make_node(**KEYS, web_vendor_dir=vendor) as running,
        Browser(running.http) as browser,
    ):
        status, body, _ = await browser.get("/static/vendor/hls.min.js")
        assert status == 200 and body == "/* an installed copy */"
        status, _, _ = await browser.get("/static/vendor/mpegts.js")
        assert status == 404  # not in that folder


async def test_register_login_create_channel_key_shown_once(make_node: NodeFactory) -> None:
    require_program("ffmpeg")
    async with make_node(**KEYS) as running, Browser(running.http) as browser:
        node = running.node
        await make_user(node, "root", Role.ADMIN)  # so the new account is not the first
        await browser.page("/register")
        status, body, headers = await browser.post(
            "/register",
            {"username": "nina", "password": "correct horse battery", "confirm": "nope"},
        )
        assert status == 422 and "The two passwords differ." in body
        status, body, headers = await browser.post(
            "/register",
            {
                "username": "nina",
                "password": "correct horse battery",
                "confirm": "correct horse battery",
            },
        )
        assert status == 303, body
        assert headers["Location"] == "/login?registered=nina"
        body = await browser.page(headers["Location"])
        assert 'value="nina"' in body and "Account created" in body
        status, body, headers = await browser.post(
            "/login", {"username": "nina", "password": "correct horse battery", "next": "/"}
        )
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["set-cookie"]
        assert "rc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        body = await browser.page("/dashboard")
        assert "nina" in body and "You have no channel yet" in body
        assert '<a href="/admin">' not in body  # a creator sees no admin link

        status, body, _ = await browser.post(
            "/dashboard/channels",
            {
                "slug": "ninas-show",
                "title": "Nina's show",
                "description": "",
                "visibility": "public",
            },
        )
        assert status == 200, body
        found = _NEW_KEY.search(body)
        assert found is not None and found.group(1).startswith("rck_")
        key = found.group(1)
        assert 'id="copy-key"' in body
        assert f'<code id="obs-key">{key}</code>' in body
        server = f'<code id="obs-server">rtmp://localhost:{node.rtmp_port}/live</code>'
        assert server in body
        assert '<canvas id="stats-chart"' in body
        assert 'data-status-url="/api/v1/streams/ninas-show"' in body
        # Shown once: the next view of the dashboard has only the key's last characters.
        body = await browser.page("/dashboard")
        assert key not in body and f"…{key[-4:]}" in body and 'id="new-key"' not in body

        # The key publishes, and the home page lists the channel live.
        url = f"rtmp://127.0.0.1:{node.rtmp_port}/live/{key}"
        async with await Process.start(ffmpeg_publish_args(url, seconds=20)):
            await wait_until(
                lambda: node.hub.get("ninas-show") is not None, 10, "the channel to go live"
            )
            home = await browser.page("/")
            assert 'class="live-channel" data-slug="ninas-show" href="/c/ninas-show"' in home
            async with Browser(running.http) as anonymous:
                assert 'data-slug="ninas-show"' in await anonymous.page("/")
                watch = await anonymous.page("/c/ninas-show")
            assert '<video id="player" muted playsinline' in watch
            assert (
                'data-live="true"' in watch
                and '<div id="offline" class="offline-slate" hidden>' in watch
            )

            # Rotate: a new key is shown once; the old one is refused from now on.
            body = await browser.page("/dashboard?channel=ninas-show")
            key_id = re.search(r"/keys/(\d+)/rotate", body)
            assert key_id is not None
            status, body, _ = await browser.post(
                f"/dashboard/channels/ninas-show/keys/{key_id.group(1)}/rotate", {}
            )
            assert status == 200, body
            rotated = _NEW_KEY.search(body)
            assert rotated is not None and rotated.group(1) != key

            async def may_publish(stream_key: str) -> bool:
                decision = await node.access.authorize(
                    AccessRequest(
                        Action.PUBLISH, "/live", Via.RTMP, Credentials(stream_key=stream_key)
                    )
                )
                return decision.allowed

            assert not await may_publish(key)
            assert await may_publish(rotated.group(1))
        # Log out: the session is gone.
        status, _, headers = await browser.post("/logout", {})
        assert status == 303 and headers["Location"] == "/"
        assert (await browser.get("/dashboard"))[0] == 303
        assert await count(node, UserSession) == 0


async def test_every_form_refuses_a_missing_or_wrong_csrf_token(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=1, size="160x120")
    async with make_node(**KEYS) as running:
        node = running.node
        admin = await signed_in(running, "boss", Role.ADMIN)
        creator = await signed_in(running, "cara")
        other = await signed_in(running, "otto")
        await node.accounts.create_channel("cara", "caras")
        made = await node.accounts.create_stream_key("caras")

        async def chunks() -> AsyncIterator[bytes]:
            yield source.read_bytes()

        cara = await node.accounts.user("cara")
        video = await node.uploads.upload(Uploader(cara.id), chunks(), filename="clip.mp4")

        async def snapshot() -> tuple[Any, ...]:
            async with node.db.session() as session:
                channels = (await session.execute(select(Channel.slug, Channel.title))).all()
                keys = (await session.execute(select(StreamKey.id, StreamKey.revoked_at))).all()
                users = (
                    await session.execute(
                        select(User.username, User.role, User.disabled, User.password_hash)
                    )
                ).all()
                videos = (await session.execute(select(Video.public_id, Video.title))).all()
                sessions = (
                    await session.execute(select(func.count()).select_from(UserSession))
                ).scalar_one()
            return (sorted(channels), sorted(keys), sorted(users), sorted(videos), sessions)

        before = await snapshot()
        await creator.page("/dashboard")
        await admin.page("/admin")
        forms: list[tuple[Browser, str, dict[str, str]]] = [
            (creator, "/logout", {}),
            (
                creator,
                "/account/password",
                {"current": "cara long password", "new": "x" * 12, "confirm": "x" * 12},
            ),
            (
                creator,
                "/dashboard/channels",
                {"slug": "evil", "title": "t", "visibility": "public"},
            ),
            (
                creator,
                "/dashboard/channels/caras/edit",
                {"title": "owned", "visibility": "private"},
            ),
            (creator, "/dashboard/channels/caras/delete", {}),
            (creator, "/dashboard/channels/caras/keys", {"label": "x"}),
            (creator, f"/dashboard/channels/caras/keys/{made.id}/rotate", {}),
            (creator, f"/dashboard/channels/caras/keys/{made.id}/revoke", {}),
            (
                creator,
                f"/dashboard/videos/{video.public_id}/edit",
                {"title": "owned", "visibility": "public"},
            ),
            (creator, f"/dashboard/videos/{video.public_id}/delete", {}),
            (creator, f"/dashboard/videos/{video.public_id}/retry", {}),
            (admin, f"/admin/users/{cara.id}", {"role": "viewer", "disabled": "1"}),
            (admin, "/admin/streams/caras/kick", {}),
            (admin, f"/admin/jobs/{video.public_id}/retry", {}),
        ]
        for browser, path, data in forms:
            for token in ("", other.token, "0" * 64):
                status, body, _ = await browser.post(path, data, token=token)
                assert status == 403, (path, token, status, body[:300])
                assert "This form has expired" in body, path
        # Anonymous forms: the token is bound to the pre-login cookie.
        async with Browser(running.http) as stranger:
            await stranger.page("/login")
            for path, data in (
                ("/login", {"username": "cara", "password": "cara long password"}),
                ("/register", {"username": "mallory", "password": "y" * 12, "confirm": "y" * 12}),
            ):
                for token in ("", creator.token, "0" * 64):
                    status, _, headers = await stranger.post(path, data, token=token)
                    assert status == 403, (path, token)
                    assert "rc_session" not in headers["set-cookie"]
        # The upload form without JavaScript: no token, or the file before the token.
        for fields in (
            [("title", "t"), ("file", source)],
            [("file", source), ("csrf_token", creator.token)],
            [("csrf_token", other.token), ("file", source)],
        ):
            form = aiohttp.FormData()
            for name, value in fields:
                if isinstance(value, Path):
                    form.add_field(name, value.read_bytes(), filename="clip.mp4")
                else:
                    form.add_field(name, value)
            status, _, _ = await creator.post("/dashboard/upload", form)
            assert status == 403, fields
        assert await snapshot() == before
        for browser in (admin, creator, other):
            await browser.__aexit__()


async def test_login_form_shows_the_rate_limit(make_node: NodeFactory) -> None:
    async with make_node(**KEYS, login_max_failures_per_account=3) as running:
        await make_user(running.node, "lena")
        async with Browser(running.http) as browser:
            await browser.page("/login")
            for _ in range(3):
                status, body, _ = await browser.post(
                    "/login", {"username": "lena", "password": "wrong password"}
                )
                assert status == 422
                assert '<p class="error" role="alert">Invalid user name or password.</p>' in body
            status, body, headers = await browser.post(
                "/login", {"username": "lena", "password": "lena long password"}
            )
            assert status == 429
            found = re.search(
                r'<p class="error" role="alert">Too many failed logins: try again in (\d+) s</p>',
                body,
            )
            assert found is not None, body
            assert 0 < int(found.group(1)) <= 900
            assert headers["Retry-After"] == found.group(1)
            assert "rc_session" not in headers["set-cookie"]


async def test_login_goes_back_to_a_page_of_this_site_only(make_node: NodeFactory) -> None:
    async with make_node(**KEYS) as running:
        password = await make_user(running.node, "ivan")
        for target, expected in (
            ("/dashboard/videos", "/dashboard/videos"),
            ("/search?q=a+b", "/search?q=a+b"),
            ("//evil.example/x", "/dashboard"),
            ("/\\evil.example", "/dashboard"),
            ("https://evil.example/", "/dashboard"),
            ("javascript:alert(1)", "/dashboard"),
        ):
            async with Browser(running.http) as browser:
                body = await browser.page("/login?next=" + quote(target))
                assert f'name="next" value="{html.escape(expected)}"' in body, target
                status, _, headers = await browser.post(
                    "/login", {"username": "ivan", "password": password, "next": target}
                )
                assert status == 303 and headers["Location"] == expected, target


async def test_change_password(make_node: NodeFactory) -> None:
    async with make_node(**KEYS) as running:
        browser = await signed_in(running, "paul")
        async with browser:
            body = await browser.page("/account/password")
            assert '<label for="current">' in body
            status, body, _ = await browser.post(
                "/account/password",
                {
                    "current": "wrong",
                    "new": "a new long password",
                    "confirm": "a new long password",
                },
            )
            assert status == 422 and "the current password is wrong" in body
            status, _, headers = await browser.post(
                "/account/password",
                {
                    "current": "paul long password",
                    "new": "a new long password",
                    "confirm": "a new long password",
                },
            )
            assert status == 303
            assert "Password changed" in await browser.page(headers["Location"])
        async with Browser(running.http) as again:
            await again.login("paul", "a new long password")


async def test_upload_without_javascript_creates_a_video(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    source = tmp_path / "holiday.mp4"
    await asyncio.to_thread(make_video, source, seconds=1, size="160x120")
    async with make_node(**KEYS) as running:
        node = running.node
        browser = await signed_in(running, "uma")
        async with browser:
            body = await browser.page("/dashboard/upload")
            for marker in (
                '<form id="upload-form"',
                'enctype="multipart/form-data"',
                '<input id="file" name="file" type="file"',
                '<progress id="upload-progress" max="100"',
                'id="upload-status"',
            ):
                assert marker in body, marker
            form = aiohttp.FormData()
            form.add_field("csrf_token", browser.token)
            form.add_field("title", "Holiday")
            form.add_field("description", "At the sea")
            form.add_field("visibility", "unlisted")
            form.add_field(
                "file", source.read_bytes(), filename="holiday.mp4", content_type="video/mp4"
            )
            status, _, headers = await browser.post("/dashboard/upload", form)
            assert status == 303 and headers["Location"] == "/dashboard/videos?msg=uploaded"
            async with node.db.session() as session:
                video = (await session.execute(select(Video))).scalar_one()
            assert (video.title, video.description, video.visibility) == (
                "Holiday",
                "At the sea",
                "unlisted",
            )
            assert video.source_name == "holiday.mp4" and video.width == 160
            body = await browser.page(headers["Location"])
            assert "Upload complete" in body
            assert f'data-video="{video.public_id}"' in body and 'class="job-progress"' in body

            # Not media: refused with the probe's reason, nothing kept.
            junk = aiohttp.FormData()
            junk.add_field("csrf_token", browser.token)
            junk.add_field("title", "junk")
            junk.add_field("visibility", "public")
            junk.add_field("file", b"this is not a video" * 100, filename="junk.mp4")
            status, body, _ = await browser.post("/dashboard/upload", junk)
            assert status == 422 and '<p class="error" role="alert">' in body
            assert await count(node, Video) == 1

            # Edit and delete from the list.
            vid = video.public_id
            status, _, _ = await browser.post(
                f"/dashboard/videos/{vid}/edit",
                {"title": "Holiday 2", "description": "", "visibility": "private"},
            )
            assert status == 303
            async with node.db.session() as session:
                edited = (await session.execute(select(Video))).scalar_one()
            assert edited.title == "Holiday 2" and edited.visibility == "private"
            status, _, headers = await browser.post(f"/dashboard/videos/{vid}/delete", {})
            assert status == 303 and headers["Location"] == "/dashboard/videos?msg=video-deleted"
            assert await count(node, Video) == 0


async def test_admin_pages_are_for_admins(make_node: NodeFactory) -> None:
    async with make_node(**KEYS, secret_key="a-very-secret-value-1234") as running:
        node = running.node
        admin = await signed_in(running, "ada", Role.ADMIN)
        creator = await signed_in(running, "carl")
        carl = await node.accounts.user("carl")
        async with admin, creator:
            status, body, _ = await creator.get("/admin")
            assert status == 403 and "for administrators" in body
            await creator.page("/dashboard")
            status, _, _ = await creator.post(
                f"/admin/users/{carl.id}", {"role": "admin", "disabled": ""}
            )
            assert status == 403
            assert (await node.accounts.user("carl")).role == Role.CREATOR

            body = await admin.page("/admin")
            for section in ('id="users"', 'id="streams"', 'id="jobs"', 'id="settings"'):
                assert section in body, section
            assert "a-very-secret-value-1234" not in body
            assert re.search(r"<code>secret_key</code></th><td><code>\*\*\*</code>", body)
            status, _, headers = await admin.post(
                f"/admin/users/{carl.id}", {"role": "viewer", "disabled": "1"}
            )
            assert status == 303 and headers["Location"] == "/admin?msg=user-saved"
            changed = await node.accounts.user("carl")
            assert changed.role == Role.VIEWER and changed.disabled
            # A disabled account's session no longer opens pages.
            assert (await creator.get("/dashboard"))[0] == 303
            status, body, _ = await admin.post(
                f"/admin/users/{(await node.accounts.user('ada')).id}", {"role": "viewer"}
            )
            assert status == 422 and "their own account" in body


async def test_admin_kicks_a_live_stream(make_node: NodeFactory) -> None:
    require_program("ffmpeg")
    async with make_node(**KEYS) as running:
        node = running.node
        admin = await signed_in(running, "ada", Role.ADMIN)
        await node.accounts.create_channel("ada", "loud")
        key = (await node.accounts.create_stream_key("loud")).key
        async with (
            admin,
            await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=30)
            ) as publisher,
        ):
            await wait_until(lambda: node.hub.get("loud") is not None, 10, "stream loud")
            body = await admin.page("/admin")
            assert 'data-stream="loud"' in body
            status, _, headers = await admin.post("/admin/streams/loud/kick", {})
            assert status == 303 and headers["Location"] == "/admin?msg=stream-kicked"
            await wait_until(lambda: node.hub.get("loud") is None, 5, "the stream to end")
            code, _, _ = await publisher.wait(10)
            assert code != 0  # ffmpeg saw its connection closed
            assert 'data-stream="loud"' not in await admin.page("/admin")


async def test_private_channel_and_video_pages(make_node: NodeFactory, tmp_path: Path) -> None:
    source = tmp_path / "secret.mp4"
    await asyncio.to_thread(make_video, source, seconds=2, size="640x360")
    async with make_node(**VOD_SETTINGS) as running:
        node = running.node
        owner = await signed_in(running, "olga")
        await node.accounts.create_channel(
            "olga", "hidden", title="Hidden", visibility=Visibility.PRIVATE
        )
        await node.accounts.create_channel("olga", "open", title="Open show")
        async with owner, Browser(running.http) as anonymous:
            for path in ("/c/hidden", "/c/hidden?p=flv"):
                status, body, _ = await anonymous.get(path)
                assert status == 404 and "Hidden" not in body
            body = await owner.page("/c/hidden?p=flv")
            assert 'data-protocol="flv"' in body
            hls_url = re.search(r'data-hls-url="([^"]+)"', body)
            assert hls_url is not None and "rc_sig=" in html.unescape(hls_url.group(1))
            assert '<div id="offline" class="offline-slate">' in body  # not live: the slate
            assert '<option value="hls">HLS</option>' in body
            assert '<option value="flv" selected>' in body
            assert '<select id="quality">' in body and 'id="live-indicator"' in body
            assert 'id="delay"' in body
            # A public channel's page has plain media URLs.
            body = await anonymous.page("/c/open")
            assert 'data-hls-url="/live/open/index.m3u8"' in body and 'data-protocol="hls"' in body

            # A private video: the owner's page plays it with signed URLs; strangers get 404.
            form = aiohttp.FormData()
            form.add_field("csrf_token", owner.token)
            form.add_field("title", "Secret video")
            form.add_field("visibility", "private")
            form.add_field("file", source.read_bytes(), filename="secret.mp4")
            assert (await owner.post("/dashboard/upload", form))[0] == 303
            async with node.db.session() as session:
                video_id = (await session.execute(select(Video.public_id))).scalar_one()
            status, body, _ = await anonymous.get(f"/v/{video_id}")
            assert status == 404
            processing = await owner.page(f"/v/{video_id}")
            assert 'class="job-progress"' in processing and "<video" not in processing
            user = await node.accounts.user("olga")
            token = await node.logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
            ready = await wait_ready(
                anonymous.http,
                f"{running.http}/api/v1",
                {"Authorization": f"Bearer {token.token}"},
                video_id,
                90,
            )
            assert ready["state"] == "ready", ready
            assert (await anonymous.get(f"/v/{video_id}"))[0] == 404
            body = await owner.page(f"/v/{video_id}")
            src = re.search(r'data-src="([^"]+)"', body)
            assert src is not None
            master = html.unescape(src.group(1))
            assert master.startswith(f"/vod/{video_id}/master.m3u8?") and "rc_sig=" in master
            assert 'poster="/vod/' in body and '<div id="scrub-preview"' in body
            assert '<input type="range" id="seek"' in body
            assert re.findall(r'<option value="(\w+)" data-height', body) == ["360p", "240p"]
            async with aiohttp.ClientSession() as stranger:
                async with stranger.get(running.http + master) as r:
                    assert r.status == 200 and "#EXTM3U" in await r.text()
                async with stranger.get(f"{running.http}/vod/{video_id}/master.m3u8") as r:
                    assert r.status == 404

            # Made public: anyone watches it, and it is on the home page and in search.
            status, _, _ = await owner.post(
                f"/dashboard/videos/{video_id}/edit",
                {"title": "Secret video", "description": "", "visibility": "public"},
            )
            assert status == 303
            body = await anonymous.page(f"/v/{video_id}")
            assert f'data-src="/vod/{video_id}/master.m3u8"' in body
            card = f'<a class="video-card" data-video="{video_id}" href="/v/{video_id}">'
            assert card in await anonymous.page("/")
            assert card in await anonymous.page("/search?q=secret")
            assert card not in await anonymous.page("/search?q=nothing-like-it")
            assert 'data-slug="open"' in await anonymous.page("/search?q=open")
            assert 'data-slug="hidden"' not in await anonymous.page("/search?q=hidden")


async def test_hostile_text_is_escaped_everywhere(make_node: NodeFactory, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=1, size="160x120")
    async with make_node(**KEYS) as running:
        node = running.node
        await make_user(node, "root", Role.ADMIN)
        browser = await signed_in(running, "hank")
        async with browser:
            await browser.page("/dashboard")
            status, body, _ = await browser.post(
                "/dashboard/channels",
                {"slug": "hank", "title": HOSTILE, "description": HOSTILE, "visibility": "public"},
            )
            assert status == 200
            form = aiohttp.FormData()
            form.add_field("csrf_token", browser.token)
            form.add_field("title", HOSTILE)
            form.add_field("description", HOSTILE)
            form.add_field("visibility", "public")
            form.add_field("file", source.read_bytes(), filename=HOSTILE + ".mp4")
            assert (await browser.post("/dashboard/upload", form))[0] == 303
            async with node.db.session() as session:
                video_id = (await session.execute(select(Video.public_id))).scalar_one()
            pages = [
                body,
                await browser.page("/dashboard"),
                await browser.page("/c/hank"),
                await browser.page("/dashboard/videos"),
                await browser.page(f"/v/{video_id}"),
                await browser.page("/search?q=" + quote(HOSTILE)),
                await browser.page("/search?q=script"),
            ]
            # A hostile user name cannot be made (the rule is letters, digits and _.-).
            status, body, _ = await browser.post(
                "/dashboard/channels", {"slug": HOSTILE, "title": ""}
            )
            assert status == 422
            pages.append(body)
            for page in pages:
                assert "<script>alert" not in page
                assert "<img src=x" not in page
                assert without_inline_scripts(page)
            assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in page for page in pages)


def test_vendor_dir_is_the_source_tree() -> None:
    """`default_vendor_dir` is web/node_modules of this checkout (where `make` installs)."""
    root = Path(__file__).resolve().parents[2]
    assert default_vendor_dir() == root / "web" / "node_modules"
    assert (root / "web" / "package-lock.json").is_file()
    assert os.path.isfile(root / "web" / "package.json")
