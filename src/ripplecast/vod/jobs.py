"""The durable transcoding job queue: the metadata database's `jobs` table, one row per video.

Lifecycle: QUEUED -> (claim) RUNNING -> DONE, or back to QUEUED after a retryable failure (with
exponential backoff in `run_after`), or FAILED when attempts run out. A FAILED job can be
queued again by `retry`.

Leases and fencing (the design of `Job`): a claim sets `lease_owner`, `lease_expires_at` and
bumps `fence` and `attempts`. A worker that stops renewing loses the job once the lease has
expired: the next claim takes it over with a higher fence, and that crashed attempt counts.
Every later write of a worker (renew, progress, complete, fail) is conditional on the fence
it was handed, so a worker that lost its lease changes nothing, and `complete` (which runs the
publish hook in the same transaction) succeeds for one fence only: a video is published once.

Claiming, per engine, such that one job goes to exactly one worker:
- PostgreSQL and MariaDB: `SELECT ... ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED`,
  then an UPDATE of that row in the same transaction; concurrent claimers skip the locked row
  and take the next one instead of waiting. MariaDB runs the claim in READ COMMITTED, so its
  locking read takes no gap locks and keeps no locks on rows it looked at and passed over.
- SQLite ignores FOR UPDATE; it has one writer at a time instead. The engine begins SQLite
  transactions with a deferred `BEGIN` (`_sqlite_on_begin` in db/engine.py), which takes no
  lock, so every write transaction here opens with a write (a no-op `UPDATE jobs`): that takes
  the database's write lock at once, waiting under `busy_timeout` if another writer holds it,
  exactly what `BEGIN IMMEDIATE` does. The claim's SELECT and UPDATE then run under that lock,
  and no transaction ever has to upgrade a read snapshot (which WAL mode refuses at once with
  SQLITE_BUSY instead of waiting).
Lock contention that still surfaces as an error (SQLite busy past its timeout, a deadlock or
lock wait timeout elsewhere) is retried a bounded number of times; such an error always comes
before the commit, so the whole transaction is simply run again.

Every time is aware UTC and comes from the injected clock, so tests move time without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ripplecast.db.engine import Database
from ripplecast.db.models import Job, JobState, Video, VideoState, utcnow
from ripplecast.errors import RipplecastError, UsageError

log = logging.getLogger(__name__)

T = TypeVar("T")

ERROR_MAX_LENGTH = 1000
"""`jobs.last_error` and `videos.error` hold at most this many characters."""
WORKER_ID_MAX_LENGTH = 100
"""`jobs.lease_owner` holds at most this many characters."""
CLAIM_SCAN_LIMIT = 100
"""Exhausted crashed jobs one claim marks FAILED before it gives up looking this time."""

Publish = Callable[[AsyncSession, Video], Awaitable[None]]
"""The worker's hook run by `complete` inside its transaction: it makes the video READY."""

# Errors that mean "lost a race for a lock, run the transaction again": SQLite busy/locked,
# MySQL/MariaDB lock wait timeout (1205) and deadlock (1213), PostgreSQL serialization failure
# and deadlock (SQLSTATE 40001, 40P01).
_MYSQL_TRANSIENT = frozenset({1205, 1213})
_POSTGRESQL_TRANSIENT = frozenset({"40001", "40P01"})


class JobQueueError(RipplecastError):
    """Root of the errors the job queue raises on purpose."""


class LeaseLost(JobQueueError):
    """A worker's lease on a job is gone (another worker holds it now); the worker must stop.

    Raised by nothing here: the queue answers None/False instead, and the worker may raise it."""


class JobNotFound(JobQueueError, LookupError):
    """No job has that id."""


class JobNotRetryable(JobQueueError):
    """The job is not FAILED, so there is nothing to retry."""


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds, as of its claim (or last renewal)."""

    id: int
    video_id: int
    video_public_id: str
    fence: int
    """The fencing token of this claim: every later write checks it is still the job's."""
    attempt: int
    """1 for the first attempt; counts attempts that crashed (lease expired) too."""
    lease_expires_at: datetime
    """The worker must renew before this (aware UTC) or another worker may take the job."""


def _holds(row: Job | None, job: ClaimedJob) -> bool:
    return row is not None and row.state is JobState.RUNNING and row.fence == job.fence


