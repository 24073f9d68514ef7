"""Keeps the fan-out benchmark from rotting: 5 viewers of each protocol for ~3 s, not timed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from bench.fanout import Row, run_row
from bench.publisher import prepare_media, read_stamp, stamp_frame, timing_sei

from support import require_program

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]


def test_timing_sei_round_trips_with_emulation_prevention() -> None:
    frame = b"\x27\x01\x00\x00\x00" + b"\x00\x00\x00\x05\x41\x9a\x00\x00\x01"
    for micros in (0, 1, 0x0000030000000003, 1_764_000_000_123_456):
        sei = timing_sei(micros)
        assert b"\x00\x00\x00" not in sei and b"\x00\x00\x01" not in sei
        stamped = stamp_frame(frame, micros)
        assert stamped.endswith(frame[5:])
        assert read_stamp(stamped[:48]) == micros
    assert read_stamp(frame) is None


@pytest.mark.parametrize("protocol", ["flv", "rtmp"])
async def test_fanout_row_against_ripplecast(protocol: str, tmp_path: Path) -> None:
    require_program("ffmpeg")
    media = prepare_media(tmp_path / "media.flv", seconds=4)
    row = await run_row(
        "ripplecast",
        protocol,
        5,
        duration=3,
        media=media,
        warmup=1.5,
        idle=0.5,
        settle=0.5,
    )
    fields = {f.name for f in dataclasses.fields(Row)}
    assert {"server_cpu_pct", "rss_per_viewer_kb", "delay_p95_ms", "saturated"} <= fields
    assert row.kept_up == 5, row
    assert row.connected == 5 and row.errors == 0
    assert row.delay_samples > 0 and math.isfinite(row.delay_p99_ms)
    assert 0 < row.delay_p50_ms < 2000
    assert row.startup_p95_ms < 5000
    assert row.server_cpu_pct > 0 and row.rss_steady_kb > 0
    assert not row.notes, row.notes
