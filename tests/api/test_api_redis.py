"""A node on Redis: login limits counted in Redis, events between nodes through its pub/sub."""

from __future__ import annotations

import secrets

import aiohttp

from support import REDIS, NodeFactory, Process, ffmpeg_publish_args, require_redis, wait_until


async def test_two_nodes_share_limits_and_events_through_redis(make_node: NodeFactory) -> None:
    await require_redis()
    prefix = f"rc-test-{secrets.token_hex(4)}:"
    shared = {"publish_mode": "keys", "cache_url": REDIS, "cache_prefix": prefix,
              "login_max_failures_per_account": 2, "reconnect_grace_seconds": 0.5}  # fmt: skip
    async with make_node(**shared) as first:
        await first.node.accounts.create_user("olga", "olga's password")
        await first.node.accounts.create_channel("olga", "olgas")
        key = await first.node.accounts.create_stream_key("olgas")
        # A second node on the same database, secret and Redis (as in a cluster).
        async with make_node(**shared) as second:
            assert second.node.secret == first.node.secret
            async with aiohttp.ClientSession() as http:
                wrong = {"username": "olga", "password": "wrong"}
                for node in (first, second):  # failures on either node count together
                    async with http.post(f"{node.http}/api/v1/auth/login", json=wrong) as r:
                        assert r.status == 401
                right = {"username": "olga", "password": "olga's password"}
                async with http.post(f"{first.http}/api/v1/auth/login", json=right) as r:
                    assert r.status == 429
            # Publish on the second node; revoke the key through the first: the second kicks it.
            publisher = await Process.start(
                ffmpeg_publish_args(f"{second.rtmp}/{key.key}", seconds=30)
            )
            async with publisher:
                await wait_until(lambda: second.node.hub.get("olgas") is not None, 10, "live")
                await first.node.accounts.revoke_stream_key(key.id)
                code, _, _ = await publisher.wait(20)
                assert code != 0
            assert second.node.rtmp.refused["key_revoked"] == 1
        await first.node.cache.delete("login:user:olga")
        await first.node.cache.delete("login:ip:127.0.0.1")
