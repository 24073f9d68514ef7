"""A real S3-protocol peer for tests: moto's server (`moto_server`) as a subprocess on loopback.

The session fixture `s3_server` is the endpoint URL. Make it visible to a test module with
`s3_server = s3server.s3_server` in the module (an assignment, so tests taking an `s3_server`
argument do not trip ruff's F811), or in a conftest with `from s3server import s3_server` and
`__all__ = ["s3_server"]` (as tests/db/conftest.py does for `db_url`). Give every test its own
bucket with `s3_storage_kwargs(s3_server)` (for `S3Storage(...)`) or `s3_settings(s3_server)`
(Settings fields, e.g. for `make_node(**...)`).

moto accepts any credentials and does not check signatures or expiry (see DEPENDENCIES.md).
The program is the one next to the test interpreter; without it the tests are skipped, or
failed under RIPPLECAST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import free_port

# As in support.py, read here directly so that this module imports no Ripplecast code.
REQUIRE_SERVICES = os.environ.get("RIPPLECAST_REQUIRE_SERVICES") == "1"

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT = 30.0
"""Seconds moto_server has to answer (it imports a lot on start)."""
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3


def moto_server_program() -> Path:
    """The moto_server installed with the test interpreter; skips (or fails) if absent."""
    program = Path(sys.executable).parent / "moto_server"
    if not program.exists():
        message = f"{program} not found: pip install 'moto[server]'"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return program


def _answers(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/data.json", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def _start(program: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """Start moto_server on a free port; return it and its URL once it answers, else None."""
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(program), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # e.g. the port was taken in the meantime
        if _answers(endpoint_url):
            return process, endpoint_url
        time.sleep(0.05)
    _stop(process)
    return None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL (http://127.0.0.1:PORT) of a moto S3 server running for the session."""
    program = moto_server_program()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    for _ in range(_START_ATTEMPTS):
        started = _start(program, log_path)
        if started is not None:
            break
    else:
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"moto_server did not answer within {START_TIMEOUT} s; its output:\n{tail}")
    process, endpoint_url = started
    try:
        yield endpoint_url
    finally:
        _stop(process)


def fresh_bucket() -> str:
    """A bucket name no other test uses."""
    return f"rc-test-{secrets.token_hex(6)}"


def s3_storage_kwargs(endpoint_url: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of `S3Storage` for a fresh bucket on `endpoint_url`; `overrides` win."""
    kwargs: dict[str, Any] = {
        "bucket": fresh_bucket(),
        "endpoint_url": endpoint_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "max_attempts": 2,
        "connect_timeout": 5.0,
        "read_timeout": 30.0,
    }
    kwargs.update(overrides)
    return kwargs


def s3_settings(endpoint_url: str, *, prefix: str = "", **overrides: Any) -> dict[str, Any]:
    """Settings fields putting media in a fresh bucket (under `prefix`) on `endpoint_url`."""
    bucket = fresh_bucket()
    values: dict[str, Any] = {
        "storage_url": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
        "s3_endpoint_url": endpoint_url,
        "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY_ID,
        "s3_secret_access_key": SECRET_ACCESS_KEY,
    }
    values.update(overrides)
    return values
