"""Backups of a whole Ripplecast system, and restores into an empty one.

- `service`: `create_backup` (a consistent snapshot of a running system into a new folder)
  and `restore_backup` (into an empty system, after checking everything first).
- `manifest`: the backup folder's layout and its manifest.json (checksums, versions, the
  secret's fingerprint).
- `databases`: the database dump and restore per engine (SQLite's online backup API,
  pg_dump/pg_restore, mariadb-dump/mariadb).
- `objects`: media objects through the `Storage` protocol, streamed and hashed.

The package sits beside `devcluster`, under `cli`: it runs database programs and may import
`db` and `storage`, never `app` (the command hands it the settings-derived `System`).
"""

from __future__ import annotations

from ripplecast.backup.errors import (
    BackupDamaged,
    BackupError,
    DatabaseToolError,
    SecretMismatch,
    TargetNotEmpty,
)
from ripplecast.backup.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    DatabaseKind,
    Manifest,
    SecretSource,
    read_manifest,
    secret_fingerprint,
)
from ripplecast.backup.objects import DEFAULT_PARALLEL
from ripplecast.backup.service import SecretPlace, System, create_backup, restore_backup

__all__ = [
    "DEFAULT_PARALLEL",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "BackupDamaged",
    "BackupError",
    "DatabaseKind",
    "DatabaseToolError",
    "Manifest",
    "SecretMismatch",
    "SecretPlace",
    "SecretSource",
    "System",
    "TargetNotEmpty",
    "create_backup",
    "read_manifest",
    "restore_backup",
    "secret_fingerprint",
]
