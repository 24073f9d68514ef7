"""Account operations: users, channels and stream keys, each in one explicit transaction.

The business rules live here, not in the CLI or HTTP handlers: the first user becomes admin,
names and slugs are validated, secrets (passwords, stream keys) are hashed before they reach
the database and returned in the clear exactly once. Errors are `AccountError` subclasses with
messages fit to show the user.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from ripplecast.accounts.credentials import Passwords, keyed_hash, new_token
from ripplecast.db.engine import Database
from ripplecast.db.models import Channel, Role, StreamKey, User, Visibility
from ripplecast.errors import RipplecastError
from ripplecast.live.names import InvalidStreamName, validate_stream_name

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_PREFIX = "rck_"
"""Stream keys start with this, so a leaked one is easy to recognise (and to scan for)."""


class AccountError(RipplecastError):
    """An account operation was refused; the message says why."""


class NotFound(AccountError):
    """The user, channel or key does not exist."""


class Conflict(AccountError):
    """The name is taken."""


@dataclass(frozen=True, slots=True)
class NewStreamKey:
    """A stream key just made: `key` is shown once and never stored."""

    id: int
    channel: str
    key: str
    hint: str


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change: only owners (and admins) may touch a channel and its keys."""

    user_id: int
    admin: bool = False

    def may_manage(self, channel: Channel) -> bool:
        """True if this actor owns `channel` or is an admin."""
        return self.admin or channel.owner_id == self.user_id


