"""Signed URLs: a grant to read everything under one path prefix until a time, from one IP or any.

A signature is HMAC-SHA256 over the version, the path prefix, the expiry and the client IP, with
a key chosen by key id (so keys can rotate: sign with the newest, accept every listed key). It
is checked from the request alone, with no database round trip, so an edge can check it with
just the cluster's signing keys.

The grant travels as query parameters (`rc_pfx`, `rc_exp`, `rc_ip`, `rc_kid`, `rc_sig`). A
prefix covers itself, what lies below it (`PREFIX/...`) and its format variants (`PREFIX.flv`),
so one grant for `/live/show` opens `/live/show.flv`, `/live/show/index.m3u8` and every segment,
and RTMP play of `show`.

Pure functions: the clock comes in as `now`; nothing here logs, and no error message contains a
signature or a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from ripplecast.errors import RipplecastError

PARAMS = ("rc_pfx", "rc_exp", "rc_ip", "rc_kid", "rc_sig")
"""Query parameters that carry a grant (removed before a URL is used for anything else)."""

_VERSION = "v1"
_MAX_PREFIX = 512


class SignatureError(RipplecastError):
    """A signed URL was absent, malformed, forged, expired or used out of its scope.

    `reason` is a short stable token for counters: missing, malformed, unknown_key,
    bad_signature, expired, wrong_ip, wrong_path.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid signature allows."""

    prefix: str
    """Path prefix covered (see module docstring)."""
    expires_at: int
    """Unix time (seconds) after which the grant is void."""
    ip: str
    """Client IP the grant is bound to, or '' for any."""
    key_id: str
    """Which signing key made it."""

    def covers(self, path: str) -> bool:
        """True if `path` lies within this grant's prefix."""
        return covers(self.prefix, path)


def covers(prefix: str, path: str) -> bool:
    """True if `path` is `prefix`, below it, or a format variant of it (`prefix.flv`)."""
    if path == prefix:
        return True
    base = prefix.rstrip("/")
    if path.startswith(base + "/"):
        return True
    return (
        not prefix.endswith("/")
        and path.startswith(prefix + ".")
        and "/" not in path[len(prefix) :]
    )


def _check_prefix(prefix: str) -> None:
    if (
        not prefix.startswith("/")
        or len(prefix) > _MAX_PREFIX
        or ".." in prefix
        or "//" in prefix
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in prefix)
    ):
        raise SignatureError("malformed", "signed URL prefix is not a clean absolute path")


def _mac(key: bytes, prefix: str, expires_at: int, ip: str) -> str:
    message = f"{_VERSION}\n{prefix}\n{expires_at}\n{ip}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(
    prefix: str, *, expires_at: int, key_id: str, keys: Mapping[str, bytes], ip: str = ""
) -> dict[str, str]:
    """Return the query parameters granting `prefix` until `expires_at` (for `ip`, or any).

    Raises `KeyError` if `key_id` is not among `keys` (our misuse) and `SignatureError` for a
    prefix that is not a clean absolute path.
    """
    _check_prefix(prefix)
    params = {"rc_pfx": prefix, "rc_exp": str(int(expires_at))}
    if ip:
        params["rc_ip"] = ip
    params["rc_kid"] = key_id
    params["rc_sig"] = _mac(keys[key_id], prefix, int(expires_at), ip)
    return params


def signed_query(
    prefix: str, *, expires_at: int, key_id: str, keys: Mapping[str, bytes], ip: str = ""
) -> str:
    """`sign(...)` rendered as a query string (without the leading '?')."""
    return urlencode(sign(prefix, expires_at=expires_at, key_id=key_id, keys=keys, ip=ip))


def verify(
    query: Mapping[str, str],
    *,
    path: str,
    client_ip: str,
    now: float,
    keys: Mapping[str, bytes],
) -> Grant:
    """Return the grant carried by `query` if it is authentic and allows `path` now.

    Raises `SignatureError` naming the reason otherwise; checks the signature before anything
    the signature protects, and compares in constant time.
    """
    if "rc_sig" not in query:
        raise SignatureError("missing", "no signature")
    try:
        prefix = query["rc_pfx"]
        expires_at = int(query["rc_exp"])
        key_id = query["rc_kid"]
        signature = query["rc_sig"]
    except (KeyError, ValueError):
        raise SignatureError("malformed", "incomplete or malformed signed URL") from None
    ip = query.get("rc_ip", "")
    _check_prefix(prefix)
    key = keys.get(key_id)
    if key is None:
        raise SignatureError("unknown_key", "signed with an unknown or retired key")
    expected = _mac(key, prefix, expires_at, ip)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("bad_signature", "signature does not match")
    if now > expires_at:
        raise SignatureError("expired", "signed URL has expired")
    if ip and ip != client_ip:
        raise SignatureError("wrong_ip", "signed URL is bound to another client address")
    if not covers(prefix, path):
        raise SignatureError("wrong_path", "signed URL does not cover this path")
    return Grant(prefix=prefix, expires_at=expires_at, ip=ip, key_id=key_id)
