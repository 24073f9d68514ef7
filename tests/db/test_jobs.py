"""The transcoding job queue on every engine: one job goes to exactly one worker even when many
claim at once; leases expire and fence stale workers out; failures back off, run out, and are
recorded on the job and its video; a video is published exactly once.

Time is a fake clock moved by the tests; nothing sleeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ripplecast.db.engine import Database
from ripplecast.db.models import Job, JobState, User, Video, VideoState
from ripplecast.vod.jobs import (
    ERROR_MAX_LENGTH,
    ClaimedJob,
    JobNotFound,
    JobNotRetryable,
    JobQueue,
)

LEASE = 30.0
BACKOFF = 10.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_queue(db: Database, clock: Clock, *, max_attempts: int = 3) -> JobQueue:
    return JobQueue(
        db,
        lease_seconds=LEASE,
        max_attempts=max_attempts,
        backoff_base_seconds=BACKOFF,
        clock=clock,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(db: Database, clock: Clock) -> JobQueue:
    return make_queue(db, clock)


@pytest.fixture
async def owner(db: Database) -> int:
    async with db.transaction() as session:
        user = User(username="alice", password_hash="$argon2id$v=19$m=65536,t=3,p=4$x$y")
        session.add(user)
        await session.flush()
        return user.id


async def add_video(db: Database, queue: JobQueue, owner: int, public_id: str) -> tuple[int, int]:
    """A video and its job, made in one transaction as the upload code does; (video, job) ids."""
    async with db.transaction() as session:
        video = Video(public_id=public_id, owner_id=owner, source_name=f"{public_id}.mp4")
        job = await queue.enqueue(session, video)
        return video.id, job.id


async def load_job(db: Database, job_id: int) -> Job:
    async with db.session() as session:
        return await session.get_one(Job, job_id)


async def load_video(db: Database, video_id: int) -> Video:
    async with db.session() as session:
        return await session.get_one(Video, video_id)


async def count(db: Database, model: type[object]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


class Publisher:
    """The worker's publish hook: marks the video READY, and counts how often it ran."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.published: list[str] = []

    async def __call__(self, session: AsyncSession, video: Video) -> None:
        self.published.append(video.public_id)
        video.state = VideoState.READY
        video.renditions = [{"height": 240, "bandwidth": 400_000}]
        video.ready_at = self.clock()


# --- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_commits_with_the_video(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")
    job = await queue.job_for_video(video_id)
    assert job is not None and job.id == job_id
    assert job.state is JobState.QUEUED
    assert (job.attempts, job.max_attempts, job.fence) == (0, 3, 0)
    assert job.run_after == clock.now
    assert await queue.job_for_video(video_id + 1000) is None


async def test_enqueue_rolled_back_leaves_no_job_and_no_video(
    db: Database, queue: JobQueue, owner: int
) -> None:
    async def upload_that_fails_after_enqueue() -> None:
        async with db.transaction() as session:
            await queue.enqueue(session, Video(public_id="v1", owner_id=owner))
            raise RuntimeError("upload went wrong")

    with pytest.raises(RuntimeError, match="upload went wrong"):
        await upload_that_fails_after_enqueue()
    assert await count(db, Job) == 0
    assert await count(db, Video) == 0
    assert await queue.claim("w1") is None


# --- claiming ---------------------------------------------------------------------------------


