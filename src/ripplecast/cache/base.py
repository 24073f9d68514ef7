"""The cache interface every Ripplecast component depends on, and its errors.

This module owns the `Cache` protocol (key/value with time to live, atomic one-time and lock
primitives, fenced locks, expiring indexes, fixed-window rate counters, publish/subscribe), the
`Subscription` protocol, the `RateCount` result, the fenced-lock value format and the cache error
classes. It holds no implementation.

Invariants every implementation keeps (checked by tests/contract/test_cache_contract.py against
both `MemoryCache` and `RedisCache` on a real Redis):

- Keys and channels are `str` and are namespaced by the prefix given at construction, so caches
  with different prefixes never see each other's keys or messages. Values are `bytes`; callers
  serialise.
- Times to live are float seconds, stored with millisecond resolution; a TTL must be > 0
  (`UsageError` otherwise). An expired key is indistinguishable from a missing one.
- Each operation is atomic with respect to every other operation on the same key: N concurrent
  `pop`s of one key return its value exactly once, N concurrent `incr_window`s count N, N
  concurrent `acquire_fenced`s of one lock let exactly one win.
- A fenced lock (`acquire_fenced`) holds `fenced_value(token, owner)`; its tokens come from a
  counter key that only that acquisition increments, so while the counter lives (it is given
  `counter_ttl` on every acquisition) each later holder has a larger token.
- An index (`index_add`, `index_members`, `index_remove`) is a key holding a bounded set of
  members, each with its own expiry measured by the backend's clock (the Redis server's, so
  the nodes' clocks need not agree); the key itself expires with its last member. Reading an
  index as a value, or a value as an index, raises `CacheError`.
- A counter written by `incr_window` is an ordinary key whose value is its count in ASCII
  decimal (`get` returns e.g. b"3").
- A `Subscription` receives every message published to its channel after `subscribe()` has been
  entered, in publish order (unless a bound drops them, which is counted), and none published to
  other channels.
- Failing to reach the backing service raises `CacheUnavailable`, never a driver exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from ripplecast.errors import RipplecastError, UsageError

__all__ = [
    "Cache",
    "CacheError",
    "CacheUnavailable",
    "RateCount",
    "Subscription",
    "check_limit",
    "check_ttl",
    "fenced_value",
    "parse_fenced_value",
]


class CacheError(RipplecastError):
    """Base of errors raised by a cache (e.g. incrementing a key that holds no integer)."""


class CacheUnavailable(CacheError):
    """The backing service (Redis) cannot be reached or stopped answering.

    The message names the service (with any password removed) and the underlying cause.
    """


@dataclass(frozen=True, slots=True)
class RateCount:
    """The state of a fixed-window counter right after one `incr_window` hit."""

    count: int
    """Hits counted in the current window, including this one (>= 1)."""
    reset_after: float
    """Seconds until the window ends and the count starts again from zero (> 0)."""


def check_ttl(ttl: float) -> int:
    """Validate a time to live in seconds; return it in whole milliseconds (at least 1).

    Raises `UsageError` for a TTL that is not a finite number > 0.
    """
    if not ttl > 0 or ttl == float("inf"):
        raise UsageError(f"a cache TTL must be a finite number of seconds > 0, got {ttl!r}")
    return max(1, round(ttl * 1000))


def fenced_value(token: int, owner: bytes) -> bytes:
    """The value a fenced lock holds: the token in ASCII decimal, a space, then `owner`."""
    return b"%d %s" % (token, owner)


def parse_fenced_value(value: bytes) -> tuple[int, bytes] | None:
    """(token, owner) from a `fenced_value`; None if `value` is not one."""
    token, space, owner = value.partition(b" ")
    if not space or not token.isdigit() or len(token) > 19:
        return None
    return int(token), owner


def check_limit(name: str, limit: int) -> None:
    """Raise `UsageError` unless `limit` (a count bound named `name`) is at least 1."""
    if limit < 1:
        raise UsageError(f"{name} must be >= 1, got {limit!r}")


class Subscription(Protocol):
    """Messages of one channel, in publish order, from the moment the subscription started.

    Iterate with `async for`; iteration ends when the subscription is closed. Reading is
    cancellation-safe: a read cut short by `asyncio.timeout` loses no message.
    """

    @property
    def channel(self) -> str:
        """The channel name as the caller gave it (without the prefix)."""
        ...

    @property
    def dropped(self) -> int:
        """Messages this subscriber lost because it read too slowly (0 if none)."""
        ...

    async def get(self) -> bytes | None:
        """The next message, waiting for it; None once the subscription is closed."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None:
        """Unsubscribe and release resources; idempotent."""
        ...


