"""Standalone `ripplecast worker` processes on PostgreSQL: one is killed with SIGKILL mid-job,
its lease expires, another finishes the job, and the video is published exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

import databases
from media import make_video
from ripplecast.db.migrate import upgrade
from ripplecast.db.models import Job, JobState, Video, VideoState
from support import NodeFactory, Process, require_program, run

db_url = databases.db_url

RIPPLECAST = [sys.executable, "-m", "ripplecast.cli"]
LADDER = ["720:1500k:96k", "360:500k:64k"]


def worker_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLECAST_")}
    env.update(
        RIPPLECAST_DATA_DIR=str(data_dir),
        RIPPLECAST_DATABASE_URL=database_url,
        RIPPLECAST_VOD_LADDER=json.dumps(LADDER),
        RIPPLECAST_VOD_SEGMENT_SECONDS="1",
        RIPPLECAST_JOB_LEASE_SECONDS="3",
        RIPPLECAST_JOB_POLL_SECONDS="0.2",
        RIPPLECAST_JOB_BACKOFF_BASE_SECONDS="0",
        **extra,
    )
    return env


async def job_row(node: Any) -> tuple[Job, Video]:
    async with node.db.session() as session:
        job = (await session.execute(select(Job))).scalar_one()
        video = (await session.execute(select(Video))).scalar_one()
        return job, video


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_killed_worker_s_job_is_finished_by_another_exactly_once(
    make_node: NodeFactory, db_url: str, tmp_path: Path
) -> None:
    require_program("ffmpeg")
    source = tmp_path / "long.mp4"
    await asyncio.to_thread(make_video, source, seconds=12, size="1280x720")
    await upgrade(db_url)
    data_dir = tmp_path / "data"
    async with make_node(
        database_url=db_url,
        data_dir=data_dir,
        worker_enabled=False,
        publish_mode="keys",
        vod_ladder=LADDER,
    ) as running:
        node, api = running.node, f"{running.http}/api/v1"
        from ripplecast.accounts.policy import Scope

        user = await node.accounts.create_user("jill", "jill password")
        token = await node.logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
        headers = {
            "Authorization": f"Bearer {token.token}",
            "Content-Type": "application/octet-stream",
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{api}/videos", data=source.read_bytes(), headers=headers) as r:
                assert r.status == 201
                video_id = (await r.json())["id"]

            # Worker A: a slow preset so it is surely mid-job when killed. SIGKILL takes its
            # ffmpeg with it (the parent-death signal set at spawn), as a crashed machine would.
            first = await Process.start(
                [*RIPPLECAST, "worker"],
                env=worker_env(data_dir, db_url, RIPPLECAST_VOD_X264_PRESET="slow"),
                start_new_session=True,
            )
            async with first:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while True:
                    job, _ = await job_row(node)
                    if job.state is JobState.RUNNING and job.progress > 0.05:
                        break
                    assert loop.time() < deadline, "worker A never made progress"
                    await asyncio.sleep(0.1)
                first_owner = job.lease_owner
                os.killpg(first.proc.pid, signal.SIGKILL)
                await first.wait(10)

            job, video = await job_row(node)
            assert job.state is JobState.RUNNING and video.state is VideoState.PROCESSING
            assert job.lease_owner == first_owner and job.fence == 1

            second = await Process.start(
                [*RIPPLECAST, "worker"],
                env=worker_env(data_dir, db_url, RIPPLECAST_VOD_X264_PRESET="ultrafast"),
                stderr=asyncio.subprocess.PIPE,
            )
            async with second:
                deadline = asyncio.get_running_loop().time() + 90
                while True:
                    job, video = await job_row(node)
                    if video.state is not VideoState.PROCESSING:
                        break
                    assert asyncio.get_running_loop().time() < deadline, "never finished"
                    await asyncio.sleep(0.2)
                second.proc.send_signal(signal.SIGTERM)
                code, _, log = await second.wait(20)
            assert code == 0, log.decode()[-2000:]
            assert video.state is VideoState.READY, video.error
            # The second attempt (fence 2) published; the killed one never did.
            assert (job.state, job.attempts, job.fence) == (JobState.DONE, 2, 2)
            assert job.lease_owner is None
            assert log.decode().count(f"video {video_id} ready") == 1
            master = f"{running.http}/vod/{video_id}/master.m3u8"
            code, _, err = await run(
                ["ffmpeg", "-v", "error", "-i", master, "-map", "0", "-f", "null", "-"],
                timeout=60,
            )
            assert code == 0 and err == b"", err.decode()
