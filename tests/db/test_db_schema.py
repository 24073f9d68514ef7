"""The schema's rules are the database's own, on every engine: uniques, foreign keys,
cascades, CHECKs; relationships never load lazily; text and times round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError, StatementError
from sqlalchemy.orm import selectinload

from ripplecast.db.engine import Database
from ripplecast.db.models import (
    ApiToken,
    Channel,
    Role,
    StreamKey,
    User,
    UserSession,
    Visibility,
    Webhook,
)

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "c" * 64


def make_user(username: str = "alice", **kw: object) -> User:
    return User(username=username, password_hash="$argon2id$v=19$m=65536,t=3,p=4$x$y", **kw)


async def add_user(db: Database, username: str = "alice", **kw: object) -> int:
    async with db.transaction() as session:
        user = make_user(username, **kw)
        session.add(user)
        await session.flush()
        return user.id


async def add_channel(db: Database, owner_id: int, slug: str = "main", **kw: object) -> int:
    async with db.transaction() as session:
        channel = Channel(owner_id=owner_id, slug=slug, **kw)
        session.add(channel)
        await session.flush()
        return channel.id


async def count(db: Database, model: type[object]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_defaults(db: Database) -> None:
    user_id = await add_user(db)
    async with db.session() as session:
        user = await session.get_one(User, user_id)
    assert user.role is Role.VIEWER
    assert user.disabled is False
    assert user.email is None
    assert user.created_at.tzinfo is UTC


async def test_duplicate_username_is_rejected(db: Database) -> None:
    await add_user(db, "alice")
    with pytest.raises(IntegrityError):
        await add_user(db, "alice")
    assert await count(db, User) == 1


async def test_usernames_and_slugs_are_case_sensitive_on_every_engine(db: Database) -> None:
    """MariaDB's default collation would make these collide; the binary one does not."""
    first = await add_user(db, "alice")
    await add_user(db, "Alice")
    await add_channel(db, first, "main")
    await add_channel(db, first, "Main")
    assert await count(db, User) == 2
    assert await count(db, Channel) == 2


async def test_duplicate_email_is_rejected_but_many_users_have_none(db: Database) -> None:
    await add_user(db, "a", email="x@example.com")
    await add_user(db, "b")
    await add_user(db, "c")
    with pytest.raises(IntegrityError):
        await add_user(db, "d", email="x@example.com")


async def test_duplicate_channel_slug_is_rejected(db: Database) -> None:
    alice = await add_user(db, "alice")
    bob = await add_user(db, "bob")
    await add_channel(db, alice, "main")
    with pytest.raises(IntegrityError):
        await add_channel(db, bob, "main")


async def test_duplicate_hashes_are_rejected(db: Database) -> None:
    user_id = await add_user(db)
    channel_id = await add_channel(db, user_id)
    now = datetime.now(UTC)
    rows: list[tuple[type[object], dict[str, object]]] = [
        (UserSession, {"user_id": user_id, "token_hash": HASH_A, "expires_at": now}),
        (ApiToken, {"user_id": user_id, "name": "t", "token_hash": HASH_A, "prefix": "rc_aaaa"}),
        (StreamKey, {"channel_id": channel_id, "key_hash": HASH_A, "hint": "…aaaa"}),
    ]
    for model, values in rows:
        async with db.transaction() as session:
            session.add(model(**values))
        changed = dict(values, name="other") if model is ApiToken else values
        with pytest.raises(IntegrityError):
            async with db.transaction() as session:
                session.add(model(**changed))


async def test_token_names_are_unique_per_user(db: Database) -> None:
    alice = await add_user(db, "alice")
    bob = await add_user(db, "bob")
    async with db.transaction() as session:
        session.add(ApiToken(user_id=alice, name="ci", token_hash=HASH_A, prefix="rc_a"))
        session.add(ApiToken(user_id=bob, name="ci", token_hash=HASH_B, prefix="rc_b"))
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(ApiToken(user_id=alice, name="ci", token_hash=HASH_C, prefix="rc_c"))


