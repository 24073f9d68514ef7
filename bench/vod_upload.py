"""Upload benchmark: bytes into storage and through the upload API, against bare baselines.

One real video file (~200 MB of 1080p H.264 at a high bit rate, so the API's probe accepts
it) is written, in each run, by every variant below; the order of the variants rotates from
run to run, and every run ends with an untimed `sync` so no variant pays for another's dirty
pages. Variants and their baselines (ratios are paired per run: baseline wall / variant wall):

- local folder (same filesystem as the source): `cp`; `cp` + `sync FILE` (cp does not fsync,
  LocalStorage does); `LocalStorage.put_file`; `LocalStorage.put_stream` fed 256 KiB chunks.
- S3 (moto_server on loopback): a bare aiobotocore multipart upload with the same part size and
  client configuration, one part at a time (the algorithm S3Storage uses) and with 10 parts in
  flight (what boto3's `upload_file` does by default); `S3Storage.put_file`; `put_stream`.
- API: `POST /api/v1/videos` with the raw body, sent by curl (a separate process, so the
  client's work is not in the node's process) to a node in this process (worker off), once with
  local storage and once with S3 storage; the baseline is the storage's `put_file` alone. The
  API path is: body to a staging file, `probe()`, `put_file` into storage, one DB transaction.
  `probe()` alone is timed too.

CPU: this process (RUSAGE_SELF: the storage code and, for API rows, the whole node), its reaped
children (cp, sync, curl) and, for S3 rows, the moto server (/proc/PID/stat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from bench.fanout import proc_cpu_seconds
from bench.vod_common import (
    CACHE_DIR,
    SourceSpec,
    Usage,
    ensure_source,
    rotated,
    summary,
    wait_for_quiet,
)
from bench.vod_node import (
    MotoServer,
    api_headers,
    moto_server,
    node_settings,
    running_node,
)
from ripplecast.storage import LocalStorage, S3Storage, Storage
from ripplecast.storage.s3 import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE
from ripplecast.vod.probe import probe
from ripplecast.vod.uploads import source_key

FULL_FILE = SourceSpec(
    seconds=25, width=1920, height=1080, video_kbps=64000, noise=40, preset="ultrafast"
)
"""~200 MB: 25 s of 1080p25 at 64 Mbit/s (heavy noise, so x264 really spends the rate)."""
QUICK_FILE = SourceSpec(
    seconds=3, width=640, height=360, video_kbps=20000, noise=40, preset="ultrafast"
)
"""~7.5 MB; S3 thresholds are lowered to 5 MiB in quick mode so multipart still runs."""
STREAM_CHUNK = 256 * 1024
"""Chunk size fed to put_stream (the upload API reads request bodies in 256 KiB chunks)."""
BOTO3_CONCURRENCY = 10
"""boto3's `upload_file` default: 10 parts in flight."""
QUIET_WAIT = 60.0
"""Longest wait for the shared machine to calm down before a variant."""
CURL_TIMEOUT = 600.0
VARIANT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Variant:
    target: str
    name: str
    baselines: tuple[str, ...] = ()
    """Names of the variants this one is compared with (paired per run)."""


VARIANTS = (
    Variant("local folder", "cp"),
    Variant("local folder", "cp + fsync"),
    Variant("local folder", "LocalStorage.put_file", ("cp", "cp + fsync")),
    Variant("local folder", "LocalStorage.put_stream", ("cp", "cp + fsync")),
    Variant("S3 (moto)", "bare aiobotocore, 1 part at a time"),
    Variant("S3 (moto)", f"bare aiobotocore, {BOTO3_CONCURRENCY} parts in flight"),
    Variant(
        "S3 (moto)",
        "S3Storage.put_file",
        (
            "bare aiobotocore, 1 part at a time",
            f"bare aiobotocore, {BOTO3_CONCURRENCY} parts in flight",
        ),
    ),
    Variant(
        "S3 (moto)",
        "S3Storage.put_stream",
        (
            "bare aiobotocore, 1 part at a time",
            f"bare aiobotocore, {BOTO3_CONCURRENCY} parts in flight",
        ),
    ),
    Variant("API", "probe() alone"),
    Variant("API", "POST /api/v1/videos -> local folder", ("LocalStorage.put_file",)),
    Variant("API", "POST /api/v1/videos -> S3 (moto)", ("S3Storage.put_file",)),
)


@dataclass
class Measured:
    wall: float
    self_cpu: float
    children_cpu: float
    peer_cpu: float
    foreign_cpu: float


