"""The lean process collector: the standard values, and open descriptors counted at most every
few seconds."""

from __future__ import annotations

import os
import time

from ripplecast.metrics.components import OPEN_FDS_MAX_AGE_SECONDS, ProcessMetrics


def values(collector: ProcessMetrics) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


def test_process_values_are_this_process() -> None:
    now = [0.0]
    collector = ProcessMetrics(clock=lambda: now[0])
    first = values(collector)
    assert first["process_cpu_seconds_total"] > 0
    assert first["process_resident_memory_bytes"] > 1_000_000
    assert first["process_virtual_memory_bytes"] >= first["process_resident_memory_bytes"]
    assert time.time() - 86400 < first["process_start_time_seconds"] <= time.time()
    assert first["process_max_fds"] >= first["process_open_fds"] > 0
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
    try:
        assert values(collector)["process_open_fds"] == first["process_open_fds"]  # not yet
        now[0] += OPEN_FDS_MAX_AGE_SECONDS
        assert values(collector)["process_open_fds"] == first["process_open_fds"] + 20
    finally:
        for fd in files:
            os.close(fd)
