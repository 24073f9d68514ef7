"""`Inbox`: the bounded, in-order message queue behind every `Subscription`.

Both cache implementations deliver a channel's messages into one `Inbox` per subscriber
(`MemoryCache.publish` directly, `RedisCache` from a task reading the Redis connection), so a
subscriber behaves the same on either.

Invariants: at most `max_queued` messages wait; `deliver` never blocks and drops (and counts in
`dropped`) a message that finds the queue full; messages come out in delivery order; once closed,
`get` returns None (or raises the error the inbox was closed with) and iteration stops, and
nothing more is queued.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Inbox"]


class Inbox:
    """One subscriber's bounded queue of messages for `channel`; implements `Subscription`."""

    def __init__(self, channel: str, max_queued: int) -> None:
        self._channel = channel
        self._max_queued = max_queued
        self._messages: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._dropped = 0

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, message: bytes) -> bool:
        """Queue `message` without waiting; False (and counted) if the queue is full."""
        if self._closed:
            return True
        if len(self._messages) >= self._max_queued:
            self._dropped += 1
            return False
        self._messages.append(message)
        self._ready.set()
        return True

    async def get(self) -> bytes | None:
        """The next message, waiting for it; None once closed.

        Cancellation-safe (a message is taken only when returned). Raises the error the inbox
        was closed with, if any (e.g. `CacheUnavailable`).
        """
        while True:
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            if self._messages:
                return self._messages.popleft()
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> bytes:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    def close(self, error: BaseException | None = None) -> None:
        """Stop delivery, discard queued messages and wake any reader (raising `error` in it)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._messages.clear()
        self._ready.set()

    async def aclose(self) -> None:
        self.close()
