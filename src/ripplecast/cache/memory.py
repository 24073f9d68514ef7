"""`MemoryCache`: the in-process `Cache` of a single-box node (the embedded default).

It owns a dict of entries with optional expiry times and the subscribers of each channel.

Invariants:

- Every method runs without awaiting anything before its result is decided, so on one event
  loop each operation is atomic (that is what makes `pop`, `set_if_absent`, `incr_window`,
  `compare_and_delete` and `acquire_fenced` race-free). The cache is bound to one event loop and
  one thread.
- An index is an entry whose value is a dict of member -> expiry time (the injected clock) and
  whose own expiry is its last member's; it counts as one entry towards `max_entries`. Expired
  members are dropped whenever the index is read or written, so it holds at most `max_members`
  (as given by the last `index_add`) plus those expired since.
- Expiry is lazy (a read of an expired key deletes it) plus a bounded sweep of at most
  `SWEEP_BATCH` expired entries on every write, taken from a min-heap of expiry times, so no
  background task is needed and the clock can be injected (`clock`, monotonic seconds).
- At most `max_entries` keys are held. Writing a new key into a full cache first drops expired
  entries, then evicts the entry soonest to expire, or, when no entry has a TTL, the oldest
  written one; each eviction of a live entry is counted in `evictions`.
- Each subscriber has its own queue of at most `max_queued_messages`; a publisher never waits.
  A message for a full queue is dropped for that subscriber only and counted in its `dropped`
  and in the cache's `dropped_messages`.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from ripplecast.cache.base import (
    CacheError,
    RateCount,
    Subscription,
    check_limit,
    check_ttl,
    fenced_value,
)
from ripplecast.cache.inbox import Inbox
from ripplecast.errors import UsageError

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_QUEUED_MESSAGES", "SWEEP_BATCH", "MemoryCache"]

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_QUEUED_MESSAGES = 1_000
SWEEP_BATCH = 64
"""Most heap items examined by the sweep that runs on each write (bounds its latency)."""


_Members = dict[str, float]
"""An index's members and the clock time at which each expires."""


@dataclass(slots=True)
class _Entry:
    value: bytes | _Members
    expires_at: float | None
    seq: int
    """Matches the heap item that stands for this entry's current expiry; others are stale."""


