"""Webhooks over real HTTP: a real aiohttp receiver on loopback and a real (SQLite) database.

The receiver records every request and answers as scripted (a status, or hanging until the
test ends). No assertion is about elapsed time; bounds are checked by counts and by
`asyncio.wait_for` guards that only fail a hung test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, update

from ripplecast.db.engine import Database
from ripplecast.db.models import Channel, Role, User, Webhook
from ripplecast.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    DatabaseEndpoints,
    DeliveryOutcome,
    Endpoint,
    StaticEndpoints,
    WebhookDispatcher,
    WebhookURLError,
    admit_publish,
    verify,
)
from support import wait_until

SECRET = "whsec-test-0123456789"
HANG = "hang"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers `script` in order, then `default`."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    default: int | str = 200
    answer_body: bytes = b""
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body))
        action = self.script.pop(0) if self.script else self.default
        if action == HANG:
            await self.release.wait()
            return web.Response(status=200)
        assert isinstance(action, int)
        return web.Response(status=action, body=self.answer_body)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    rec.url = f"http://127.0.0.1:{port}/hooks/rc?token=query-secret"
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'rc.db'}", upgrade_on_start=True)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


async def add_user(db: Database, name: str, role: Role = Role.CREATOR, channel: str = "") -> int:
    async with db.transaction() as session:
        user = User(username=name, password_hash="x", role=role)
        session.add(user)
        await session.flush()
        if channel:
            session.add(Channel(owner_id=user.id, slug=channel))
        return user.id


async def add_webhook(
    db: Database,
    owner_id: int,
    url: str,
    events: tuple[str, ...] = ("on_publish", "on_unpublish", "on_play", "on_stop"),
    *,
    enabled: bool = True,
) -> int:
    async with db.transaction() as session:
        hook = Webhook(owner_id=owner_id, url=url, events=events, secret=SECRET, enabled=enabled)
        session.add(hook)
        await session.flush()
        return hook.id


async def webhook_row(db: Database, hook_id: int) -> Webhook:
    async with db.session() as session:
        return (await session.execute(select(Webhook).where(Webhook.id == hook_id))).scalar_one()


DispatcherFactory = Callable[..., WebhookDispatcher]


@pytest.fixture
async def make_dispatcher(db: Database) -> AsyncIterator[DispatcherFactory]:
    """Dispatchers with test-sized limits on the database's webhooks; closed at the end."""
    made: list[WebhookDispatcher] = []

    def factory(**overrides: Any) -> WebhookDispatcher:
        options: dict[str, Any] = {
            "timeout": 2.0,
            "max_attempts": 3,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_queue": 100,
            "max_in_flight": 4,
            "drain": 5.0,
            "allow_private": True,
        }
        source = overrides.pop("endpoints", None) or DatabaseEndpoints(db, cache_seconds=0)
        options.update(overrides)
        dispatcher = WebhookDispatcher(source, **options)
        made.append(dispatcher)
        return dispatcher

    yield factory
    for dispatcher in made:
        await asyncio.wait_for(dispatcher.close(drain=0), 10)


@pytest.fixture
async def alice(db: Database) -> int:
    """A creator owning channel `cam1`."""
    return await add_user(db, "alice", channel="cam1")


PUBLISH = {"stream": "cam1", "protocol": "rtmp", "client_ip": "203.0.113.7", "connection_id": 12}


async def settle(dispatcher: WebhookDispatcher) -> None:
    """Let every queued event and delivery finish (bounded: fails a hung test)."""
    await asyncio.wait_for(dispatcher.close(), 20)


# --- delivery -----------------------------------------------------------------------------


