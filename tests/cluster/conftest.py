"""Fixtures of the cluster tests: real `ripplecast serve --role` processes, the real HAProxy,
PostgreSQL and Redis of the machine, loopback only.

Every test that starts a cluster gets a run dir whose cluster is stopped afterwards whatever
happened (`run_dir`). Helpers the tests import are in cluster_support.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from databases import db_url
from ripplecast.devcluster import DevClusterError, LocalCluster, find_haproxy
from support import REDIS, REQUIRE_SERVICES, require_redis

__all__ = ["REDIS", "db_url", "require_redis"]


@pytest.fixture
def haproxy() -> str:
    """The haproxy program; skipped without one (failed under RIPPLECAST_REQUIRE_SERVICES=1)."""
    try:
        return find_haproxy()
    except DevClusterError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A cluster run dir; whatever cluster.json records there is stopped after the test."""
    path = tmp_path / "cluster"
    yield path
    try:
        cluster = LocalCluster.load(path)
    except DevClusterError:  # a test's own damaged file
        return
    if cluster is not None:
        cluster.down(term_timeout=5)
