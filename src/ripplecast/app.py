"""The composition root: wires one node (hub, RTMP server, HTTP server) from its settings.

`Node` is the only place that knows every component; each component gets exactly what it needs.
Start with `await node.start()`, stop with `await node.close()` (publishers and viewers are closed
cleanly, then the listeners).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path

from aiohttp import web

from ripplecast.accounts.policy import AccessPolicy
from ripplecast.accounts.static_directory import SettingsDirectory
from ripplecast.config import PublishMode, Settings
from ripplecast.http.app import create_app
from ripplecast.live.hls import HlsPackager
from ripplecast.live.hub import Hub, ListenerFactory
from ripplecast.live.stream import LiveStream, PacketListener
from ripplecast.protocols.rtmp.server import RtmpServer

log = logging.getLogger("ripplecast")

KEYS_FILE = "stream-keys.json"
SECRET_FILE = "secret.key"
DEFAULT_STREAM = "main"


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


def load_or_create_stream_keys(settings: Settings) -> tuple[dict[str, str], str | None]:
    """Return the stream keys to use and, if one was generated just now, that new key.

    Keys from settings win. Otherwise keys live in `DATA_DIR/stream-keys.json` (mode 0600);
    on first start one key for the stream `main` is generated there.
    """
    if settings.stream_keys:
        return dict(settings.stream_keys), None
    path = settings.data_dir / KEYS_FILE
    if path.exists():
        data = json.loads(path.read_text())
        keys = data.get("keys", {})
        if isinstance(keys, dict) and keys:
            return {str(k): str(v) for k, v in keys.items()}, None
    key = secrets.token_urlsafe(18)
    _write_private(path, json.dumps({"keys": {key: DEFAULT_STREAM}}))
    return {key: DEFAULT_STREAM}, key


class Node:
    """One running Ripplecast node on embedded defaults (role `all`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.new_stream_key: str | None = None
        self.hub = Hub(settings, listener_factories=self._listener_factories())
        self.secret = load_or_create_secret(settings)
        self.signing_keys, self.signing_key_id = signing_keys(settings, self.secret)
        open_publishing = settings.publish_mode is PublishMode.OPEN
        keys: dict[str, str] = {}
        if not open_publishing:
            keys, self.new_stream_key = load_or_create_stream_keys(settings)
        self.access = AccessPolicy(
            SettingsDirectory(keys, secret=self.secret),
            secret=self.secret,
            signing_keys=self.signing_keys,
            clock=time.time,
            open_publishing=open_publishing,
        )
        self.rtmp = RtmpServer(settings, self.hub, self.access.authorize)
        self.http_app = create_app(
            settings, self.hub, self.access.authorize, ready=lambda: self._ready
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ready = False

    def _listener_factories(self) -> list[ListenerFactory]:
        settings = self.settings
        factories: list[ListenerFactory] = []
        if settings.hls_enabled:

            def hls(stream: LiveStream) -> PacketListener:
                return HlsPackager(stream.name, settings)

            factories.append(hls)
        return factories

    async def start(self) -> None:
        """Open the RTMP and HTTP listeners."""
        await self.rtmp.start()
        self._runner = web.AppRunner(
            self.http_app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self.settings.shutdown_timeout,
        )
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self.settings.http_host, self.settings.http_port, reuse_address=True
        )
        await self._site.start()
        self._ready = True
        log.info("ripplecast listening: rtmp port %d, http port %d", self.rtmp_port, self.http_port)

    @property
    def rtmp_port(self) -> int:
        return self.rtmp.port

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
        self.hub.close("server shutting down")
        await self.rtmp.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.sleep(0)