async def test_claim_takes_the_oldest_first_and_sets_the_lease(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    first = await add_video(db, queue, owner, "first")
    clock.advance(1)
    second = await add_video(db, queue, owner, "second")
    clock.advance(1)
    third = await add_video(db, queue, owner, "third")

    claimed = [await queue.claim("w1") for _ in range(3)]
    assert [job.id for job in claimed if job] == [first[1], second[1], third[1]]
    assert await queue.claim("w1") is None

    job = claimed[0]
    assert job == ClaimedJob(
        id=first[1],
        video_id=first[0],
        video_public_id="first",
        fence=1,
        attempt=1,
        lease_expires_at=clock.now + timedelta(seconds=LEASE),
    )
    row = await load_job(db, job.id)
    assert row.state is JobState.RUNNING
    assert row.lease_owner == "w1"
    assert row.lease_expires_at == job.lease_expires_at
    assert row.started_at == clock.now
    assert (row.attempts, row.fence, row.progress) == (1, 1, 0.0)


async def test_a_job_due_later_waits_for_the_clock(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    start = clock.now
    clock.advance(60)
    later = await add_video(db, queue, owner, "later")  # run_after = start + 60 s
    clock.now = start
    assert await queue.claim("w1") is None
    clock.advance(59.9)
    assert await queue.claim("w1") is None
    clock.advance(0.1)
    job = await queue.claim("w1")
    assert job is not None and job.id == later[1]


@pytest.mark.parametrize("workers", [2, 8])
async def test_racing_workers_claim_each_job_exactly_once(
    db: Database, db_url: str, clock: Clock, owner: int, workers: int
) -> None:
    """Each worker has its own engine and connection pool, as separate processes would."""
    jobs = 24
    job_ids = {(await add_video(db, make_queue(db, clock), owner, f"v{n}"))[1] for n in range(jobs)}
    databases = [Database(db_url) for _ in range(workers)]
    start = asyncio.Event()

    async def drain(queue: JobQueue, name: str) -> list[ClaimedJob]:
        await start.wait()
        taken: list[ClaimedJob] = []
        for _ in range(jobs + 1):
            job = await queue.claim(name)
            if job is None:
                break
            taken.append(job)
        return taken

    try:
        for database in databases:
            await database.start()
        queues = [make_queue(database, clock) for database in databases]
        tasks = [asyncio.create_task(drain(queue, f"worker-{n}")) for n, queue in enumerate(queues)]
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        for database in databases:
            await database.close()

    claimed = [job.id for taken in results for job in taken]
    assert sorted(claimed) == sorted(job_ids)  # every job once, none twice
    assert all(job.fence == 1 and job.attempt == 1 for taken in results for job in taken)
    assert sum(1 for taken in results if taken) >= 2, "the claims did not overlap at all"
    for n, taken in enumerate(results):
        for job in taken:
            row = await load_job(db, job.id)
            assert (row.state, row.lease_owner, row.fence) == (JobState.RUNNING, f"worker-{n}", 1)


async def test_racing_workers_for_one_job_one_wins(
    db: Database, db_url: str, clock: Clock, owner: int
) -> None:
    _, job_id = await add_video(db, make_queue(db, clock), owner, "only")
    databases = [Database(db_url) for _ in range(8)]
    try:
        for database in databases:
            await database.start()
        queues = [make_queue(database, clock) for database in databases]
        results = await asyncio.gather(
            *(queue.claim(f"worker-{n}") for n, queue in enumerate(queues))
        )
    finally:
        for database in databases:
            await database.close()
    winners = [job for job in results if job is not None]
    assert [job.id for job in winners] == [job_id]
    row = await load_job(db, job_id)
    assert (row.attempts, row.fence) == (1, 1)


# --- leases and fencing -----------------------------------------------------------------------


async def test_renew_extends_the_lease_and_progress_is_stored(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    await add_video(db, queue, owner, "v1")
    job = await queue.claim("w1")
    assert job is not None
    clock.advance(20)
    renewed = await queue.renew(job)
    assert renewed is not None
    assert renewed.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert (renewed.id, renewed.fence, renewed.attempt) == (job.id, job.fence, job.attempt)
    assert (await load_job(db, job.id)).lease_expires_at == renewed.lease_expires_at

    clock.advance(20)  # past the first lease, within the renewed one
    assert await queue.claim("w2") is None

    assert await queue.report_progress(renewed, 0.25, 42.5) is True
    row = await load_job(db, job.id)
    assert (row.progress, row.eta_seconds) == (0.25, 42.5)
    assert await queue.report_progress(renewed, 1.7, None) is True  # clamped
    row = await load_job(db, job.id)
    assert (row.progress, row.eta_seconds) == (1.0, None)


async def test_an_expired_lease_goes_to_another_worker_and_fences_the_first_out(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")
    publish = Publisher(clock)
    stale = await queue.claim("worker-a")
    assert stale is not None
    assert await queue.report_progress(stale, 0.4, 10.0)

    clock.advance(LEASE - 0.001)
    assert await queue.claim("worker-b") is None  # not expired yet
    clock.advance(0.002)
    current = await queue.claim("worker-b")
    assert current is not None and current.id == job_id
    assert (current.fence, current.attempt) == (stale.fence + 1, 2)
    before = await load_job(db, job_id)
    assert before.last_error is not None and "lease expired" in before.last_error

    # The stale worker changes nothing, whatever it tries.
    assert await queue.renew(stale) is None
    assert await queue.report_progress(stale, 0.9, 1.0) is False
    assert await queue.complete(stale, publish) is False
    assert await queue.fail(stale, "stale failure") is None
    after = await load_job(db, job_id)
    for column in ("state", "fence", "attempts", "lease_owner", "lease_expires_at", "progress"):
        assert getattr(after, column) == getattr(before, column), column
    assert after.lease_owner == "worker-b"
    assert publish.published == []
    assert (await load_video(db, video_id)).state is VideoState.PROCESSING

    clock.advance(5)
    assert await queue.complete(current, publish) is True
    assert await queue.complete(stale, publish) is False
    assert await queue.complete(current, publish) is False  # done already
    assert publish.published == ["v1"]
    row = await load_job(db, job_id)
    assert row.state is JobState.DONE
    assert (row.progress, row.finished_at) == (1.0, clock.now)
    assert (row.lease_owner, row.lease_expires_at) == (None, None)
    video = await load_video(db, video_id)
    assert video.state is VideoState.READY
    assert video.renditions == [{"height": 240, "bandwidth": 400_000}]


async def test_a_publish_hook_that_raises_leaves_the_job_running(
    db: Database, queue: JobQueue, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")
    job = await queue.claim("w1")
    assert job is not None

    async def broken(session: AsyncSession, video: Video) -> None:
        video.state = VideoState.READY
        raise OSError("storage went away")

    with pytest.raises(OSError, match="storage went away"):
        await queue.complete(job, broken)
    assert (await load_job(db, job_id)).state is JobState.RUNNING
    assert (await load_video(db, video_id)).state is VideoState.PROCESSING


# --- failures ---------------------------------------------------------------------------------


async def test_failures_back_off_then_run_out(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")

    for attempt, wait in ((1, BACKOFF), (2, 2 * BACKOFF)):
        job = await queue.claim("w1")
        assert job is not None and job.attempt == attempt
        assert await queue.fail(job, f"ffmpeg exited with 1 (attempt {attempt})") is JobState.QUEUED
        row = await load_job(db, job_id)
        assert row.run_after == clock.now + timedelta(seconds=wait)
        assert (row.lease_owner, row.lease_expires_at) == (None, None)
        assert row.last_error == f"ffmpeg exited with 1 (attempt {attempt})"
        clock.advance(wait - 0.5)
        assert await queue.claim("w1") is None
        clock.advance(0.5)

    job = await queue.claim("w1")
    assert job is not None and job.attempt == 3
    reason = "ffmpeg exited with 1: " + "x" * 5000
    assert await queue.fail(job, reason) is JobState.FAILED
    row = await load_job(db, job_id)
    assert row.state is JobState.FAILED
    assert row.last_error == reason[:ERROR_MAX_LENGTH]
    assert row.finished_at == clock.now
    video = await load_video(db, video_id)
    assert video.state is VideoState.FAILED
    assert video.error == reason[:ERROR_MAX_LENGTH]
    clock.advance(3600)
    assert await queue.claim("w1") is None


async def test_a_non_retryable_failure_fails_at_once(
    db: Database, queue: JobQueue, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")
    job = await queue.claim("w1")
    assert job is not None
    reason = "the source has no decodable video stream"
    assert await queue.fail(job, reason, retryable=False) is JobState.FAILED
    row = await load_job(db, job_id)
    assert (row.state, row.attempts, row.last_error) == (JobState.FAILED, 1, reason)
    video = await load_video(db, video_id)
    assert (video.state, video.error) == (VideoState.FAILED, reason)


async def test_crashed_attempts_count_and_run_out(db: Database, clock: Clock, owner: int) -> None:
    queue = make_queue(db, clock, max_attempts=2)
    video_id, job_id = await add_video(db, queue, owner, "crashy")
    clock.advance(1)
    _, next_job_id = await add_video(db, queue, owner, "healthy")

    first = await queue.claim("w1")
    assert first is not None and first.id == job_id
    clock.advance(LEASE + 1)  # w1 crashed
    second = await queue.claim("w2")
    assert second is not None and (second.id, second.attempt) == (job_id, 2)
    clock.advance(LEASE + 1)  # w2 crashed too: no attempts left

    # The claim fails the exhausted job and looks further.
    third = await queue.claim("w3")
    assert third is not None and third.id == next_job_id
    row = await load_job(db, job_id)
    assert row.state is JobState.FAILED
    assert row.attempts == 2
    assert row.last_error is not None
    assert "stopped responding (lease expired)" in row.last_error
    assert "attempt 2 of 2" in row.last_error
    assert (row.lease_owner, row.lease_expires_at, row.finished_at) == (None, None, clock.now)
    video = await load_video(db, video_id)
    assert (video.state, video.error) == (VideoState.FAILED, row.last_error)
    assert await queue.renew(second) is None


# --- retry and counts -------------------------------------------------------------------------


async def test_retry_queues_a_failed_job_again(
    db: Database, queue: JobQueue, clock: Clock, owner: int
) -> None:
    video_id, job_id = await add_video(db, queue, owner, "v1")
    job = await queue.claim("w1")
    assert job is not None
    await queue.fail(job, "corrupt source", retryable=False)

    clock.advance(600)
    await queue.retry(job_id)
    row = await load_job(db, job_id)
    assert (row.state, row.attempts, row.run_after) == (JobState.QUEUED, 0, clock.now)
    assert row.finished_at is None
    video = await load_video(db, video_id)
    assert (video.state, video.error) == (VideoState.PROCESSING, None)

    again = await queue.claim("w2")
    assert again is not None
    assert (again.id, again.attempt) == (job_id, 1)
    assert again.fence > job.fence  # fences never repeat, so the old claim stays stale
    assert await queue.complete(job, Publisher(clock)) is False


async def test_retry_refuses_a_job_that_has_not_failed(
    db: Database, queue: JobQueue, owner: int
) -> None:
    _, job_id = await add_video(db, queue, owner, "v1")
    with pytest.raises(JobNotRetryable, match="is queued"):
        await queue.retry(job_id)
    assert await queue.claim("w1") is not None
    with pytest.raises(JobNotRetryable, match="is running"):
        await queue.retry(job_id)
    with pytest.raises(JobNotFound, match=str(job_id + 1000)):
        await queue.retry(job_id + 1000)
    assert (await load_job(db, job_id)).state is JobState.RUNNING


async def test_counts_by_state(db: Database, queue: JobQueue, clock: Clock, owner: int) -> None:
    assert await queue.counts() == dict.fromkeys(JobState, 0)
    for n in range(5):
        await add_video(db, queue, owner, f"v{n}")
    done, failed, running = [await queue.claim("w1") for _ in range(3)]
    assert done is not None and failed is not None and running is not None
    assert await queue.complete(done, Publisher(clock))
    assert await queue.fail(failed, "bad", retryable=False) is JobState.FAILED
    assert await queue.counts() == {
        JobState.QUEUED: 2,
        JobState.RUNNING: 1,
        JobState.DONE: 1,
        JobState.FAILED: 1,
    }
