"""Logins, sessions, rate limits and API tokens on every database engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ripplecast.accounts.credentials import PasswordPolicy, Passwords, token_hash
from ripplecast.accounts.directory import DatabaseDirectory
from ripplecast.accounts.logins import LoginLimits, LoginRefused, Logins
from ripplecast.accounts.policy import Scope
from ripplecast.accounts.service import AccountError, Accounts, NotFound
from ripplecast.cache.memory import MemoryCache
from ripplecast.db.engine import Database
from ripplecast.db.models import User

FAST = PasswordPolicy(time_cost=1, memory_cost_kib=8 * 1024)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    db: Database
    accounts: Accounts
    logins: Logins
    directory: DatabaseDirectory
    clock: Clock


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    clock = Clock()
    cache = MemoryCache()
    passwords = Passwords(FAST)
    limits = LoginLimits(window_seconds=60, max_per_account=3, max_per_ip=5)
    accounts = Accounts(db, passwords, secret=b"s" * 32)
    await accounts.create_user("alice", "alice password")
    await accounts.create_user("bob", "bob's password")
    yield World(db, accounts, Logins(db, cache, passwords, limits, clock=clock),
                DatabaseDirectory(db, clock=clock), clock)  # fmt: skip
    await cache.close()


async def test_login_opens_a_session_the_policy_accepts(world: World) -> None:
    session = await world.logins.login("alice", "alice password", ip="10.0.0.1", user_agent="t")
    principal = await world.directory.session(token_hash(session.session_id))
    assert principal is not None and principal.username == "alice"
    assert principal.role == "admin"  # the first user
    await world.logins.logout(session.session_id)
    assert await world.directory.session(token_hash(session.session_id)) is None


async def test_failed_logins_lock_the_account_then_the_ip(world: World) -> None:
    logins = world.logins
    for _ in range(3):
        with pytest.raises(LoginRefused, match="invalid user name or password"):
            await logins.login("alice", "wrong", ip="10.0.0.1", user_agent="")
    # Locked: even the right password is refused, with the wait in the message.
    with pytest.raises(LoginRefused, match=r"too many failed logins; try again in \d+ s") as err:
        await logins.login("alice", "alice password", ip="10.0.0.2", user_agent="")
    assert 0 < err.value.retry_after <= 60
    # Another account from the same address still works until the address is over its limit.
    await logins.login("bob", "bob's password", ip="10.0.0.1", user_agent="")
    for _ in range(2):
        with pytest.raises(LoginRefused):
            await logins.login("nobody", "x", ip="10.0.0.1", user_agent="")
    with pytest.raises(LoginRefused, match="too many failed logins"):
        await logins.login("bob", "bob's password", ip="10.0.0.1", user_agent="")
    assert logins.failed_logins == 5
    assert logins.refused_by_limit == 2


async def test_disabled_users_cannot_log_in_and_their_sessions_stop(world: World) -> None:
    session = await world.logins.login("bob", "bob's password", ip="1.1.1.1", user_agent="")
    async with world.db.transaction() as tx:
        user = await world.accounts.user("bob")
        row = await tx.get(User, user.id)
        assert row is not None
        row.disabled = True
    with pytest.raises(LoginRefused, match="invalid"):
        await world.logins.login("bob", "bob's password", ip="1.1.1.1", user_agent="")
    assert await world.directory.session(token_hash(session.session_id)) is None


async def test_password_rehashed_when_parameters_change(world: World) -> None:
    before = (await world.accounts.user("alice")).password_hash
    stronger = Passwords(PasswordPolicy(time_cost=2, memory_cost_kib=8 * 1024))
    logins = Logins(world.db, MemoryCache(), stronger)
    await logins.login("alice", "alice password", ip="1.1.1.1", user_agent="")
    after = (await world.accounts.user("alice")).password_hash
    assert after != before and "t=2" in after


async def test_sessions_slide_and_expire(world: World) -> None:
    session = await world.logins.login("alice", "alice password", ip="1.1.1.1", user_agent="")
    world.clock.now += timedelta(days=10)
    renewed = await world.logins.renew(session.session_id)
    assert renewed == world.clock.now + timedelta(days=14)
    world.clock.now += timedelta(days=13)
    assert await world.directory.session(token_hash(session.session_id)) is not None
    world.clock.now += timedelta(days=2)
    assert await world.directory.session(token_hash(session.session_id)) is None
    assert await world.logins.renew(session.session_id) is None


async def test_changing_password_ends_other_sessions(world: World) -> None:
    here = await world.logins.login("alice", "alice password", ip="1.1.1.1", user_agent="")
    there = await world.logins.login("alice", "alice password", ip="2.2.2.2", user_agent="")
    alice = await world.accounts.user("alice")
    with pytest.raises(AccountError, match="current password is wrong"):
        await world.logins.change_password(alice.id, "nope", "a new password")
    with pytest.raises(AccountError, match="at least 8"):
        await world.logins.change_password(alice.id, "alice password", "short")
    await world.logins.change_password(
        alice.id, "alice password", "a new password", keep_session=here.session_id
    )
    assert await world.directory.session(token_hash(here.session_id)) is not None
    assert await world.directory.session(token_hash(there.session_id)) is None
    await world.logins.login("alice", "a new password", ip="1.1.1.1", user_agent="")


async def test_api_tokens_scoped_revocable_and_private_to_their_owner(world: World) -> None:
    alice = await world.accounts.user("alice")
    bob = await world.accounts.user("bob")
    made = await world.logins.create_api_token(alice.id, "ci", [Scope.READ, Scope.PUBLISH])
    assert made.token.startswith("rct_") and made.prefix == made.token[:10]
    principal = await world.directory.api_token(token_hash(made.token))
    assert principal is not None and principal.scopes == {Scope.READ, Scope.PUBLISH}
    with pytest.raises(AccountError, match="already have a token named"):
        await world.logins.create_api_token(alice.id, "ci", [Scope.READ])
    # Bob cannot revoke (or even see) Alice's token.
    with pytest.raises(NotFound):
        await world.logins.revoke_api_token(bob.id, made.id)
    assert [t.name for t in await world.logins.api_tokens(bob.id)] == []
    assert await world.directory.api_token(token_hash(made.token)) is not None
    await world.logins.note_token_use(made.token)
    (row,) = await world.logins.api_tokens(alice.id)
    assert row.last_used_at == world.clock.now
    await world.logins.revoke_api_token(alice.id, made.id)
    assert await world.directory.api_token(token_hash(made.token)) is None


async def test_expired_tokens_do_not_work(world: World) -> None:
    alice = await world.accounts.user("alice")
    soon = world.clock.now + timedelta(hours=1)
    made = await world.logins.create_api_token(alice.id, "short", [Scope.READ], expires_at=soon)
    assert await world.directory.api_token(token_hash(made.token)) is not None
    world.clock.now += timedelta(hours=2)
    assert await world.directory.api_token(token_hash(made.token)) is None