class UploadBench:
    """The services and clients shared by every run."""

    def __init__(
        self, source: Path, scratch: Path, moto: MotoServer, part_size: int, threshold: int
    ) -> None:
        self.source = source
        self.size = source.stat().st_size
        self.scratch = scratch
        self.moto = moto
        self.part_size = part_size
        self.threshold = threshold
        self.bucket = f"rc-bench-{secrets.token_hex(4)}"
        self.local = LocalStorage(scratch / "storage")
        self.s3 = S3Storage(
            **moto.storage_kwargs(self.bucket, multipart_threshold=threshold, part_size=part_size)
        )
        self.client: Any = None
        """The bare aiobotocore client."""
        self.apis: dict[str, tuple[str, dict[str, str], Storage]] = {}
        """Per node ("local", "s3"): the upload URL, the token header and the node's storage."""

    # --- local folder ---------------------------------------------------------------------

    async def cp(self, fsync: bool) -> None:
        target = self.scratch / "cp-target"
        await run_program(["cp", str(self.source), str(target)])
        if fsync:
            await run_program(["sync", str(target)])
        target.unlink()

    async def local_put_file(self) -> None:
        await self.local.put_file("bench/source", self.source)
        await self.local.delete("bench/source")

    async def local_put_stream(self) -> None:
        await self.local.put_stream("bench/source", file_chunks(self.source))
        await self.local.delete("bench/source")

    # --- S3 -------------------------------------------------------------------------------

    async def s3_put_file(self) -> None:
        await self.s3.put_file("bench/source", self.source)
        await self.s3.delete("bench/source")

    async def s3_put_stream(self) -> None:
        await self.s3.put_stream("bench/source", file_chunks(self.source))
        await self.s3.delete("bench/source")

    async def bare_multipart(self, concurrency: int) -> None:
        """What boto3's upload_file does, on aiobotocore: create, upload parts (at most
        `concurrency` in flight, each read from the file when its turn comes), complete."""
        client, key = self.client, "bench/bare"
        created = await client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="video/mp4"
        )
        upload_id = created["UploadId"]
        count = max(1, math.ceil(self.size / self.part_size))
        slots = asyncio.Semaphore(concurrency)

        async def upload_part(index: int) -> dict[str, Any]:
            async with slots:
                body = await asyncio.to_thread(read_part, self.source, index, self.part_size)
                reply = await client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=index + 1,
                    Body=body,
                )
                return {"ETag": reply["ETag"], "PartNumber": index + 1}

        try:
            parts = await asyncio.gather(*(upload_part(index) for index in range(count)))
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        await client.delete_object(Bucket=self.bucket, Key=key)

    # --- API ------------------------------------------------------------------------------

    async def api(self, which: str) -> None:
        url, headers, storage = self.apis[which]
        argv = ["curl", "-sS", "--fail-with-body", "--max-time", str(int(CURL_TIMEOUT))]
        argv += ["-o", "-", "-X", "POST", "-T", str(self.source), "-H", "Expect:"]
        argv += ["-H", "Content-Type: application/octet-stream"]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        reply = await run_program([*argv, f"{url}?filename=bench.mp4"], capture=True)
        video = json.loads(reply)
        if video.get("source_bytes") != self.size:
            raise RuntimeError(f"the API stored {video.get('source_bytes')} of {self.size} bytes")
        await storage.delete(source_key(video["id"]))

    async def probe_alone(self) -> None:
        await asyncio.to_thread(probe, self.source, max_duration=12 * 3600, max_pixels=8192**2)

    def action(self, name: str) -> Callable[[], Awaitable[None]]:
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "cp": lambda: self.cp(False),
            "cp + fsync": lambda: self.cp(True),
            "LocalStorage.put_file": self.local_put_file,
            "LocalStorage.put_stream": self.local_put_stream,
            "bare aiobotocore, 1 part at a time": lambda: self.bare_multipart(1),
            f"bare aiobotocore, {BOTO3_CONCURRENCY} parts in flight": lambda: self.bare_multipart(
                BOTO3_CONCURRENCY
            ),
            "S3Storage.put_file": self.s3_put_file,
            "S3Storage.put_stream": self.s3_put_stream,
            "probe() alone": self.probe_alone,
            "POST /api/v1/videos -> local folder": lambda: self.api("local"),
            "POST /api/v1/videos -> S3 (moto)": lambda: self.api("s3"),
        }
        return actions[name]

    async def measure(self, name: str) -> Measured:
        action = self.action(name)
        peer_before = proc_cpu_seconds(self.moto.pid)
        start = Usage.now()
        async with asyncio.timeout(VARIANT_TIMEOUT):
            await action()
        used = Usage.now().since(start)
        peer = proc_cpu_seconds(self.moto.pid) - peer_before
        await asyncio.to_thread(os.sync)  # untimed: the next variant starts with clean pages
        foreign = max(0.0, used.foreign_cpu - peer)
        return Measured(used.wall, used.self_cpu, used.children_cpu, peer, foreign)


