"""The error of the local cluster tooling (`ripplecast cluster ...`)."""

from __future__ import annotations

from ripplecast.errors import RipplecastError

__all__ = ["DevClusterError"]


class DevClusterError(RipplecastError):
    """A local cluster could not be started, found or stopped; the message says why and what
    to do (the CLI prints it as it is)."""
