"""The composition root: wires one node (hub, RTMP server, HTTP server) from its settings.

`Node` is the only place that knows every component; each component gets exactly what it needs.
Start with `await node.start()`, stop with `await node.close()` (publishers and viewers are closed
cleanly, then the listeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from ripplecast import __version__
from ripplecast.accounts.cached_directory import CachedDirectory
from ripplecast.accounts.credentials import PasswordPolicy, Passwords
from ripplecast.accounts.directory import DatabaseDirectory
from ripplecast.accounts.logins import LoginLimits, Logins
from ripplecast.accounts.policy import AccessPolicy, Directory
from ripplecast.accounts.service import Accounts
from ripplecast.accounts.signed_urls import signed_query
from ripplecast.cache import Cache, CacheError, open_cache
from ripplecast.cluster import (
    Addresses,
    ClusterError,
    ClusterInputError,
    Heartbeat,
    NodeInfo,
    NodeLoad,
    NodeRegistry,
    StreamOwnership,
)
from ripplecast.cluster.claims import OwnedStreams
from ripplecast.cluster.live import DirectoryFull, EdgeViewers, LiveDirectory, ViewerCount
from ripplecast.config import NodeRole, PublishMode, Settings
from ripplecast.db import Database, database_url_for
from ripplecast.db.models import Role
from ripplecast.edge.pull import EdgePuller, Origin
from ripplecast.http.api.streams import DirectoryView, describe_stream, summary_of
from ripplecast.http.app import LIVE_ROUTES, create_app
from ripplecast.http.live import HTTP_FLV
from ripplecast.http.tls_site import HttpsSite
from ripplecast.live.hls import HlsPackager
from ripplecast.live.hub import Hub, ListenerFactory
from ripplecast.live.stream import LiveStream, PacketListener, StreamState
from ripplecast.metrics import NodeMetrics
from ripplecast.protocols.rtmp.server import RtmpServer
from ripplecast.storage import CachingStorage, Storage, open_edge_cache, open_storage
from ripplecast.tls import TlsError, server_tls_for
from ripplecast.vod.ffmpeg import find_ffmpeg
from ripplecast.vod.jobs import JobQueue
from ripplecast.vod.ladder import parse_ladder
from ripplecast.vod.service import Videos
from ripplecast.vod.transcode import TranscodeOptions
from ripplecast.vod.uploads import UploadLimits, Uploads
from ripplecast.vod.worker import Worker
from ripplecast.webhooks import (
    AdmissionResult,
    DatabaseEndpoints,
    StaticEndpoints,
    WebhookDispatcher,
    admit_publish,
    require_url,
)

log = logging.getLogger("ripplecast")

SECRET_FILE = "secret.key"
EVENTS_CHANNEL = "events"
RESUBSCRIBE_SECONDS = 1.0
"""Wait before the events subscription is opened again after it ended."""
READYZ_CHECK_SECONDS = 1.0
"""/readyz checks the database, cache and storage at most this often (health checks are many)."""
DRAIN_POLL_SECONDS = 0.25
KICK_REASON_MAX_LENGTH = 200
"""Longest reason a kick event carries into logs and to the stream's viewers."""
MAX_UNLISTED_REPORTED = 100
"""Stream names whose refusal by the live directory is logged (once each)."""
DEFAULT_STREAM = "main"
FIRST_ADMIN = "admin"


def _write_private(path: Path, data: str) -> None:
    """Write `data` to `path` atomically, readable by this user only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    tmp.replace(path)


def load_or_create_secret(settings: Settings) -> bytes:
    """The server secret: from settings, else `DATA_DIR/secret.key`, created on first start."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip().encode()
    secret = secrets.token_urlsafe(32)
    _write_private(path, secret + "\n")
    return secret.encode()


def signing_keys(settings: Settings, secret: bytes) -> tuple[dict[str, bytes], str]:
    """The signed-URL keys by id and the id that signs new URLs."""
    if settings.signing_keys:
        keys = {k: v.get_secret_value().encode() for k, v in settings.signing_keys.items()}
        current = settings.signing_key_id or sorted(keys)[-1]
        if current not in keys:
            raise ValueError(f"signing_key_id {current!r} is not in signing_keys")
        return keys, current
    derived = hmac.new(secret, b"ripplecast signed urls", hashlib.sha256).digest()
    return {"k0": derived}, "k0"


def passwords_for(settings: Settings) -> Passwords:
    """The password hasher with the settings' argon2id parameters."""
    return Passwords(
        PasswordPolicy(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_kib,
            min_length=settings.password_min_length,
        )
    )


def database_for(settings: Settings) -> Database:
    """The metadata database. The embedded default (SQLite in the data dir) migrates itself on
    start; a shared database is migrated once, by `ripplecast db upgrade`, not by every node."""
    return Database(
        database_url_for(settings.data_dir, settings.database_url or None),
        upgrade_on_start=not settings.database_url,
    )