def file_chunks(path: Path, size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """The file in `size` chunks, read in the loop (page-cache reads of 256 KiB take tens of
    microseconds: this stands for bytes arriving from a socket)."""

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as handle:
            while block := handle.read(size):
                yield block

    return chunks()


def read_part(path: Path, index: int, part_size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(index * part_size)
        return handle.read(part_size)


async def run_program(argv: list[str], *, capture: bool = False) -> bytes:
    """Run a program to completion (killed after CURL_TIMEOUT); its stdout if `capture`."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CURL_TIMEOUT):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited with {process.returncode}: {(out or b'')[-500:]!r} {err[-500:]!r}"
        )
    return out or b""


def _client_config() -> Any:
    """The client configuration S3Storage uses (checksums only when required, path style)."""
    return AioConfig(
        region_name="us-east-1",
        retries={"total_max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


async def run_upload_bench(
    *, runs: int, quick: bool, size_mb: int | None = None, log: Any = print
) -> dict[str, Any]:
    """Measure every variant `runs` times; return the JSON-able section of the results."""
    spec = QUICK_FILE if quick else FULL_FILE
    if size_mb is not None:  # keep 1080p at 64 Mbit/s, change the length
        spec = SourceSpec(
            max(1, round(size_mb * 8 / spec.video_kbps * 1000)),
            spec.width,
            spec.height,
            spec.fps,
            spec.video_kbps,
            spec.noise,
            spec.preset,
        )
    log(f"upload: file {spec.describe()} (cached in {CACHE_DIR})")
    source = await asyncio.to_thread(ensure_source, spec)
    part_size = 5 * 1024 * 1024 if quick else DEFAULT_PART_SIZE
    threshold = 5 * 1024 * 1024 if quick else DEFAULT_MULTIPART_THRESHOLD
    scratch = CACHE_DIR / f"work-upload-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    results: dict[str, list[Measured]] = {v.name: [] for v in VARIANTS}
    try:
        async with contextlib.AsyncExitStack() as stack:
            moto = await stack.enter_async_context(moto_server(scratch / "moto.log"))
            bench = UploadBench(source, scratch, moto, part_size, threshold)
            await bench.local.start()
            stack.push_async_callback(bench.local.close)
            await bench.s3.start()
            stack.push_async_callback(bench.s3.close)
            bench.client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name="us-east-1",
                    endpoint_url=moto.endpoint_url,
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                    config=_client_config(),
                )
            )
            s3_overrides = {
                "s3_multipart_threshold_bytes": threshold,
                "s3_multipart_part_bytes": part_size,
            }
            for which, extra in (
                ("local", {}),
                ("s3", moto.node_settings(f"rc-bench-api-{secrets.token_hex(4)}", **s3_overrides)),
            ):
                settings = node_settings(scratch / f"node-{which}", **extra)
                node = await stack.enter_async_context(running_node(settings))
                headers = await api_headers(node)
                url = f"http://127.0.0.1:{node.http_port}/api/v1/videos"
                bench.apis[which] = (url, headers, node.storage)
            names = [v.name for v in VARIANTS]
            for run in range(runs):
                for name in rotated(names, run):
                    await wait_for_quiet(0 if quick else QUIET_WAIT)
                    one = await bench.measure(name)
                    results[name].append(one)
                    log(
                        f"  run {run + 1}/{runs} {name:<42} {bench.size / one.wall / 1e6:8.1f}"
                        f" MB/s  wall {one.wall:6.2f} s"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    size = source.stat().st_size
    rows: list[dict[str, Any]] = []
    for variant in VARIANTS:
        measured = results[variant.name]
        row: dict[str, Any] = {
            "target": variant.target,
            "variant": variant.name,
            "mb_s": summary([size / m.wall / 1e6 for m in measured], 1),
            "wall_s": summary([m.wall for m in measured]),
            "self_cpu_s": summary([m.self_cpu for m in measured]),
            "children_cpu_s": summary([m.children_cpu for m in measured]),
            "peer_cpu_s": summary([m.peer_cpu for m in measured]),
            "foreign_cpu_s": summary([m.foreign_cpu for m in measured]),
            "versus": {
                baseline: summary(
                    [b.wall / m.wall for b, m in zip(results[baseline], measured, strict=True)], 3
                )
                for baseline in variant.baselines
            },
        }
        rows.append(row)
    return {
        "file": {**asdict(spec), "description": spec.describe(), "bytes": size},
        "part_size": part_size,
        "multipart_threshold": threshold,
        "stream_chunk": STREAM_CHUNK,
        "runs": runs,
        "rows": rows,
    }
