"""Validation of stream names, the one place that decides what a name may be.

A name appears in URLs (`/live/NAME.flv`), HLS segment paths and logs, so it must be short,
printable and unable to climb out of a path: no `/`, no `..`, no control characters.
"""

from __future__ import annotations

import re

from ripplecast.errors import ProtocolError

_ALLOWED = re.compile(r"^[A-Za-z0-9_.-]+$")


class InvalidStreamName(ProtocolError):
    """A publish or play request named a stream that cannot exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="bad_name")


def printable(name: str, limit: int = 64) -> str:
    """Return `name` safe for a log line: non-printable characters escaped, length capped."""
    shown = name[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(name) > limit else "")


def validate_stream_name(name: str, *, max_length: int) -> str:
    """Return `name` unchanged if it is a valid stream name; raise `InvalidStreamName` if not."""
    if not name:
        raise InvalidStreamName("empty stream name")
    if len(name) > max_length:
        raise InvalidStreamName(f"stream name longer than {max_length} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidStreamName(f"control character in stream name {printable(name)!r}")
    if "/" in name or "\\" in name:
        raise InvalidStreamName(f"slash in stream name {printable(name)!r}")
    if ".." in name or name.startswith("."):
        raise InvalidStreamName(f"dot-dot or leading dot in stream name {printable(name)!r}")
    if not _ALLOWED.match(name):
        raise InvalidStreamName(
            f"stream name {printable(name)!r} has characters other than A-Z a-z 0-9 _ . -"
        )
    return name