class Cache(Protocol):
    """Key/value store with TTL, atomic primitives, indexes, rate counters and pub/sub.

    Every method may raise `CacheUnavailable`; methods taking a TTL raise `UsageError` for a
    TTL <= 0, and those taking a count bound (`limit`, `max_members`) for a bound < 1.
    """

    @property
    def prefix(self) -> str:
        """The namespace prepended to every key and channel."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if it is missing or expired."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store `value`, expiring after `ttl` seconds (never when None: an old TTL is cleared)."""
        ...

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store `value` only if `key` does not exist; True if it was stored (a lock acquired)."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed."""
        ...

    async def pop(self, key: str) -> bytes | None:
        """Get and delete `key` atomically (consume-once); None if it was missing."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Set the TTL of an existing key (sliding renewal); False if the key is missing."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; `math.inf` if it never does; None if it is missing."""
        ...

    async def incr_window(self, key: str, *, window: float) -> RateCount:
        """Count one hit in a fixed window that starts at the first hit and lasts `window` s.

        The counter key expires `window` seconds after its first hit; the next hit starts a new
        window. A counter key found without a TTL is given one. Raises `CacheError` if the key
        holds something other than an integer.
        """
        ...

    async def compare_and_delete(self, key: str, value: bytes) -> bool:
        """Delete `key` only if it holds exactly `value` (a lock released by its owner)."""
        ...

    async def compare_and_expire(self, key: str, value: bytes, ttl: float) -> bool:
        """Set the TTL of `key` only if it holds exactly `value` (a lock renewed by its owner)."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` read together in one atomic step, in order (None for a missing
        key or one holding an index). The caller bounds the number of keys."""
        ...

    async def acquire_fenced(
        self, key: str, owner: bytes, *, ttl: float, counter: str, counter_ttl: float
    ) -> int | None:
        """Take the lock `key` for `owner` if nobody holds it; return its fencing token, or None.

        In one atomic step: if `key` is missing, the integer at `counter` is incremented (the
        token), `counter` is given `counter_ttl`, and `key` is set to `fenced_value(token,
        owner)` with `ttl`. Renew with `compare_and_expire` and release with
        `compare_and_delete` on that value. Raises `CacheError` if `counter` holds no integer.
        """
        ...

    async def index_add(self, index: str, member: str, *, ttl: float, max_members: int) -> bool:
        """Add `member` to `index`, or refresh it, so that it stays a member for `ttl` seconds.

        Returns False, changing nothing, if `member` is new and `index` already has
        `max_members` live members.
        """
        ...

    async def index_members(self, index: str, *, limit: int) -> list[str]:
        """The live members of `index`, sorted; at most `limit` of them (which ones, when more
        are live, is unspecified)."""
        ...

    async def index_remove(self, index: str, member: str) -> bool:
        """Remove `member` from `index`; True if it was a live member."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Send `message` to every current subscriber of `channel`; never blocks on them."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """A context that subscribes on entry (receiving everything published after entry) and
        unsubscribes on exit: `async with cache.subscribe("events") as sub: ...`."""
        ...

    async def close(self) -> None:
        """Close subscriptions and connections; idempotent."""
        ...
