"""Cache, locks, rate limits and events: one interface, an in-process and a Redis implementation.

This package owns the `Cache` protocol (see `ripplecast.cache.base` for the contract both
implementations keep), `MemoryCache` (single-box default), `RedisCache` (cluster) and
`open_cache`, which picks one from a URL. Components receive a `Cache` in their constructor and
never import an implementation; only the composition root calls `open_cache`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ripplecast.cache.base import (
    Cache,
    CacheError,
    CacheUnavailable,
    RateCount,
    Subscription,
    fenced_value,
    parse_fenced_value,
)
from ripplecast.cache.memory import DEFAULT_MAX_ENTRIES, MemoryCache
from ripplecast.cache.redis import DEFAULT_MAX_QUEUED_MESSAGES, RedisCache, redact_url

__all__ = [
    "Cache",
    "CacheError",
    "CacheUnavailable",
    "MemoryCache",
    "RateCount",
    "RedisCache",
    "Subscription",
    "fenced_value",
    "open_cache",
    "parse_fenced_value",
]


def open_cache(
    url: str,
    *,
    prefix: str,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
) -> Cache:
    """The cache named by `url`: "memory://" gives a `MemoryCache` (bounded by `max_entries`),
    "redis://..." or "rediss://..." a `RedisCache` (not yet connected).

    Raises `ValueError` naming the scheme for any other URL.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryCache(
            prefix=prefix, max_entries=max_entries, max_queued_messages=max_queued_messages
        )
    if scheme in ("redis", "rediss"):
        return RedisCache(url, prefix=prefix, max_queued_messages=max_queued_messages)
    raise ValueError(
        f"unsupported cache URL scheme {scheme!r} in {redact_url(url)!r}: "
        "use memory:// or redis://HOST:PORT/DB (rediss:// for TLS)"
    )
