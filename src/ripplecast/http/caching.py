"""HTTP caching of media responses: who may keep a response, for how long, how it is revalidated.

The live and VOD routes take their Cache-Control, Vary and validators from here, so they agree
with each other and with docs/cdn.md. A shared cache (a CDN, nginx) keys a response on its URL,
query string included, never on a cookie; the rule that keeps private media private follows:

- A response that needed no credential is `public`.
- A response the policy allowed for a session or an API token (the decision names a principal)
  is `private`, with `Vary: Cookie, Authorization` for the browser's own cache: a shared cache
  would hand it to anyone asking for the same URL.
- A response allowed by a signed URL is `public` for no longer than the grant lasts: the grant
  is in the query string, which is part of the cache key, so a shared cache serves its copy only
  to a request carrying the same grant, and its freshness ends by the grant's expiry. A grant
  bound to a client address (`rc_ip`) is `private`: a cache cannot check the address.
- Errors are `no-store`: a refusal, an unknown stream or a segment not made yet must not be
  replayed to the next viewer.

Pure functions: the clock comes in as `now`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ripplecast.accounts.policy import Decision

NO_STORE = "no-store"
"""Cache-Control of responses nobody may keep: errors, HTTP-FLV, redirects chosen per request."""

PRIVATE_VARY = "Cookie, Authorization"
"""Vary of responses allowed for a session or an API token."""


def grant_seconds_left(signed: Mapping[str, str], *, now: float) -> int:
    """Whole seconds before the signed grant in `signed` expires (0 if expired or unreadable)."""
    try:
        expires_at = int(signed["rc_exp"])
    except (KeyError, ValueError):
        return 0
    return max(int(expires_at - now), 0)


def media_cache_headers(
    decision: Decision,
    signed: Mapping[str, str],
    *,
    now: float,
    max_age: int,
    private_max_age: int | None = None,
    shared_max_age: int | None = None,
    immutable: bool = False,
) -> dict[str, str]:
    """Cache-Control (and Vary) for a media response the access policy allowed.

    `max_age` is how long the response stays fresh for anyone; `private_max_age` (default
    `max_age`) when only the viewer's browser may keep it; `shared_max_age` (s-maxage) bounds a
    shared cache more tightly than a browser; `immutable` tells browsers not to revalidate a
    fresh copy. `signed` are the request's `rc_*` parameters, already verified by the policy.
    """
    own_max_age = max_age if private_max_age is None else private_max_age
    if decision.principal is not None:
        return {"Cache-Control": f"private, max-age={own_max_age}", "Vary": PRIVATE_VARY}
    left: int | None = None
    if signed:
        left = grant_seconds_left(signed, now=now)
        if left < 1:
            return {"Cache-Control": NO_STORE}
        if signed.get("rc_ip"):
            return {"Cache-Control": f"private, max-age={min(own_max_age, left)}"}
    parts = ["public", f"max-age={max_age if left is None else min(max_age, left)}"]
    if shared_max_age is not None:
        parts.append(f"s-maxage={shared_max_age if left is None else min(shared_max_age, left)}")
    if immutable:
        parts.append("immutable")
    return {"Cache-Control": ", ".join(parts)}


def etag_matches(if_none_match: str, etag: str) -> bool:
    """True if an If-None-Match header value matches `etag` (RFC 9110 13.1.2: `*`, or any
    listed tag by weak comparison, which ignores a `W/` prefix)."""
    value = if_none_match.strip()
    if value == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in value.split(","))


def live_playlist_max_age(segment_seconds: float) -> int:
    """Seconds a live media playlist stays fresh: half the target segment duration, at least 1.

    A cache then serves a playlist at most half a segment old (a viewer is never a whole segment
    behind), and revalidates it about twice per segment, usually getting a 304.
    """
    return max(1, math.floor(segment_seconds / 2))


def live_segment_max_age(segment_seconds: float, kept_segments: int) -> int:
    """Seconds a live segment stays fresh: about as long as the origin keeps it fetchable (it is
    listed for the window, then kept a few segments more), so a cache holds it exactly while
    players may ask for it, and not long after the stream has ended."""
    return max(1, math.ceil(segment_seconds * kept_segments))
