"""Media-object storage: one interface, a local-folder and an S3 implementation.

This package owns the `Storage` protocol and its key rules (`ripplecast.storage.base`),
`LocalStorage` (single-box default), `S3Storage` (cluster) and `open_storage`, which picks one
from the settings. Components receive a `Storage` in their constructor and never import an
implementation; only the composition root calls `open_storage`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ripplecast.config import Settings
from ripplecast.errors import UsageError
from ripplecast.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    check_key,
    check_prefix,
    content_type_for,
)
from ripplecast.storage.edge_cache import CachingStorage, open_edge_cache
from ripplecast.storage.local import LocalStorage
from ripplecast.storage.s3 import S3Storage

__all__ = [
    "CachingStorage",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "S3Storage",
    "Storage",
    "StorageError",
    "check_key",
    "check_prefix",
    "content_type_for",
    "open_edge_cache",
    "open_storage",
]

_BUCKET_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def open_storage(settings: Settings) -> Storage:
    """The storage named by `settings.storage_url` (not yet started).

    "" is the folder 'media' in the data dir; a path or file:///PATH a `LocalStorage` there;
    s3://BUCKET[/PREFIX] an `S3Storage` configured by the s3_* settings. Raises `UsageError`
    for any other URL.
    """
    url = settings.storage_url.strip()
    if not url:
        return LocalStorage(settings.data_dir / "media")
    if "://" not in url:
        return LocalStorage(Path(url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise UsageError(f"storage_url {url!r}: a file URL names a local folder, file:///PATH")
        return LocalStorage(Path(unquote(parts.path)))
    if scheme == "s3":
        if parts.query or parts.fragment or "@" in url:
            raise UsageError(
                f"storage_url {_redacted(url)!r}: use s3://BUCKET[/PREFIX]; credentials go in"
                " s3_access_key_id and s3_secret_access_key"
            )
        bucket = parts.netloc
        if not 3 <= len(bucket) <= 63 or not set(bucket) <= _BUCKET_NAME_CHARS:
            raise UsageError(
                f"storage_url {url!r}: {bucket!r} is no S3 bucket name"
                " (3-63 lowercase letters, digits, dots and hyphens)"
            )
        secret = settings.s3_secret_access_key
        try:
            return S3Storage(
                bucket,
                parts.path.strip("/"),
                endpoint_url=settings.s3_endpoint_url or None,
                region=settings.s3_region,
                access_key_id=settings.s3_access_key_id or None,
                secret_access_key=secret.get_secret_value() if secret is not None else None,
                multipart_threshold=settings.s3_multipart_threshold_bytes,
                part_size=settings.s3_multipart_part_bytes,
                max_attempts=settings.s3_max_attempts,
            )
        except UsageError as exc:
            raise UsageError(f"storage_url {_redacted(url)!r}: {exc}") from None
    raise UsageError(
        f"storage_url {_redacted(url)!r}: unsupported scheme {scheme!r}; use a folder path,"
        " file:///PATH or s3://BUCKET[/PREFIX]"
    )


def _redacted(url: str) -> str:
    """`url` without anything that looks like credentials (user:password@)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
