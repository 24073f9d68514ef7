"""Bad input gets a clear refusal, is counted, and harms no other stream or viewer."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import pytest

from ripplecast.http.app import LIVE_ROUTES
from ripplecast.media import amf0
from support import (
    FlvViewer,
    NodeFactory,
    Process,
    RunningNode,
    ScriptedRtmpClient,
    ffmpeg_publish_args,
    start_publisher,
    wait_until,
)


async def test_garbage_and_stalled_handshakes_do_not_disturb_a_viewer(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with make_node(rtmp_handshake_timeout=1.0) as node:
        async with await start_publisher(node, "calm"):
            viewer = FlvViewer(f"{node.http}/live/calm.flv").start()
            await asyncio.sleep(1)
            stream = node.node.hub.get("calm")
            assert stream is not None
            before, sent_before = viewer.received, stream.stats.bytes_in
            port = node.node.rtmp_port
            # HTTP on the RTMP port, random bytes, an RTMPE request, and a silent client.
            for payload in (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                os.urandom(4096),
                b"\x06" + bytes(1536),
            ):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                await writer.drain()
                writer.close()
            silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
            silent.write(b"\x03" + bytes(100))  # starts a handshake, never finishes it
            # The server closes it when the handshake timeout (1 s) expires.
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""
            silent.close()
            await asyncio.sleep(0.2)
            after, sent_after = viewer.received, stream.stats.bytes_in
            await viewer.stop()
        refused = node.node.rtmp.refused
        assert refused["handshake"] >= 3, refused
        assert refused["handshake_timeout"] == 1, refused
        # The viewer kept getting everything the publisher sent meanwhile.
        assert sent_after - sent_before > 20_000
        assert after - before >= 0.9 * (sent_after - sent_before)
    messages = caplog.text
    assert "not an RTMP client: first byte 0x47" in messages
    assert "RTMPE is not supported" in messages
    assert "handshake timeout" in messages


async def test_limits_close_only_the_offending_connection(make_node: NodeFactory) -> None:
    async with make_node(rtmp_max_message_size=64 * 1024, amf_max_depth=8) as node:
        port = node.node.rtmp_port
        # Message length over the limit.
        client = await ScriptedRtmpClient.connect(port)
        client.writer.write(
            bytes([0x03])
            + (0).to_bytes(3, "big")
            + (1 << 20).to_bytes(3, "big")
            + b"\x14"
            + bytes(4)
        )
        assert await client.closed_by_server()
        await client.close()
        # Chunk size over the limit.
        client = await ScriptedRtmpClient.connect(port)
        client.send(1, (0x7FFFFFF0).to_bytes(4, "big"), csid=2)
        assert await client.closed_by_server()
        await client.close()
        # AMF nested too deep.
        deep: object = {}
        for _ in range(20):
            deep = {"a": deep}
        client = await ScriptedRtmpClient.connect(port)
        client.command("connect", 1.0, deep)
        assert await client.closed_by_server()
        await client.close()
        refused = node.node.rtmp.refused
        assert refused["rtmp_max_message_size"] == 1, refused
        assert refused["rtmp_max_chunk_size"] == 1, refused
        assert refused["amf_max_depth"] == 1, refused


async def test_unknown_commands_are_answered_then_counted(make_node: NodeFactory) -> None:
    async with make_node(rtmp_max_bad_commands=3) as node:
        client = await ScriptedRtmpClient.connect(node.node.rtmp_port)
        assert await client.connect_app() == ["_result"]
        client.command("launchMissiles", 2.0, None)
        names = []
        while (message := await client.next_message()) is not None:
            if message.type_id == 20:
                names.append(amf0.decode_values(message.payload)[0])
                break
        assert names == ["_error"]
        for tid in range(3, 7):
            client.command("launchMissiles", float(tid), None)
        assert await client.closed_by_server()
        await client.close()
        assert node.node.rtmp.refused["unknown_command"] == 3
        assert node.node.rtmp.refused["rtmp_max_bad_commands"] == 1


async def test_unknown_application_is_rejected(live_node: RunningNode) -> None:
    client = await ScriptedRtmpClient.connect(live_node.node.rtmp_port)
    assert await client.connect_app("elsewhere") == ["_error"]
    assert await client.closed_by_server()
    await client.close()


@pytest.mark.parametrize(
    "name",
    ["..", "../etc", "a/b", "bad\x00name", "tab\tname", "x" * 65, ".hidden", "spa ce"],
)
async def test_bad_stream_names_are_refused(live_node: RunningNode, name: str) -> None:
    client = await ScriptedRtmpClient.connect(live_node.node.rtmp_port)
    assert await client.connect_app() == ["_result"]
    client.command("createStream", 2.0, None)
    client.command("publish", 0.0, None, name, "live", stream_id=1)
    statuses = await client.statuses()
    assert "NetStream.Publish.BadName" in statuses
    await client.close()
    assert live_node.node.rtmp.refused["publish_bad_name"] == 1
    assert len(live_node.node.hub) == 0


async def test_keys_mode_refuses_unknown_and_revoked_keys(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys") as node:
        accounts = node.node.accounts
        await accounts.create_user("carol", "a long password")
        await accounts.create_channel("carol", "show")
        key = (await accounts.create_stream_key("show")).key
        old = await accounts.create_stream_key("show")
        await accounts.revoke_stream_key(old.id)
        for wrong in ("wrong-key", old.key):
            bad = await Process.start(ffmpeg_publish_args(f"{node.rtmp}/{wrong}", seconds=2))
            rc, _, _ = await bad.wait(20)
            assert rc != 0
        refused = node.node.rtmp.refused
        assert refused["publish_bad_key"] == 1
        assert refused["publish_revoked_key"] == 1
        async with await Process.start(ffmpeg_publish_args(f"{node.rtmp}/{key}", seconds=6)):
            await wait_until(lambda: node.node.hub.get("show") is not None, 10, "stream show")
            # The key never names a stream: playing by the key finds nothing.
            assert node.node.hub.get(key) is None


async def test_http_paths_cannot_escape(live_node: RunningNode) -> None:
    async with aiohttp.ClientSession() as http:
        for path in (
            "/live/../../etc/passwd",
            "/live/%2e%2e/index.m3u8",
            "/live/..%2f..%2fetc%2fpasswd.flv",
            "/live/a%2Fb.flv",
            "/live/%00.flv",
            "/live/x/..%2f..%2f1.ts",
        ):
            async with http.get(live_node.http + path) as response:
                assert response.status in (400, 404), (path, response.status)
                body = await response.text()
                assert "root:" not in body
    routes = live_node.node.http_app[LIVE_ROUTES]
    assert routes.refused["bad_name"] >= 2  # %2e%2e and %00 reach the handler and are refused


async def test_revoking_a_key_disconnects_its_live_publisher(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys", reconnect_grace_seconds=0.5) as node:
        accounts = node.node.accounts
        await accounts.create_user("erin", "a long password")
        await accounts.create_channel("erin", "news")
        key = await accounts.create_stream_key("news")
        spare = await accounts.create_stream_key("news")
        publisher = await Process.start(ffmpeg_publish_args(f"{node.rtmp}/{key.key}", seconds=30))
        async with publisher:
            await wait_until(lambda: node.node.hub.get("news") is not None, 10, "news live")
            await accounts.revoke_stream_key(spare.id)  # another key: nothing happens
            await asyncio.sleep(0.3)
            assert node.node.rtmp.refused["key_revoked"] == 0
            await accounts.revoke_stream_key(key.id)
            code, _, _ = await publisher.wait(20)
            assert code != 0  # ffmpeg lost its connection
        assert node.node.rtmp.refused["key_revoked"] == 1
        await wait_until(lambda: node.node.hub.get("news") is None, 5, "stream to end")
        again = await Process.start(ffmpeg_publish_args(f"{node.rtmp}/{key.key}", seconds=2))
        code, _, _ = await again.wait(20)
        assert code != 0
        assert node.node.rtmp.refused["publish_revoked_key"] == 1
