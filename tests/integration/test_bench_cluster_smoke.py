"""Keeps the cluster benchmark from rotting: origin + 2 edges on one port, 5 viewers, ~3 s."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from bench.cluster import ClusterRow, ProcessFigures, parse_ss, run_cluster_row
from bench.publisher import prepare_media

from support import require_program, require_redis

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]

SS_SAMPLE = """\
0      0      127.0.0.1:8080   127.0.0.1:50000 users:(("python",pid=4242,fd=12))
\t cubic wscale:7,7 rto:204 bytes_sent:1200 bytes_acked:1001 bytes_received:90 segs_out:9
0      0      127.0.0.1:8080   127.0.0.1:50002
\t cubic wscale:7,7 rto:204 bytes_received:90 segs_out:1
"""


def test_ss_output_is_read_per_connection() -> None:
    first, second = parse_ss(SS_SAMPLE)
    assert (first.local, first.peer, first.pid, first.bytes_acked) == (
        "127.0.0.1:8080", "127.0.0.1:50000", 4242, 1001,
    )  # fmt: skip
    assert (second.peer, second.pid, second.bytes_acked) == ("127.0.0.1:50002", 0, 0)


async def test_cluster_row_origin_and_two_edges_on_one_port(tmp_path: Path) -> None:
    require_program("ffmpeg")
    await require_redis()
    media = prepare_media(tmp_path / "media.flv", seconds=4)
    row = await run_cluster_row(
        "shared-port",
        5,
        scenario="smoke",
        duration=3,
        media=media,
        warmup=1.5,
        idle=0.5,
        settle=0.5,
    )
    names = {f.name for f in dataclasses.fields(ClusterRow)}
    assert {"servers_cpu_pct", "origin_egress_mbit", "delay_p95_ms", "saturated"} <= names
    assert all(isinstance(p, ProcessFigures) for p in row.processes)
    assert [(p.name, p.role) for p in row.processes] == [
        ("origin", "origin"), ("edge-1", "edge"), ("edge-2", "edge"),
    ]  # fmt: skip
    assert row.kept_up == 5, row
    assert row.connected == 5 and row.errors == 0
    assert row.delay_samples > 0 and math.isfinite(row.delay_p99_ms)
    assert 0 < row.delay_p50_ms < 2000
    assert row.startup_p95_ms < 5000 and 0 < row.edge_cold_start_ms < 5000
    # One upstream per edge at the origin; the edges hold the viewers, whichever got them.
    origin, *edges = row.processes
    assert row.origin_connections == 2 and origin.viewers == 0
    assert sum(e.viewers for e in edges) == 5
    assert 0 < row.origin_egress_mbit < row.edges_egress_mbit
    assert all(p.cpu_pct > 0 and p.rss_kb > 0 for p in row.processes)
    assert not row.notes, row.notes