async def test_foreign_key_to_a_missing_user_is_rejected(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await add_channel(db, 12345, "orphan")
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(
                insert(UserSession).values(
                    user_id=999, token_hash=HASH_A, expires_at=datetime.now(UTC)
                )
            )


async def fill_everything(db: Database, username: str) -> int:
    user_id = await add_user(db, username)
    channel_id = await add_channel(db, user_id, f"{username}-live")
    now = datetime.now(UTC)
    suffix = username[0] * 63
    async with db.transaction() as session:
        session.add_all(
            [
                UserSession(user_id=user_id, token_hash="1" + suffix, expires_at=now),
                ApiToken(user_id=user_id, name="ci", token_hash="2" + suffix, prefix="rc_"),
                StreamKey(channel_id=channel_id, key_hash="3" + suffix, hint="…"),
                Webhook(owner_id=user_id, url="https://example.com/hook", secret="s3cret"),
            ]
        )
    return user_id


MODELS: list[type[object]] = [UserSession, ApiToken, Channel, StreamKey, Webhook]


@pytest.mark.parametrize("how", ["core", "orm"])
async def test_deleting_a_user_cascades_to_everything_they_own(db: Database, how: str) -> None:
    alice = await fill_everything(db, "alice")
    await fill_everything(db, "bob")
    async with db.transaction() as session:
        if how == "core":
            await session.execute(delete(User).where(User.id == alice))
        else:
            # The ORM must not try to load the (lazy="raise") children: the database cascades.
            await session.delete(await session.get_one(User, alice))
    assert [await count(db, model) for model in MODELS] == [1] * len(MODELS)
    async with db.session() as session:
        owners = set(await session.scalars(select(Channel.owner_id)))
    assert alice not in owners


async def test_deleting_a_channel_cascades_to_its_stream_keys(db: Database) -> None:
    await fill_everything(db, "alice")
    async with db.transaction() as session:
        await session.execute(delete(Channel))
    assert await count(db, StreamKey) == 0
    assert await count(db, User) == 1


@pytest.mark.parametrize(("table", "column"), [("users", "role"), ("channels", "visibility")])
async def test_check_rejects_values_outside_the_enum(db: Database, table: str, column: str) -> None:
    user_id = await add_user(db)
    await add_channel(db, user_id)
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            # Raw SQL: the Python enum would refuse the value before the database saw it.
            await session.execute(text(f"UPDATE {table} SET {column} = 'superuser'"))


async def test_enums_round_trip(db: Database) -> None:
    user_id = await add_user(db, role=Role.ADMIN)
    channel_id = await add_channel(db, user_id, visibility=Visibility.UNLISTED)
    async with db.session() as session:
        assert (await session.get_one(User, user_id)).role is Role.ADMIN
        channel = await session.get_one(Channel, channel_id)
        assert channel.visibility is Visibility.UNLISTED


@pytest.mark.parametrize("slug", ["main", "Cam-1", "a.b_c", "9", "x" * 64])
async def test_slug_accepts_stream_names(db: Database, slug: str) -> None:
    await add_channel(db, await add_user(db), slug)


@pytest.mark.parametrize(
    "slug",
    ["", ".hidden", "-x", "_x", "a/b", "a b", "a\nb", "main\n", "ünï", "名前", "x" * 65, "a%b"],
)
async def test_slug_check_rejects_what_is_not_a_stream_name(db: Database, slug: str) -> None:
    user_id = await add_user(db)
    # MariaDB and PostgreSQL refuse an over-long value with a DataError before the CHECK.
    with pytest.raises((IntegrityError, StatementError)):
        async with db.transaction() as session:
            await session.execute(insert(Channel).values(owner_id=user_id, slug=slug))
    assert await count(db, Channel) == 0


async def test_relationships_never_load_lazily(db: Database) -> None:
    user_id = await fill_everything(db, "alice")
    async with db.session() as session:
        user = await session.get_one(User, user_id)
        for attribute in ("channels", "sessions", "api_tokens", "webhooks"):
            with pytest.raises(InvalidRequestError, match="lazy='raise'"):
                getattr(user, attribute)
        channel = await session.scalar(select(Channel))
        assert channel is not None
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = channel.owner
    async with db.session() as session:
        query = (
            select(User)
            .where(User.id == user_id)
            .options(selectinload(User.channels).selectinload(Channel.stream_keys))
        )
        loaded = (await session.scalars(query)).one()
        assert [c.slug for c in loaded.channels] == ["alice-live"]
        assert len(loaded.channels[0].stream_keys) == 1


TITLE = "Live 🎥🔥 直播 ライブ 생방송 — ünïcödé 𝄞"


async def test_unicode_round_trips(db: Database) -> None:
    user_id = await add_user(db, "名前🙂")
    channel_id = await add_channel(db, user_id, title=TITLE, description=TITLE * 50)
    async with db.session() as session:
        channel = await session.get_one(Channel, channel_id)
        user = await session.get_one(User, user_id)
    assert channel.title == TITLE
    assert channel.description == TITLE * 50
    assert user.username == "名前🙂"


async def test_times_come_back_aware_utc_with_microseconds(db: Database) -> None:
    moment = datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=timezone(timedelta(hours=9)))
    user_id = await add_user(db)
    async with db.transaction() as session:
        session.add(UserSession(user_id=user_id, token_hash=HASH_A, expires_at=moment))
    async with db.session() as session:
        stored = await session.scalar(select(UserSession.expires_at))
        later = await session.scalar(
            select(func.count())
            .select_from(UserSession)
            .where(UserSession.expires_at > moment - timedelta(microseconds=1))
        )
        user = await session.get_one(User, user_id)
    assert stored == moment
    assert stored is not None and stored.tzinfo is UTC
    assert stored.hour == 3  # 12:30 at +09:00
    assert later == 1
    assert user.created_at.tzinfo is UTC
    assert abs(user.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_naive_datetimes_are_refused(db: Database) -> None:
    user_id = await add_user(db)
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.transaction() as session:
            session.add(
                UserSession(user_id=user_id, token_hash=HASH_A, expires_at=datetime(2024, 1, 1))
            )


async def test_word_sets_and_user_agent(db: Database) -> None:
    user_id = await add_user(db)
    async with db.transaction() as session:
        session.add(
            ApiToken(
                user_id=user_id,
                name="ci",
                token_hash=HASH_A,
                prefix="rc_aaaa",
                scopes=("streams:write", "api:read", "api:read"),
            )
        )
        session.add(
            Webhook(
                owner_id=user_id,
                url="https://example.com/",
                secret="k",
                events=("stream.started", "stream.ended"),
            )
        )
        ua_session = UserSession(
            user_id=user_id,
            token_hash=HASH_B,
            expires_at=datetime.now(UTC),
            ip="2001:db8::1",
            user_agent="Mozilla/5.0 " + "x" * 1000,
        )
        session.add(ua_session)
    assert ua_session.user_agent is not None and len(ua_session.user_agent) == 255
    async with db.session() as session:
        token = (await session.scalars(select(ApiToken))).one()
        hook = (await session.scalars(select(Webhook))).one()
        ua = await session.scalar(select(UserSession.user_agent))
    assert token.scopes == ("api:read", "streams:write")
    assert hook.events == ("stream.ended", "stream.started")
    assert hook.enabled is True
    assert ua is not None and len(ua) == 255
    with pytest.raises(StatementError, match="whitespace"):
        async with db.transaction() as session:
            session.add(Webhook(owner_id=user_id, url="u", secret="k", events=("a b",)))


async def test_updated_at_moves_on_update(db: Database) -> None:
    channel_id = await add_channel(db, await add_user(db))
    async with db.session() as session:
        before = (await session.get_one(Channel, channel_id)).updated_at
    async with db.transaction() as session:
        channel = await session.get_one(Channel, channel_id)
        channel.title = "new"
    assert channel.updated_at > before