async def test_delivery_is_signed_json(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    hook = await add_webhook(db, alice, receiver.url)
    dispatcher = make_dispatcher()
    await dispatcher.start()
    before = time.time()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/hooks/rc"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[EVENT_HEADER] == "on_publish"
    body = request.json
    assert set(body) == {"event", "id", "time", "data"}
    assert body["event"] == "on_publish"
    assert body["data"] == PUBLISH
    assert body["id"].startswith("evt_") and request.headers[DELIVERY_HEADER] == body["id"]
    assert body["time"].endswith("Z")
    header = request.headers[SIGNATURE_HEADER]
    assert header.startswith("t=") and ",v1=" in header
    now = time.time()
    assert verify(SECRET.encode(), header, request.body, now=now)
    tampered = request.body.replace(b"203.0.113.7", b"203.0.113.8")
    assert not verify(SECRET.encode(), header, tampered, now=now)
    assert not verify(b"another secret", header, request.body, now=now)
    assert not verify(SECRET.encode(), header, request.body, now=now + 3600)
    assert SECRET not in request.body.decode() and SECRET not in json.dumps(request.headers)

    assert dispatcher.stats.delivered == 1 and dispatcher.stats.failed == 0
    row = await webhook_row(db, hook)
    assert row.last_status == 200 and row.last_error is None
    assert row.last_delivery_at is not None and row.last_delivery_at.timestamp() >= before - 1


@pytest.mark.parametrize("failures", [[500, 503], [429, 502]])
async def test_retries_with_backoff_then_success(
    db: Database,
    receiver: Receiver,
    make_dispatcher: DispatcherFactory,
    alice: int,
    failures: list[int | str],
) -> None:
    hook = await add_webhook(db, alice, receiver.url)
    receiver.script = [*failures, 200]
    dispatcher = make_dispatcher(max_attempts=5)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)

    assert len(receiver.requests) == 3
    ids = {r.headers[DELIVERY_HEADER] for r in receiver.requests}
    assert len(ids) == 1, "a retry is the same delivery (same id)"
    for request in receiver.requests:  # each attempt carries a valid signature
        assert verify(
            SECRET.encode(), request.headers[SIGNATURE_HEADER], request.body, now=time.time()
        )
    assert dispatcher.stats.retried == 2
    assert dispatcher.stats.delivered == 1 and dispatcher.stats.failed == 0
    row = await webhook_row(db, hook)
    assert row.last_status == 200 and row.last_error is None


async def test_client_error_is_not_retried(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    hook = await add_webhook(db, alice, receiver.url)
    receiver.default = 400
    dispatcher = make_dispatcher(max_attempts=5)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)

    assert len(receiver.requests) == 1
    assert dispatcher.stats.failed == 1 and dispatcher.stats.retried == 0
    row = await webhook_row(db, hook)
    assert row.last_status == 400 and row.last_error == "HTTP 400"


async def test_redirect_is_not_followed(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    await add_webhook(db, alice, receiver.url)
    receiver.default = 307
    dispatcher = make_dispatcher()
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)
    assert len(receiver.requests) == 1 and dispatcher.stats.failed == 1


async def test_hanging_receiver_times_out_and_fails_after_max_attempts(
    db: Database,
    receiver: Receiver,
    make_dispatcher: DispatcherFactory,
    alice: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ripplecast.webhooks")
    hook = await add_webhook(db, alice, receiver.url)
    receiver.default = HANG
    dispatcher = make_dispatcher(timeout=0.2, max_attempts=3)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)

    assert len(receiver.requests) == 3
    assert dispatcher.stats.failed == 1 and dispatcher.stats.retried == 2
    assert dispatcher.stats.delivered == 0
    row = await webhook_row(db, hook)
    assert row.last_status is None
    assert row.last_error is not None and "timed out" in row.last_error
    assert row.last_delivery_at is not None
    # Logged (three attempts, one failure) without the secret or the URL's path and query.
    assert "attempt 2/3 failed" in caplog.text and "failed after 3 attempt(s)" in caplog.text
    assert SECRET not in caplog.text and "query-secret" not in caplog.text
    assert "/hooks/rc" not in caplog.text


async def test_connection_refused_is_retried_and_recorded(
    db: Database, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    # A port nobody listens on: bind one, note it, close it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    hook = await add_webhook(db, alice, f"http://127.0.0.1:{port}/")
    dispatcher = make_dispatcher(max_attempts=2)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)
    assert dispatcher.stats.failed == 1 and dispatcher.stats.retried == 1
    row = await webhook_row(db, hook)
    assert row.last_error is not None and "Connect" in row.last_error


async def test_outcomes_are_recorded_with_last_error_truncated(db: Database, alice: int) -> None:
    hook = await add_webhook(db, alice, "http://example.com/")
    endpoints = DatabaseEndpoints(db, cache_seconds=0)
    [endpoint] = await endpoints.endpoints_for("on_publish", "cam1")
    assert endpoint.id == hook and endpoint.secret == SECRET.encode()
    assert SECRET not in repr(endpoint)
    at = datetime.now(UTC)
    await endpoints.record(endpoint, DeliveryOutcome(at, 502, "e" * 2000, attempts=5))
    row = await webhook_row(db, hook)
    assert row.last_status == 502 and row.last_error == "e" * 500
    assert row.last_delivery_at is not None and abs((row.last_delivery_at - at).total_seconds()) < 1
    await endpoints.record(endpoint, DeliveryOutcome(at, 204, None))
    row = await webhook_row(db, hook)
    assert row.last_status == 204 and row.last_error is None


# --- emit never blocks; the queue is bounded ------------------------------------------------