class MemoryCache:
    """In-process `Cache`: see the module docstring for its bounds and invariants."""

    def __init__(
        self,
        *,
        prefix: str = "rc:",
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
    ) -> None:
        if max_entries < 1 or max_queued_messages < 1:
            raise UsageError("max_entries and max_queued_messages must be >= 1")
        self._prefix = prefix
        self._clock = clock
        self.max_entries = max_entries
        self.max_queued_messages = max_queued_messages
        self._data: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._channels: dict[str, set[Inbox]] = {}
        self._closed = False
        self.evictions = 0
        """Live entries removed to make room (a sign `max_entries` is too small or a flood)."""
        self.dropped_messages = 0
        """Messages dropped for slow subscribers, over all channels."""

    @property
    def prefix(self) -> str:
        return self._prefix

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept."""
        return len(self._data)

    def subscriber_count(self, channel: str) -> int:
        """Current subscribers of `channel` (for tests and metrics)."""
        return len(self._channels.get(self._prefix + channel, ()))

    # -- key/value ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else _bytes_of(entry, key)

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        self._put(key, value, self._expiry(ttl))

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        expires_at = self._expiry(ttl)
        if self._live(key) is not None:
            return False
        self._put(key, value, expires_at)
        return True

    async def delete(self, key: str) -> bool:
        exists = self._live(key) is not None
        if exists:
            del self._data[self._prefix + key]
        return exists

    async def pop(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None:
            return None
        value = _bytes_of(entry, key)
        del self._data[self._prefix + key]
        return value

    async def expire(self, key: str, ttl: float) -> bool:
        expires_at = self._expiry(ttl)
        entry = self._live(key)
        if entry is None:
            return False
        self._set_expiry(self._prefix + key, entry, expires_at)
        return True

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None:
            return None
        if entry.expires_at is None:
            return math.inf
        return entry.expires_at - self._clock()

    async def incr_window(self, key: str, *, window: float) -> RateCount:
        expires_at = self._expiry(window)
        assert expires_at is not None
        entry = self._live(key)
        if entry is None:
            self._put(key, b"1", expires_at)
            return RateCount(1, expires_at - self._clock())
        count = _counter_of(entry, key) + 1
        entry.value = str(count).encode()
        if entry.expires_at is None:
            self._set_expiry(self._prefix + key, entry, expires_at)
        assert entry.expires_at is not None
        return RateCount(count, entry.expires_at - self._clock())

    async def compare_and_delete(self, key: str, value: bytes) -> bool:
        entry = self._live(key)
        if entry is None or _bytes_of(entry, key) != value:
            return False
        del self._data[self._prefix + key]
        return True

    async def compare_and_expire(self, key: str, value: bytes, ttl: float) -> bool:
        expires_at = self._expiry(ttl)
        entry = self._live(key)
        if entry is None or _bytes_of(entry, key) != value:
            return False
        self._set_expiry(self._prefix + key, entry, expires_at)
        return True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for key in keys:
            entry = self._live(key)
            values.append(
                entry.value if entry is not None and isinstance(entry.value, bytes) else None
            )
        return values

    async def acquire_fenced(
        self, key: str, owner: bytes, *, ttl: float, counter: str, counter_ttl: float
    ) -> int | None:
        expires_at = self._expiry(ttl)
        counter_expires_at = self._expiry(counter_ttl)
        if self._live(key) is not None:
            return None
        entry = self._live(counter)
        token = 1 if entry is None else _counter_of(entry, counter) + 1
        self._put(counter, str(token).encode(), counter_expires_at)
        self._put(key, fenced_value(token, owner), expires_at)
        return token

    # -- indexes -----------------------------------------------------------------------------

    async def index_add(self, index: str, member: str, *, ttl: float, max_members: int) -> bool:
        check_limit("max_members", max_members)
        expires_at = self._expiry(ttl)
        assert expires_at is not None
        entry = self._live(index)
        members = {} if entry is None else self._live_members(entry, index)
        if member not in members and len(members) >= max_members:
            return False
        members[member] = expires_at
        if entry is None:
            self._put(index, members, expires_at)
        else:
            self._set_expiry(self._prefix + index, entry, max(members.values()))
        return True

    async def index_members(self, index: str, *, limit: int) -> list[str]:
        check_limit("limit", limit)
        entry = self._live(index)
        if entry is None:
            return []
        return sorted(self._live_members(entry, index))[:limit]

    async def index_remove(self, index: str, member: str) -> bool:
        entry = self._live(index)
        if entry is None:
            return False
        members = self._live_members(entry, index)
        if members.pop(member, None) is None:
            return False
        if members:
            self._set_expiry(self._prefix + index, entry, max(members.values()))
        else:
            del self._data[self._prefix + index]
        return True

    # -- pub/sub -----------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        self._check_open()
        for subscription in self._channels.get(self._prefix + channel, ()):
            if not subscription.deliver(message):
                self.dropped_messages += 1

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        self._check_open()
        name = self._prefix + channel
        subscription = Inbox(channel, self.max_queued_messages)
        self._channels.setdefault(name, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            subscribers = self._channels.get(name)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._channels[name]

    async def close(self) -> None:
        self._closed = True
        for subscribers in self._channels.values():
            for subscription in subscribers:
                subscription.close()
        self._channels.clear()
        self._data.clear()
        self._heap.clear()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the cache is closed")

    def _expiry(self, ttl: float | None) -> float | None:
        """Validate `ttl` and turn it into an absolute expiry time (None: never)."""
        self._check_open()
        if ttl is None:
            return None
        return self._clock() + check_ttl(ttl) / 1000

    def _live(self, key: str) -> _Entry | None:
        """The entry of `key` if present and not expired; deletes it if expired."""
        self._check_open()
        name = self._prefix + key
        entry = self._data.get(name)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            del self._data[name]
            return None
        return entry

    def _live_members(self, entry: _Entry, index: str) -> _Members:
        """The members of the index `entry` (of key `index`), with expired ones dropped."""
        if not isinstance(entry.value, dict):
            raise CacheError(f"cache key {index!r} holds a value, not an index")
        now = self._clock()
        expired = [member for member, expires_at in entry.value.items() if expires_at <= now]
        for member in expired:
            del entry.value[member]
        return entry.value

    def _put(self, key: str, value: bytes | _Members, expires_at: float | None) -> None:
        name = self._prefix + key
        self._sweep()
        if self._data.pop(name, None) is None:
            while len(self._data) >= self.max_entries:
                self._evict_one()
        self._seq += 1
        self._data[name] = _Entry(value, expires_at, self._seq)  # now the newest in dict order
        if expires_at is not None:
            self._push(expires_at, self._seq, name)

    def _set_expiry(self, name: str, entry: _Entry, expires_at: float | None) -> None:
        self._seq += 1
        entry.seq = self._seq
        entry.expires_at = expires_at
        if expires_at is not None:
            self._push(expires_at, entry.seq, name)

    def _push(self, expires_at: float, seq: int, name: str) -> None:
        heapq.heappush(self._heap, (expires_at, seq, name))
        if len(self._heap) > 2 * len(self._data) + 1024:  # too many stale items: rebuild
            self._heap = [
                (e.expires_at, e.seq, n) for n, e in self._data.items() if e.expires_at is not None
            ]
            heapq.heapify(self._heap)

    def _is_current(self, seq: int, name: str) -> bool:
        entry = self._data.get(name)
        return entry is not None and entry.seq == seq

    def _sweep(self) -> None:
        """Drop up to SWEEP_BATCH expired entries (and stale heap items) from the heap's head."""
        now = self._clock()
        for _ in range(SWEEP_BATCH):
            if not self._heap or self._heap[0][0] > now:
                return
            _, seq, name = heapq.heappop(self._heap)
            if self._is_current(seq, name):
                del self._data[name]

    def _evict_one(self) -> None:
        """Remove the entry soonest to expire, else the oldest written one."""
        while self._heap:
            expires_at, seq, name = heapq.heappop(self._heap)
            if self._is_current(seq, name):
                del self._data[name]
                if expires_at > self._clock():
                    self.evictions += 1
                return
        del self._data[next(iter(self._data))]
        self.evictions += 1


def _bytes_of(entry: _Entry, key: str) -> bytes:
    """The value of a plain entry; `CacheError` for an index (as Redis answers WRONGTYPE)."""
    if not isinstance(entry.value, bytes):
        raise CacheError(f"cache key {key!r} holds an index, not a value")
    return entry.value


def _counter_of(entry: _Entry, key: str) -> int:
    """The integer a counter entry holds; `CacheError` if it holds anything else."""
    try:
        return int(_bytes_of(entry, key))
    except ValueError:
        raise CacheError(f"cache key {key!r} does not hold an integer counter") from None
