"""Hostile text and oversized bodies in every field the API accepts, on every engine.

Each value is either stored and read back verbatim (it is data, never SQL) or refused with a
problem+json 4xx; a refusal changes nothing in the database, and no value reaches a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from sqlalchemy import func, select

from ripplecast.db.models import Base
from support import NodeFactory

HOSTILE = (
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "1); DELETE FROM channels WHERE (1=1",
    "%' UNION SELECT password_hash FROM users --",
    "'; SELECT pg_sleep(10); --",
    "\\'; SELECT SLEEP(10); #",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "a\r\nSet-Cookie: rc_session=forged",
    "nul\x00byte",
    "ümlaut 漢字 🎥 \u202ertl",
)

Snapshot = dict[str, int]


async def snapshot(node: Any) -> Snapshot:
    """Row counts of every table: a refused request must leave them as they were."""
    counts: Snapshot = {}
    async with node.db.session() as session:
        for table in Base.metadata.sorted_tables:
            counts[table.name] = (
                await session.execute(select(func.count()).select_from(table))
            ).scalar_one()
    return counts


async def test_hostile_text_in_every_field(make_node: NodeFactory) -> None:
    overrides = {"login_max_failures_per_account": 1000, "login_max_failures_per_ip": 1000}
    async with make_node(**overrides) as running:
        node, api = running.node, f"{running.http}/api/v1"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                f"{api}/auth/register", json={"username": "owner", "password": "owner password"}
            ) as r:
                assert r.status == 201
            async with http.post(
                f"{api}/auth/login", json={"username": "owner", "password": "owner password"}
            ) as r:
                assert r.status == 200
                headers = {"X-CSRF-Token": (await r.json())["csrf_token"]}
            async with http.post(f"{api}/channels", json={"slug": "home"}, headers=headers) as r:
                assert r.status == 201
            password = "owner password"
            outcomes: dict[str, int] = {}

            async def attempt(
                field: str,
                method: str,
                path: str,
                body: object,
                check: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
            ) -> int:
                """Send one request; 2xx must round-trip, 4xx must change nothing."""
                before = await snapshot(node)
                async with http.request(method, api + path, json=body, headers=headers) as r:
                    status = r.status
                    text = await r.text()
                assert status < 500, (field, body, status, text)
                if 200 <= status < 300:
                    if check is not None:
                        await check(json.loads(text) if text else {})
                else:
                    assert r.content_type == "application/problem+json", (field, text)
                    assert await snapshot(node) == before, (field, body)
                outcomes[f"{field} {status}"] = outcomes.get(f"{field} {status}", 0) + 1
                return status

            async def get(path: str) -> dict[str, Any]:
                async with http.get(api + path, headers=headers) as r:
                    assert r.status == 200, (path, r.status)
                    result: dict[str, Any] = await r.json()
                    return result

            for n, text in enumerate(HOSTILE):
                # Accounts: a user name is a restricted word; a password is any text.
                await attempt(
                    "register.username",
                    "POST",
                    "/auth/register",
                    {"username": text, "password": "long enough"},
                )
                if (
                    await attempt(
                        "register.password",
                        "POST",
                        "/auth/register",
                        {"username": f"pw{n}", "password": text},
                    )
                    == 201
                ):
                    async with aiohttp.ClientSession(
                        cookie_jar=aiohttp.CookieJar(unsafe=True)
                    ) as other:
                        login = {"username": f"pw{n}", "password": text}
                        async with other.post(f"{api}/auth/login", json=login) as r:
                            assert r.status == 200, text
                for login in (
                    {"username": text, "password": "x"},
                    {"username": "owner", "password": text},
                ):
                    async with aiohttp.ClientSession() as other:
                        async with other.post(f"{api}/auth/login", json=login) as r:
                            assert r.status in (401, 422), (login, r.status)
                if (
                    await attempt(
                        "password.new", "POST", "/auth/password", {"current": password, "new": text}
                    )
                    == 204
                ):
                    password = text
                # The current password is the one just set: the change goes through.
                if (
                    await attempt(
                        "password.current",
                        "POST",
                        "/auth/password",
                        {"current": text, "new": "unused pw"},
                    )
                    == 204
                ):
                    password = "unused pw"

                async def token_listed(made: dict[str, Any], text: str = text) -> None:
                    names = [t["name"] for t in (await get("/tokens"))["items"]]
                    assert made["name"] == text and text in names

                await attempt(
                    "token.name",
                    "POST",
                    "/tokens",
                    {"name": text, "scopes": ["read"]},
                    token_listed,
                )
                await attempt(
                    "token.scopes", "POST", "/tokens", {"name": f"t{n}", "scopes": [text]}
                )

                # Channels: the slug is a stream name; title and description are any text.
                await attempt("channel.slug", "POST", "/channels", {"slug": text})

                async def channel_stored(made: dict[str, Any], text: str = text) -> None:
                    stored = await get(f"/channels/{made['slug']}")
                    assert stored["title"] == text and stored["description"] == text

                await attempt(
                    "channel.title+description",
                    "POST",
                    "/channels",
                    {"slug": f"c{n}", "title": text, "description": text},
                    channel_stored,
                )

                async def home_patched(made: dict[str, Any], text: str = text) -> None:
                    assert (await get("/channels/home"))["title"] == text

                await attempt(
                    "channel.patch.title", "PATCH", "/channels/home", {"title": text}, home_patched
                )
                await attempt("channel.visibility", "PATCH", "/channels/home", {"visibility": text})

                async def key_listed(made: dict[str, Any], text: str = text) -> None:
                    labels = [k["label"] for k in (await get("/channels/home/keys"))["items"]]
                    assert made["label"] == text and text in labels

                await attempt(
                    "key.label", "POST", "/channels/home/keys", {"label": text}, key_listed
                )

                # Webhooks: a URL and event names from a fixed set.
                await attempt(
                    "webhook.url", "POST", "/webhooks", {"url": text, "events": ["on_publish"]}
                )
                await attempt(
                    "webhook.url.suffix",
                    "POST",
                    "/webhooks",
                    {"url": "http://127.0.0.1:1/" + text, "events": ["on_publish"]},
                )
                await attempt(
                    "webhook.events",
                    "POST",
                    "/webhooks",
                    {"url": "https://hooks.example.com/x", "events": [text]},
                )
                # Administration (the first user is the admin).
                await attempt("user.role", "PATCH", "/users/1", {"role": text})

                # Path parameters: never a 5xx, never a match.
                for path in (
                    f"/channels/{quote(text, safe='')}",
                    f"/channels/{quote(text, safe='')}/keys",
                    f"/streams/{quote(text, safe='')}",
                    f"/users/{quote(text, safe='')}",
                    f"/tokens/{quote(text, safe='')}",
                ):
                    async with http.get(api + path, headers=headers) as r:
                        assert r.status in (404, 405, 422), (path, r.status)

            # Every table is still there and the owner can still sign in with the last password.
            counts = await snapshot(node)
            assert counts["users"] >= 1 and counts["channels"] >= 1
            async with aiohttp.ClientSession() as other:
                login = {"username": "owner", "password": password}
                async with other.post(f"{api}/auth/login", json=login) as r:
                    assert r.status == 200
            # Free text is kept verbatim (title, description, labels, token names, passwords);
            # structured fields refuse it.
            for field in (
                "channel.slug",
                "channel.visibility",
                "token.scopes",
                "webhook.url",
                "webhook.events",
                "user.role",
                "register.username",
            ):
                assert all(
                    k.split()[1].startswith("4") for k in outcomes if k.split()[0] == field
                ), field
            for field in ("channel.title+description", "key.label", "token.name"):
                assert outcomes.get(f"{field} 201", 0) >= len(HOSTILE) - 1, (field, outcomes)


async def test_oversized_bodies_and_fields_are_refused(make_node: NodeFactory) -> None:
    async with make_node(api_max_body_bytes=4096) as running:
        node, api = running.node, f"{running.http}/api/v1"
        admin = await node.accounts.create_user("boss", "boss password")
        from ripplecast.accounts.policy import Scope

        made = await node.logins.create_api_token(
            admin.id, "t", [Scope.READ, Scope.PUBLISH, Scope.ADMIN]
        )
        headers = {"Authorization": f"Bearer {made.token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api}/channels", json={"slug": "home"}, headers=headers) as r:
                assert r.status == 201
            before = await snapshot(node)
            operations = (
                ("POST", "/auth/register"),
                ("POST", "/auth/login"),
                ("POST", "/auth/password"),
                ("POST", "/tokens"),
                ("POST", "/channels"),
                ("PATCH", "/channels/home"),
                ("POST", "/channels/home/keys"),
                ("POST", "/webhooks"),
                ("PATCH", f"/users/{admin.id}"),
            )
            padding = "x" * 5000
            for method, path in operations:
                body = json.dumps({"title": padding})
                async with http.request(method, api + path, data=body, headers=headers) as r:
                    assert r.status == 413, (method, path, r.status)
                    assert r.content_type == "application/problem+json"
            # Within the body limit, a field over its own length limit is a 422 naming it.
            for method, path, body, field in (
                ("POST", "/auth/register", {"username": "u" * 65, "password": "p"}, "username"),
                ("POST", "/tokens", {"name": "n" * 101, "scopes": ["read"]}, "name"),
                ("POST", "/channels", {"slug": "s2", "title": "t" * 201}, "title"),
                ("PATCH", "/channels/home", {"description": "d" * 5001}, None),
                ("POST", "/channels/home/keys", {"label": "l" * 101}, "label"),
                (
                    "POST",
                    "/webhooks",
                    {"url": "https://a.example/" + "u" * 2048, "events": ["on_publish"]},
                    None,
                ),
            ):
                async with http.request(
                    method, api + path, data=json.dumps(body), headers=headers
                ) as r:
                    assert r.status in (413, 422), (path, r.status)
                    if r.status == 422 and field is not None:
                        assert field in await r.text()
            assert await snapshot(node) == before