async def test_emit_never_blocks_and_the_queue_bound_drops_the_excess(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    await add_webhook(db, alice, receiver.url)
    receiver.default = HANG
    dispatcher = make_dispatcher(timeout=30, max_queue=10, max_in_flight=2)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await wait_until(lambda: len(receiver.requests) == 1, 10, "the first delivery to hang")

    # 1000 synchronous calls with no await between them: none can wait for the network.
    for n in range(1000):
        dispatcher.emit("on_play", {**PUBLISH, "n": n})
    assert dispatcher.queued == 10
    assert dispatcher.stats.dropped == 990

    # Not JSON, a bad name, after close: dropped and counted, never raised.
    dispatcher.emit("on_play", {"stream": "cam1", "bad": object()})
    dispatcher.emit("Not An Event", PUBLISH)
    assert dispatcher.stats.dropped == 992

    await asyncio.wait_for(dispatcher.close(drain=0.2), 10)
    assert dispatcher.in_flight == 0 and dispatcher.queued == 0
    stats = dispatcher.stats
    assert stats.delivered == 0
    # Every valid event (1 + 1000, one endpoint each) is accounted for exactly once: dropped
    # before delivery, or a delivery that failed (here: abandoned at close).
    assert (stats.dropped - 2) + stats.failed == 1001
    assert stats.failed >= 1
    dispatcher.emit("on_publish", PUBLISH)
    assert dispatcher.stats.dropped == stats.dropped


async def test_close_is_bounded_with_deliveries_in_flight(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    await add_webhook(db, alice, receiver.url)
    receiver.default = HANG
    dispatcher = make_dispatcher(timeout=60, max_attempts=5, max_in_flight=4)
    await dispatcher.start()
    for _ in range(3):
        dispatcher.emit("on_publish", PUBLISH)
    await wait_until(lambda: len(receiver.requests) == 3, 10, "three deliveries in flight")
    assert dispatcher.in_flight == 3

    await asyncio.wait_for(dispatcher.close(drain=0.1), 10)
    assert dispatcher.in_flight == 0
    assert dispatcher.stats.failed == 3 and dispatcher.stats.delivered == 0


# --- who receives what --------------------------------------------------------------------


async def test_only_subscribed_events_are_delivered(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    await add_webhook(db, alice, receiver.url, events=("on_publish", "on_unpublish"))
    dispatcher = make_dispatcher()
    await dispatcher.start()
    for event in ("on_play", "on_publish", "on_stop", "on_unpublish"):
        dispatcher.emit(event, PUBLISH)
    await settle(dispatcher)
    assert sorted(r.json["event"] for r in receiver.requests) == ["on_publish", "on_unpublish"]
    assert dispatcher.stats.delivered == 2


async def test_disabled_webhooks_are_skipped(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    await add_webhook(db, alice, receiver.url, enabled=False)
    dispatcher = make_dispatcher()
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)
    assert receiver.requests == []
    assert dispatcher.stats.delivered == dispatcher.stats.failed == 0


async def test_events_go_to_the_channel_owner_and_admins_only(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    bob = await add_user(db, "bob", channel="bobcam")
    root = await add_user(db, "root", role=Role.ADMIN)
    mallory = await add_user(db, "mallory", channel="other")
    for who in (alice, bob, root, mallory):
        await add_webhook(db, who, f"{receiver.url}&for={who}")
    async with db.transaction() as session:  # a disabled user's webhooks are skipped too
        await session.execute(update(User).where(User.id == bob).values(disabled=True))
    dispatcher = make_dispatcher()
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)  # alice's channel
    dispatcher.emit("on_publish", {**PUBLISH, "stream": "bobcam"})
    dispatcher.emit("on_publish", {**PUBLISH, "stream": "nochannel"})  # open publishing
    await settle(dispatcher)
    got = sorted((r.json["data"]["stream"], r.headers[DELIVERY_HEADER]) for r in receiver.requests)
    assert len(got) == 4  # cam1: alice + root; bobcam: root; nochannel: root
    assert sorted(s for s, _ in got) == ["bobcam", "cam1", "cam1", "nochannel"]


async def test_endpoint_lookups_are_cached(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    hook = await add_webhook(db, alice, receiver.url)
    endpoints = DatabaseEndpoints(db, cache_seconds=3600)
    dispatcher = make_dispatcher(endpoints=endpoints)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await wait_until(lambda: dispatcher.stats.delivered == 1, 10, "first delivery")
    async with db.transaction() as session:
        await session.execute(update(Webhook).where(Webhook.id == hook).values(enabled=False))
    dispatcher.emit("on_publish", PUBLISH)  # still cached: delivered
    await wait_until(lambda: dispatcher.stats.delivered == 2, 10, "second delivery")
    endpoints.forget()
    dispatcher.emit("on_publish", PUBLISH)  # the change is seen
    await settle(dispatcher)
    assert dispatcher.stats.delivered == 2 and len(receiver.requests) == 2


# --- addresses ----------------------------------------------------------------------------


async def test_private_addresses_are_refused_unless_allowed(
    db: Database, receiver: Receiver, make_dispatcher: DispatcherFactory, alice: int
) -> None:
    hook = await add_webhook(db, alice, receiver.url)
    dispatcher = make_dispatcher(allow_private=False)
    await dispatcher.start()
    dispatcher.emit("on_publish", PUBLISH)
    await settle(dispatcher)
    assert receiver.requests == []
    assert dispatcher.stats.failed == 1 and dispatcher.stats.retried == 0
    row = await webhook_row(db, hook)
    assert row.last_error is not None and "not public" in row.last_error


async def test_names_resolving_to_private_addresses_are_refused(
    receiver: Receiver, make_dispatcher: DispatcherFactory
) -> None:
    # `localhost.localdomain`-style names are caught by the resolver, not by the URL check.
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint = Endpoint(1, f"http://ip6-loopback-name.test:{port}/", b"k", frozenset({"on_play"}))

    from aiohttp.abc import AbstractResolver, ResolveResult

    class Loopback(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
            return [
                ResolveResult(
                    hostname=host, host="127.0.0.1", port=port, family=2, proto=0, flags=0
                )
            ]

        async def close(self) -> None:
            pass

    from ripplecast.webhooks.net import new_client_session

    source = StaticEndpoints([endpoint])
    dispatcher = make_dispatcher(
        endpoints=source,
        allow_private=False,
        session_factory=lambda: new_client_session(allow_private=False, resolver=Loopback()),
    )
    await dispatcher.start()
    dispatcher.emit("on_play", {"stream": "x"})
    await settle(dispatcher)
    assert receiver.requests == []
    assert dispatcher.stats.failed == 1 and dispatcher.stats.retried == 0
    assert "no public address" in (source.outcomes[1].error or "")


# --- admission ----------------------------------------------------------------------------

ADMIT = {"stream": "cam1", "protocol": "rtmp", "client_ip": "203.0.113.7", "stream_key_id": 3}


@pytest.mark.parametrize("answer", [b"", b'{"allow": true}', b'  {"allow": true, "x": 1}\n'])
async def test_admission_allows(receiver: Receiver, answer: bytes) -> None:
    receiver.answer_body = answer
    result = await admit_publish(receiver.url, SECRET.encode(), ADMIT, timeout=2)
    assert result.allowed and result.reason == "ok" and result.status == 200
    request = receiver.requests[0]
    assert request.json["event"] == "on_publish_admission"
    assert request.json["data"] == ADMIT
    assert request.headers[EVENT_HEADER] == "on_publish_admission"
    assert verify(SECRET.encode(), request.headers[SIGNATURE_HEADER], request.body, now=time.time())


async def test_admission_denies_with_the_services_reason(receiver: Receiver) -> None:
    receiver.answer_body = b'{"allow": false, "reason": "over quota\\u0007"}'
    result = await admit_publish(receiver.url, SECRET.encode(), ADMIT, timeout=2)
    assert not result.allowed
    assert result.reason == "denied" and result.message == "over quota?"


@pytest.mark.parametrize(
    ("status", "answer", "reason"),
    [
        (403, b"", "http_403"),
        (302, b"", "http_302"),
        (200, b"yes", "bad_answer"),
        (200, b'{"allow": "yes"}', "bad_answer"),
        (200, b"[true]", "bad_answer"),
        (200, b" " * (64 * 1024 + 1) + b"{}", "bad_answer"),
    ],
)
async def test_admission_denies_other_answers(
    receiver: Receiver, status: int, answer: bytes, reason: str
) -> None:
    receiver.default, receiver.answer_body = status, answer
    for fail_open in (False, True):
        result = await admit_publish(
            receiver.url, SECRET.encode(), ADMIT, timeout=2, fail_open=fail_open
        )
        assert not result.allowed and result.reason == reason


@pytest.mark.parametrize("failure", [HANG, 503])
async def test_admission_unavailable_fails_closed_or_open(
    receiver: Receiver, failure: int | str
) -> None:
    receiver.default = failure
    closed = await admit_publish(receiver.url, SECRET.encode(), ADMIT, timeout=0.2)
    assert not closed.allowed and closed.reason == "unavailable"
    opened = await admit_publish(receiver.url, SECRET.encode(), ADMIT, timeout=0.2, fail_open=True)
    assert opened.allowed and opened.reason == "unavailable"


async def test_admission_with_a_shared_session(receiver: Receiver) -> None:
    from ripplecast.webhooks.net import new_client_session

    async with new_client_session(allow_private=True) as session:
        result = await admit_publish(
            receiver.url, SECRET.encode(), ADMIT, timeout=2, session=session
        )
    assert result.allowed


async def test_admission_refuses_a_bad_url() -> None:
    with pytest.raises(WebhookURLError):
        await admit_publish("ftp://example.com/", b"k", ADMIT, timeout=1)
