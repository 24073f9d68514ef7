"""Register, log in, CSRF, rate limits and API tokens over the real HTTP API."""

from __future__ import annotations

import aiohttp

from support import NodeFactory

JSON = {"Content-Type": "application/json"}


async def test_login_session_csrf_and_tokens(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys", login_max_failures_per_account=3) as node:
        api = f"{node.http}/api/v1"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                f"{api}/auth/register", json={"username": "gina", "password": "a long password"}
            ) as r:
                assert r.status == 201
                assert (await r.json())["role"] == "creator"  # the install's admin came first
            async with http.post(
                f"{api}/auth/register", json={"username": "gina", "password": "a long password"}
            ) as r:
                assert r.status == 409
            # Wrong passwords: 401, then the account is locked with a clear wait.
            for _ in range(3):
                async with http.post(
                    f"{api}/auth/login", json={"username": "gina", "password": "nope"}
                ) as r:
                    assert r.status == 401
                    assert r.content_type == "application/problem+json"
            async with http.post(
                f"{api}/auth/login", json={"username": "gina", "password": "a long password"}
            ) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) > 0
                assert "try again in" in (await r.json())["detail"]
        await node.node.cache.delete("login:user:gina")  # the window passes
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                f"{api}/auth/login", json={"username": "gina", "password": "a long password"}
            ) as r:
                assert r.status == 200
                login = await r.json()
                cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
            csrf = login["csrf_token"]
            async with http.get(f"{api}/auth/me") as r:
                assert (await r.json())["username"] == "gina"
            # A change with the cookie but without the CSRF token is refused.
            body = {"name": "ci", "scopes": ["read", "publish"]}
            async with http.post(f"{api}/tokens", json=body) as r:
                assert r.status == 403
            async with http.post(f"{api}/tokens", json=body, headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 201
                made = await r.json()
            token = made["token"]
            async with http.get(f"{api}/tokens") as r:
                listed = (await r.json())["items"]
            assert [t["name"] for t in listed] == ["ci"]
            assert token not in str(listed) and listed[0]["prefix"] == token[:10]
            async with http.post(f"{api}/tokens", json={"name": "x", "scopes": ["admin"]},
                                 headers={"X-CSRF-Token": csrf}) as r:  # fmt: skip
                assert r.status == 403  # a creator cannot mint admin tokens
        bearer = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            async with other.get(f"{api}/auth/me", headers=bearer) as r:
                assert (await r.json())["username"] == "gina"
            # Another user cannot revoke gina's token (it does not exist for them).
            await node.node.accounts.create_user("hank", "hank's password")
            hank = await node.node.logins.create_api_token(
                (await node.node.accounts.user("hank")).id,
                "t",
                ["publish"],  # type: ignore[list-item]
            )
            async with other.delete(
                f"{api}/tokens/{made['id']}", headers={"Authorization": f"Bearer {hank.token}"}
            ) as r:
                assert r.status == 404
            async with other.get(f"{api}/auth/me", headers=bearer) as r:
                assert r.status == 200
            # A bearer token needs no CSRF token; revoking it ends it.
            async with other.delete(f"{api}/tokens/{made['id']}", headers=bearer) as r:
                assert r.status == 204
            async with other.get(f"{api}/auth/me", headers=bearer) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_password_change_and_logout_end_sessions(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys") as node:
        api = f"{node.http}/api/v1"
        await node.node.accounts.create_user("ivy", "ivy's password")
        jars = [
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)),
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)),
        ]
        try:
            csrf = []
            for jar in jars:
                async with jar.post(
                    f"{api}/auth/login", json={"username": "ivy", "password": "ivy's password"}
                ) as r:
                    csrf.append((await r.json())["csrf_token"])
            change = {"current": "ivy's password", "new": "a better password"}
            async with jars[0].post(
                f"{api}/auth/password", json=change, headers={"X-CSRF-Token": csrf[0]}
            ) as r:
                assert r.status == 204
            async with jars[0].get(f"{api}/auth/me") as r:
                assert r.status == 200  # this session stays
            async with jars[1].get(f"{api}/auth/me") as r:
                assert r.status == 401  # the other one ended
            async with jars[0].post(f"{api}/auth/logout") as r:
                assert r.status == 204
            async with jars[0].get(f"{api}/auth/me") as r:
                assert r.status == 401
        finally:
            for jar in jars:
                await jar.close()


async def test_closed_registration_and_oversized_bodies(make_node: NodeFactory) -> None:
    async with make_node(registration_open=False, api_max_body_bytes=2048) as node:
        api = f"{node.http}/api/v1"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                f"{api}/auth/register", json={"username": "x", "password": "a long password"}
            ) as r:
                assert r.status == 403
            big = '{"username": "x", "password": "' + "p" * 5000 + '"}'
            async with http.post(f"{api}/auth/login", data=big, headers=JSON) as r:
                assert r.status == 413
                assert r.content_type == "application/problem+json"
