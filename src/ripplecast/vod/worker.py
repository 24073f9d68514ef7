"""The transcoding worker: claim a job, transcode, store, publish once.

For each claimed job: fetch the source from storage into a private work folder, probe it,
plan the renditions, run the one ffmpeg process (progress reported to the job row), store every
output file under `vod/VIDEO_ID/` (the master playlist last), then complete the job: the
queue's fenced `complete()` marks the video ready in the same transaction, so a worker that lost
its lease (it stalled, another took over) never publishes.

While a job runs its lease is renewed every third of the lease; if a renewal finds the lease
gone, the transcode is cancelled (ffmpeg killed) and nothing is published. Errors are recorded
on the job: storage and ffmpeg failures are retried with backoff by the queue; a source that
does not probe is failed at once. A video that finally fails has its partial objects removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from ripplecast.db.models import JobState, Video, VideoState
from ripplecast.errors import RipplecastError
from ripplecast.storage import Storage, StorageError
from ripplecast.vod.jobs import ClaimedJob, JobQueue
from ripplecast.vod.ladder import Rung, plan_renditions
from ripplecast.vod.probe import InvalidMedia, probe
from ripplecast.vod.service import media_prefix
from ripplecast.vod.transcode import TranscodeOptions, TranscodeResult, transcode
from ripplecast.vod.uploads import source_key

log = logging.getLogger("ripplecast.vod")

__all__ = ["Worker", "worker_id"]


def worker_id() -> str:
    """host:pid:random — unique per worker process, readable in the job table."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{os.urandom(3).hex()}"


class _LeaseLost(RipplecastError):
    pass