class Accounts:
    """Users, channels and stream keys (see module docstring)."""

    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        *,
        secret: bytes,
        on_key_revoked: Callable[[int], Awaitable[None]] | None = None,
        on_user_disabled: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._secret = secret
        self._on_key_revoked = on_key_revoked
        self._on_user_disabled = on_user_disabled

    async def create_user(
        self, username: str, password: str, *, role: Role | None = None, email: str | None = None
    ) -> User:
        """Create an account; the very first one is an admin unless `role` says otherwise."""
        if not USERNAME.match(username):
            raise AccountError(
                "user names are 1-64 letters, digits, '_', '.' or '-', starting with a letter"
                " or digit"
            )
        if problem := self._passwords.check_strength(password):
            raise AccountError(problem)
        password_hash = self._passwords.hash(password)
        try:
            async with self._db.transaction() as session:
                if role is None:
                    users = (await session.execute(select(func.count(User.id)))).scalar_one()
                    role = Role.ADMIN if users == 0 else Role.CREATOR
                user = User(username=username, password_hash=password_hash, role=role, email=email)
                session.add(user)
                await session.flush()
                return user
        except IntegrityError:
            raise Conflict(f"the user name {username!r} is taken") from None

    async def user(self, username: str) -> User:
        """The user called `username`; raises `NotFound`."""
        async with self._db.session() as session:
            user = (
                await session.execute(select(User).where(User.username == username))
            ).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user named {username!r}")
        return user

    async def create_channel(
        self,
        owner: str,
        slug: str,
        *,
        title: str = "",
        visibility: Visibility = Visibility.PUBLIC,
    ) -> Channel:
        """Create a channel owned by `owner`; its slug is the stream name."""
        try:
            validate_stream_name(slug, max_length=64)
        except InvalidStreamName as exc:
            raise AccountError(str(exc)) from None
        user = await self.user(owner)
        try:
            async with self._db.transaction() as session:
                channel = Channel(
                    owner_id=user.id, slug=slug, title=title or slug, visibility=visibility
                )
                session.add(channel)
                await session.flush()
                return channel
        except IntegrityError:
            raise Conflict(f"the channel name {slug!r} is taken") from None

    async def create_stream_key(self, slug: str, *, label: str = "") -> NewStreamKey:
        """Make a new key for channel `slug`; the key is in the result and nowhere else."""
        key = new_token(KEY_PREFIX)
        async with self._db.transaction() as session:
            channel = (
                await session.execute(select(Channel).where(Channel.slug == slug))
            ).scalar_one_or_none()
            if channel is None:
                raise NotFound(f"no channel named {slug!r}")
            row = StreamKey(
                channel_id=channel.id,
                key_hash=keyed_hash(self._secret, key),
                label=label[:100],
                hint=key[-4:],
            )
            session.add(row)
            await session.flush()
            return NewStreamKey(row.id, slug, key, row.hint)

    async def note_stream_key_use(self, key_id: int) -> None:
        """Record that a publisher just went live with this key (shown as `last_used_at`)."""
        async with self._db.transaction() as session:
            await session.execute(
                update(StreamKey).where(StreamKey.id == key_id).values(last_used_at=_now())
            )

    async def revoke_stream_key(
        self, key_id: int, *, actor: Actor | None = None, channel: str | None = None
    ) -> None:
        """Revoke a stream key: publishing with it is refused from now on, and a publisher live
        with it is disconnected (every node hears of it through `on_key_revoked`).

        With an `actor`, the key must be on one of its channels; with `channel`, on that one
        (else: not found)."""
        async with self._db.transaction() as session:
            row = (
                await session.execute(
                    select(StreamKey)
                    .options(joinedload(StreamKey.channel))
                    .where(StreamKey.id == key_id)
                )
            ).scalar_one_or_none()
            if (
                row is None
                or (actor is not None and not actor.may_manage(row.channel))
                or (channel is not None and row.channel.slug != channel)
            ):
                raise NotFound(f"no stream key {key_id}")
            if row.revoked_at is None:
                row.revoked_at = _now()
        if self._on_key_revoked is not None:
            await self._on_key_revoked(key_id)

    async def channels(
        self,
        *,
        owner_id: int | None = None,
        listed_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Channel], int]:
        """Channels (of one owner, or only the publicly listed ones) and how many match."""
        query = select(Channel)
        if owner_id is not None:
            query = query.where(Channel.owner_id == owner_id)
        if listed_only:
            query = query.where(Channel.visibility == Visibility.PUBLIC)
        async with self._db.session() as session:
            total = (
                await session.execute(select(func.count()).select_from(query.subquery()))
            ).scalar_one()
            rows = await session.execute(query.order_by(Channel.id).limit(limit).offset(offset))
            return list(rows.scalars()), int(total)

    async def channel(self, slug: str, *, actor: Actor | None = None) -> Channel:
        """The channel `slug`; with an `actor`, only if it may manage it (else: not found)."""
        async with self._db.session() as session:
            channel = (
                await session.execute(select(Channel).where(Channel.slug == slug))
            ).scalar_one_or_none()
        if channel is None or (actor is not None and not actor.may_manage(channel)):
            raise NotFound(f"no channel named {slug!r}")
        return channel

    async def update_channel(
        self,
        slug: str,
        actor: Actor,
        *,
        title: str | None = None,
        description: str | None = None,
        visibility: Visibility | None = None,
    ) -> Channel:
        """Change a channel's title, description or visibility (owner or admin only)."""
        async with self._db.transaction() as session:
            channel = (
                await session.execute(select(Channel).where(Channel.slug == slug))
            ).scalar_one_or_none()
            if channel is None or not actor.may_manage(channel):
                raise NotFound(f"no channel named {slug!r}")
            if title is not None:
                channel.title = title
            if description is not None:
                channel.description = description
            if visibility is not None:
                channel.visibility = visibility
            await session.flush()
            return channel

    async def delete_channel(self, slug: str, actor: Actor) -> None:
        """Delete a channel and its stream keys (owner or admin only)."""
        async with self._db.transaction() as session:
            channel = (
                await session.execute(select(Channel).where(Channel.slug == slug))
            ).scalar_one_or_none()
            if channel is None or not actor.may_manage(channel):
                raise NotFound(f"no channel named {slug!r}")
            await session.delete(channel)

    async def stream_keys(self, slug: str, actor: Actor) -> list[StreamKey]:
        """The keys of a channel the actor may manage (hashes only, never the keys)."""
        channel = await self.channel(slug, actor=actor)
        async with self._db.session() as session:
            rows = await session.execute(
                select(StreamKey).where(StreamKey.channel_id == channel.id).order_by(StreamKey.id)
            )
            return list(rows.scalars())

    async def users(self, *, limit: int = 100, offset: int = 0) -> tuple[list[User], int]:
        """Accounts, oldest first, and how many there are."""
        async with self._db.session() as session:
            total = (await session.execute(select(func.count(User.id)))).scalar_one()
            rows = await session.execute(select(User).order_by(User.id).limit(limit).offset(offset))
            return list(rows.scalars()), int(total)

    async def update_user(
        self, user_id: int, actor: Actor, *, role: Role | None = None, disabled: bool | None = None
    ) -> User:
        """Change an account's role or disable it (admins only; not their own account).

        Disabling refuses its logins, sessions, tokens and stream keys from now on, and
        disconnects its live publishers (every node hears of it through `on_user_disabled`).
        """
        if not actor.admin:
            raise NotFound(f"no user {user_id}")
        if actor.user_id == user_id:
            raise AccountError("administrators cannot change or disable their own account")
        async with self._db.transaction() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFound(f"no user {user_id}")
            if role is not None:
                user.role = role
            newly_disabled = disabled is True and not user.disabled
            if disabled is not None:
                user.disabled = disabled
            slugs = []
            if newly_disabled:
                rows = await session.execute(
                    select(Channel.slug).where(Channel.owner_id == user_id)
                )
                slugs = list(rows.scalars())
        if slugs and self._on_user_disabled is not None:
            await self._on_user_disabled(slugs)
        return user

    async def count_users(self) -> int:
        """How many accounts exist."""
        async with self._db.session() as session:
            return int((await session.execute(select(func.count(User.id)))).scalar_one())

    async def count_channels(self) -> int:
        """How many channels exist (a fresh install has none)."""
        async with self._db.session() as session:
            return int((await session.execute(select(func.count(Channel.id)))).scalar_one())
