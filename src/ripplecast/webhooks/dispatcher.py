"""`WebhookDispatcher`: delivers events to webhooks in the background, never in the way of media.

`emit(event, payload)` is synchronous and cannot block or raise: it encodes the envelope once
(see `signing`) and puts it on a bounded queue; when the queue is full the event is dropped and
counted (`stats.dropped`), and the drop is logged once per episode, not once per event.

One task takes events off the queue, asks the `EndpointSource` who should receive each one,
and starts one delivery task per endpoint, at most `max_in_flight` at a time (the queue fills,
and then drops, while they are all busy). A delivery POSTs the envelope through one shared
`aiohttp.ClientSession` with a per-attempt `timeout`, signed afresh at each attempt. Connection
errors, timeouts, 429 and 5xx are retried up to `max_attempts` in all, after an exponential
backoff (`backoff_base * 2**(n-1)`, at most `backoff_max`, at least a 429's `Retry-After` within
that cap) with jitter (the delay is drawn between half and all of it); other statuses (3xx: no
redirect is followed, 4xx) are final. The outcome is then recorded through the source.

Events to one endpoint may arrive out of order (a retried one after a newer one): receivers
order them by `time`, and drop duplicates by `id`.

`close()` stops accepting events, lets queued and in-flight deliveries finish until `drain`
seconds have passed, then cancels the rest (counted as failed, or dropped if never started) and
closes the HTTP session. Secrets never reach a log line; URLs are logged without path or query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from ripplecast.errors import UsageError
from ripplecast.webhooks.endpoints import DeliveryOutcome, Endpoint, EndpointSource
from ripplecast.webhooks.net import check_url, is_blocked, new_client_session, redact_url
from ripplecast.webhooks.signing import encode_envelope, new_event_id, request_headers

log = logging.getLogger("ripplecast.webhooks")

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
"""What an event name looks like (a word of the `webhooks.events` column)."""

ON_PUBLISH = "on_publish"
ON_UNPUBLISH = "on_unpublish"
ON_PLAY = "on_play"
ON_STOP = "on_stop"
EVENTS = frozenset({ON_PUBLISH, ON_UNPUBLISH, ON_PLAY, ON_STOP})
"""The events the server emits today (a webhook may subscribe to names not yet emitted)."""


@dataclass(slots=True)
class DispatcherStats:
    """Counters since start, for logs and metrics."""

    delivered: int = 0
    """Deliveries answered with a 2xx."""
    failed: int = 0
    """Deliveries given up on (final status, attempts exhausted, refused URL, shutdown)."""
    retried: int = 0
    """Attempts that were followed by another one."""
    dropped: int = 0
    """Events never delivered to anyone: queue full, dispatcher closed, or not JSON."""


@dataclass(frozen=True, slots=True)
class _Job:
    event: str
    event_id: str
    stream: str
    body: bytes


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    error: str | None
    retry: bool = False
    retry_after: float = 0.0


SessionFactory = Callable[[], aiohttp.ClientSession]


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `base * 2**(attempt-1)`
    capped at `cap`, then jittered to between half and all of it (so many deliveries failing
    together do not retry together), but never less than `retry_after` (a 429's Retry-After)
    unless that exceeds `cap`."""
    delay = min(cap, base * 2.0 ** min(attempt - 1, 64))
    delay *= 0.5 + rand() / 2
    return min(cap, max(delay, retry_after))