def webhooks_for(settings: Settings, db: Database) -> WebhookDispatcher:
    """The webhook dispatcher; with `webhooks_enabled` off, one that knows no endpoints."""
    endpoints = (
        DatabaseEndpoints(db, cache_seconds=settings.webhook_cache_seconds)
        if settings.webhooks_enabled
        else StaticEndpoints([])
    )
    return WebhookDispatcher(
        endpoints,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        backoff_base=settings.webhook_backoff_base_seconds,
        backoff_max=max(
            settings.webhook_backoff_max_seconds, settings.webhook_backoff_base_seconds
        ),
        max_queue=settings.webhook_max_queue,
        max_in_flight=settings.webhook_max_in_flight,
        drain=settings.webhook_drain_seconds,
        allow_private=settings.webhook_allow_private_addresses,
        clock=time.time,
    )


def admission_secret(settings: Settings) -> bytes | None:
    """The admission webhook's signing secret, None without an admission webhook.

    Raises `ValueError` for an unusable URL or a missing secret (refused at start, not at the
    first publish)."""
    if not settings.admission_webhook_url:
        return None
    require_url(settings.admission_webhook_url, allow_private=True)
    if settings.admission_webhook_secret is None:
        raise ValueError("admission_webhook_url needs admission_webhook_secret")
    return settings.admission_webhook_secret.get_secret_value().encode()


def job_queue_for(settings: Settings, db: Database) -> JobQueue:
    """The transcoding job queue on the metadata database."""
    return JobQueue(
        db,
        lease_seconds=settings.job_lease_seconds,
        max_attempts=settings.job_max_attempts,
        backoff_base_seconds=settings.job_backoff_base_seconds,
    )


def uploads_for(settings: Settings, db: Database, storage: Storage, jobs: JobQueue) -> Uploads:
    """Uploads staged in the data dir, with the settings' limits."""
    return Uploads(
        db,
        storage,
        jobs,
        settings.data_dir / "uploads",
        UploadLimits(
            max_bytes=settings.upload_max_bytes,
            quota_bytes=settings.upload_quota_bytes,
            expiry=timedelta(seconds=settings.upload_expiry_seconds),
            chunk_max_bytes=settings.upload_chunk_max_bytes,
            max_duration=settings.probe_max_duration_seconds,
            max_pixels=settings.probe_max_pixels,
            accept_audio_only=settings.vod_accept_audio_only,
        ),
    )


def worker_for(settings: Settings, jobs: JobQueue, storage: Storage) -> Worker:
    """A transcoding worker with the settings' ladder, ffmpeg and limits."""
    work_dir = settings.data_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    return Worker(
        jobs,
        storage,
        TranscodeOptions(
            ffmpeg=find_ffmpeg(settings.ffmpeg_path),
            segment_seconds=settings.vod_segment_seconds,
            preset=settings.vod_x264_preset,
            thumbnail_interval=settings.vod_thumbnail_interval_seconds,
            thumbnail_width=settings.vod_thumbnail_width,
            timeout=settings.job_timeout_seconds,
        ),
        parse_ladder(settings.vod_ladder),
        lease_seconds=settings.job_lease_seconds,
        poll_seconds=settings.job_poll_seconds,
        max_duration=settings.probe_max_duration_seconds,
        max_pixels=settings.probe_max_pixels,
        concurrency=settings.worker_concurrency,
        work_dir=work_dir,
    )


def cluster_secret(settings: Settings, secret: bytes) -> bytes:
    """The secret nodes authenticate each other with: the setting, else derived from the
    server secret (which every node of a cluster shares anyway)."""
    if settings.cluster_secret is not None:
        return settings.cluster_secret.get_secret_value().encode()
    return hmac.new(secret, b"ripplecast cluster", hashlib.sha256).digest()


def node_id_for(settings: Settings) -> str:
    """This node's registry id: the setting, else ROLE-HOSTNAME-PID."""
    if settings.cluster_node_id:
        return settings.cluster_node_id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40].strip("-.") or "host"
    return f"{settings.role.value}-{host}-{os.getpid()}"


def registry_for(settings: Settings, cache: Cache) -> NodeRegistry:
    """The cluster's node registry in the shared cache."""
    return NodeRegistry(
        cache, ttl_seconds=settings.cluster_node_ttl_seconds, max_nodes=settings.cluster_max_nodes
    )


def live_directory_for(settings: Settings, cache: Cache) -> LiveDirectory:
    """The cluster's live directory in the shared cache: written as often as the stream claims
    are renewed and expiring with them."""
    return LiveDirectory(
        cache,
        ttl_seconds=settings.cluster_stream_claim_ttl_seconds,
        # A web node lists at most as many streams as one edge may mirror at once.
        max_streams=settings.edge_max_upstreams,
        max_edges=settings.cluster_max_nodes,
        max_name_length=settings.stream_name_max_length,
    )


