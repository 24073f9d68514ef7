"""Keeps the edge cache benchmark (bench/vod_edge_cache.py) from rotting: one tiny run, as a
separate process the way it is run by hand, over a local folder. Its figures are not checked,
only its counts: they follow from coalescing, not from speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_and_coalesces(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    completed = subprocess.run(
        [
            sys.executable, "-m", "bench.vod_edge_cache",
            "--runs", "1", "--requests", "60", "--segments", "3", "--segment-kb", "16",
            "--quiet-wait", "0", "--scratch", str(tmp_path / "scratch"), "--out", str(out),
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")},
        capture_output=True,
        timeout=100,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["direct"]["fetches"] == 60
    assert run["cold"]["fetches"] == 3 and run["cold"]["ratio"] == 20
    assert run["warm"]["fetches"] == 0
    assert run["disk"]["fetches"] == 0 and run["disk"]["disk_loads"] == 3