class WebhookDispatcher:
    """Delivers emitted events to the endpoints subscribed to them (see module docstring)."""

    def __init__(
        self,
        endpoints: EndpointSource,
        *,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_queue: int = 1000,
        max_in_flight: int = 16,
        drain: float = 5.0,
        allow_private: bool = False,
        clock: Callable[[], float] = time.time,
        session_factory: SessionFactory | None = None,
    ) -> None:
        if timeout <= 0 or max_attempts < 1 or max_queue < 1 or max_in_flight < 1:
            raise UsageError("timeout must be > 0; max_attempts, max_queue, max_in_flight >= 1")
        if backoff_base < 0 or backoff_max < backoff_base or drain < 0:
            raise UsageError("need 0 <= backoff_base <= backoff_max and drain >= 0")
        self._endpoints = endpoints
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._drain = drain
        self._allow_private = allow_private
        self._clock = clock
        self._session_factory = session_factory or (
            lambda: new_client_session(allow_private=allow_private, limit=max_in_flight)
        )
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(max_queue)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._dropping = 0
        """Events dropped since the queue last had room (0: not dropping)."""
        self.stats = DispatcherStats()

    @property
    def queued(self) -> int:
        """Events waiting for the dispatcher."""
        return self._queue.qsize()

    @property
    def in_flight(self) -> int:
        """Deliveries under way (attempting or waiting to retry)."""
        return len(self._deliveries)

    async def start(self) -> None:
        """Open the HTTP session and start dispatching. Idempotent."""
        if self._closed:
            raise UsageError("WebhookDispatcher was closed")
        if self._runner is not None:
            return
        self._session = self._session_factory()
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def __aenter__(self) -> WebhookDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def emit(self, event: str, payload: Mapping[str, object]) -> None:
        """Queue `event` with `payload` (plain JSON data) for delivery; never blocks or raises.

        `payload["stream"]`, if a string, names the stream the event is about (it decides who
        may receive it). Dropped and counted if the queue is full, the dispatcher closed, the
        name is not an event name or the payload is not JSON. Call it from the event loop's
        thread (like every other method).
        """
        try:
            if self._closed:
                self.stats.dropped += 1
                return
            if not EVENT_NAME.match(event):
                self.stats.dropped += 1
                log.error("webhook event dropped: invalid event name %r", event[:80])
                return
            event_id = new_event_id()
            body = encode_envelope(event, event_id, self._clock(), payload)
            stream = payload.get("stream")
            job = _Job(event, event_id, stream if isinstance(stream, str) else "", body)
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            if not self._dropping:
                log.warning(
                    "webhook queue full (%d events): dropping events (first: %s)",
                    self._queue.maxsize,
                    event,
                )
            self._dropping += 1
        except Exception:
            # A payload that is not JSON (or any other bug) must not reach the media path.
            self.stats.dropped += 1
            log.exception("webhook event %s dropped: payload could not be encoded", event)

    async def close(self, drain: float | None = None) -> None:
        """Stop accepting events; finish queued and in-flight deliveries for up to `drain`
        seconds (default: the constructor's), then cancel the rest. Idempotent."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), self._drain if drain is None else drain)
            runner.cancel()
            for task in list(self._deliveries):
                task.cancel()
            await asyncio.gather(runner, *self._deliveries, return_exceptions=True)
        leftover = self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self.stats.dropped += leftover
        if leftover:
            log.warning("webhooks closed: %d queued event(s) dropped", leftover)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _drained(self) -> None:
        await self._queue.join()
        while self._deliveries:
            await asyncio.wait(set(self._deliveries))

    # --- dispatching ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if self._dropping:
                    log.warning("webhook queue has room again: %d event(s) dropped", self._dropping)
                    self._dropping = 0
                await self._dispatch(job)
            except asyncio.CancelledError:
                self.stats.dropped += 1  # closing: this event was taken but not (all) sent
                raise
            except Exception:
                self.stats.dropped += 1
                log.exception("webhook event %s id=%s not dispatched", job.event, job.event_id)
            finally:
                self._queue.task_done()

    async def _dispatch(self, job: _Job) -> None:
        endpoints = await self._endpoints.endpoints_for(job.event, job.stream)
        for endpoint in endpoints:
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._deliver(endpoint, job))
            self._deliveries.add(task)
            task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()
        if task.cancelled():  # counted here: a task cancelled before it ran has no `except`
            self.stats.failed += 1

    async def _deliver(self, endpoint: Endpoint, job: _Job) -> None:
        where = f"webhook={endpoint.id} url={redact_url(endpoint.url)}"
        attempt = 0
        result = _Attempt(None, "not attempted")
        try:
            while True:
                attempt += 1
                result = await self._attempt(endpoint, job)
                if result.error is None or not result.retry or attempt >= self._max_attempts:
                    break
                self.stats.retried += 1
                delay = backoff_delay(
                    attempt,
                    base=self._backoff_base,
                    cap=self._backoff_max,
                    retry_after=result.retry_after,
                )
                log.info(
                    "%s event=%s id=%s attempt %d/%d failed (%s), retrying in %.2f s",
                    where,
                    job.event,
                    job.event_id,
                    attempt,
                    self._max_attempts,
                    result.error,
                    delay,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.warning("%s event=%s id=%s abandoned at shutdown", where, job.event, job.event_id)
            raise
        if result.error is None:
            self.stats.delivered += 1
            log.debug("%s event=%s id=%s delivered", where, job.event, job.event_id)
        else:
            self.stats.failed += 1
            log.warning(
                "%s event=%s id=%s failed after %d attempt(s): %s",
                where,
                job.event,
                job.event_id,
                attempt,
                result.error,
            )
        outcome = DeliveryOutcome(datetime.now(UTC), result.status, result.error, attempt)
        try:
            await self._endpoints.record(endpoint, outcome)
        except Exception as exc:
            log.warning("%s could not record delivery outcome: %s", where, type(exc).__name__)

    async def _attempt(self, endpoint: Endpoint, job: _Job) -> _Attempt:
        problem = check_url(endpoint.url, allow_private=self._allow_private)
        if problem is not None:
            return _Attempt(None, f"URL refused: {problem}")
        session = self._session
        if session is None:
            return _Attempt(None, "dispatcher not started")
        headers = request_headers(
            endpoint.secret,
            event=job.event,
            event_id=job.event_id,
            timestamp=int(self._clock()),
            body=job.body,
        )
        try:
            async with session.post(
                endpoint.url,
                data=job.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After", "")
        except TimeoutError:
            return _Attempt(None, f"timed out after {self._timeout:g} s", retry=True)
        except aiohttp.ClientError as exc:
            if is_blocked(exc):
                return _Attempt(None, "URL refused: host resolves to no public address")
            return _Attempt(None, f"{type(exc).__name__}: {exc}", retry=True)
        if 200 <= status < 300:
            return _Attempt(status, None)
        retry = status == 429 or status >= 500
        wait = float(retry_after) if retry_after.isascii() and retry_after.isdigit() else 0.0
        return _Attempt(status, f"HTTP {status}", retry=retry, retry_after=wait)
