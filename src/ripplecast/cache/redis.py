"""`RedisCache`: the `Cache` shared by the nodes of a cluster, on Redis via redis-py asyncio.

It owns one redis-py client (and its connection pool) and, per subscription, one pub/sub
connection with a task that moves its messages into the subscriber's bounded `Inbox`.

Invariants:

- Every key and channel name sent to Redis is `prefix + name`; nothing outside the prefix is
  read or written.
- Multi-step operations are single Redis commands or Lua scripts, hence atomic across nodes:
  `pop` is GETDEL (Redis >= 6.2), `set_if_absent` is SET NX PX, `get_many` is MGET,
  `incr_window`, `compare_and_delete`, `compare_and_expire`, `acquire_fenced` and the index
  operations are scripts. TTLs are sent in milliseconds (PX / PEXPIRE).
- An index is a sorted set scored by each member's expiry in Unix milliseconds of the Redis
  server's clock (TIME, read inside the scripts), so no node's clock matters; the key's own
  expiry (PEXPIREAT) is its last member's.
- No redis-py exception escapes: connection failures and timeouts become `CacheUnavailable`
  (naming the server, password removed), other server errors `CacheError`. Nothing connects
  before first use, so a wrong address is reported by the first operation.
- `subscribe()` returns only after Redis confirmed the subscription, so every message published
  after entry is received. A subscriber that reads too slowly loses messages from its own
  `Inbox` (counted), never stalls the connection reader; a pub/sub connection that fails for
  good closes the subscription with `CacheUnavailable`, raised by the subscriber's next read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ripplecast.cache.base import (
    CacheError,
    CacheUnavailable,
    RateCount,
    Subscription,
    check_limit,
    check_ttl,
)
from ripplecast.cache.inbox import Inbox
from ripplecast.errors import UsageError

__all__ = ["DEFAULT_MAX_QUEUED_MESSAGES", "DEFAULT_TIMEOUT", "RedisCache", "redact_url"]

log = logging.getLogger("ripplecast.cache.redis")

DEFAULT_TIMEOUT = 5.0
"""Seconds to connect and to wait for any single reply."""
DEFAULT_MAX_QUEUED_MESSAGES = 1_000

# INCR, and start the window on the first hit (or on a counter that somehow lost its TTL).
# Returns {count, milliseconds until reset}.
_INCR_WINDOW = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_COMPARE_AND_EXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock, counter. ARGV: owner, lock TTL ms, counter TTL ms. Returns the token or nil.
# The format of the value is `fenced_value` in base.py.
_ACQUIRE_FENCED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], string.format('%d ', token) .. ARGV[1], 'PX', ARGV[2])
return token
"""

# The server's clock in Unix milliseconds: the time base of every index member's expiry.
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# The index key expires with its last member (none left: nothing to do, ZREM deleted the key).
_EXPIRE_WITH_LAST_MEMBER = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(last[2])))
end
"""

# KEYS: index. ARGV: member, TTL ms, max members. Returns 1 if added or refreshed, else 0.
_INDEX_ADD = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
"""
    + _EXPIRE_WITH_LAST_MEMBER
    + "return 1\n"
)

# KEYS: index. ARGV: limit. Live members are those whose expiry is still ahead.
_INDEX_MEMBERS = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf',
                  'LIMIT', 0, ARGV[1])
"""
)

# KEYS: index. ARGV: member. Returns 1 if it was a live member, else 0.
_INDEX_REMOVE = (
    _NOW_MS
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
"""
    + _EXPIRE_WITH_LAST_MEMBER
    + """
if tonumber(score) > now then
  return 1
end
return 0
"""
)


def redact_url(url: str) -> str:
    """`url` with any password replaced by "***", for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class _RedisSubscription(Inbox):
    """An `Inbox` fed by a task reading one Redis pub/sub connection."""

    def __init__(
        self, cache: RedisCache, channel: str, name: str, pubsub: PubSub, max_queued: int
    ) -> None:
        super().__init__(channel, max_queued)
        self._cache = cache
        self._name = name
        self._pubsub = pubsub
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and wait for Redis to confirm, then start reading."""
        timeout = self._cache.timeout
        with self._cache.translate(f"subscribe to {self.channel!r}"):
            await self._pubsub.subscribe(self._name)
            async with asyncio.timeout(timeout):
                while True:
                    message = await self._pubsub.get_message(timeout=timeout)
                    if message is not None and message["type"] == "subscribe":
                        break
        self._reader = asyncio.create_task(self._read(), name=f"redis-subscription:{self._name}")

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            with self._cache.translate(f"read channel {self.channel!r}"):
                while not self.closed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=None
                    )
                    if (
                        message is not None
                        and message["type"] == "message"
                        and not self.deliver(message["data"])
                    ):
                        self._cache.dropped_messages += 1
        except CacheError as exc:
            log.warning("subscription to %r ended: %s", self.channel, exc)
            error = exc
        finally:
            self.close(error)

    async def aclose(self) -> None:
        self.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        pubsub: Any = self._pubsub  # redis-py leaves PubSub.aclose untyped
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()


