"""Tokens one node of a cluster shows another: an edge pulling a live stream from its origin.

A token grants one resource (`/live/NAME`) until a time, signed with the cluster secret that
every node shares: `EXPIRES.MAC`, where MAC is the hex HMAC-SHA256 of "pull", the resource and
EXPIRES. It travels in the `X-Ripplecast-Cluster` header, never in a URL (so it never lands in
an access log), and is short-lived: a stolen one is worth one stream for a minute.
"""

from __future__ import annotations

import hashlib
import hmac

from ripplecast.errors import RipplecastError

HEADER = "X-Ripplecast-Cluster"
"""The HTTP request header that carries a cluster token."""
MAX_TOKEN_LENGTH = 128
"""Longer values are refused before any work."""


class ClusterTokenError(RipplecastError):
    """A cluster token that does not grant the resource; `reason` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _mac(secret: bytes, resource: str, expires_at: int) -> str:
    message = f"pull\n{resource}\n{expires_at}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def pull_token(secret: bytes, resource: str, *, expires_at: int) -> str:
    """A token granting `resource` (e.g. `/live/NAME`) until Unix time `expires_at`."""
    return f"{expires_at}.{_mac(secret, resource, expires_at)}"


def verify_pull_token(secret: bytes, resource: str, token: str, *, now: float) -> None:
    """Return if `token` grants `resource` at time `now`; raise `ClusterTokenError` if not."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ClusterTokenError("malformed", "cluster token too long")
    expires, _, mac = token.partition(".")
    if not expires.isdigit() or len(mac) != 64:
        raise ClusterTokenError("malformed", "cluster token is not EXPIRES.MAC")
    expires_at = int(expires)
    if not hmac.compare_digest(mac, _mac(secret, resource, expires_at)):
        raise ClusterTokenError("bad_signature", "cluster token signature does not match")
    if expires_at < now:
        raise ClusterTokenError("expired", "cluster token expired")
