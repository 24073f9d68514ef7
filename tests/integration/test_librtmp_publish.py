"""librtmp (the library OBS and rtmpdump are built on) publishes to Ripplecast with a key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from support import REQUIRE_SERVICES, NodeFactory, Process, require_program, run, wait_until

CLIENT_SOURCE = Path(__file__).parent / "clients" / "librtmp_publish.c"


async def build_client(tmp_path: Path) -> Path:
    gcc = require_program("gcc")
    binary = tmp_path / "librtmp_publish"
    code, _, err = await run([gcc, "-O1", "-o", str(binary), str(CLIENT_SOURCE), "-lrtmp"], 60)
    if code != 0:
        message = f"cannot build the librtmp client (apt-get install librtmp-dev): {err.decode()}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return binary


async def test_librtmp_publishes_like_obs(make_node: NodeFactory, tmp_path: Path) -> None:
    client = await build_client(tmp_path)
    media = tmp_path / "in.flv"
    encode = [
        require_program("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", "testsrc=320x240",
        "-f", "lavfi", "-i", "sine", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
        "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(media),
    ]  # fmt: skip
    code, _, err = await run(encode)
    assert code == 0, err.decode()
    async with make_node(publish_mode="keys") as node:
        accounts = node.node.accounts
        await accounts.create_user("obs", "a long password")
        await accounts.create_channel("obs", "studio")
        key = (await accounts.create_stream_key("studio")).key
        url = f"rtmp://127.0.0.1:{node.node.rtmp_port}/live/{key}"
        publisher = await Process.start([str(client), url, str(media)])
        async with publisher:
            await wait_until(
                lambda: (s := node.node.hub.get("studio")) is not None and s.stats.keyframes >= 1,
                10,
                "librtmp publisher to go live",
            )
            code, out, err = await run(
                [require_program("ffprobe"), "-v", "error", "-show_entries",
                 "stream=codec_name,width", "-of", "csv=p=0", f"{node.http}/live/studio.flv"],
                20,
            )  # fmt: skip
            assert code == 0, err.decode()
            assert out.decode().split() == ["h264,320", "aac"]
            code, _, err = await publisher.wait(30)
            assert code == 0, err.decode()
        stream = node.node.hub.get("studio")
        assert stream is not None
        await asyncio.sleep(0)
        assert stream.stats.video_frames >= 140  # ~6 s at 25 fps, every frame arrived
