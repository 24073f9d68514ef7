"""Edge VOD cache benchmark: a burst of concurrent segment requests through `CachingStorage`.

    python -m bench.vod_edge_cache [--requests 1000] [--segments 10] [--segment-kb 1024]
                                   [--runs 5] [--s3] [--quiet-wait 10] [--out FILE.json]

Each request does what `/vod/...` does for a segment: `stat`, then `read` of the whole object
(the bytes are counted, not kept). The burst is `--requests` requests started at once, spread
evenly over `--segments` objects of `--segment-kb` KiB in a real store: a local folder
(`LocalStorage`), or with `--s3` a bucket on moto's S3 server on loopback. Per run, in order:

- direct: the burst straight to the store (no cache): one fetch per request, the baseline;
- cold: a new cache (the default vod_edge_cache_* bounds, disk in a scratch folder): the
  coalescing ratio is requests / fetches that reached the store (ideally requests / segments);
- warm: the same burst again: every request a memory hit, nothing fetched;
- disk: a new cache process-alike on the same disk folder (memory empty): loads from disk,
  coalesced as well, nothing fetched.

The store's calls are counted by a thin forwarding wrapper. Wall times are from the first request
started to the last byte of the last one; the cold cache's disk copies are written in the
background and timed apart ("disk copies"). Runs are separated by up to 10 s of waiting for the
machine to be quiet (shared machine); the summary gives the median of each figure over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.vod_common import CACHE_DIR, setting_default, wait_for_quiet
from bench.vod_node import moto_server
from ripplecast.storage import CachingStorage, LocalStorage, ObjectInfo, S3Storage, Storage

BURST_TIMEOUT = 600.0
"""Seconds one burst may take before the benchmark gives up."""
QUIET_WAIT = 10.0
"""Seconds to wait at most for a quiet machine before each run (default of --quiet-wait)."""


class CountedStore:
    """Forwards to a real store, counting the calls that reach it."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.stats = 0
        self.fetches = 0
        """Calls that read an object's bytes (read_bytes, read, download)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self) -> None:
        """Nothing: the benchmark starts the store once, the caches come and go in front."""

    async def close(self) -> None:
        """Nothing: see `start`."""

    async def stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        return await self.inner.stat(key)

    async def read_bytes(self, key: str) -> bytes:
        self.fetches += 1
        return await self.inner.read_bytes(key)

    def read(self, key: str, **kwargs: Any) -> Any:
        self.fetches += 1
        return self.inner.read(key, **kwargs)

    async def download(self, key: str, path: Path) -> None:
        self.fetches += 1
        await self.inner.download(key, path)

    def reset(self) -> None:
        self.stats = self.fetches = 0


async def request(storage: Any, key: str) -> int:
    """One segment request as `/vod/...` makes it; returns the bytes received."""
    info = await storage.stat(key)
    received = 0
    async with contextlib.aclosing(storage.read(key)) as body:
        async for chunk in body:
            received += len(chunk)
    if received != info.size:
        raise RuntimeError(f"{key}: {received} bytes received, {info.size} expected")
    return received


async def burst(storage: Any, keys: list[str], requests: int) -> tuple[float, int]:
    """`requests` concurrent requests over `keys`; (wall seconds, bytes received)."""
    started = time.perf_counter()
    async with asyncio.timeout(BURST_TIMEOUT):
        received = await asyncio.gather(
            *(request(storage, keys[i % len(keys)]) for i in range(requests))
        )
    return time.perf_counter() - started, sum(received)


def make_cache(store: CountedStore, disk_dir: Path) -> CachingStorage:
    return CachingStorage(
        store,  # type: ignore[arg-type]  # a forwarding wrapper of a real Storage
        memory_bytes=setting_default("vod_edge_cache_memory_bytes"),
        disk_dir=disk_dir,
        disk_bytes=setting_default("vod_edge_cache_disk_bytes"),
        max_object_bytes=setting_default("vod_edge_cache_max_object_bytes"),
    )


async def one_run(store: CountedStore, keys: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The four variants of one run (see the module)."""
    row: dict[str, Any] = {}
    store.reset()
    wall, received = await burst(store, keys, args.requests)
    row["direct"] = {"wall_s": wall, "fetches": store.fetches, "stats": store.stats}
    expected = received

    disk_dir = Path(tempfile.mkdtemp(prefix="edge-cache-", dir=args.scratch))
    try:
        cache = make_cache(store, disk_dir)
        await cache.start()
        store.reset()
        wall, received = await burst(cache, keys, args.requests)
        copies_started = time.perf_counter()
        await cache.wait_for_disk_writes()
        row["cold"] = {
            "wall_s": wall,
            "fetches": store.fetches,
            "stats": store.stats,
            "coalesced": cache.coalesced,
            "ratio": args.requests / max(1, store.fetches),
            "disk_copies_s": time.perf_counter() - copies_started,
        }
        assert received == expected
        store.reset()
        hits = cache.hits_memory
        wall, received = await burst(cache, keys, args.requests)
        row["warm"] = {
            "wall_s": wall,
            "fetches": store.fetches,
            "memory_hits": cache.hits_memory - hits,
        }
        assert received == expected
        await cache.close()

        restarted = make_cache(store, disk_dir)
        await restarted.start()
        store.reset()
        wall, received = await burst(restarted, keys, args.requests)
        row["disk"] = {
            "wall_s": wall,
            "fetches": store.fetches,
            "disk_loads": restarted.hits_disk,
            "coalesced": restarted.coalesced,
        }
        assert received == expected
        await restarted.close()
    finally:
        shutil.rmtree(disk_dir, ignore_errors=True)
    return row


