"""The access policy's `Directory`, answered from the metadata database.

Each lookup is one indexed query joining what the policy needs (a key's channel and its owner, a
session's user), loaded explicitly: no lazy loading. Expired sessions, revoked or expired API
tokens and disabled users are filtered in the query itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ripplecast.accounts.policy import ChannelInfo, Principal, Scope, StreamKeyInfo, VideoInfo
from ripplecast.db.engine import Database
from ripplecast.db.models import (
    ApiToken,
    Channel,
    StreamKey,
    User,
    UserSession,
    Video,
    VideoState,
)


def _channel_info(channel: Channel) -> ChannelInfo:
    return ChannelInfo(
        slug=channel.slug,
        owner_id=channel.owner_id,
        visibility=channel.visibility,
        owner_disabled=channel.owner.disabled,
    )


def _scopes(words: tuple[str, ...]) -> frozenset[Scope]:
    return frozenset(Scope(word) for word in words if word in Scope.__members__.values())


class DatabaseDirectory:
    """Channels, stream keys, sessions and API tokens from the database."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    async def channel(self, slug: str) -> ChannelInfo | None:
        query = select(Channel).options(joinedload(Channel.owner)).where(Channel.slug == slug)
        async with self._db.session() as session:
            channel = (await session.execute(query)).scalar_one_or_none()
            return None if channel is None else _channel_info(channel)

    async def video(self, public_id: str) -> VideoInfo | None:
        query = select(Video).options(joinedload(Video.owner)).where(Video.public_id == public_id)
        async with self._db.session() as session:
            video = (await session.execute(query)).scalar_one_or_none()
            if video is None:
                return None
            return VideoInfo(
                public_id=video.public_id,
                owner_id=video.owner_id,
                visibility=video.visibility,
                ready=video.state is VideoState.READY,
                owner_disabled=video.owner.disabled,
            )

    async def stream_key(self, key_hash: str) -> StreamKeyInfo | None:
        query = (
            select(StreamKey)
            .options(joinedload(StreamKey.channel).joinedload(Channel.owner))
            .where(StreamKey.key_hash == key_hash)
        )
        async with self._db.session() as session:
            key = (await session.execute(query)).scalar_one_or_none()
            if key is None:
                return None
            return StreamKeyInfo(
                _channel_info(key.channel), revoked=key.revoked_at is not None, id=key.id
            )

    async def session(self, session_hash: str) -> Principal | None:
        query = (
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(
                UserSession.token_hash == session_hash,
                UserSession.expires_at > self._clock(),
                User.disabled.is_(False),
            )
        )
        async with self._db.session() as session:
            user = (await session.execute(query)).scalar_one_or_none()
            return None if user is None else Principal(user.id, user.username, user.role)

    async def api_token(self, token_hash: str) -> Principal | None:
        now = self._clock()
        query = (
            select(ApiToken)
            .options(joinedload(ApiToken.user))
            .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
        )
        async with self._db.session() as session:
            token = (await session.execute(query)).scalar_one_or_none()
            if token is None or token.user.disabled:
                return None
            if token.expires_at is not None and token.expires_at <= now:
                return None
            user = token.user
            return Principal(user.id, user.username, user.role, _scopes(token.scopes))
