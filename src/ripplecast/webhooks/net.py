"""Where webhooks may be sent, and the HTTP client that sends them.

Webhook URLs are chosen by users, so the server must not become their way into its own network
(server-side request forgery). Two checks, both needed:

- `check_url` refuses, before anything is sent: schemes other than http/https, URLs without a
  host, credentials in the URL, over-long URLs, and, unless private addresses are allowed,
  `localhost` and IP literals that are not globally routable (loopback, private, link-local
  such as the cloud metadata address 169.254.169.254, multicast, ...).
- `PublicAddressResolver` refuses, at connect time, host names that resolve only to such
  addresses, so a name cannot point at an internal address either (nor switch to one later:
  the check is made on the addresses actually connected to).

Redirects are never followed (see the dispatcher), so a public receiver cannot bounce a request
inside. URLs are logged only as `scheme://host:port` (`redact_url`): a path or query may hold a
receiver's token.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ripplecast.errors import RipplecastError

MAX_URL_LENGTH = 2048
"""The `webhooks.url` column's length."""
USER_AGENT = "Ripplecast-Webhooks/1"


class WebhookError(RipplecastError):
    """Base of the webhooks package's errors."""


class WebhookURLError(WebhookError, ValueError):
    """A webhook URL that may not be used (the message says why)."""


class BlockedAddress(OSError):
    """A host name that resolves only to addresses webhooks may not reach."""


def is_public_address(address: str) -> bool:
    """True if `address` (an IP literal) is globally routable unicast."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def check_url(url: str, *, allow_private: bool = False) -> str | None:
    """The reason `url` may not receive webhooks, or None if it may."""
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return "URL must be printable ASCII without spaces (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"malformed URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "scheme must be http or https"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed (the signature authenticates us)"
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            return "localhost is not allowed"
        if _is_ip_literal(host) and not is_public_address(host):
            return f"address {host} is not public"
    return None


def require_url(url: str, *, allow_private: bool = False) -> str:
    """`url` if `check_url` accepts it; raises `WebhookURLError` otherwise."""
    problem = check_url(url, allow_private=allow_private)
    if problem is not None:
        raise WebhookURLError(f"webhook URL {redact_url(url)}: {problem}")
    return url


def redact_url(url: str) -> str:
    """`scheme://host[:port]` of `url`, for logs (no user info, path or query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class PublicAddressResolver(AbstractResolver):
    """Resolves with `inner` and keeps only public addresses (raises `BlockedAddress` if none)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        public = [result for result in results if is_public_address(result["host"])]
        if not public:
            raise BlockedAddress(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def is_blocked(exc: BaseException) -> bool:
    """True if `exc` (from aiohttp) was caused by `PublicAddressResolver` refusing a host."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain is short; bound it anyway
        if seen is None:
            return False
        if isinstance(seen, BlockedAddress):
            return True
        if isinstance(seen, aiohttp.ClientConnectorError) and isinstance(
            seen.os_error, BlockedAddress
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def new_client_session(
    *,
    allow_private: bool = False,
    limit: int = 100,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """An HTTP client for webhooks: at most `limit` connections, no cookies, and (unless
    `allow_private`) only public addresses. Call inside a running event loop; close it."""
    if not allow_private:
        resolver = PublicAddressResolver(resolver)
    connector = aiohttp.TCPConnector(limit=limit, resolver=resolver)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
    )
