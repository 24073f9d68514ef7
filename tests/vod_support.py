"""Helpers of the video-on-demand tests: settings for a small fast ladder, tokens, uploads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from ripplecast.accounts.policy import Scope

LADDER = ["360:500k:64k", "240:250k:48k"]
CHUNK = 16 * 1024
VOD_SETTINGS: dict[str, Any] = {
    "vod_ladder": LADDER,
    "vod_x264_preset": "ultrafast",
    "vod_segment_seconds": 1.0,
    "vod_thumbnail_interval_seconds": 1.0,
    "job_poll_seconds": 0.2,
    "publish_mode": "keys",
}


async def token_for(node: Any, username: str, *, admin: bool = False) -> dict[str, str]:
    from ripplecast.db.models import Role

    await node.accounts.create_user(
        username, f"{username} password", role=Role.ADMIN if admin else Role.CREATOR
    )
    user = await node.accounts.user(username)
    made = await node.logins.create_api_token(user.id, "t", [Scope.READ, Scope.PUBLISH])
    return {"Authorization": f"Bearer {made.token}"}


async def upload_file(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], path: Path, **query: str
) -> tuple[int, dict[str, Any]]:
    size = (await asyncio.to_thread(path.stat)).st_size

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as handle:
            while block := handle.read(64 * 1024):
                yield block

    async with http.post(
        f"{api}/videos",
        params={"filename": path.name, **query},
        data=chunks(),
        headers={
            **headers,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        },
    ) as r:
        return r.status, await r.json(content_type=None)


async def wait_ready(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], video_id: str, timeout: float
) -> dict[str, Any]:
    seen_progress: list[float] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with http.get(f"{api}/videos/{video_id}", headers=headers) as r:
            assert r.status == 200
            video: dict[str, Any] = await r.json()
        if video["job"] is not None:
            seen_progress.append(video["job"]["progress"])
        if video["state"] != "processing":
            video["seen_progress"] = seen_progress
            return video
        await asyncio.sleep(0.2)
    raise AssertionError(f"video {video_id} not ready after {timeout} s (progress {seen_progress})")
