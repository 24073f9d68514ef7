"""The composition root: wires one node (hub, RTMP server, HTTP server) from its settings.

`Node` is the only place that knows every component; each component gets exactly what it needs.
Start with `await node.start()`, stop with `await node.close()` (publishers and viewers are closed
cleanly, then the listeners).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from pathlib import Path

from aiohttp import web

from ripplecast.config import PublishMode, Settings
from ripplecast.http.app import create_app
from ripplecast.live.access import OpenPublishing, PublishAuthorizer, StaticStreamKeys
from ripplecast.live.hls import HlsPackager
from ripplecast.live.hub import Hub, ListenerFactory
from ripplecast.live.stream import LiveStream, PacketListener
from ripplecast.protocols.rtmp.server import RtmpServer

log = logging.getLogger("ripplecast")

KEYS_FILE = "stream-keys.json"
DEFAULT_STREAM = "main"


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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": {key: DEFAULT_STREAM}}, f)
    Path(tmp).replace(path)
    return {key: DEFAULT_STREAM}, key


class Node:
    """One running Ripplecast node on embedded defaults (role `all`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.new_stream_key: str | None = None
        self.hub = Hub(settings, listener_factories=self._listener_factories())
        self.authorizer: PublishAuthorizer
        if settings.publish_mode is PublishMode.OPEN:
            self.authorizer = OpenPublishing()
        else:
            keys, self.new_stream_key = load_or_create_stream_keys(settings)
            self.authorizer = StaticStreamKeys(keys)
        self.rtmp = RtmpServer(settings, self.hub, self.authorizer)
        self.http_app = create_app(settings, self.hub, ready=lambda: self._ready)
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
