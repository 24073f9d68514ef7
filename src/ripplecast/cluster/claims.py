"""The stream names one origin owns: claimed before a publisher is accepted, renewed while the
stream lives, released when it ends, and given up when the cluster says another node owns it.

`OwnedStreams` keeps this node's `Claim`s and one renewal task:

- `acquire(NAME)` before a publisher is accepted: granted if this node already holds NAME (a
  publisher returning within its grace period) or the claim succeeds; refused, with the owner
  named, if another node holds it; refused if the cache cannot be reached (fail closed: two
  origins must never both accept the same name).
- Every third of the claim TTL each claim is renewed. A renewal that finds the claim gone from
  the cache (Redis restarted empty) claims the name again; one that finds another node's claim
  means this node is a stale owner: `on_lost(NAME, why)` stops the publisher and the stream.
  A cache outage is logged once and retried; streams keep running through it.
- A claim whose stream is no longer live here (`is_live` says so) is released at the next
  renewal, so a publisher refused or gone after its claim never leaves the name locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ripplecast.cache import CacheError
from ripplecast.cluster.ownership import Claim, StreamOwnership
from ripplecast.cluster.registry import ClusterError

__all__ = ["OwnedStreams"]

log = logging.getLogger("ripplecast.cluster.claims")


class OwnedStreams:
    """See the module docstring. `is_live(NAME)` tells whether NAME is still live on this node;
    `on_lost(NAME, why)` is called when another node took NAME over."""

    def __init__(
        self,
        ownership: StreamOwnership,
        *,
        is_live: Callable[[str], bool],
        on_lost: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ownership = ownership
        self._is_live = is_live
        self._on_lost = on_lost
        self._clock = clock
        self._claims: dict[str, tuple[Claim, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.refused = 0
        """Publishers refused because another node owns the name or the cache is down."""
        self.lost = 0
        """Streams given up because another node claimed them (this node was stale)."""
        self.reclaimed = 0
        """Claims written again after the cache lost them (a Redis restart)."""

    @property
    def node_id(self) -> str:
        return self._ownership.node_id

    def held(self) -> dict[str, Claim]:
        """This node's claims by stream name."""
        return {name: claim for name, (claim, _) in self._claims.items()}

    async def acquire(self, name: str) -> str | None:
        """Take `name` for this node: None when granted, else why not."""
        if name in self._claims:
            return None
        try:
            claim = await self._ownership.claim(name)
            if claim is None:
                owner = await self._ownership.owner(name)
        except (CacheError, ClusterError) as exc:
            self.refused += 1
            log.warning("stream %s: cannot claim it, refusing the publisher: %s", name, exc)
            return "the cluster registry cannot be reached; try again"
        if claim is None:
            self.refused += 1
            where = f"node {owner.node_id}" if owner is not None else "another node"
            return f"stream {name} is already live on {where}"
        if name in self._claims:  # acquired twice concurrently: keep the first, free this one
            with contextlib.suppress(CacheError):
                await self._ownership.release(claim)
            return None
        self._claims[name] = (claim, self._clock())
        log.info("stream %s: claimed with fencing token %d", name, claim.token)
        return None

    async def release(self, name: str) -> None:
        """Free `name` (its stream ended); a claim already lost is just forgotten."""
        entry = self._claims.pop(name, None)
        if entry is None:
            return
        try:
            await self._ownership.release(entry[0])
        except CacheError as exc:
            log.warning("stream %s: could not release the claim (it will expire): %s", name, exc)

    def start(self) -> None:
        """Start renewing the claims."""
        if self._task is None:
            self._task = asyncio.create_task(self._renew_forever(), name="stream claims")

    async def close(self) -> None:
        """Stop renewing and release every claim (the node stops)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in list(self._claims):
            await self.release(name)

    async def _renew_forever(self) -> None:
        interval = self._ownership.ttl_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew_all()
            except (CacheError, ClusterError) as exc:
                if not self._failing:
                    log.warning("stream claims: renewal failed, retrying: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("stream claims: renewal works again")
                self._failing = False

    async def renew_all(self) -> None:
        """One round: renew, reclaim, give up or release each claim (see module docstring)."""
        for name, (claim, since) in list(self._claims.items()):
            if self._claims.get(name, (None, 0.0))[0] != claim:
                continue  # released meanwhile
            if not self._is_live(name):
                if self._clock() - since > self._ownership.ttl_seconds:
                    await self.release(name)
                continue
            if await self._ownership.renew(claim):
                continue
            owner = await self._ownership.owner(name)
            if owner is None:
                fresh = await self._ownership.claim(name)
                if fresh is not None:
                    self._claims[name] = (fresh, since)
                    self.reclaimed += 1
                    log.warning(
                        "stream %s: the claim had vanished from the cache; claimed again "
                        "(fencing token %d)",
                        name,
                        fresh.token,
                    )
                    continue
                owner = await self._ownership.owner(name)
            self._claims.pop(name, None)
            self.lost += 1
            holder = owner.node_id if owner is not None else "another node"
            why = f"node {holder} owns stream {name} now (token {claim.token} is stale)"
            log.warning("stream %s: ownership lost: %s", name, why)
            self._on_lost(name, why)
