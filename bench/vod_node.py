"""Services the upload and worker benchmarks run against, all on loopback: a Ripplecast node
in this process, a moto S3 server as a child process, a scratch PostgreSQL database.

Every one is an async context manager that stops (or drops) what it started, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ripplecast.accounts.policy import Scope
from ripplecast.app import Node
from ripplecast.config import Settings
from ripplecast.db.models import Role

MOTO_START_TIMEOUT = 30.0
MOTO_ACCESS_KEY = "bench"
MOTO_SECRET_KEY = "bench"
REGION = "us-east-1"
POSTGRESQL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""A database on the machine's server to connect to while creating and dropping ours."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's S3 server (`moto_server` next to this interpreter) on a loopback port."""

    def __init__(self, process: subprocess.Popen[bytes], endpoint_url: str) -> None:
        self.process = process
        self.endpoint_url = endpoint_url

    @property
    def pid(self) -> int:
        return self.process.pid

    def storage_kwargs(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of `S3Storage` for `bucket` on this server."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": MOTO_ACCESS_KEY,
            "secret_access_key": MOTO_SECRET_KEY,
            "max_attempts": 2,
            **overrides,
        }

    def node_settings(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """Settings fields storing a node's media in `bucket` on this server."""
        return {
            "storage_url": f"s3://{bucket}",
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": MOTO_ACCESS_KEY,
            "s3_secret_access_key": MOTO_SECRET_KEY,
            **overrides,
        }


def _answers(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/data.json", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.asynccontextmanager
async def moto_server(log_path: Path) -> AsyncIterator[MotoServer]:
    """Start moto_server, wait until it answers, stop it on exit."""
    program = Path(sys.executable).parent / "moto_server"
    if not program.exists():
        raise RuntimeError(f"{program} not found: pip install 'moto[server]'")
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once, reaped below
            [str(program), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        while not await asyncio.to_thread(_answers, endpoint_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start; see {log_path}")
            await asyncio.sleep(0.1)
        yield MotoServer(process, endpoint_url)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)


def node_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a node on loopback ports chosen by the kernel, with no worker unless asked."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "rtmp_host": "127.0.0.1",
        "rtmp_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "worker_enabled": False,
        "hls_enabled": False,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    """A started node (database migrated, storage ready, HTTP listening), closed on exit."""
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


async def api_headers(node: Node, username: str = "bencher") -> dict[str, str]:
    """A creator account and an API token allowed to upload, as request headers."""
    await node.accounts.create_user(username, secrets.token_urlsafe(16), role=Role.CREATOR)
    user = await node.accounts.user(username)
    made = await node.logins.create_api_token(user.id, "bench", [Scope.READ, Scope.PUBLISH])
    return {"Authorization": f"Bearer {made.token}"}


@contextlib.asynccontextmanager
async def scratch_postgresql(admin_url: str = POSTGRESQL_ADMIN_URL) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped on exit."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from ripplecast.db.engine import normalize_url

    name = f"rc_bench_{secrets.token_hex(6)}"
    admin = create_async_engine(
        normalize_url(admin_url), isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
