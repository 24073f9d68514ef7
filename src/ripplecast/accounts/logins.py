"""Logins, sessions and API tokens.

- **Login** checks the password with argon2id (rehashing it when the parameters changed) and
  creates a server-side session: a random id goes into the cookie, only its SHA-256 into the
  database. Failed logins are counted per account and per client IP in the cache (memory or
  Redis) over `login_window_seconds`; past the limit, logins are refused with the time until the
  window resets, before the password is even checked. Unknown users cost the same time as known
  ones.
- **Sessions** expire `session_ttl_seconds` after their last use (sliding renewal, written at
  most once a minute per session). Changing the password ends every other session.
- **API tokens** are shown once, stored hashed, scoped, revocable and expire if asked; each use
  updates `last_used_at` (at most once a minute).

Every lookup that takes an id from the client also checks the owner, so one user can never
read or change another's session or token by guessing ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ripplecast.accounts.credentials import Passwords, new_token, token_hash
from ripplecast.accounts.policy import Scope
from ripplecast.accounts.service import AccountError, NotFound
from ripplecast.cache.base import Cache
from ripplecast.db.engine import Database
from ripplecast.db.models import ApiToken, User, UserSession

TOKEN_PREFIX = "rct_"
RENEW_EVERY = timedelta(minutes=1)


class LoginRefused(AccountError):
    """Wrong credentials, a disabled account, or too many failures (`retry_after` seconds)."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Failed-login limits (from settings)."""

    window_seconds: float = 900
    max_per_account: int = 5
    max_per_ip: int = 20
    session_ttl: timedelta = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just created: `session_id` goes into the cookie and nowhere else."""

    session_id: str
    user_id: int
    username: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewApiToken:
    """An API token just created: `token` is shown once."""

    id: int
    name: str
    token: str
    prefix: str
    scopes: tuple[str, ...]


class Logins:
    """See module docstring."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        passwords: Passwords,
        limits: LoginLimits | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._passwords = passwords
        self.limits = limits or LoginLimits()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.failed_logins = 0
        self.refused_by_limit = 0

    # --- login and sessions -----------------------------------------------------------------

    async def _locked_for(self, key: str, limit: int) -> float:
        """Seconds until `key`'s failure window resets if it is at its limit, else 0."""
        count = await self._cache.get(key)
        if count is None or int(count) < limit:
            return 0.0
        remaining = await self._cache.ttl(key)
        if remaining is None or math.isinf(remaining):
            return self.limits.window_seconds
        return remaining

    async def login(self, username: str, password: str, *, ip: str, user_agent: str) -> NewSession:
        """Check the password and open a session; raises `LoginRefused` with a clear message."""
        limits = self.limits
        account_key, ip_key = f"login:user:{username.lower()[:64]}", f"login:ip:{ip}"
        wait = max(
            await self._locked_for(account_key, limits.max_per_account),
            await self._locked_for(ip_key, limits.max_per_ip),
        )
        if wait:
            self.refused_by_limit += 1
            seconds = math.ceil(wait)
            raise LoginRefused(
                f"too many failed logins; try again in {seconds} s", retry_after=seconds
            )
        async with self._db.session() as session:
            user = (
                await session.execute(select(User).where(User.username == username))
            ).scalar_one_or_none()
        if user is None:
            self._passwords.dummy_verify()
            ok, rehash = False, False
        else:
            ok, rehash = self._passwords.verify(user.password_hash, password)
        if not ok or user is None or user.disabled:
            self.failed_logins += 1
            await self._cache.incr_window(account_key, window=limits.window_seconds)
            await self._cache.incr_window(ip_key, window=limits.window_seconds)
            raise LoginRefused("invalid user name or password")
        session_id = new_token()
        now = self._clock()
        expires = now + limits.session_ttl
        async with self._db.transaction() as session:
            if rehash:
                await session.execute(
                    update(User)
                    .where(User.id == user.id)
                    .values(password_hash=self._passwords.hash(password))
                )
            session.add(
                UserSession(
                    token_hash=token_hash(session_id),
                    user_id=user.id,
                    expires_at=expires,
                    last_seen_at=now,
                    ip=ip[:45] or None,
                    user_agent=user_agent or None,
                )
            )
        await self._cache.delete(account_key)
        return NewSession(session_id, user.id, user.username, expires)

    async def logout(self, session_id: str) -> None:
        """End the session whose cookie value is `session_id` (no error if already gone)."""
        async with self._db.transaction() as session:
            await session.execute(
                delete(UserSession).where(UserSession.token_hash == token_hash(session_id))
            )

    async def renew(self, session_id: str) -> datetime | None:
        """Slide a live session's expiry forward; returns the new expiry, None if not live."""
        now = self._clock()
        async with self._db.transaction() as session:
            row = (
                await session.execute(
                    select(UserSession).where(UserSession.token_hash == token_hash(session_id))
                )
            ).scalar_one_or_none()
            if row is None or row.expires_at <= now:
                return None
            if row.last_seen_at is None or now - row.last_seen_at >= RENEW_EVERY:
                row.last_seen_at = now
                row.expires_at = now + self.limits.session_ttl
            return row.expires_at

    async def change_password(
        self, user_id: int, old: str, new: str, *, keep_session: str = ""
    ) -> None:
        """Change a password (the old one is required); every other session ends."""
        if problem := self._passwords.check_strength(new):
            raise AccountError(problem)
        async with self._db.transaction() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFound("no such user")
            ok, _ = self._passwords.verify(user.password_hash, old)
            if not ok:
                raise AccountError("the current password is wrong")
            user.password_hash = self._passwords.hash(new)
            user.password_changed_at = self._clock()
            keep = token_hash(keep_session) if keep_session else ""
            await session.execute(
                delete(UserSession).where(
                    UserSession.user_id == user_id, UserSession.token_hash != keep
                )
            )

    # --- API tokens --------------------------------------------------------------------------

    async def create_api_token(
        self,
        user_id: int,
        name: str,
        scopes: Iterable[Scope],
        *,
        expires_at: datetime | None = None,
    ) -> NewApiToken:
        """Make a token for `user_id`; the token itself is in the result only."""
        wanted = tuple(sorted({Scope(s).value for s in scopes}))
        if not wanted:
            raise AccountError("a token needs at least one scope")
        if not name or len(name) > 100:
            raise AccountError("a token name is 1 to 100 characters")
        token = new_token(TOKEN_PREFIX)
        row = ApiToken(
            user_id=user_id,
            name=name,
            token_hash=token_hash(token),
            prefix=token[: len(TOKEN_PREFIX) + 6],
            scopes=wanted,
            expires_at=expires_at,
        )
        try:
            async with self._db.transaction() as session:
                session.add(row)
                await session.flush()
        except IntegrityError:
            raise AccountError(f"you already have a token named {name!r}") from None
        return NewApiToken(row.id, name, token, row.prefix, wanted)

    async def api_tokens(self, user_id: int) -> list[ApiToken]:
        """The user's tokens (hashes included; never the tokens themselves)."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            )
            return list(rows.scalars())

    async def revoke_api_token(self, user_id: int, token_id: int) -> None:
        """Revoke one of the user's own tokens; another user's id is simply not found."""
        async with self._db.transaction() as session:
            row = (
                await session.execute(
                    select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = self._clock()

    async def note_token_use(self, token: str) -> None:
        """Record that a token was just used (at most once a minute, so reads stay cheap)."""
        now = self._clock()
        async with self._db.transaction() as session:
            await session.execute(
                update(ApiToken)
                .where(
                    ApiToken.token_hash == token_hash(token),
                    (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - RENEW_EVERY),
                )
                .values(last_used_at=now)
            )
