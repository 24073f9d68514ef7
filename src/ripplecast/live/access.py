"""Who may publish which stream: the small interface the protocol adapters ask.

This issue's policy is settings-based (stream keys mapped to names, or an open mode for
development); the accounts issue replaces it with the one `authorize()` policy backed by the
database. Adapters only see `PublishAuthorizer`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Protocol


class PublishAuthorizer(Protocol):
    """Maps what a publisher typed as its stream key to the stream it may publish."""

    def stream_for_key(self, key: str) -> str | None:
        """Return the stream name for `key`, or None if the key gives no right to publish."""


class StaticStreamKeys:
    """Stream keys from settings: each key publishes exactly one stream name."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def stream_for_key(self, key: str) -> str | None:
        found: str | None = None
        for candidate, name in self._keys.items():
            # Compare every key in constant time so timing does not reveal a prefix.
            if hmac.compare_digest(candidate.encode(), key.encode()):
                found = name
        return found


class OpenPublishing:
    """Development mode: whatever name is published to is the stream name."""

    def stream_for_key(self, key: str) -> str | None:
        return key