class RedisCache:
    """`Cache` on Redis: see the module docstring for its invariants.

    `url` is a redis:// or rediss:// URL (redis-py syntax, e.g. redis://:PASSWORD@host:6379/0).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rc:",
        timeout: float = DEFAULT_TIMEOUT,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
    ) -> None:
        if max_queued_messages < 1:
            raise UsageError("max_queued_messages must be >= 1")
        self._prefix = prefix
        self._where = redact_url(url)
        self.timeout = timeout
        self.max_queued_messages = max_queued_messages
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # A few quick retries ride over a restart or failover, without hiding an outage.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
        )
        self._incr_window = self._client.register_script(_INCR_WINDOW)
        self._compare_and_delete = self._client.register_script(_COMPARE_AND_DELETE)
        self._compare_and_expire = self._client.register_script(_COMPARE_AND_EXPIRE)
        self._acquire_fenced = self._client.register_script(_ACQUIRE_FENCED)
        self._index_add = self._client.register_script(_INDEX_ADD)
        self._index_members = self._client.register_script(_INDEX_MEMBERS)
        self._index_remove = self._client.register_script(_INDEX_REMOVE)
        self._subscriptions: set[_RedisSubscription] = set()
        self._closed = False
        self.dropped_messages = 0
        """Messages dropped for slow subscribers, over all channels."""

    @property
    def prefix(self) -> str:
        return self._prefix

    @contextlib.contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn redis-py and socket errors raised inside into `CacheUnavailable`/`CacheError`."""
        if self._closed:
            raise UsageError("the cache is closed")
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise CacheUnavailable(
                f"Redis at {self._where} is unavailable ({action}): {exc or type(exc).__name__}"
            ) from exc
        except RedisError as exc:
            raise CacheError(f"Redis at {self._where} refused to {action}: {exc}") from exc

    # -- key/value ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        with self.translate(f"get {key!r}"):
            value = await self._client.get(self._prefix + key)
        return cast("bytes | None", value)  # decode_responses=False: never str

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        px = None if ttl is None else check_ttl(ttl)
        with self.translate(f"set {key!r}"):
            await self._client.set(self._prefix + key, value, px=px)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        px = None if ttl is None else check_ttl(ttl)
        with self.translate(f"set {key!r} if absent"):
            stored = await self._client.set(self._prefix + key, value, px=px, nx=True)
        return bool(stored)

    async def delete(self, key: str) -> bool:
        with self.translate(f"delete {key!r}"):
            removed: int = await self._client.delete(self._prefix + key)
        return removed > 0

    async def pop(self, key: str) -> bytes | None:
        with self.translate(f"pop {key!r}"):
            value = await self._client.getdel(self._prefix + key)
        return cast("bytes | None", value)

    async def expire(self, key: str, ttl: float) -> bool:
        px = check_ttl(ttl)
        with self.translate(f"expire {key!r}"):
            done = await self._client.pexpire(self._prefix + key, px)
        return bool(done)

    async def ttl(self, key: str) -> float | None:
        with self.translate(f"read the TTL of {key!r}"):
            ms: int = await self._client.pttl(self._prefix + key)
        if ms == -2:
            return None
        if ms == -1:
            return math.inf
        return ms / 1000

    async def incr_window(self, key: str, *, window: float) -> RateCount:
        px = check_ttl(window)
        with self.translate(f"count a hit on {key!r}"):
            result: Any = await self._incr_window(keys=[self._prefix + key], args=[px])
        count, ms = int(result[0]), int(result[1])
        return RateCount(count, ms / 1000)

    async def compare_and_delete(self, key: str, value: bytes) -> bool:
        with self.translate(f"compare and delete {key!r}"):
            removed: Any = await self._compare_and_delete(keys=[self._prefix + key], args=[value])
        return int(removed) > 0

    async def compare_and_expire(self, key: str, value: bytes, ttl: float) -> bool:
        px = check_ttl(ttl)
        with self.translate(f"compare and expire {key!r}"):
            done: Any = await self._compare_and_expire(keys=[self._prefix + key], args=[value, px])
        return int(done) > 0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with self.translate(f"get {len(keys)} keys"):
            values = await self._client.mget([self._prefix + key for key in keys])
        return cast("list[bytes | None]", values)  # decode_responses=False: never str

    async def acquire_fenced(
        self, key: str, owner: bytes, *, ttl: float, counter: str, counter_ttl: float
    ) -> int | None:
        px = check_ttl(ttl)
        counter_px = check_ttl(counter_ttl)
        with self.translate(f"acquire the fenced lock {key!r}"):
            token: Any = await self._acquire_fenced(
                keys=[self._prefix + key, self._prefix + counter], args=[owner, px, counter_px]
            )
        return None if token is None else int(token)

    # -- indexes -----------------------------------------------------------------------------

    async def index_add(self, index: str, member: str, *, ttl: float, max_members: int) -> bool:
        check_limit("max_members", max_members)
        px = check_ttl(ttl)
        with self.translate(f"add {member!r} to the index {index!r}"):
            added: Any = await self._index_add(
                keys=[self._prefix + index], args=[member, px, max_members]
            )
        return int(added) > 0

    async def index_members(self, index: str, *, limit: int) -> list[str]:
        check_limit("limit", limit)
        with self.translate(f"list the index {index!r}"):
            members: Any = await self._index_members(keys=[self._prefix + index], args=[limit])
        return sorted(bytes(member).decode() for member in members)

    async def index_remove(self, index: str, member: str) -> bool:
        with self.translate(f"remove {member!r} from the index {index!r}"):
            removed: Any = await self._index_remove(keys=[self._prefix + index], args=[member])
        return int(removed) > 0

    # -- pub/sub -----------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        with self.translate(f"publish to {channel!r}"):
            await self._client.publish(self._prefix + channel, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        with self.translate(f"subscribe to {channel!r}"):
            pubsub = self._client.pubsub()
        subscription = _RedisSubscription(
            self, channel, self._prefix + channel, pubsub, self.max_queued_messages
        )
        self._subscriptions.add(subscription)
        try:
            await subscription.start()
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            await subscription.aclose()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        self._subscriptions.clear()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