def _is_transient(error: DBAPIError) -> bool:
    original = error.orig
    if original is None:
        return False
    if getattr(original, "sqlstate", None) in _POSTGRESQL_TRANSIENT:
        return True
    code = original.args[0] if original.args else None
    if isinstance(code, int):
        return code in _MYSQL_TRANSIENT
    message = str(original).lower()
    return "database is locked" in message or "database table is locked" in message


class JobQueue:
    """See the module docstring. Limits come from settings: `job_lease_seconds`,
    `job_max_attempts`, `job_backoff_base_seconds`."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        max_attempts: int,
        backoff_base_seconds: float,
        clock: Callable[[], datetime] | None = None,
        transient_retries: int = 5,
        transient_retry_delay_seconds: float = 0.05,
    ) -> None:
        if not (lease_seconds > 0 and math.isfinite(lease_seconds)):
            raise UsageError(f"lease_seconds must be a positive number, not {lease_seconds!r}")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, not {max_attempts!r}")
        if not (backoff_base_seconds >= 0 and math.isfinite(backoff_base_seconds)):
            raise UsageError(f"backoff_base_seconds must be >= 0, not {backoff_base_seconds!r}")
        if transient_retries < 0:
            raise UsageError(f"transient_retries must be >= 0, not {transient_retries!r}")
        self._db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.backoff_base = timedelta(seconds=backoff_base_seconds)
        self._clock = clock or utcnow
        self._transient_retries = transient_retries
        self._transient_retry_delay = transient_retry_delay_seconds
        self.transient_errors_retried = 0
        """Transactions run again after losing a lock race (for metrics and tests)."""

    # --- helpers ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise UsageError(f"the job queue's clock returned a naive datetime {now!r}")
        return now.astimezone(UTC)

    @property
    def _dialect(self) -> str:
        return self._db.engine.dialect.name

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()`, run again (bounded) when it loses a lock race before committing."""
        for attempt in range(self._transient_retries + 1):
            try:
                return await operation()
            except DBAPIError as exc:
                if attempt == self._transient_retries or not _is_transient(exc):
                    raise
                self.transient_errors_retried += 1
                log.info("job queue: %s lost a lock race (%s); trying again", what, exc.orig)
                delay = self._transient_retry_delay * (attempt + 1)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _take_sqlite_write_lock(self, session: AsyncSession, job_id: int) -> None:
        """On SQLite, open the transaction with a write: it takes the write lock now (see the
        module docstring). Elsewhere nothing: row locks are taken by the statements."""
        if self._dialect == "sqlite":
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(fence=Job.fence)
                .execution_options(synchronize_session=False)
            )

    async def _lock_job(self, session: AsyncSession, job_id: int) -> Job | None:
        """The job row, locked for the rest of the transaction (None if there is none)."""
        await self._take_sqlite_write_lock(session, job_id)
        return await session.get(Job, job_id, with_for_update=True, populate_existing=True)

    async def _fail_for_good(
        self, session: AsyncSession, row: Job, error: str, now: datetime
    ) -> None:
        """Mark the job FAILED and its video FAILED with `error` (in `session`'s transaction)."""
        error = error[:ERROR_MAX_LENGTH]
        row.state = JobState.FAILED
        row.last_error = error
        row.finished_at = now
        row.lease_owner = None
        row.lease_expires_at = None
        row.eta_seconds = None
        await session.execute(
            update(Video)
            .where(Video.id == row.video_id)
            .values(state=VideoState.FAILED, error=error)
            .execution_options(synchronize_session=False)
        )
        log.warning("job %d (video %d) failed for good: %s", row.id, row.video_id, error)

    # --- queueing -----------------------------------------------------------------------------

    async def enqueue(self, session: AsyncSession, video: Video) -> Job:
        """Add the job of `video` inside the caller's transaction (which commits or rolls back
        both together). Flushes, so the returned job has its id."""
        session.add(video)
        await session.flush()
        now = self._now()
        job = Job(
            video_id=video.id,
            state=JobState.QUEUED,
            attempts=0,
            max_attempts=self.max_attempts,
            run_after=now,
            fence=0,
            progress=0.0,
            created_at=now,
        )
        session.add(job)
        await session.flush()
        return job

    async def retry(self, job_id: int) -> None:
        """Queue a FAILED job again now, with its attempts reset; its video goes back to
        PROCESSING. Raises `JobNotFound`, or `JobNotRetryable` if the job is not FAILED."""
        await self._retrying("retry", lambda: self._retry_once(job_id))

    async def _retry_once(self, job_id: int) -> None:
        now = self._now()
        async with self._db.session() as session:
            row = await self._lock_job(session, job_id)
            if row is None:
                raise JobNotFound(f"no transcoding job with id {job_id}")
            if row.state is not JobState.FAILED:
                raise JobNotRetryable(
                    f"transcoding job {job_id} is {row.state.value}: only a failed job can be"
                    " retried"
                )
            row.state = JobState.QUEUED
            row.attempts = 0
            row.run_after = now
            row.finished_at = None
            row.lease_owner = None
            row.lease_expires_at = None
            row.progress = 0.0
            row.eta_seconds = None
            await session.execute(
                update(Video)
                .where(Video.id == row.video_id)
                .values(state=VideoState.PROCESSING, error=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        log.info("job %d (video %d) queued again", job_id, row.video_id)

    # --- claiming -----------------------------------------------------------------------------

    def _runnable(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            and_(Job.state == JobState.QUEUED, Job.run_after <= now),
            and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now),
        )

    async def claim(self, worker_id: str) -> ClaimedJob | None:
        """Take the runnable job that has waited longest (ordered by `run_after`, then id) for
        `worker_id`, or None if there is none. A job whose lease expired is taken over; if that
        crashed attempt was its last, it is FAILED instead (its video too) and the claim looks
        further."""
        if not worker_id or len(worker_id) > WORKER_ID_MAX_LENGTH:
            raise UsageError(f"worker_id must be 1 to {WORKER_ID_MAX_LENGTH} characters")
        return await self._retrying("claim", lambda: self._claim_once(worker_id))

    async def _claim_once(self, worker_id: str) -> ClaimedJob | None:
        now = self._now()
        async with self._db.session() as session:
            if self._dialect in ("mysql", "mariadb"):
                await session.connection(execution_options={"isolation_level": "READ COMMITTED"})
            await self._take_sqlite_write_lock(session, 0)
            claimed: ClaimedJob | None = None
            for _ in range(CLAIM_SCAN_LIMIT):
                row = await session.scalar(
                    select(Job)
                    .where(self._runnable(now))
                    .order_by(Job.run_after, Job.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
                if row is None:
                    break
                if row.state is JobState.RUNNING and row.attempts >= row.max_attempts:
                    await self._fail_for_good(
                        session,
                        row,
                        f"the worker running it stopped responding (lease expired) on attempt"
                        f" {row.attempts} of {row.max_attempts}; no attempts left",
                        now,
                    )
                    await session.flush()
                    continue
                claimed = await self._take(session, row, worker_id, now)
                break
            await session.commit()
        return claimed

    async def _take(
        self, session: AsyncSession, row: Job, worker_id: str, now: datetime
    ) -> ClaimedJob:
        if row.state is JobState.RUNNING:
            row.last_error = (
                f"the worker running attempt {row.attempts} ({row.lease_owner}) stopped"
                " responding (lease expired)"
            )[:ERROR_MAX_LENGTH]
            log.warning(
                "job %d: lease of %s expired; %s takes over", row.id, row.lease_owner, worker_id
            )
        lease_expires_at = now + self.lease
        row.state = JobState.RUNNING
        row.lease_owner = worker_id
        row.lease_expires_at = lease_expires_at
        row.fence += 1
        row.attempts += 1
        row.started_at = row.started_at or now
        row.progress = 0.0
        row.eta_seconds = None
        public_id = (
            await session.execute(select(Video.public_id).where(Video.id == row.video_id))
        ).scalar_one()
        await session.flush()
        return ClaimedJob(
            id=row.id,
            video_id=row.video_id,
            video_public_id=public_id,
            fence=row.fence,
            attempt=row.attempts,
            lease_expires_at=lease_expires_at,
        )

    # --- writes of the worker holding the lease --------------------------------------------

    async def _update_if_held(self, job: ClaimedJob, **values: object) -> bool:
        """One UPDATE of the job's row if `job.fence` is still its fence; True if it was."""
        async with self._db.session() as session:
            connection = await session.connection()
            result = await connection.execute(
                update(Job)
                .where(Job.id == job.id, Job.fence == job.fence, Job.state == JobState.RUNNING)
                .values(**values)
            )
            if result.rowcount != 1:
                await session.rollback()
                return False
            await session.commit()
            return True

    async def renew(self, job: ClaimedJob) -> ClaimedJob | None:
        """Extend the lease to now + lease; the renewed job, or None if the lease was lost
        (the worker must stop: another worker has the job, or it is no longer running)."""
        lease_expires_at = self._now() + self.lease
        held = await self._retrying(
            "renew", lambda: self._update_if_held(job, lease_expires_at=lease_expires_at)
        )
        return replace(job, lease_expires_at=lease_expires_at) if held else None

    async def report_progress(
        self, job: ClaimedJob, fraction: float, eta_seconds: float | None
    ) -> bool:
        """Store progress (`fraction` clamped to 0..1) and the estimated seconds left; False if
        the lease was lost."""
        if not math.isfinite(fraction):
            raise UsageError(f"progress must be a finite fraction, not {fraction!r}")
        fraction = min(max(fraction, 0.0), 1.0)
        if eta_seconds is not None:
            eta_seconds = max(eta_seconds, 0.0) if math.isfinite(eta_seconds) else None
        return await self._retrying(
            "progress",
            lambda: self._update_if_held(job, progress=fraction, eta_seconds=eta_seconds),
        )

    async def complete(self, job: ClaimedJob, publish: Publish) -> bool:
        """In one transaction: check the lease is still `job`'s (else change nothing and return
        False), run `publish(session, video)`, mark the job DONE. True if published.

        If `publish` raises, nothing is committed and the job stays RUNNING. The hook should
        only write to `session`: after a lost lock race the transaction runs again, hook too."""
        return await self._retrying("complete", lambda: self._complete_once(job, publish))

    async def _complete_once(self, job: ClaimedJob, publish: Publish) -> bool:
        now = self._now()
        async with self._db.session() as session:
            row = await self._lock_job(session, job.id)
            if row is None or not _holds(row, job):
                await session.rollback()
                log.info("job %d: fence %d is stale, not published", job.id, job.fence)
                return False
            video = await session.get_one(Video, row.video_id, populate_existing=True)
            await publish(session, video)
            row.state = JobState.DONE
            row.progress = 1.0
            row.eta_seconds = None
            row.finished_at = now
            row.lease_owner = None
            row.lease_expires_at = None
            await session.commit()
        return True

    async def fail(
        self, job: ClaimedJob, reason: str, *, retryable: bool = True
    ) -> JobState | None:
        """Record a failed attempt (`reason`, truncated, in `last_error`). Retryable with
        attempts left: QUEUED again after backoff_base * 2**(attempt-1). Otherwise FAILED, and
        the video FAILED with `reason`. Returns the new state, or None if the lease was lost."""
        return await self._retrying("fail", lambda: self._fail_once(job, reason, retryable))

    async def _fail_once(self, job: ClaimedJob, reason: str, retryable: bool) -> JobState | None:
        now = self._now()
        async with self._db.session() as session:
            row = await self._lock_job(session, job.id)
            if row is None or not _holds(row, job):
                await session.rollback()
                return None
            if retryable and row.attempts < row.max_attempts:
                row.state = JobState.QUEUED
                row.last_error = reason[:ERROR_MAX_LENGTH]
                row.run_after = now + self.backoff_base * 2 ** (row.attempts - 1)
                row.lease_owner = None
                row.lease_expires_at = None
                row.eta_seconds = None
                log.info(
                    "job %d attempt %d failed, queued again for %s: %s",
                    row.id,
                    row.attempts,
                    row.run_after.isoformat(),
                    reason[:200],
                )
            else:
                await self._fail_for_good(session, row, reason, now)
            state = row.state
            await session.commit()
        return state

    # --- reading ------------------------------------------------------------------------------

    async def job_for_video(self, video_id: int) -> Job | None:
        """The job of the video (detached from any session), or None."""
        async with self._db.session() as session:
            return await session.scalar(select(Job).where(Job.video_id == video_id))

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        async with self._db.session() as session:
            rows = (
                await session.execute(select(Job.state, func.count()).group_by(Job.state))
            ).all()
        found: dict[JobState, int] = {state: 0 for state in JobState}
        for state, number in rows:
            found[JobState(state)] = int(number)
        return found
