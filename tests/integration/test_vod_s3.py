"""Video on demand on S3 (moto's server): the whole path, presigned segment redirects, and a
store that fails mid-publish (the video stays unplayable until a retry publishes it whole)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

import s3server
from media import make_video
from ripplecast.app import worker_for
from ripplecast.db.models import Job, JobState, Video, VideoState
from ripplecast.storage import ObjectInfo, Storage, StorageError
from support import NodeFactory, require_program, run
from vod_support import VOD_SETTINGS, token_for, upload_file, wait_ready

s3_server = s3server.s3_server


async def test_upload_transcode_play_from_s3(
    make_node: NodeFactory, s3_server: str, tmp_path: Path
) -> None:
    require_program("ffmpeg")
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=3, size="320x240")
    for presigned in (False, True):
        settings = {
            **VOD_SETTINGS,
            **s3server.s3_settings(s3_server),
            "s3_presigned_get": presigned,
        }
        async with make_node(**settings) as running:
            node, api = running.node, f"{running.http}/api/v1"
            jill = await token_for(node, f"jill{int(presigned)}")
            async with aiohttp.ClientSession() as http:
                status, video = await upload_file(http, api, jill, source)
                assert status == 201, video
                ready = await wait_ready(http, api, jill, video["id"], 90)
                assert ready["state"] == "ready"
                keys = [o.key for o in await node.storage.list("")]
                assert f"sources/{video['id']}" in keys
                assert f"vod/{video['id']}/master.m3u8" in keys
                segment = next(k for k in keys if k.endswith(".ts"))
                url = f"{running.http}/{segment}"
                async with http.get(url, allow_redirects=False) as r:
                    if presigned:
                        assert r.status == 302
                        assert r.headers["Location"].startswith(s3_server)
                    else:
                        assert r.status == 200
                        assert await r.read() == await node.storage.read_bytes(segment)
                master = running.http + ready["playlist"]
                code, _, err = await run(
                    ["ffmpeg", "-v", "error", "-i", master, "-map", "0", "-f", "null", "-"],
                    timeout=60,
                )
                # Following a redirect to the store, ffmpeg notes that it opens a second
                # connection; nothing else may appear.
                noise = [
                    line
                    for line in err.decode().splitlines()
                    if "Cannot reuse HTTP connection for different host" not in line
                ]
                assert code == 0 and noise == [], err.decode()
                async with http.delete(f"{api}/videos/{video['id']}", headers=jill) as r:
                    assert r.status == 204
                assert await node.storage.list("") == []


class FailingPuts:
    """The real store, except that chosen writes fail (as S3 does when it has a bad day)."""

    def __init__(self, storage: Storage, *, fail_put: int, times: int) -> None:
        self._storage = storage
        self._fail_put = fail_put
        self._times = times
        self.puts = 0
        self.failures = 0

    async def put_file(
        self, key: str, path: Path, *, content_type: str | None = None
    ) -> ObjectInfo:
        self.puts += 1
        if self.puts % self._fail_put == 0 and self.failures < self._times:
            self.failures += 1
            raise StorageError(f"put {key}: injected failure")
        return await self._storage.put_file(key, path, content_type=content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


async def job_and_video(node: Any) -> tuple[Job, Video]:
    async with node.db.session() as session:
        return (
            (await session.execute(select(Job))).scalar_one(),
            (await session.execute(select(Video))).scalar_one(),
        )


@pytest.mark.parametrize("times", [1, 10])
async def test_a_store_failing_mid_publish_never_leaves_a_half_visible_video(
    make_node: NodeFactory, s3_server: str, tmp_path: Path, times: int
) -> None:
    require_program("ffmpeg")
    source = tmp_path / "clip.mp4"
    await asyncio.to_thread(make_video, source, seconds=3, size="320x240")
    settings = {
        **VOD_SETTINGS,
        **s3server.s3_settings(s3_server),
        "worker_enabled": False,
        "job_backoff_base_seconds": 0,
        "job_max_attempts": 2,
    }
    async with make_node(**settings) as running:
        node, api = running.node, f"{running.http}/api/v1"
        jill = await token_for(node, "jill")
        async with aiohttp.ClientSession() as http:
            status, video = await upload_file(http, api, jill, source)
            assert status == 201
        flaky = FailingPuts(node.storage, fail_put=5, times=times)
        worker = worker_for(node.settings, node.jobs, flaky)  # type: ignore[arg-type]
        claimed = await node.jobs.claim("test-worker")
        assert claimed is not None
        assert await worker.run_job(claimed) is False  # the fifth object failed to store
        job, row = await job_and_video(node)
        assert row.state is VideoState.PROCESSING and job.state is JobState.QUEUED
        assert "injected failure" in (job.last_error or "")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.http}/vod/{video['id']}/master.m3u8") as r:
                assert r.status == 404  # objects were stored, the video is not visible
        claimed = await node.jobs.claim("test-worker")
        assert claimed is not None and claimed.attempt == 2
        published = await worker.run_job(claimed)
        job, row = await job_and_video(node)
        if times == 1:
            assert published and row.state is VideoState.READY and job.state is JobState.DONE
            master = f"{running.http}/vod/{video['id']}/master.m3u8"
            code, _, err = await run(
                ["ffmpeg", "-v", "error", "-i", master, "-map", "0", "-f", "null", "-"],
                timeout=60,
            )
            assert code == 0 and err == b"", err.decode()
        else:
            # Out of attempts: failed with the reason, and what it had stored is gone.
            assert not published and row.state is VideoState.FAILED
            assert "injected failure" in (row.error or "")
            assert await node.storage.list(f"vod/{video['id']}/") == []
            assert [o.key for o in await node.storage.list("")] == [f"sources/{video['id']}"]
            # The owner retries once the store is healthy again; it is published whole.
            async with aiohttp.ClientSession() as http:
                retry = f"{api}/videos/{video['id']}/retry"
                async with http.post(retry, headers=jill) as r:
                    assert r.status == 200
                    assert (await r.json())["state"] == "processing"
                async with http.post(retry, headers=jill) as r:
                    assert r.status == 409  # not failed any more
            healthy = worker_for(node.settings, node.jobs, node.storage)
            claimed = await node.jobs.claim("test-worker")
            assert claimed is not None and claimed.attempt == 1
            assert await healthy.run_job(claimed)
            job, row = await job_and_video(node)
            assert row.state is VideoState.READY and row.error is None