def _ended(stream: LiveStream) -> bool:
    return stream.state is StreamState.ENDED


class Roles:
    """What a node of each role runs (`ripplecast serve --role`)."""

    def __init__(self, role: NodeRole) -> None:
        every = role is NodeRole.ALL
        self.publish = every or role is NodeRole.ORIGIN
        """RTMP publishers accepted; stream names claimed in the cluster."""
        self.rtmp = self.publish or role is NodeRole.EDGE
        """An RTMP listener (players on an edge)."""
        self.live_http = self.rtmp
        """HTTP-FLV and live HLS."""
        self.pull = role is NodeRole.EDGE
        """Streams of other nodes mirrored on demand."""
        self.web = every or role is NodeRole.WEB
        """Pages, REST API and uploads."""
        self.vod = every or role in (NodeRole.WEB, NodeRole.EDGE)
        """`/vod/...` served."""
        self.vod_cache = role is NodeRole.EDGE
        """`/vod/...` served through the edge cache."""
        self.worker = every or role is NodeRole.WORKER
        """A transcoding worker in the process (if `worker_enabled`)."""
        self.announce_live = role is NodeRole.ORIGIN
        """Summaries of the streams it owns published to the cluster's live directory."""
        self.report_viewers = role is NodeRole.EDGE
        """Its viewers of each stream it mirrors reported to the live directory."""
        self.read_directory = role is NodeRole.WEB
        """Pages and the streams API answer from the live directory (its own hub is empty)."""


class CpuMeter:
    """This process's share of the machine's CPU since the previous reading."""

    def __init__(self) -> None:
        self._cores = os.cpu_count() or 1
        self._last = (time.monotonic(), time.process_time())

    def read(self) -> float:
        now = (time.monotonic(), time.process_time())
        wall, cpu = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return 0.0 if wall <= 0 else max(0.0, min(1.0, cpu / wall / self._cores))


@contextlib.asynccontextmanager
async def open_accounts(settings: Settings) -> AsyncIterator[Accounts]:
    """Account operations on the node's database, for the CLI."""
    async with database_for(settings) as db:
        yield Accounts(db, passwords_for(settings), secret=load_or_create_secret(settings))


@dataclass(frozen=True, slots=True)
class FirstRun:
    """What a fresh install created so that it can go live at once (printed once)."""

    username: str
    password: str
    channel: str
    stream_key: str


async def bootstrap(accounts: Accounts) -> FirstRun | None:
    """On an empty database: an admin with a random password, channel `main` and its key."""
    if await accounts.count_channels() or await accounts.count_users():
        return None
    password = secrets.token_urlsafe(12)
    await accounts.create_user(FIRST_ADMIN, password, role=Role.ADMIN)
    await accounts.create_channel(FIRST_ADMIN, DEFAULT_STREAM, title="Main")
    key = await accounts.create_stream_key(DEFAULT_STREAM, label="created on first start")
    return FirstRun(FIRST_ADMIN, password, DEFAULT_STREAM, key.key)


