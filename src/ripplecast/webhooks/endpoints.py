"""Who is told about an event: the `EndpointSource` interface and its two implementations.

An event about a stream goes to the enabled webhooks subscribed to it whose owner owns the
stream's channel, and to the enabled webhooks of admins. Nobody else: events carry viewers'
addresses, which a user has no business receiving for someone else's channel. An event about
no stream (`stream=""`) goes to admins' webhooks only. Webhooks of disabled users are skipped.

- `DatabaseEndpoints(db)` reads the `webhooks` table (briefly cached, see `cache_seconds`) and
  records the outcome of each delivery in the row (`last_delivery_at`, `last_status`,
  `last_error` truncated to `LAST_ERROR_MAX_LENGTH`).
- `StaticEndpoints` is a fixed list (for an operator-configured endpoint, and tests); it keeps
  the last outcome per endpoint in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import or_, select, update

from ripplecast.db.engine import Database
from ripplecast.db.models import Channel, Role, User, Webhook

LAST_ERROR_MAX_LENGTH = 500
"""The `webhooks.last_error` column's length."""
CACHE_MAX_STREAMS = 1024
"""Most streams whose endpoint lists `DatabaseEndpoints` keeps cached."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One receiver of webhooks."""

    id: int
    """The webhook's id (0 for one not in the database)."""
    url: str
    """Where deliveries are POSTed (http or https)."""
    secret: bytes = field(repr=False)
    """The HMAC key that signs deliveries; never logged (hidden from `repr`)."""
    events: frozenset[str]
    """The event names it is subscribed to."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """How a delivery ended (after its retries)."""

    at: datetime
    """When the last attempt ended (aware UTC)."""
    status: int | None
    """The last HTTP status received, None if no response (timeout, connection error)."""
    error: str | None
    """What went wrong, None on success."""
    attempts: int = 1
    """How many attempts were made."""

    @property
    def ok(self) -> bool:
        return self.error is None


class EndpointSource(Protocol):
    """What the dispatcher needs to know about endpoints, and tell about deliveries."""

    async def endpoints_for(self, event: str, stream: str = "") -> list[Endpoint]:
        """The endpoints that should receive `event` about `stream` ("" for no stream)."""

    async def record(self, endpoint: Endpoint, outcome: DeliveryOutcome) -> None:
        """Remember how the delivery to `endpoint` ended."""


class StaticEndpoints:
    """A fixed list of endpoints (every one is told about every stream it subscribes to)."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = list(endpoints)
        self.outcomes: dict[int, DeliveryOutcome] = {}
        """The last outcome per endpoint id."""

    async def endpoints_for(self, event: str, stream: str = "") -> list[Endpoint]:
        return [endpoint for endpoint in self.endpoints if event in endpoint.events]

    async def record(self, endpoint: Endpoint, outcome: DeliveryOutcome) -> None:
        self.outcomes[endpoint.id] = outcome


class DatabaseEndpoints:
    """Endpoints from the `webhooks` table (see module docstring).

    Lookups are cached per stream for `cache_seconds` (0 disables the cache), so a burst of
    viewers joining costs one query, not one each; a change to a webhook is seen within that
    time.
    """

    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, list[Endpoint]]] = {}

    async def endpoints_for(self, event: str, stream: str = "") -> list[Endpoint]:
        endpoints = await self._for_stream(stream)
        return [endpoint for endpoint in endpoints if event in endpoint.events]

    async def _for_stream(self, stream: str) -> list[Endpoint]:
        now = self._clock()
        cached = self._cache.get(stream)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        endpoints = await self._load(stream)
        if self._cache_seconds > 0:
            if len(self._cache) >= CACHE_MAX_STREAMS:
                self._cache.clear()  # crude but bounded; a refill costs one query per stream
            self._cache[stream] = (now, endpoints)
        return endpoints

    async def _load(self, stream: str) -> list[Endpoint]:
        audience = User.role == Role.ADMIN
        if stream:
            owners = select(Channel.owner_id).where(Channel.slug == stream).scalar_subquery()
            audience = or_(audience, Webhook.owner_id == owners)
        query = (
            select(Webhook.id, Webhook.url, Webhook.secret, Webhook.events)
            .join(User, User.id == Webhook.owner_id)
            .where(Webhook.enabled.is_(True), User.disabled.is_(False), audience)
            .order_by(Webhook.id)
        )
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        return [
            Endpoint(
                id=row.id, url=row.url, secret=row.secret.encode(), events=frozenset(row.events)
            )
            for row in rows
        ]

    async def record(self, endpoint: Endpoint, outcome: DeliveryOutcome) -> None:
        error = None if outcome.error is None else outcome.error[:LAST_ERROR_MAX_LENGTH]
        async with self._db.transaction() as session:
            await session.execute(
                update(Webhook)
                .where(Webhook.id == endpoint.id)
                .values(last_delivery_at=outcome.at, last_status=outcome.status, last_error=error)
            )

    def forget(self) -> None:
        """Drop the cache (after webhooks were changed, to see the change at once)."""
        self._cache.clear()
