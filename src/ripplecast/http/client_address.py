"""The client's address behind a load balancer: requests from `trusted_proxies` carry it in
X-Forwarded-For, and every handler (logs, login rate limits, IP-bound signed URLs, HLS viewer
counts) sees it as `request.remote`. A balancer that terminates TLS says so with
`X-Forwarded-Proto: https`, and handlers see `request.secure` (cookies get the Secure
attribute). Without trusted proxies nothing changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ripplecast.protocols.proxy_header import TrustedProxies

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_address_middleware(proxies: TrustedProxies) -> Middleware:
    """A middleware giving handlers the client's address as `request.remote`."""

    @web.middleware
    async def client_address(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        # A proxy may add its own header line after the client's (HAProxy does): read them all,
        # in order, as one list.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        client = proxies.client(peer, forwarded)
        if client != peer:
            request = request.clone(remote=client)
        if (
            not request.secure
            and request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
            and proxies.trusts(peer)
        ):
            request = request.clone(scheme="https")
        return await handler(request)

    return client_address