def median(rows: list[dict[str, Any]], variant: str, field: str) -> float:
    return float(statistics.median(row[variant][field] for row in rows))


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    mib = args.requests * args.segment_kb / 1024
    result: dict[str, Any] = {}
    for variant in ("direct", "cold", "warm", "disk"):
        wall = median(rows, variant, "wall_s")
        result[variant] = {
            "wall_s": round(wall, 3),
            "requests_per_s": round(args.requests / wall),
            "MiB_per_s": round(mib / wall),
            "fetches": median(rows, variant, "fetches"),
        }
    result["cold"]["ratio"] = median(rows, "cold", "ratio")
    result["cold"]["disk_copies_s"] = round(median(rows, "cold", "disk_copies_s"), 3)
    return result


@contextlib.asynccontextmanager
async def opened_store(args: argparse.Namespace) -> AsyncIterator[Storage]:
    """The store the segments live in: a scratch folder, or a bucket on a moto server."""
    if not args.s3:
        root = Path(tempfile.mkdtemp(prefix="edge-store-", dir=args.scratch))
        try:
            yield LocalStorage(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    async with moto_server(args.scratch / "moto.log") as server:
        yield S3Storage(**server.storage_kwargs(f"edge-{secrets.token_hex(4)}"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    args.scratch.mkdir(parents=True, exist_ok=True)
    async with opened_store(args) as inner:
        store = CountedStore(inner)
        await inner.start()
        try:
            segment = secrets.token_bytes(args.segment_kb * 1024)
            keys = [f"vod/bench/720p/{i:04d}.ts" for i in range(args.segments)]
            for key in keys:
                await inner.put_bytes(key, segment)
            rows = []
            for number in range(1, args.runs + 1):
                quiet = await wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
                row = await one_run(store, keys, args)
                rows.append(row)
                print(
                    f"run {number}: direct {row['direct']['wall_s']:.3f} s"
                    f" ({row['direct']['fetches']} fetches) | cold {row['cold']['wall_s']:.3f} s"
                    f" ({row['cold']['fetches']} fetches, ratio {row['cold']['ratio']:.0f},"
                    f" disk copies {row['cold']['disk_copies_s']:.3f} s)"
                    f" | warm {row['warm']['wall_s']:.3f} s ({row['warm']['fetches']} fetches)"
                    f" | disk {row['disk']['wall_s']:.3f} s ({row['disk']['fetches']} fetches,"
                    f" {row['disk']['disk_loads']} loads) | machine {quiet}",
                    flush=True,
                )
        finally:
            await inner.close()
    return {
        "store": "s3 (moto on loopback)" if args.s3 else "local folder",
        "requests": args.requests,
        "segments": args.segments,
        "segment_kb": args.segment_kb,
        "runs": rows,
        "median": summary(rows, args),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vod_edge_cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per burst")
    parser.add_argument("--segments", type=int, default=10, help="distinct segments requested")
    parser.add_argument("--segment-kb", type=int, default=1024, help="size of each segment")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--s3", action="store_true", help="segments in moto's S3, not a folder")
    parser.add_argument("--scratch", type=Path, default=CACHE_DIR / "edge-cache")
    parser.add_argument(
        "--quiet-wait", type=float, default=QUIET_WAIT, help="seconds; 0: do not wait"
    )
    parser.add_argument("--out", type=Path, help="write the runs and medians here as JSON")
    args = parser.parse_args(argv)
    for name in ("requests", "segments", "segment_kb", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    result = asyncio.run(run(args))
    print(json.dumps(result["median"], indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", "utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
