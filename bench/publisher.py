"""Bench publisher: a 720p30 ~2.5 Mbit/s H.264 + AAC stream, published in real time over RTMP.

The media is encoded once with ffmpeg (cached), then sent with `RtmpClient` paced on its own
timestamps against the wall clock: the same pacing `ffmpeg -re` applies, without an encoder in
the loop. Every coded video frame gets an H.264 SEI NAL (user_data_unregistered, payload type 5)
put in front of its first NAL at the moment it is sent: a fixed 16-byte UUID and the wall-clock
time in microseconds (8 bytes, big-endian). Viewers read it back to measure delay; servers relay
it untouched (nginx-rtmp as well as Ripplecast). The file loops, timestamps rebased, for as long
as `--duration` asks.

    python -m bench.publisher --url rtmp://127.0.0.1:1935/live --name bench --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from ripplecast.media.flv import FlvReader, FlvTag
from ripplecast.protocols.rtmp.aio import RtmpClient

SEI_UUID = bytes.fromhex("5269706c6563617374426e6368537431")  # "RiplecastBnchSt1"
"""Identifies our timing SEI among the encoder's own (x264 writes its settings in one)."""

CACHE_DIR = Path(os.environ.get("RIPPLECAST_BENCH_CACHE", "/tmp/ripplecast-bench"))
MEDIA_SECONDS = 60


def encode_args(path: Path, seconds: int = MEDIA_SECONDS) -> list[str]:
    """The ffmpeg argv that makes the bench media (720p30, 2.5 Mbit/s CBR-ish, GOP 2 s)."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        # Temporal noise keeps x264 near the target rate (testsrc2 alone compresses to little).
        "-vf", "noise=alls=12:allf=t",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k",
        "-f", "flv", str(path),
    ]  # fmt: skip


def prepare_media(path: Path | None = None, seconds: int = MEDIA_SECONDS) -> Path:
    """Return the bench FLV file, encoding it first if it is not cached yet."""
    path = path or CACHE_DIR / f"bench-720p30-{seconds}s.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flv")
    subprocess.run(encode_args(tmp, seconds), check=True, timeout=600)
    tmp.replace(path)
    return path


def read_tags(path: Path) -> list[FlvTag]:
    """All tags of an FLV file."""
    reader = FlvReader()
    reader.feed(path.read_bytes())
    tags = []
    while (event := reader.next_event()) is not None:
        if isinstance(event, FlvTag):
            tags.append(event)
    return tags


# --- the timing SEI --------------------------------------------------------------------------


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (00 00 0x -> 00 00 03 0x for x <= 3)."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def timing_sei(micros: int) -> bytes:
    """One SEI NAL (header byte included, emulation-prevented) carrying `micros`."""
    payload = SEI_UUID + struct.pack(">Q", micros)
    return b"\x06" + _escape(bytes((5, len(payload))) + payload + b"\x80")


def stamp_frame(payload: bytes, micros: int) -> bytes:
    """Return an AVC coded-frame tag body with the timing SEI as its first NAL (4-byte lengths)."""
    sei = timing_sei(micros)
    return payload[:5] + len(sei).to_bytes(4, "big") + sei + payload[5:]


SEI_PEEK = 5 + 4 + 1 + 2 + 16 + 8 + 4
"""Head bytes of a video tag body a viewer needs to read the stamp (plus room for escapes)."""


def read_stamp(head: bytes | bytearray | memoryview) -> int | None:
    """Return the microseconds of our SEI at the start of a video tag body, or None."""
    if len(head) < 5 + 4 + 3 + 16 + 8 or head[5 + 4] != 6 or head[10] != 5:
        return None
    body = bytes(head[12:])
    if b"\x00\x00\x03" in body:
        body = body.replace(b"\x00\x00\x03", b"\x00\x00")
    if body[:16] != SEI_UUID:
        return None
    return int.from_bytes(body[16:24], "big")


# --- publishing ------------------------------------------------------------------------------


def _is_coded_avc(tag: FlvTag) -> bool:
    return (
        tag.kind == 9
        and len(tag.payload) > 5
        and tag.payload[0] & 0x0F == 7
        and (tag.payload[1] == 1)
    )


def _is_header(tag: FlvTag) -> bool:
    """Metadata and the AVC / AAC sequence headers: sent once, before the paced frames."""
    return tag.kind == 18 or (len(tag.payload) > 1 and tag.payload[1] == 0)


async def publish(url: str, name: str, media: Path, duration: float, ready: bool = True) -> int:
    """Publish `media` to `url`/`name` in real time for `duration` seconds; return frames sent."""
    tags = read_tags(media)
    headers = [t for t in tags if _is_header(t)]
    body = [t for t in tags if not _is_header(t)]
    span = body[-1].timestamp + 34  # one loop of the file, in ms (a frame after the last tag)
    client = RtmpClient()
    await client.connect(url, timeout=10)
    await client.publish(name)
    for tag in headers:
        await client.send_media(tag.kind, 0, tag.payload)
    if ready:
        print("publishing", flush=True)
    start = time.monotonic()
    frames = 0
    loop_offset = 0
    try:
        while True:
            for tag in body:
                ts = tag.timestamp + loop_offset
                if ts / 1000 >= duration:
                    return frames
                delay = start + ts / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                payload = tag.payload
                if _is_coded_avc(tag):
                    payload = stamp_frame(payload, time.time_ns() // 1000)
                    frames += 1
                await client.send_media(tag.kind, ts, payload)
            loop_offset += span
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="rtmp://host:port/app")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to publish")
    parser.add_argument("--media", type=Path, help="FLV file (default: encode/cache one)")
    parser.add_argument("--prepare-only", action="store_true", help="encode the media and exit")
    args = parser.parse_args(argv)
    media = prepare_media(args.media) if args.media is None else args.media
    if args.prepare_only:
        print(media)
        return
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        frames = asyncio.run(publish(args.url, args.name, media, args.duration))
    except KeyboardInterrupt:
        return
    print(f"sent {frames} video frames", flush=True)


if __name__ == "__main__":
    main()
