"""Socket options for viewer connections (shared by the RTMP and HTTP adapters)."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def limit_send_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    """Set SO_SNDBUF of the transport's socket to `size` bytes (0 leaves the OS default)."""
    if size <= 0:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
