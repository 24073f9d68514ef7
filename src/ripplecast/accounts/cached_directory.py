"""A `Directory` that remembers channel and video lookups for a few seconds: an edge's.

On an edge every viewer request asks the access policy, and each HLS player asks twice per
segment duration (playlist and segment): without this, a popular stream costs the database one
query per request. With it, one query per channel per `ttl_seconds` per edge process, and any
number of concurrent lookups of one channel share one query.

What is remembered, and for how long, is chosen so that a change reaches viewers within
`ttl_seconds`:
- a channel (or its absence): its visibility and its owner's disabled flag;
- a video only once it is ready (a video still processing is asked again each time, so it
  plays as soon as it is published).
Credentials (stream keys, sessions, API tokens) are never remembered: a revocation applies at
once. At most `max_entries` lookups are kept; the oldest go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from ripplecast.accounts.policy import (
    ChannelInfo,
    Directory,
    Principal,
    StreamKeyInfo,
    VideoInfo,
)
from ripplecast.errors import UsageError

__all__ = ["CachedDirectory"]

_T = TypeVar("_T")


class CachedDirectory:
    """See the module docstring. `inner` answers what is not remembered."""

    def __init__(
        self,
        inner: Directory,
        *,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise UsageError("ttl_seconds must be > 0 and max_entries >= 1")
        self._inner = inner
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[object]] = {}
        """Lookups running now, by key: concurrent requests for one key share them."""
        self.hits = 0
        self.misses = 0
        """Lookups that went to `inner` (one for any number of concurrent equal ones)."""

    async def channel(self, slug: str) -> ChannelInfo | None:
        return await self._cached(("channel", slug), lambda: self._inner.channel(slug), _always)

    async def video(self, public_id: str) -> VideoInfo | None:
        return await self._cached(
            ("video", public_id), lambda: self._inner.video(public_id), _ready_video
        )

    async def stream_key(self, key_hash: str) -> StreamKeyInfo | None:
        return await self._inner.stream_key(key_hash)

    async def session(self, session_hash: str) -> Principal | None:
        return await self._inner.session(session_hash)

    async def api_token(self, token_hash: str) -> Principal | None:
        return await self._inner.api_token(token_hash)

    async def _cached(
        self,
        key: tuple[str, str],
        lookup: Callable[[], Awaitable[_T]],
        keep: Callable[[object], bool],
    ) -> _T:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self.hits += 1
                return cast(_T, entry[1])  # stored by a lookup of this key's kind
            del self._entries[key]
        task = self._pending.get(key)
        if task is None:
            self.misses += 1
            # A task of its own: a requester that goes away (a viewer hanging up) does not
            # cancel the lookup the others wait for.
            task = asyncio.ensure_future(self._fill(key, lookup, keep))
            task.add_done_callback(_retrieve)
            self._pending[key] = task
        else:
            self.hits += 1
        return cast(_T, await asyncio.shield(task))

    async def _fill(
        self,
        key: tuple[str, str],
        lookup: Callable[[], Awaitable[object]],
        keep: Callable[[object], bool],
    ) -> object:
        try:
            value = await lookup()
            if keep(value):
                self._entries[key] = (self._clock() + self._ttl, value)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            return value
        finally:
            del self._pending[key]


def _retrieve(task: asyncio.Future[object]) -> None:
    """Mark a lookup's failure as seen: its waiters re-raise it; with none, nobody must."""
    if not task.cancelled():
        task.exception()


def _always(_value: object) -> bool:
    return True


def _ready_video(value: object) -> bool:
    return isinstance(value, VideoInfo) and value.ready
