"""The HTTPS listener: an aiohttp site whose TLS handshakes have a deadline.

aiohttp's `TCPSite` passes no handshake timeout to the event loop, which then lets a client that
opens a connection and never finishes its handshake hold it for 60 s; with many such clients
that is a cheap way to use up the server's sockets. `HttpsSite` is the same site with the
node's `tls_handshake_timeout`.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

__all__ = ["HttpsSite"]


class HttpsSite(web.BaseSite):
    """Serve `runner`'s application over TLS on `host`:`port` (0: any free port)."""

    __slots__ = ("_handshake_timeout", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"https://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
