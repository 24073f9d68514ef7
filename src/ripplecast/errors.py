"""The one error root of Ripplecast and the two kinds of failure every package distinguishes.

`ProtocolError` means the peer misbehaved (malformed bytes, a limit exceeded): the connection
that sent it is closed with a precise reason and nothing else is affected. `UsageError` means
our own code misused an API: it is a bug, never the peer's fault.
"""

from __future__ import annotations


class RipplecastError(Exception):
    """Root of every error Ripplecast raises on purpose."""


class ProtocolError(RipplecastError):
    """The peer sent something malformed or over a limit; close that connection only.

    `reason` is a short stable token (for counters and logs), the message says what exactly.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class LimitExceeded(ProtocolError):
    """A named limit (a setting) was exceeded by the peer."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message, reason=f"limit:{limit}")
        self.limit = limit


class UsageError(RipplecastError):
    """Our own code called an API wrongly (a bug, not the peer's fault)."""
