"""Errors of backups and restores.

`BackupError` is the package's base. A restore refuses before it writes anything when the
backup is damaged (`BackupDamaged`), the target already holds data (`TargetNotEmpty`), the
configured secret is not the backup's (`SecretMismatch`) or a database program is missing or of
the wrong version (`DatabaseToolError`); the messages say exactly what was found.
"""

from __future__ import annotations

from ripplecast.errors import RipplecastError


class BackupError(RipplecastError):
    """Root of the errors this package raises on purpose."""


class BackupDamaged(BackupError):
    """The backup is incomplete, unreadable or does not match its manifest."""


class TargetNotEmpty(BackupError):
    """The system to restore into already holds data (the message lists it)."""


class SecretMismatch(BackupError):
    """The restored system's secret would not be the one the backup's stream keys need."""


class DatabaseToolError(BackupError):
    """pg_dump, pg_restore, mariadb-dump or the mariadb client is missing, of the wrong
    version, or failed (the message carries its own error output)."""