class Node:
    """One running Ripplecast node: every role in one process by default, or one role of a
    cluster (`Roles` says what each runs)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roles = roles = Roles(settings.role)
        self.tls = server_tls_for(settings)
        """The certificate of HTTPS and RTMPS (None: plain HTTP); raises `TlsError` here when
        its files cannot be used, so the node refuses to start."""
        self.first_run: FirstRun | None = None
        self.metrics = (
            NodeMetrics(settings, version=__version__) if settings.metrics_enabled else None
        )
        self.hub = Hub(settings, listener_factories=self._listener_factories())
        self.secret = load_or_create_secret(settings)
        self.node_id = node_id_for(settings)
        self.signing_keys, self.signing_key_id = signing_keys(settings, self.secret)
        open_publishing = settings.publish_mode is PublishMode.OPEN
        self.db = database_for(settings)
        self.cache = open_cache(
            settings.cache_url,
            prefix=settings.cache_prefix,
            max_entries=settings.cache_max_entries,
            max_queued_messages=settings.cache_max_queued_messages,
        )
        self._events_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        passwords = passwords_for(settings)
        self.accounts = Accounts(
            self.db,
            passwords,
            secret=self.secret,
            on_key_revoked=self._announce_key_revoked,
            on_user_disabled=self._announce_streams_closed,
        )
        self.logins = Logins(
            self.db,
            self.cache,
            passwords,
            LoginLimits(
                window_seconds=settings.login_window_seconds,
                max_per_account=settings.login_max_failures_per_account,
                max_per_ip=settings.login_max_failures_per_ip,
                session_ttl=timedelta(seconds=settings.session_ttl_seconds),
            ),
        )
        directory: Directory = DatabaseDirectory(self.db)
        if roles.pull and settings.edge_policy_cache_seconds > 0:
            directory = CachedDirectory(
                directory,
                ttl_seconds=settings.edge_policy_cache_seconds,
                max_entries=settings.edge_policy_cache_entries,
            )
        self.directory = directory
        self.access = AccessPolicy(
            directory,
            secret=self.secret,
            signing_keys=self.signing_keys,
            clock=time.time,
            open_publishing=open_publishing,
            cluster_secret=cluster_secret(settings, self.secret),
        )
        self.registry = registry_for(settings, self.cache)
        self.heartbeat = Heartbeat(self.registry, self._node_info)
        self._cpu = CpuMeter()
        self._egress = (time.monotonic(), 0)
        self._sent_by_ended = 0
        self.hub.on_stream_ended.append(self._count_sent)
        self._started_at = time.time()
        self.claims: OwnedStreams | None = None
        if roles.publish:
            self.claims = OwnedStreams(
                self._ownership(), is_live=self._is_live, on_lost=self._ownership_lost
            )
            self.hub.on_stream_ended.append(self._release_claim)
        self.live_directory: LiveDirectory | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._unlisted: set[str] = set()
        if roles.announce_live or roles.report_viewers or roles.read_directory:
            self.live_directory = live_directory_for(settings, self.cache)
        if roles.announce_live or roles.report_viewers:
            self.hub.on_stream_ended.append(self._unlist)
        self.puller: EdgePuller | None = None
        if roles.pull:
            self.puller = EdgePuller(
                settings, self.hub, self._locate, secret=cluster_secret(settings, self.secret)
            )
            self.hub.remote = self.puller
        self.webhooks = webhooks_for(settings, self.db)
        self.storage = open_storage(settings)
        self.jobs = job_queue_for(settings, self.db)
        self.uploads = uploads_for(settings, self.db, self.storage, self.jobs)
        self.videos = Videos(self.db, self.storage, self.jobs)
        self.worker: Worker | None = None
        self._admission_secret = admission_secret(settings)
        self.rtmp = RtmpServer(
            settings,
            self.hub,
            self.access.authorize,
            notify=self._on_rtmp_event,
            admit=self._admit_publish if self._admission_secret is not None else None,
            claim=self.claims.acquire if self.claims is not None else None,
            accept_publishers=roles.publish,
            tls=self.tls.context if self.tls is not None else None,
        )
        vod_on = settings.vod_enabled
        self.vod_media: CachingStorage | None = None
        if vod_on and roles.vod_cache:
            self.vod_media = open_edge_cache(self.storage, settings)
        self.http_app = create_app(
            settings,
            self.hub,
            self.access.authorize,
            ready=self.readiness,
            notify=self.webhooks.emit,
            publishers=self.rtmp if roles.publish else None,
            accounts=(self.accounts, self.logins, self.secret) if roles.web else None,
            db=self.db if roles.web else None,
            vod=(self.videos, self.uploads, self.storage, self.signed_query)
            if vod_on and roles.web
            else None,
            vod_media=self.vod_media if vod_on and roles.vod else None,
            cluster=self.registry if roles.web else None,
            live_view=DirectoryView(self.live_directory, announce_kick=self._announce_stream_kicked)
            if roles.read_directory and self.live_directory is not None
            else None,
            metrics=self.metrics,
        )
        if self.metrics is not None:
            self._watch(self.metrics)
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._ready = False
        self.draining = False
        """True once `drain()` began: /readyz says 503 and nothing new is accepted."""
        self._checked: tuple[float, dict[str, str]] = (0.0, {})

    def _watch(self, metrics: NodeMetrics) -> None:
        """Point the node's metrics at the components its role runs."""
        roles, settings = self.roles, self.settings
        if roles.live_http:
            live_http = self.http_app[LIVE_ROUTES]
            metrics.watch_live(
                self.hub, http_flv=HTTP_FLV, rtmp=self.rtmp, live_http=live_http, puller=self.puller
            )
        metrics.watch_access(self.access)
        if self.vod_media is not None:
            metrics.watch_edge_cache(self.vod_media)
        if settings.vod_enabled and roles.web:
            metrics.watch_uploads(self.uploads)
        if settings.vod_enabled and (roles.web or roles.worker):
            metrics.watch_jobs(self.jobs)
        metrics.watch_cluster(self.heartbeat, self.claims)

    def _listener_factories(self) -> list[ListenerFactory]:
        settings = self.settings
        factories: list[ListenerFactory] = []
        if settings.hls_enabled:
            on_segment = self.metrics.segment_cut if self.metrics is not None else None

            def hls(stream: LiveStream) -> PacketListener:
                return HlsPackager(stream.name, settings, on_segment=on_segment)

            factories.append(hls)
        return factories

    async def start(self) -> None:
        """Open the database, then the RTMP and HTTP listeners, then join the cluster."""
        settings, roles = self.settings, self.roles
        await self.db.start()
        await self.storage.start()
        if self.vod_media is not None:
            await self.vod_media.start()
        await self.webhooks.start()
        if settings.vod_enabled and settings.worker_enabled and roles.worker:
            self.worker = worker_for(settings, self.jobs, self.storage)
            self.uploads.on_queued = self.worker.wake
            if self.metrics is not None:
                self.metrics.watch_worker(self.worker)
            self.worker.start()
        if roles.web:
            self._background_loop(self._expire_uploads(), "upload expiry")
        if settings.publish_mode is PublishMode.KEYS and settings.role is NodeRole.ALL:
            # A cluster's nodes share one database: its accounts are made with the CLI.
            self.first_run = await bootstrap(self.accounts)
        listening = asyncio.Event()
        self._events_task = asyncio.create_task(self._listen_events(listening))
        subscribed = asyncio.create_task(listening.wait())
        await asyncio.wait((self._events_task, subscribed), return_when=asyncio.FIRST_COMPLETED)
        if not listening.is_set():
            subscribed.cancel()
            self._events_task.result()  # raises why the subscription failed
        if roles.rtmp:
            await self.rtmp.start()
        self._runner = web.AppRunner(
            self.http_app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=settings.shutdown_timeout,
        )
        await self._runner.setup()
        if self.tls is not None:
            self._site = HttpsSite(
                self._runner,
                settings.http_host,
                settings.http_port,
                ssl_context=self.tls.context,
                handshake_timeout=settings.tls_handshake_timeout,
                reuse_port=settings.reuse_port,
            )
        else:
            self._site = web.TCPSite(
                self._runner,
                settings.http_host,
                settings.http_port,
                reuse_address=True,
                reuse_port=settings.reuse_port or None,
            )
        await self._site.start()
        if self.claims is not None:
            self.claims.start()
        await self.heartbeat.start()
        if roles.announce_live or roles.report_viewers:
            self._live_task = asyncio.create_task(self._share_live_forever(), name="live directory")
        if self.metrics is not None:
            self.metrics.start()
        self._ready = True
        log.info(
            "ripplecast node %s (role %s) listening: %s%s%s port %d",
            self.node_id,
            settings.role.value,
            f"rtmp port {self.rtmp_port}, " if roles.rtmp else "",
            f"rtmps port {self.rtmps_port}, " if self.rtmps_port else "",
            "https" if self.tls is not None else "http",
            self.http_port,
        )
        if self.tls is not None:
            log.info(
                "TLS certificate from %s, SHA-256 fingerprint %s",
                self.tls.cert_file,
                self.tls.fingerprint,
            )

    def reload_tls(self) -> bool:
        """Load `tls_cert_file` and `tls_key_file` again (on SIGHUP): new HTTPS and RTMPS
        handshakes get the new certificate, open connections keep theirs. When the new files
        cannot be used, the certificate in use stays and the reason is logged as an error.
        Returns whether the new certificate is in use."""
        if self.tls is None:
            log.warning("TLS reload asked for, but no certificate is configured (tls_cert_file)")
            return False
        previous = self.tls.fingerprint
        try:
            fingerprint = self.tls.reload()
        except TlsError as exc:
            log.error("TLS certificate NOT reloaded, still serving SHA-256 %s: %s", previous, exc)
            return False
        log.info(
            "TLS certificate reloaded from %s: SHA-256 %s%s",
            self.tls.cert_file,
            fingerprint,
            " (the same certificate)" if fingerprint == previous else "",
        )
        return True

    # --- health and drain ---------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """What /readyz answers: ready only when started, not draining, and the database, the
        cache and the storage this role uses all answer (checked at most once a second)."""
        if not self._ready:
            return False, {"status": "stopped" if self.draining else "starting"}
        if self.draining:
            return False, {"status": "draining"}
        now = time.monotonic()
        checked_at, failures = self._checked
        if now - checked_at >= READYZ_CHECK_SECONDS:
            failures = await self._check_dependencies()
            self._checked = (time.monotonic(), failures)
        if failures:
            return False, {"status": "not ready", "failing": failures}
        return True, {"status": "ready", "role": self.settings.role.value, "streams": len(self.hub)}

    async def _check_dependencies(self) -> dict[str, str]:
        roles = self.roles
        checks: dict[str, Coroutine[Any, Any, object]] = {"database": self.db.check()}
        if self.settings.cache_url != "memory://":
            checks["cache"] = self.cache.get("readyz")
        if roles.vod or roles.worker:
            checks["storage"] = self.storage.check()
        timeout = self.settings.readyz_timeout_seconds
        results = await asyncio.gather(
            *(asyncio.wait_for(check, timeout) for check in checks.values()),
            return_exceptions=True,
        )
        failures: dict[str, str] = {}
        for name, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                why = "no answer in time" if isinstance(result, TimeoutError) else str(result)
                failures[name] = why[:200] or type(result).__name__
        if failures:
            log.warning("not ready: %s", "; ".join(f"{k}: {v}" for k, v in failures.items()))
        return failures

    def busy(self) -> bool:
        """True while viewers, publishers or transcodes are still being served."""
        if self.rtmp.connections:
            return True
        now = time.monotonic()
        for stream in self.hub:
            if stream.reader_count:
                return True
            for listener in stream.listeners:
                if isinstance(listener, HlsPackager) and listener.audience.count(now):
                    return True
        return False

    async def drain(self) -> None:
        """Stop taking new work and let the current work finish, for up to
        `drain_timeout_seconds`: /readyz turns 503 (the balancer sends new clients elsewhere),
        the RTMP port stops accepting, new HTTP-FLV viewers get a 503, the worker claims no new
        job, and the registry shows the node draining. Then call `close()`."""
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.drain_timeout_seconds
        log.info("draining: nothing new is accepted; waiting up to %.0f s", timeout)
        self.rtmp.stop_listening()
        self.http_app[LIVE_ROUTES].draining = True
        with contextlib.suppress(CacheError, ClusterError):
            await self.heartbeat.beat()
        deadline = time.monotonic() + timeout
        worker_done = (
            asyncio.create_task(self.worker.drain(timeout)) if self.worker is not None else None
        )
        # Polled: "busy" is a sum over streams, readers and HLS players, not one event.
        while time.monotonic() < deadline and (  # noqa: ASYNC110
            self.busy() or (worker_done is not None and not worker_done.done())
        ):
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if worker_done is not None and not worker_done.done():
            worker_done.cancel()
        left = "nothing left" if not self.busy() else "closing what is left"
        log.info("drained: %s", left)

    # --- cluster ------------------------------------------------------------------------------

    def _ownership(self) -> StreamOwnership:
        settings = self.settings
        return StreamOwnership(
            self.cache,
            ttl_seconds=settings.cluster_stream_claim_ttl_seconds,
            node_id=self.node_id,
            fence_ttl_seconds=settings.cluster_fence_ttl_seconds,
            max_name_length=settings.stream_name_max_length,
        )

    def _is_live(self, name: str) -> bool:
        return self.hub.get(name) is not None

    def _release_claim(self, stream: LiveStream) -> None:
        if self.claims is not None:
            task = asyncio.create_task(self.claims.release(stream.name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _ownership_lost(self, name: str, why: str) -> None:
        """Another origin owns `name` now: this one must stop acting for it."""
        self.rtmp.kick_stream(name, "stream ownership lost")
        stream = self.hub.get(name)
        if stream is not None:
            stream.end(why)

    async def _locate(self, name: str) -> Origin | None:
        """The origin that owns stream `name` now, from the claim and the registry."""
        try:
            claim = await self._ownership().owner(name)
            if claim is None or claim.node_id == self.node_id:
                return None
            info = await self.registry.node(claim.node_id)
        except (CacheError, ClusterError) as exc:
            log.warning("stream %s: cannot look its origin up: %s", name, exc)
            return None
        if info is None or not info.internal.http:
            return None
        return Origin(info.node_id, info.internal.http)

    async def _share_live_forever(self) -> None:
        """Every third of the claim TTL: an origin publishes the summary of each stream it owns,
        an edge reports its viewers of each stream it mirrors. A cache outage is logged once
        and retried; the records then expire and come back with the next round."""
        interval = self.settings.cluster_stream_claim_ttl_seconds / 3
        failing = False
        while True:
            try:
                await self._share_live()
            except (CacheError, ClusterError) as exc:
                if not failing:
                    log.warning("live directory: cannot write, retrying: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("live directory: writing works again")
                failing = False
            await asyncio.sleep(interval)

    async def _share_live(self) -> None:
        if self.roles.announce_live and self.claims is not None:
            for name in self.claims.held():
                stream = self.hub.get(name)
                if stream is not None:
                    await self._publish_summary(stream)
        if self.roles.report_viewers:
            for stream in self.hub:
                await self._report_viewers(stream)

    async def _publish_summary(self, stream: LiveStream) -> None:
        """Publish `stream`'s summary to the live directory (an origin owning it)."""
        directory = self.live_directory
        if directory is None or _ended(stream):
            return
        try:
            await directory.publish(summary_of(describe_stream(stream, time.time()), self.node_id))
        except (DirectoryFull, ClusterInputError) as exc:
            if stream.name not in self._unlisted and len(self._unlisted) < MAX_UNLISTED_REPORTED:
                self._unlisted.add(stream.name)
                log.warning("stream %s: not in the live directory: %s", stream.name, exc)
            return
        if _ended(stream):  # it ended while this was published: unlist it again
            await directory.remove(stream.name)

    async def _report_viewers(self, stream: LiveStream) -> None:
        """Report this edge's viewers of the mirrored `stream` to the live directory."""
        if self.live_directory is None or _ended(stream):
            return
        viewers = describe_stream(stream, time.time()).viewers
        upstream = self.puller.upstreams.get(stream.name) if self.puller is not None else None
        origin = upstream.origin if upstream is not None else None
        report = EdgeViewers(
            self.node_id,
            ViewerCount(viewers.http_flv, viewers.rtmp, viewers.hls),
            pulling_from=origin.node_id if origin is not None else "",
        )
        if not await self.live_directory.report_viewers(stream.name, report):
            log.debug("stream %s: viewers not reported: too many edges report", stream.name)

    def _unlist(self, stream: LiveStream) -> None:
        """The stream ended here: its summary (origin) or viewers (edge) leave the directory."""
        self._background_loop(self._unlist_now(stream.name), "live directory removal")

    async def _unlist_now(self, name: str) -> None:
        directory = self.live_directory
        if directory is None:
            return
        try:
            if self.roles.announce_live:
                await directory.remove(name)
            if self.roles.report_viewers:
                await directory.withdraw_viewers(name, self.node_id)
        except (CacheError, ClusterError) as exc:
            log.warning("stream %s: left in the live directory until it expires: %s", name, exc)

    async def _publish_now(self, name: str) -> None:
        """A publisher just started `name` here: list it at once rather than at the next round."""
        stream = self.hub.get(name)
        if stream is None or self.claims is None or name not in self.claims.held():
            return
        try:
            await self._publish_summary(stream)
        except (CacheError, ClusterError) as exc:
            log.warning("stream %s: not listed yet in the live directory: %s", name, exc)

    def _node_info(self) -> NodeInfo:
        """What this node tells the registry in each heartbeat."""
        settings = self.settings
        http_port = self.http_port
        rtmp_port = self.rtmp_port
        host = settings.public_host
        scheme = "https" if self.tls is not None else "http"
        internal = Addresses(
            http=settings.cluster_internal_http_url or f"{scheme}://127.0.0.1:{http_port}",
            rtmp=f"rtmp://127.0.0.1:{rtmp_port}" if rtmp_port else "",
        )
        public = Addresses(
            http=settings.cluster_public_http_url or f"{scheme}://{host}:{http_port}",
            rtmp=settings.cluster_public_rtmp_url
            or (f"rtmp://{host}:{rtmp_port}" if rtmp_port else ""),
        )
        return NodeInfo(
            node_id=self.node_id,
            role=settings.role.value,
            internal=internal,
            public=public,
            load=self._load(),
            draining=self.draining,
            version=__version__,
            started_at=self._started_at,
        )

    def _load(self) -> NodeLoad:
        now = time.monotonic()
        viewers = 0
        sent = 0
        for stream in self.hub:
            viewers += stream.reader_count
            sent += stream.stats.bytes_out
            for listener in stream.listeners:
                if isinstance(listener, HlsPackager):
                    viewers += listener.audience.count(now)
        total = self._sent_by_ended + sent
        then, before = self._egress
        self._egress = (now, total)
        bps = int(max(0, total - before) * 8 / (now - then)) if now > then else 0
        return NodeLoad(viewers=viewers, egress_bps=bps, cpu=round(self._cpu.read(), 4))

    def _count_sent(self, stream: LiveStream) -> None:
        self._sent_by_ended += stream.stats.bytes_out

    async def _admit_publish(self, payload: Mapping[str, object]) -> AdmissionResult:
        assert self._admission_secret is not None
        settings = self.settings
        return await admit_publish(
            settings.admission_webhook_url,
            self._admission_secret,
            payload,
            timeout=settings.admission_webhook_timeout_seconds,
            fail_open=settings.admission_webhook_fail_open,
        )

    def _on_rtmp_event(self, event: str, data: Mapping[str, object]) -> None:
        self.webhooks.emit(event, data)
        key_id = data.get("stream_key_id")
        if event == "on_publish" and isinstance(key_id, int):
            task = asyncio.create_task(self._note_key_use(key_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        name = data.get("stream")
        if event == "on_publish" and self.roles.announce_live and isinstance(name, str):
            self._background_loop(self._publish_now(name), "live directory listing")

    def _background_loop(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(work, name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _expire_uploads(self) -> None:
        while True:
            await asyncio.sleep(min(600.0, self.settings.upload_expiry_seconds / 4))
            try:
                if removed := await self.uploads.expire():
                    log.info("removed %d expired uploads", removed)
            except Exception:
                log.warning("could not remove expired uploads", exc_info=True)

    async def _note_key_use(self, key_id: int) -> None:
        try:
            await self.accounts.note_stream_key_use(key_id)
        except Exception:  # bookkeeping only: a publish never fails because of it
            log.warning("could not record the use of stream key %d", key_id, exc_info=True)

    async def _announce_key_revoked(self, key_id: int) -> None:
        event = {"type": "stream_key_revoked", "id": key_id}
        await self.cache.publish(EVENTS_CHANNEL, json.dumps(event).encode())

    async def _announce_streams_closed(self, names: list[str]) -> None:
        event = {"type": "streams_closed", "names": names}
        await self.cache.publish(EVENTS_CHANNEL, json.dumps(event).encode())

    async def _announce_stream_kicked(self, name: str, reason: str) -> None:
        """Tell every node to end stream `name` (the origin that has it does)."""
        event = {"type": "stream_kicked", "name": name, "reason": reason}
        await self.cache.publish(EVENTS_CHANNEL, json.dumps(event).encode())

    def _on_event(self, event: dict[str, object]) -> None:
        kind, key_id, names = event.get("type"), event.get("id"), event.get("names")
        if kind == "stream_key_revoked" and isinstance(key_id, int):
            if kicked := self.rtmp.kick_key(key_id):
                log.info("stream key %d revoked: %d publisher kicked", key_id, kicked)
        elif kind == "streams_closed" and isinstance(names, list):
            for name in names:
                if isinstance(name, str) and self.rtmp.kick_stream(name, "account disabled"):
                    log.info("stream %s: publisher kicked (account disabled)", name)
        elif kind == "stream_kicked" and self.roles.publish:
            self._on_stream_kicked(event.get("name"), event.get("reason"))

    def _on_stream_kicked(self, name: object, reason: object) -> None:
        """A kick from any node (a web node's admin): end the stream if it is live here."""
        if not isinstance(name, str) or (stream := self.hub.get(name)) is None or _ended(stream):
            return
        why = reason[:KICK_REASON_MAX_LENGTH] if isinstance(reason, str) else "kicked"
        # End first, so the publisher's disconnect finds an ended stream and no grace period.
        stream.end(why)
        kicked = self.rtmp.kick_stream(name, why)
        log.info("stream %s ended: %s (%d publisher(s) closed)", name, why, kicked)

    async def _listen_events(self, listening: asyncio.Event) -> None:
        """Act on events from any node (through the cache's pub/sub): kick revoked keys.

        The subscription is opened again when it ends (Redis restarted or unreachable), every
        `RESUBSCRIBE_SECONDS`, for as long as the node runs; events published meanwhile are
        lost (pub/sub keeps nothing), which is logged."""
        while True:
            try:
                async with self.cache.subscribe(EVENTS_CHANNEL) as events:
                    if listening.is_set():
                        log.info("events: subscribed again to %s", EVENTS_CHANNEL)
                    listening.set()
                    async for message in events:
                        try:
                            event = json.loads(message)
                        except ValueError:
                            event = None
                        if not isinstance(event, dict):
                            log.warning("ignored a malformed event on %s", EVENTS_CHANNEL)
                            continue
                        self._on_event(event)
            except CacheError as exc:
                if not listening.is_set():
                    raise  # at start: the node cannot run without its events
                log.warning("events: subscription to %s failed: %s", EVENTS_CHANNEL, exc)
            else:
                log.warning("events: subscription to %s ended; subscribing again", EVENTS_CHANNEL)
            await asyncio.sleep(RESUBSCRIBE_SECONDS)

    def signed_query(self, resource: str, *, ttl: int | None = None, ip: str = "") -> str:
        """A query string granting `resource` (e.g. `/live/NAME`) for `ttl` seconds."""
        lifetime = ttl if ttl is not None else self.settings.signed_url_ttl_seconds
        return signed_query(
            resource,
            expires_at=int(time.time()) + lifetime,
            key_id=self.signing_key_id,
            keys=self.signing_keys,
            ip=ip,
        )

    @property
    def rtmp_port(self) -> int:
        """The RTMP port bound; 0 on a role without an RTMP listener (worker, web)."""
        return self.rtmp.port if self.roles.rtmp else 0

    @property
    def rtmps_port(self) -> int:
        """The RTMPS port bound; 0 without a certificate or an RTMP listener."""
        return self.rtmp.tls_port if self.roles.rtmp else 0

    @property
    def http_port(self) -> int:
        assert self._runner is not None
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        raise RuntimeError("HTTP server is not listening")

    async def close(self) -> None:
        """Stop accepting, end every stream (viewers told and closed), stop the listeners."""
        self._ready = False
        if self._live_task is not None:
            self._live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live_task
        await self.heartbeat.close()
        if self.puller is not None:
            await self.puller.close()
        self.hub.close("server shutting down")
        if self.claims is not None:
            await self.claims.close()
        await self.rtmp.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_task
        # After the listeners (their on_unpublish/on_stop events are queued), before the
        # database (delivery outcomes are recorded there).
        await self.webhooks.close()
        if self.worker is not None:
            await self.worker.close()
        for task in list(self._background):
            if task.get_name() == "upload expiry":
                task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.shutdown_timeout)
        if self.vod_media is not None:
            await self.vod_media.close()
        await self.storage.close()
        await self.cache.close()
        await self.db.close()
        if self.metrics is not None:
            await self.metrics.close()
        await asyncio.sleep(0)
