"""A worker killed mid-job elsewhere in the cluster: the job finishes on another worker.

A real local cluster (`LocalCluster`: one edge, one web node and two worker processes behind
HAProxy, on a fresh PostgreSQL database and the machine's Redis). A video is uploaded through
HAProxy; once one worker is visibly transcoding it, that worker's process group is killed with
SIGKILL (a crashed process: no goodbye, no lease given back). Its lease expires, the other
worker takes the job over, publishes it once, and the video plays through HAProxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster_support import RIPPLECAST, cli_env
from sqlalchemy import select

from media import make_video
from ripplecast.db.engine import Database
from ripplecast.db.models import Job, JobState
from ripplecast.devcluster import ClusterSpec, LocalCluster
from support import REDIS, require_program, require_redis, run
from vod_support import upload_file

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
"""A fresh PostgreSQL database for the test (tests/databases.py)."""

LEASE_SECONDS = 4
LADDER = ["240:400k:64k", "144:200k:48k"]
CLUSTER_SETTINGS = {
    "vod_ladder": json.dumps(LADDER),
    # A slow preset on a small ladder: a transcode takes a few seconds, long enough to be
    # caught in the middle, short enough to be done twice within the test's time.
    "vod_x264_preset": "slower",
    "vod_segment_seconds": "1",
    "job_lease_seconds": str(LEASE_SECONDS),
    "job_poll_seconds": "0.5",
}
MID_JOB_PROGRESS = 0.05
"""The killed worker has reported at least this much of the job done."""


@dataclass(frozen=True, slots=True)
class JobRow:
    """What the jobs table says about the one job of the test."""

    state: JobState
    attempts: int
    fence: int
    lease_owner: str | None
    progress: float


async def job_row(db: Database) -> JobRow:
    async with db.session() as session:
        job = (await session.execute(select(Job))).scalar_one()
        return JobRow(job.state, job.attempts, job.fence, job.lease_owner, job.progress)


def processes_of(data_dir: Path) -> list[int]:
    """Pids of live processes whose environment gives them `data_dir` as their data dir: a
    node and whatever it started (children inherit the node's environment)."""
    marker = f"RIPPLECAST_DATA_DIR={data_dir}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def owner_pid(lease_owner: str) -> int:
    """The pid in a worker's name (`ripplecast.vod.worker.worker_id`: host:pid:random)."""
    return int(lease_owner.rsplit(":", 2)[1])


async def api_token(cluster: LocalCluster, http: aiohttp.ClientSession, cli_dir: Path) -> str:
    """An API token of a new administrator, made as a user would: `ripplecast user create`
    against the cluster's shared settings (what `ripplecast cluster env` exports), then a login
    and POST /api/v1/tokens through HAProxy."""
    username, password = "ops", secrets.token_urlsafe(16)
    env = cli_env() | {
        f"RIPPLECAST_{name.upper()}": value for name, value in cluster.shared_settings().items()
    }
    created = await asyncio.to_thread(
        subprocess.run,
        [*RIPPLECAST, "user", "create", username, "--admin", "--password-stdin"],
        input=password + "\n",
        env=env | {"RIPPLECAST_DATA_DIR": str(cli_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    api = f"{cluster.http_url}/api/v1"
    credentials = {"username": username, "password": password}
    async with http.post(f"{api}/auth/login", json=credentials) as r:
        assert r.status == 200, await r.text()
        csrf = (await r.json())["csrf_token"]
    made = {"name": "failover", "scopes": ["read", "publish"]}
    async with http.post(f"{api}/tokens", json=made, headers={"X-CSRF-Token": csrf}) as r:
        assert r.status == 201, await r.text()
        token: str = (await r.json())["token"]
    http.cookie_jar.clear()  # from here on, the token only
    return token


async def video_of(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.slow
@ON_POSTGRESQL
async def test_a_worker_killed_mid_job_has_its_job_finished_by_the_other_worker(
    db_url: str, run_dir: Path, haproxy: str, tmp_path: Path
) -> None:
    await require_redis()
    require_program("ffmpeg")
    source = tmp_path / "talk.mp4"
    await asyncio.to_thread(make_video, source, seconds=20, size="640x360", pattern="testsrc2")
    spec = ClusterSpec(
        database_url=db_url, cache_url=REDIS, origins=0, edges=1, web=1, workers=2,
        run_dir=run_dir, settings=CLUSTER_SETTINGS, timeout=30, haproxy=haproxy,
    )  # fmt: skip
    cluster = await asyncio.to_thread(LocalCluster.up, spec)
    killed_data_dir: Path | None = None
    try:
        loop = asyncio.get_running_loop()
        async with (
            Database(db_url) as db,
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # the session cookie of 127.0.0.1
            ) as http,
        ):
            token = await api_token(cluster, http, tmp_path / "cli")
            auth = {"Authorization": f"Bearer {token}"}
            status, uploaded = await upload_file(
                http, f"{cluster.http_url}/api/v1", auth, source, title="failover"
            )
            assert status == 201, uploaded
            video_id = uploaded["id"]
            video_url = f"{cluster.http_url}/api/v1/videos/{video_id}"

            # Mid-job: the API (through HAProxy) shows the transcode under way.
            deadline = loop.time() + 30
            while True:
                video = await video_of(http, video_url, auth)
                job = video["job"]
                if (
                    job is not None
                    and job["state"] == "running"
                    and job["progress"] > MID_JOB_PROGRESS
                ):
                    break
                assert video["state"] == "processing", video
                assert loop.time() < deadline, f"no worker made progress: {video}"
                await asyncio.sleep(0.1)
            first = await job_row(db)
            assert first.state is JobState.RUNNING and first.lease_owner is not None, first
            workers = {node.process.pid: node for node in cluster.by_role("worker") if node.process}
            assert owner_pid(first.lease_owner) in workers, (first.lease_owner, workers)
            killed = workers.pop(owner_pid(first.lease_owner))
            (survivor,) = workers.values()

            killed_data_dir = killed.data_dir
            await asyncio.to_thread(cluster.kill, killed.node_id, signal.SIGKILL)
            killed_at = loop.time()
            # Its ffmpeg dies with it (the kernel's parent-death signal), though it runs in a
            # session of its own: no transcode outlives its worker.
            for _ in range(50):
                if not processes_of(killed_data_dir):
                    break
                await asyncio.sleep(0.1)
            assert processes_of(killed_data_dir) == [], "the killed worker's ffmpeg survived"
            after_kill = await job_row(db)
            # Killed before it finished: the job is still its, and its video not published.
            assert (after_kill.state, after_kill.lease_owner, after_kill.fence) == (
                JobState.RUNNING,
                first.lease_owner,
                1,
            ), after_kill
            assert (await video_of(http, video_url, auth))["state"] == "processing"

            deadline = loop.time() + 40
            while (video := await video_of(http, video_url, auth))["state"] == "processing":
                assert loop.time() < deadline, f"not finished after the kill: {video}"
                await asyncio.sleep(0.2)
            ready_after = loop.time() - killed_at
            assert video["state"] == "ready", video

            done = await job_row(db)
            assert (done.state, done.attempts, done.fence, done.lease_owner) == (
                JobState.DONE,
                2,
                2,
                None,
            ), done
            assert video["job"]["attempts"] == 2
            # The takeover is on record: the second attempt says whose lease expired.
            assert first.lease_owner in video["job"]["last_error"], video["job"]
            published = f"video {video_id} ready"
            survivor_log = survivor.log.read_text()
            assert survivor_log.count(published) == 1, survivor_log[-3000:]
            assert f"lease of {first.lease_owner} expired" in survivor_log, survivor_log[-3000:]
            assert published not in killed.log.read_text()

            master = cluster.http_url + video["playlist"]
            code, _, err = await run(
                ["ffmpeg", "-v", "error", "-i", master, "-map", "0", "-f", "null", "-"], timeout=30
            )
            assert code == 0 and err == b"", err.decode()
        print(
            f"\n{killed.node_id} killed mid-job (progress {first.progress:.0%}); "
            f"{survivor.node_id} published the video {ready_after:.1f} s later "
            f"(lease {LEASE_SECONDS} s)"
        )
    finally:
        await asyncio.to_thread(cluster.down)
        if killed_data_dir is not None:
            # Whatever the assertion above saw, nothing started for the killed worker
            # outlives the test.
            for pid in processes_of(killed_data_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
