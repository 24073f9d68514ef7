"""The wire format of a webhook delivery: the JSON envelope, its headers and its signature.

Pure functions, no I/O; the clock comes in as an argument.

A delivery is a POST whose body is the JSON envelope
`{"event": NAME, "id": EVENT_ID, "time": ISO8601, "data": {...}}` with these headers:

- `Ripplecast-Event`: the event name (also in the body);
- `Ripplecast-Delivery`: the event id (also in the body). It is random, and the same on every
  retry and for every endpoint, so a receiver can drop duplicates;
- `Ripplecast-Signature`: `t=TIMESTAMP,v1=HEX`, where HEX is the HMAC-SHA256 of
  `b"TIMESTAMP." + body` under the endpoint's secret (Stripe's scheme). The timestamp is the
  send time (each retry is signed again), so a receiver rejects replays older than a few minutes
  with `verify(..., now=..., tolerance=...)`.

A receiver may get several `v1=` entries in one header (a future secret rotation); `verify`
accepts the header when any of them matches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

SIGNATURE_HEADER = "Ripplecast-Signature"
EVENT_HEADER = "Ripplecast-Event"
DELIVERY_HEADER = "Ripplecast-Delivery"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_SIGNATURE_HEADER_LENGTH = 4096
"""A longer header is refused before any parsing or hashing."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Ripplecast-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},{SIGNATURE_VERSION}={_mac(secret, timestamp, body)}"


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True if `header` is a valid signature of `body` by `secret`, made within `tolerance`
    seconds of `now` (either way). Never raises: a malformed header is simply not valid.

    The comparison is constant-time in the signature's contents.
    """
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == SIGNATURE_VERSION:
            candidates.append(value)
        # Other keys (future schemes) are ignored, as Stripe's receivers do.
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body).encode()
    valid = False
    for candidate in candidates:
        # Not short-circuited, so the time taken does not tell which candidate matched.
        valid |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    return valid


def new_event_id() -> str:
    """A random event id (`evt_` and 24 hex digits)."""
    return "evt_" + secrets.token_hex(12)


def iso_time(timestamp: float) -> str:
    """`timestamp` (Unix seconds) as ISO 8601 UTC with milliseconds, e.g. `...T12:00:00.000Z`."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_envelope(
    event: str, event_id: str, timestamp: float, data: Mapping[str, object]
) -> bytes:
    """The JSON body of a delivery. Raises `TypeError`/`ValueError` if `data` is not plain JSON
    (NaN and infinities included)."""
    envelope = {"event": event, "id": event_id, "time": iso_time(timestamp), "data": dict(data)}
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()


def request_headers(
    secret: bytes, *, event: str, event_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of one delivery attempt (signed at `timestamp`)."""
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        DELIVERY_HEADER: event_id,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
