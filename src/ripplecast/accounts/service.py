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

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

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


class Accounts:
    """Users, channels and stream keys (see module docstring)."""

    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        *,
        secret: bytes,
        on_key_revoked: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._secret = secret
        self._on_key_revoked = on_key_revoked

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

    async def revoke_stream_key(self, key_id: int) -> None:
        """Revoke a stream key: publishing with it is refused from now on, and a publisher live
        with it is disconnected (every node hears of it through `on_key_revoked`)."""
        async with self._db.transaction() as session:
            row = await session.get(StreamKey, key_id)
            if row is None:
                raise NotFound(f"no stream key {key_id}")
            if row.revoked_at is None:
                row.revoked_at = _now()
        if self._on_key_revoked is not None:
            await self._on_key_revoked(key_id)

    async def count_users(self) -> int:
        """How many accounts exist."""
        async with self._db.session() as session:
            return int((await session.execute(select(func.count(User.id)))).scalar_one())

    async def count_channels(self) -> int:
        """How many channels exist (a fresh install has none)."""
        async with self._db.session() as session:
            return int((await session.execute(select(func.count(Channel.id)))).scalar_one())
