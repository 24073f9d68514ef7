"""Errors of the metadata database package.

`DatabaseError` is the package's base; `DatabaseURLError` means the configured URL names an
engine or driver Ripplecast does not support (an operator's mistake, reported at start).
Errors raised by the database itself (IntegrityError and friends) are SQLAlchemy's own and are
left to the callers that know what a duplicate name means for them.
"""

from __future__ import annotations

from ripplecast.errors import RipplecastError


class DatabaseError(RipplecastError):
    """Root of the errors this package raises on purpose."""


class DatabaseURLError(DatabaseError, ValueError):
    """The database URL names an unsupported engine or driver, or is malformed."""
