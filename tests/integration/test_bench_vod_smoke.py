"""Keeps the video-on-demand benchmark from rotting: each command in its quick mode (tiny
generated media, one run), as a separate process the way it is run by hand. Not timed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s3server import moto_server_program
from support import require_program

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(command: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """`python -m bench.vod COMMAND --quick`, media cached in tmp_path; the results JSON."""
    out = tmp_path / "vod.json"
    env = {**os.environ, "RIPPLECAST_BENCH_CACHE": str(tmp_path / "cache")}
    env = {k: v for k, v in env.items() if not k.startswith("RIPPLECAST_") or "BENCH" in k}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.vod", command, "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    assert f"{command}: written to {out}" in completed.stdout.decode()
    results: dict[str, Any] = json.loads(out.read_text())
    assert results["quick"] is True and results["machine"]["nproc"] >= 1
    assert "ffmpeg version" in results["machine"]["ffmpeg"]
    markdown = out.with_suffix(".md").read_text()
    assert f"## {command.capitalize()}" in markdown and "mean nothing" in markdown
    return results


def positive(entry: dict[str, Any]) -> bool:
    return len(entry["runs"]) == 1 and entry["median"] > 0 and math.isfinite(entry["median"])


def test_transcode_quick(tmp_path: Path) -> None:
    require_program("ffmpeg")
    section = run_bench("transcode", tmp_path)["transcode"]
    assert [r["name"] for r in section["plan"]["renditions"]] == ["240p"]
    variants = section["variants"]
    assert set(variants) == {"ripplecast", "bare", "one_process", "separate", "parallel"}
    for name, figures in variants.items():
        assert positive(figures["wall_s"]) and positive(figures["ffmpeg_cpu_s"]), name
        assert positive(figures["bytes_out"]), name
    # Ripplecast ran the very command the bare variant ran.
    assert section["plan"]["command"][0].endswith("ffmpeg")
    assert "-filter_complex" in section["plan"]["command"]
    assert positive(section["overhead"]["wall_vs_bare_main"])
    assert positive(section["cpu_ratio"]["one_process_vs_separate"])


def test_upload_quick(tmp_path: Path) -> None:
    require_program("ffmpeg")
    require_program("curl")
    moto_server_program()
    section = run_bench("upload", tmp_path)["upload"]
    rows = {row["variant"]: row for row in section["rows"]}
    assert len(rows) == 11
    for name, row in rows.items():
        assert positive(row["mb_s"]) and positive(row["wall_s"]), name
    api = rows["POST /api/v1/videos -> local folder"]
    assert set(api["versus"]) == {"LocalStorage.put_file"}
    assert positive(api["versus"]["LocalStorage.put_file"])
    # The quick file is larger than the lowered multipart threshold: parts were uploaded.
    assert section["file"]["bytes"] > section["multipart_threshold"]
    assert positive(rows["S3Storage.put_file"]["peer_cpu_s"])


def test_workers_quick(tmp_path: Path) -> None:
    require_program("ffmpeg")
    section = run_bench("workers", tmp_path, "--db", "sqlite")["workers"]
    rows = {row["workers"]: row for row in section["rows"]}
    assert set(rows) == {1, 2}
    for workers, row in rows.items():
        assert positive(row["jobs_per_min"]), workers
        [done] = row["jobs_per_worker_runs"]
        assert sum(done) == section["jobs"] and len(done) == workers
    assert positive(rows[2]["speedup"])