class Worker:
    """Runs jobs from the queue until stopped; `concurrency` at once."""

    def __init__(
        self,
        queue: JobQueue,
        storage: Storage,
        options: TranscodeOptions,
        ladder: Sequence[Rung],
        *,
        lease_seconds: float,
        poll_seconds: float,
        max_duration: float,
        max_pixels: int,
        concurrency: int = 1,
        work_dir: Path | None = None,
        name: str | None = None,
    ) -> None:
        self._queue = queue
        self._storage = storage
        self._options = options
        self._ladder = list(ladder)
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._max_duration = max_duration
        self._max_pixels = max_pixels
        self._concurrency = concurrency
        self._work_dir = work_dir
        self.name = name or worker_id()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._draining = False
        self.completed = 0
        self.failed = 0
        self.on_job_finished: Callable[[str, float], None] = lambda outcome, seconds: None
        """Told how each attempt ended and how many seconds it took (metrics): "done"
        (published), "retried" (failed, queued again), "failed" (failed for good) or "lost"
        (the lease went to another worker). Not called for an attempt cancelled by `close`."""

    def start(self) -> None:
        """Start the claim loops (in the running event loop)."""
        for n in range(self._concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"vod-worker-{n}"))

    def wake(self) -> None:
        """A job was just queued: look now instead of at the next poll."""
        self._wake.set()

    async def drain(self, seconds: float) -> bool:
        """Claim no new job and let the running ones finish, for up to `seconds`; True if every
        one finished (`close()` then cancels what is left)."""
        self._draining = True
        self._wake.set()
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(self._tasks, timeout=seconds)
        return not pending

    async def close(self) -> None:
        """Stop: running transcodes are cancelled (their jobs return to the queue when their
        lease expires)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self) -> None:
        while not self._draining:
            try:
                job = await self._queue.claim(self.name)
            except Exception:
                log.exception("worker %s: could not claim a job", self.name)
                job = None
            if job is None:
                if self._draining:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                continue
            await self.run_job(job)

    async def run_job(self, job: ClaimedJob) -> bool:
        """Do one claimed job; True if this worker published it."""
        started = time.monotonic()
        outcome = await self._attempt(job)
        self.on_job_finished(outcome, time.monotonic() - started)
        return outcome == "done"

    async def _attempt(self, job: ClaimedJob) -> str:
        """Do one claimed job; return how it ended (see `on_job_finished`)."""
        log.info(
            "worker %s: job %d (video %s), attempt %d",
            self.name,
            job.id,
            job.video_public_id,
            job.attempt,
        )
        work = Path(tempfile.mkdtemp(prefix=f"job-{job.id}-", dir=self._work_dir))
        current = [job]
        work_task = asyncio.create_task(self._work(job, work, current))
        renew_task = asyncio.create_task(self._renew(current, work_task))
        try:
            result = await work_task
        except asyncio.CancelledError:
            if renew_task.done() and isinstance(renew_task.exception(), _LeaseLost):
                log.warning("worker %s: lost the lease of job %d; stopped", self.name, job.id)
                return "lost"
            raise
        except InvalidMedia as exc:
            return await self._fail(current[0], f"the source is not usable: {exc}", retryable=False)
        except Exception as exc:
            log.warning("worker %s: job %d failed: %s", self.name, job.id, exc, exc_info=True)
            return await self._fail(current[0], str(exc) or type(exc).__name__, retryable=True)
        finally:
            renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, _LeaseLost):
                await renew_task
            await asyncio.to_thread(shutil.rmtree, work, True)
        return await self._publish(current[0], result)

    async def _renew(self, current: list[ClaimedJob], work: asyncio.Task[TranscodeResult]) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            renewed = await self._queue.renew(current[0])
            if renewed is None:
                work.cancel()
                raise _LeaseLost(f"job {current[0].id}")
            current[0] = renewed

    async def _work(
        self, job: ClaimedJob, work: Path, current: list[ClaimedJob]
    ) -> TranscodeResult:
        source = work / "source"
        await self._storage.download(source_key(job.video_public_id), source)
        info = await asyncio.to_thread(
            probe, source, max_duration=self._max_duration, max_pixels=self._max_pixels
        )
        renditions = plan_renditions(info, self._ladder)
        out = work / "out"
        out.mkdir()

        async def progress(fraction: float, eta: float | None) -> None:
            # The upload of the results is the last tenth of the job.
            if not await self._queue.report_progress(current[0], fraction * 0.9, eta):
                raise _LeaseLost(f"job {job.id}")

        result = await transcode(source, out, info, renditions, self._options, progress)
        prefix = media_prefix(job.video_public_id)
        total = len(result.files)
        for n, relative in enumerate(result.files, 1):
            await self._storage.put_file(prefix + relative, out / relative)
            if n % 20 == 0:
                await self._queue.report_progress(current[0], 0.9 + 0.1 * n / total, None)
        return result

    async def _publish(self, job: ClaimedJob, result: TranscodeResult) -> str:
        async def mark_ready(session: AsyncSession, video: Video) -> None:
            video.state = VideoState.READY
            video.renditions = list(result.renditions)
            video.error = None
            video.ready_at = datetime.now(UTC)

        if await self._queue.complete(job, mark_ready):
            self.completed += 1
            log.info(
                "worker %s: video %s ready (%d renditions, %s)",
                self.name,
                job.video_public_id,
                len(result.renditions),
                result.ffmpeg_version,
            )
            return "done"
        log.warning("worker %s: job %d was taken over; not published", self.name, job.id)
        return "lost"

    async def _fail(self, job: ClaimedJob, reason: str, *, retryable: bool) -> str:
        """Record the failed attempt; return "retried", "failed" or "lost" (the lease)."""
        self.failed += 1
        try:
            state = await self._queue.fail(job, reason, retryable=retryable)
        except Exception:
            log.exception("worker %s: could not record the failure of job %d", self.name, job.id)
            return "retried"  # its lease expires and it is claimed again
        if state is None:
            return "lost"
        if state is JobState.FAILED:
            # Never half-visible: what the failed attempts stored goes.
            with contextlib.suppress(StorageError):
                await self._storage.delete_prefix(media_prefix(job.video_public_id))
            return "failed"
        return "retried"
