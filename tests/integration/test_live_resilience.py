"""Readers that never read, and publishers that drop and come back."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket

import aiohttp

from support import (
    FlvViewer,
    NodeFactory,
    Process,
    ScriptedRtmpClient,
    ffmpeg_publish_args,
    start_publisher,
    wait_until,
)

# Noise makes the picture incompressible: ~2 Mbit/s, so stalled sockets fill up quickly.
NOISY = (
    "-vf", "noise=alls=40:allf=t",
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
    "-b:v", "2M", "-maxrate", "2M", "-bufsize", "1M",
)  # fmt: skip


def stalled_socket() -> socket.socket:
    """A client socket with a tiny receive window that the test never reads from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def test_readers_that_never_read_are_skipped_then_dropped(make_node: NodeFactory) -> None:
    settings = {
        "viewer_send_buffer_bytes": 16384,
        "reader_max_queue_bytes": 65536,
        "reader_max_behind_seconds": 1.5,
    }
    async with make_node(**settings) as node:
        async with await start_publisher(node, "busy", 20, size="640x360", extra_video=NOISY):
            stream = node.node.hub.get("busy")
            assert stream is not None
            loop = asyncio.get_running_loop()
            # An HTTP-FLV viewer that never reads.
            http_stalled = stalled_socket()
            await loop.sock_connect(http_stalled, ("127.0.0.1", node.node.http_port))
            await loop.sock_sendall(http_stalled, b"GET /live/busy.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            # An RTMP player that stops reading right after asking to play.
            rtmp_stalled = await ScriptedRtmpClient.connect(node.node.rtmp_port)
            assert await rtmp_stalled.connect_app() == ["_result"]
            rtmp_stalled.command("createStream", 2.0, None)
            rtmp_stalled.command("play", 0.0, None, "busy", stream_id=1)
            await asyncio.sleep(0.3)
            transport = rtmp_stalled.writer.transport
            transport.pause_reading()
            # A viewer that reads normally, next to them.
            viewer = FlvViewer(f"{node.http}/live/busy.flv").start()
            await asyncio.sleep(0.5)
            packets_before, sent_before = stream.stats.packets_in, stream.stats.bytes_in
            got_before = viewer.received
            started = loop.time()
            await wait_until(lambda: stream.stats.readers_dropped >= 2, 15, "two readers dropped")
            elapsed = loop.time() - started
            await asyncio.sleep(0.5)
            elapsed += 0.5
            sent = stream.stats.bytes_in - sent_before
            packets = stream.stats.packets_in - packets_before
            got = viewer.received - got_before
            assert not viewer.ended.is_set()
            await viewer.stop()
            http_stalled.close()
            await rtmp_stalled.close()
        assert stream.stats.reader_skips >= 2
        # The publisher was never slowed: ~25 video + ~43 audio packets per second arrived.
        assert packets >= 0.8 * 68 * elapsed, (packets, elapsed)
        # The reading viewer got everything the publisher sent meanwhile.
        assert got >= 0.95 * sent, (got, sent)
        assert node.node.rtmp.refused["slow_reader"] == 1


async def test_publisher_reconnect_within_grace_keeps_viewers(make_node: NodeFactory) -> None:
    async with make_node(reconnect_grace_seconds=5.0) as node:
        first = await start_publisher(node, "back", 30)
        viewer = FlvViewer(f"{node.http}/live/back.flv").start()
        await wait_until(lambda: len(viewer.video_timestamps) > 30, 10, "viewer to get video")
        await asyncio.sleep(1.2)  # let HLS cut a couple of segments
        await first.kill(signal.SIGKILL)
        stream = node.node.hub.get("back")
        assert stream is not None
        await wait_until(lambda: stream.state.name == "WAITING", 25, "stream to wait")
        last_before = viewer.video_timestamps[-1]
        frames_before = len(viewer.video_timestamps)
        async with await Process.start(ffmpeg_publish_args(f"{node.rtmp}/back", seconds=30)):
            await wait_until(lambda: stream.state.name == "LIVE", 10, "publisher to return")
            await wait_until(
                lambda: len(viewer.video_timestamps) > frames_before + 50, 10, "video after return"
            )
            assert node.node.hub.get("back") is stream
            assert stream.stats.publishes == 2
            assert not viewer.ended.is_set()
            after = viewer.video_timestamps[frames_before:]
            # The timeline continues: no jump back to zero for the player.
            assert after[0] > last_before
            assert all(b >= a for a, b in itertools.pairwise(after))
            await asyncio.sleep(2.5)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{node.http}/live/back/index.m3u8") as response:
                    playlist = await response.text()
            assert "#EXT-X-DISCONTINUITY\n" in playlist, playlist
            await viewer.stop()


async def test_stream_ends_after_grace_and_viewers_are_closed(make_node: NodeFactory) -> None:
    async with make_node(reconnect_grace_seconds=0.5) as node:
        async with await start_publisher(node, "bye", 2):
            viewer = FlvViewer(f"{node.http}/live/bye.flv").start()
            await asyncio.wait_for(viewer.ended.wait(), 15)
        assert viewer.status == 200
        assert viewer.keyframes >= 1
        assert node.node.hub.get("bye") is None
