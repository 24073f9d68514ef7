"""Stream ownership: which origin holds each live stream name, as a fenced lock in the cache.

This module owns `Claim` and `StreamOwnership`. The origin that accepts a publisher claims the
stream name; while the claim lives no other node can claim it, so a second publisher of the
same name elsewhere is refused. The owner renews its claim well within `ttl_seconds`; if it
vanishes, the claim expires and the name is free again.

Invariants:

- Claiming is one atomic cache operation (`Cache.acquire_fenced`): of any number of concurrent
  claims of a free name, exactly one succeeds.
- Every successful claim of a name carries a fencing token larger than every earlier claim's
  of that name (the counter lives `fence_ttl_seconds` after the last claim, far longer than any
  claim, so it only restarts for a name unclaimed that long). Anything that acts for the owner
  can therefore tell a stale owner from the current one: `is_current` compares the token.
- Only the holder of the current claim (same node, same token) can renew or release it; a
  stale claim's `renew` and `release` change nothing and return False.
- Keys live under the cache prefix: `cluster:owner:NAME` (the claim, with `ttl_seconds`) and
  `cluster:fence:NAME` (the token counter, with `fence_ttl_seconds`); names are validated and
  bounded (`max_name_length`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ripplecast.cache import Cache, fenced_value, parse_fenced_value
from ripplecast.cluster.registry import ClusterError, ClusterInputError, check_node_id
from ripplecast.config import STREAM_NAME_PATTERN
from ripplecast.errors import UsageError

__all__ = [
    "DEFAULT_FENCE_TTL_SECONDS",
    "DEFAULT_MAX_NAME_LENGTH",
    "FENCE_KEY_PREFIX",
    "OWNER_KEY_PREFIX",
    "Claim",
    "StreamOwnership",
]

OWNER_KEY_PREFIX = "cluster:owner:"
"""Cache key of a stream's claim: this prefix and the stream name."""
FENCE_KEY_PREFIX = "cluster:fence:"
"""Cache key of a stream's fencing-token counter: this prefix and the stream name."""
DEFAULT_FENCE_TTL_SECONDS = 7 * 24 * 3600.0
DEFAULT_MAX_NAME_LENGTH = 255
"""The longest stream name the settings allow (`stream_name_max_length` <= 255)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One node's ownership of one stream name, as granted by `StreamOwnership.claim`."""

    stream: str
    node_id: str
    token: int
    """Fencing token: larger for every later claim of the same stream name."""


class StreamOwnership:
    """Claims of stream names by the node `node_id` (see the module invariants).

    `ttl_seconds` is how long a claim lives unless renewed; renew it every third of that.
    Every method may raise `CacheError` (`CacheUnavailable` when Redis cannot be reached).
    """

    def __init__(
        self,
        cache: Cache,
        *,
        ttl_seconds: float,
        node_id: str,
        fence_ttl_seconds: float = DEFAULT_FENCE_TTL_SECONDS,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
    ) -> None:
        for what, value in (("ttl_seconds", ttl_seconds), ("fence_ttl_seconds", fence_ttl_seconds)):
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{what} must be a finite number > 0, got {value!r}")
        if fence_ttl_seconds < 10 * ttl_seconds:
            # The counter must outlive any claim by far, or tokens could restart under a
            # stale owner that has not yet noticed.
            raise UsageError(
                f"fence_ttl_seconds ({fence_ttl_seconds!r}) must be at least 10 times "
                f"ttl_seconds ({ttl_seconds!r})"
            )
        if max_name_length < 1:
            raise UsageError(f"max_name_length must be >= 1, got {max_name_length!r}")
        self._cache = cache
        self.ttl_seconds = ttl_seconds
        self.node_id = check_node_id(node_id)
        self.fence_ttl_seconds = fence_ttl_seconds
        self.max_name_length = max_name_length

    async def claim(self, name: str) -> Claim | None:
        """Claim stream `name` for this node if nobody holds it; the claim, or None if held
        (by anyone, this node included: a node holds a name once).

        Raises `ClusterInputError` for an unusable name.
        """
        self._check_name(name)
        token = await self._cache.acquire_fenced(
            OWNER_KEY_PREFIX + name,
            self.node_id.encode(),
            ttl=self.ttl_seconds,
            counter=FENCE_KEY_PREFIX + name,
            counter_ttl=self.fence_ttl_seconds,
        )
        return None if token is None else Claim(name, self.node_id, token)

    async def renew(self, claim: Claim) -> bool:
        """Extend `claim` to `ttl_seconds` from now; False if it is no longer the current claim
        (it expired, was released, or the name was claimed again since)."""
        return await self._cache.compare_and_expire(
            OWNER_KEY_PREFIX + claim.stream, self._value(claim), self.ttl_seconds
        )

    async def release(self, claim: Claim) -> bool:
        """Free the stream name at once if `claim` is still the current claim; False if not."""
        return await self._cache.compare_and_delete(
            OWNER_KEY_PREFIX + claim.stream, self._value(claim)
        )

    async def owner(self, name: str) -> Claim | None:
        """The current claim of stream `name` (by any node), or None if nobody holds it.

        Raises `ClusterInputError` for an unusable name, `ClusterError` if the stored claim is
        not one this module wrote.
        """
        self._check_name(name)
        value = await self._cache.get(OWNER_KEY_PREFIX + name)
        if value is None:
            return None
        parsed = parse_fenced_value(value)
        try:
            if parsed is None:
                raise ValueError("not a fenced lock value")
            token, owner = parsed
            return Claim(name, check_node_id(owner.decode("ascii")), token)
        except (ValueError, ClusterInputError) as exc:  # UnicodeDecodeError is a ValueError
            raise ClusterError(
                f"stream {name!r}: the ownership record {value[:80]!r} is damaged ({exc})"
            ) from None

    async def is_current(self, claim: Claim) -> bool:
        """True if `claim` is still the current claim of its stream (same node, same token);
        a stale owner learns here that it must stop acting as the owner."""
        return await self.owner(claim.stream) == claim

    def _value(self, claim: Claim) -> bytes:
        if claim.node_id != self.node_id:
            raise UsageError(
                f"node {self.node_id!r} cannot renew or release a claim of node {claim.node_id!r}"
            )
        self._check_name(claim.stream)
        return fenced_value(claim.token, claim.node_id.encode())

    def _check_name(self, name: str) -> None:
        if not 0 < len(name) <= self.max_name_length or not STREAM_NAME_PATTERN.fullmatch(name):
            raise ClusterInputError(
                f"stream name {name[:80]!r} must be 1-{self.max_name_length} characters of "
                "A-Z a-z 0-9 _ . -, starting with a letter or digit"
            )
