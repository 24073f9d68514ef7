"""Shared fixtures: a real node on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ripplecast.app import Node
from ripplecast.config import Settings
from support import NodeFactory, RunningNode


@pytest.fixture
def make_node(tmp_path: Path) -> NodeFactory:
    """Start a node with test-friendly settings; keyword arguments override settings."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[RunningNode]:
        values: dict[str, Any] = {
            "rtmp_host": "127.0.0.1",
            "rtmp_port": 0,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "data_dir": tmp_path / "data",
            "publish_mode": "open",
            "hls_segment_seconds": 1.0,
        }
        values.update(overrides)
        node = Node(Settings(**values))
        await node.start()
        try:
            yield RunningNode(node)
        finally:
            await node.close()

    return factory


@pytest.fixture
async def live_node(make_node: NodeFactory) -> AsyncIterator[RunningNode]:
    async with make_node() as running:
        yield running
