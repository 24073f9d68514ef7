"""Channels and stream keys over the API: create, publish with the key, no IDOR, revoke."""

from __future__ import annotations

import asyncio

import aiohttp

from ripplecast.accounts.policy import Scope
from support import NodeFactory, Process, ffmpeg_publish_args, wait_until


async def bearer(node: object, username: str) -> dict[str, str]:
    accounts, logins = node.accounts, node.logins  # type: ignore[attr-defined]
    await accounts.create_user(username, f"{username} password")
    user = await accounts.user(username)
    made = await logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
    return {"Authorization": f"Bearer {made.token}"}


async def test_channel_lifecycle_and_ownership(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys", reconnect_grace_seconds=0.5) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill, kate = await bearer(node, "jill"), await bearer(node, "kate")
        async with aiohttp.ClientSession() as http:
            body = {"slug": "jills-show", "title": "'; DROP TABLE channels; --"}
            async with http.post(f"{api}/channels", json=body, headers=jill) as r:
                assert r.status == 201
                assert (await r.json())["title"] == body["title"]
            async with http.post(f"{api}/channels", json=body, headers=kate) as r:
                assert r.status == 409
            async with http.post(f"{api}/channels", json={"slug": "../x"}, headers=jill) as r:
                assert r.status == 422
            async with http.post(f"{api}/channels/jills-show/keys", json={}, headers=jill) as r:
                assert r.status == 201
                key = await r.json()
            # Kate can neither see nor touch Jill's channel or keys: 404, and nothing changes.
            for method, path, payload in (
                ("GET", "/channels/jills-show", None),
                ("PATCH", "/channels/jills-show", {"visibility": "private"}),
                ("DELETE", "/channels/jills-show", None),
                ("GET", "/channels/jills-show/keys", None),
                ("POST", "/channels/jills-show/keys", {}),
                ("DELETE", f"/channels/jills-show/keys/{key['id']}", None),
            ):
                async with http.request(method, api + path, json=payload, headers=kate) as r:
                    assert r.status == 404, (method, path)
            async with http.get(f"{api}/channels/jills-show", headers=jill) as r:
                assert (await r.json())["visibility"] == "public"
            async with http.get(f"{api}/channels") as r:
                assert [c["slug"] for c in (await r.json())["items"]] == ["main", "jills-show"]
            async with http.get(f"{api}/channels/jills-show/keys", headers=jill) as r:
                listed = (await r.json())["items"]
            assert listed[0]["hint"] == key["key"][-4:] and key["key"] not in str(listed)
            assert listed[0]["last_used_at"] is None
            publisher = await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key['key']}", seconds=30)
            )
            async with publisher:
                await wait_until(lambda: node.hub.get("jills-show") is not None, 10, "live")

                for _ in range(100):  # recorded just after the publish is admitted
                    async with http.get(f"{api}/channels/jills-show/keys", headers=jill) as r:
                        if (await r.json())["items"][0]["last_used_at"] is not None:
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the key's last use was never recorded")
                path = f"{api}/channels/jills-show/keys/{key['id']}"
                async with http.delete(path, headers=jill) as r:
                    assert r.status == 204
                code, _, _ = await publisher.wait(20)
                assert code != 0  # disconnected when its key was revoked
            assert node.rtmp.refused["key_revoked"] == 1
            async with http.delete(f"{api}/channels/jills-show", headers=jill) as r:
                assert r.status == 204
            async with http.get(f"{api}/channels/jills-show", headers=jill) as r:
                assert r.status == 404


async def test_admin_disables_an_account_and_its_stream_stops(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys", reconnect_grace_seconds=0.5) as running:
        node, api = running.node, f"{running.http}/api/v1"
        assert node.first_run is not None  # admin, main and its key were created at start
        admin_user = await node.accounts.user(node.first_run.username)
        made = await node.logins.create_api_token(admin_user.id, "ops", [Scope.ADMIN, Scope.READ])
        admin = {"Authorization": f"Bearer {made.token}"}
        lena = await bearer(node, "lena")
        await node.accounts.create_channel("lena", "lenas")
        key = (await node.accounts.create_stream_key("lenas")).key
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{api}/users", headers=lena) as r:
                assert r.status == 403  # not an admin
            async with http.get(f"{api}/users", headers=admin) as r:
                users = {u["username"]: u for u in (await r.json())["items"]}
            assert users["admin"]["role"] == "admin" and users["lena"]["role"] == "creator"
            async with http.patch(f"{api}/users/{admin_user.id}", json={"disabled": True},
                                  headers=admin) as r:  # fmt: skip
                assert r.status == 422  # an admin cannot lock themselves out
            publisher = await Process.start(
                ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=30)
            )
            async with publisher:
                await wait_until(lambda: node.hub.get("lenas") is not None, 10, "live")
                lena_id = users["lena"]["id"]
                async with http.patch(f"{api}/users/{lena_id}", json={"disabled": True},
                                      headers=admin) as r:  # fmt: skip
                    assert r.status == 200
                    assert (await r.json())["disabled"] is True
                code, _, _ = await publisher.wait(20)
                assert code != 0  # disconnected with the account
            assert node.rtmp.refused["kicked"] == 1
            async with http.get(f"{api}/auth/me", headers=lena) as r:
                assert r.status == 401  # the account's tokens stopped working too
            again = await Process.start(ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=2))
            code, _, _ = await again.wait(20)
            assert code != 0
            assert node.rtmp.refused["publish_disabled_user"] == 1
