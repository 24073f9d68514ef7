"""`S3Storage`: media objects in a bucket of any S3-compatible store, through aiobotocore.

It owns one aiobotocore client (and its aiohttp connection pool), created by `start` and closed
by `close`.

Invariants:

- The object at key K is s3://BUCKET/PREFIX/K; nothing outside the prefix is read, listed or
  deleted.
- Uploads from `put_file` and `put_stream` switch to a multipart upload once the object reaches
  `multipart_threshold` bytes; memory stays below max(threshold, part size) plus one chunk.
  A multipart upload that fails or is cancelled is aborted, so no orphan parts are billed.
- Every request is retried by botocore's "standard" mode up to `max_attempts` attempts.
- No botocore or aiohttp exception escapes: a missing object (NoSuchKey, 404) raises
  `ObjectNotFound`, anything else `StorageError` naming the operation, the key and the bucket.
- Checksums are computed only where S3 requires them, so stores that predate the 2025 default
  integrity headers (MinIO, Ceph, moto) work; an explicit endpoint uses path-style addressing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from ripplecast.errors import UsageError
from ripplecast.storage._files import (
    discard,
    fsync_dir,
    open_new,
    run_blocking,
    sibling_temp_path,
    write_all,
)
from ripplecast.storage._parts import file_parts, source_errors, stream_parts
from ripplecast.storage.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_key,
    check_prefix,
    check_range,
    content_type_for,
)

__all__ = [
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "S3Storage",
]

log = logging.getLogger("ripplecast.storage.s3")

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest part (except the last) of a multipart upload."""
MAX_PARTS = 10_000
"""S3's most parts in one multipart upload."""
MAX_PAGE_SIZE = 1000
"""S3's most keys per listing page and per delete_objects request."""
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
"""Longest lifetime of a SigV4 presigned URL."""
DEFAULT_MULTIPART_THRESHOLD = 16 * 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
_DOWNLOAD_WRITE_BYTES = 1024 * 1024

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket", "NotFound", "404"})


class _RangeNotSatisfiable(StorageError):
    """The read range starts at or past the end of the object (HTTP 416)."""


class S3Storage:
    """A `Storage` keeping each object in an S3 bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        list_page_size: int = MAX_PAGE_SIZE,
        delete_batch_size: int = MAX_PAGE_SIZE,
        create_bucket: bool = True,
        addressing_style: str | None = None,
    ) -> None:
        """Nothing connects before `start`. Empty credentials mean botocore's usual chain
        (environment, config files, instance role). `create_bucket`: `start` creates a missing
        bucket (turn off where the credentials may not). `addressing_style` defaults to "path"
        with an `endpoint_url` (MinIO, Ceph, test servers) and "auto" for AWS."""
        if not bucket:
            raise UsageError("S3 storage needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise UsageError(f"S3 part size must be >= {MIN_PART_SIZE} bytes, got {part_size}")
        if multipart_threshold < 1:
            raise UsageError(f"multipart threshold must be >= 1, got {multipart_threshold}")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be >= 1, got {max_attempts}")
        for name, value in (
            ("list_page_size", list_page_size),
            ("delete_batch_size", delete_batch_size),
        ):
            if not 1 <= value <= MAX_PAGE_SIZE:
                raise UsageError(f"{name} must be within 1..{MAX_PAGE_SIZE}, got {value}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidKey as exc:
                raise UsageError(f"invalid S3 key prefix {prefix!r}: {exc}") from None
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint_url = endpoint_url or None
        self._region = region
        self._access_key_id = access_key_id or None
        self._secret_access_key = secret_access_key or None
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._list_page_size = list_page_size
        self._delete_batch_size = delete_batch_size
        self._create_bucket = create_bucket
        self._config = AioConfig(
            region_name=region,
            # botocore's "max_attempts" counts retries after the first try; the setting counts
            # every attempt, which is botocore's "total_max_attempts".
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._exit_stack: contextlib.AsyncExitStack | None = None

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint, or None for AWS."""
        return self._endpoint_url

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket ('' or ending with '/')."""
        return self._prefix

    def __repr__(self) -> str:
        where = self._endpoint_url or f"AWS {self._region}"
        return f"S3Storage('s3://{self._bucket}/{self._prefix}' at {where})"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the client and, unless turned off, the bucket if it does not exist."""
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    config=self._config,
                )
            )
        except (BotoCoreError, ValueError) as exc:
            await stack.aclose()
            raise StorageError(f"cannot create the S3 client for {self!r}: {exc}") from exc
        self._exit_stack = stack
        if self._create_bucket:
            try:
                await self._ensure_bucket()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        stack, self._exit_stack, self._client = self._exit_stack, None, None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> None:
        await self._call("head_bucket", "", Bucket=self._bucket)

    async def _ensure_bucket(self) -> None:
        try:
            await self._call("head_bucket", "", Bucket=self._bucket)
            return
        except StorageError as exc:
            if _error_code(exc.__cause__) not in _NO_BUCKET_CODES:
                raise
        params: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self._call("create_bucket", "", **params)
            log.info("created bucket %s", self._bucket)
        except StorageError as exc:
            # Another node may have created it first.
            if _error_code(exc.__cause__) != "BucketAlreadyOwnedByYou":
                raise

    # -- writing --------------------------------------------------------------------------

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        await self._call(
            "put_object",
            key,
            Bucket=self._bucket,
            Key=self._prefix + key,
            Body=data,
            ContentType=content_type or content_type_for(key),
        )
        return await self.stat(key)

    async def put_file(
        self, key: str, path: Path, *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        with source_errors(key, path):
            size = (await run_blocking(os.stat, path)).st_size
        if size < self._multipart_threshold:
            # Below the threshold the whole file fits the memory budget: one plain PUT.
            with source_errors(key, path):
                data = await run_blocking(path.read_bytes)
            return await self.put_bytes(key, data, content_type=content_type)
        # Larger parts for huge files, so that the upload stays within S3's part count.
        part_size = max(self._part_size, math.ceil(size / MAX_PARTS))
        async with contextlib.aclosing(file_parts(key, path, part_size)) as parts:
            await self._upload_parts(key, content_type, parts)
        return await self.stat(key)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str | None = None
    ) -> ObjectInfo:
        check_key(key)
        source = aiter(chunks)
        head = bytearray()
        while len(head) < self._multipart_threshold:
            try:
                head += await anext(source)
            except StopAsyncIteration:
                return await self.put_bytes(key, bytes(head), content_type=content_type)
        async with contextlib.aclosing(stream_parts(head, source, self._part_size)) as parts:
            await self._upload_parts(key, content_type, parts)
        return await self.stat(key)

    async def _upload_parts(
        self, key: str, content_type: str | None, parts: AsyncIterator[bytes]
    ) -> None:
        """One multipart upload of `parts` (each but the last >= 5 MiB); aborted on failure."""
        full_key = self._prefix + key
        created = await self._call(
            "create_multipart_upload",
            key,
            Bucket=self._bucket,
            Key=full_key,
            ContentType=content_type or content_type_for(key),
        )
        upload_id = str(created["UploadId"])
        try:
            uploaded: list[dict[str, Any]] = []
            async for part in parts:
                number = len(uploaded) + 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"cannot store {key!r}: more than {MAX_PARTS} parts of"
                        f" {self._part_size} bytes (raise the S3 part size)"
                    )
                response = await self._call(
                    "upload_part",
                    key,
                    Bucket=self._bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                )
                uploaded.append({"ETag": response["ETag"], "PartNumber": number})
            await self._call(
                "complete_multipart_upload",
                key,
                Bucket=self._bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": uploaded},
            )
        except BaseException:
            # Shielded: a second cancellation must not leave the parts behind.
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._call(
                "abort_multipart_upload",
                key,
                Bucket=self._bucket,
                Key=self._prefix + key,
                UploadId=upload_id,
            )
        except StorageError as exc:
            log.warning("multipart upload %s of %r left behind: %s", upload_id, key, exc)

    # -- reading --------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        response = await self._call("head_object", key, Bucket=self._bucket, Key=self._prefix + key)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]),
            modified=_utc(response["LastModified"]),
            content_type=str(response.get("ContentType") or content_type_for(key)),
        )

    def read(
        self,
        key: str,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        check_key(key)
        check_range(start, stop, chunk_size)
        return self._read(key, start, stop, chunk_size)

    async def _read(
        self, key: str, start: int, stop: int | None, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        if stop == start:
            await self.stat(key)  # an empty range of a missing object is still missing
            return
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": self._prefix + key}
        if start or stop is not None:
            params["Range"] = f"bytes={start}-{'' if stop is None else stop - 1}"
        try:
            response = await self._call("get_object", key, **params)
        except _RangeNotSatisfiable:
            return  # the object exists and ends before `start`: nothing to give
        async with response["Body"] as body:
            while True:
                with self._errors("get_object", key):
                    chunk = cast(bytes, await body.read(chunk_size))
                if not chunk:
                    break
                yield chunk

    async def read_bytes(self, key: str) -> bytes:
        check_key(key)
        response = await self._call("get_object", key, Bucket=self._bucket, Key=self._prefix + key)
        async with response["Body"] as body:
            with self._errors("get_object", key):
                return cast(bytes, await body.read())

    async def download(self, key: str, path: Path) -> None:
        check_key(key)
        response = await self._call("get_object", key, Bucket=self._bucket, Key=self._prefix + key)
        temp = sibling_temp_path(path)
        async with response["Body"] as body:
            with _destination_errors(key, path):
                fd = await run_blocking(open_new, temp)
            try:
                pending = bytearray()
                while True:
                    with self._errors("get_object", key):
                        chunk = cast(bytes, await body.read(_DOWNLOAD_WRITE_BYTES))
                    if chunk:
                        pending += chunk
                    if pending and (not chunk or len(pending) >= _DOWNLOAD_WRITE_BYTES):
                        with _destination_errors(key, path):
                            await run_blocking(write_all, fd, pending)
                        pending.clear()
                    if not chunk:
                        break
                with _destination_errors(key, path):
                    await run_blocking(os.fsync, fd)
                    closing, fd = fd, -1
                    await run_blocking(os.close, closing)
                    await run_blocking(os.replace, temp, path)
                    await run_blocking(fsync_dir, path.parent)
            finally:
                if fd != -1:
                    os.close(fd)
                await run_blocking(discard, temp)

    # -- deleting and listing -------------------------------------------------------------

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._call("delete_object", key, Bucket=self._bucket, Key=self._prefix + key)

    async def delete_prefix(self, prefix: str) -> int:
        if check_prefix(prefix) == "":
            raise InvalidKey("refusing to delete every object: delete_prefix needs a prefix")
        # Listed in full first: deleting while paginating would move the pages under us.
        keys = [info.key for info in await self.list(prefix)]
        deleted = 0
        for first in range(0, len(keys), self._delete_batch_size):
            batch = keys[first : first + self._delete_batch_size]
            response = await self._call(
                "delete_objects",
                prefix,
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._prefix + k} for k in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first_error = errors[0]
                raise StorageError(
                    f"S3 delete_objects under {prefix!r} in bucket {self._bucket!r} failed for"
                    f" {len(errors)} of {len(batch)} objects, first {first_error.get('Key')!r}:"
                    f" {first_error.get('Code')} {first_error.get('Message')}"
                )
            deleted += len(batch)
        return deleted

    async def list(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        objects: list[ObjectInfo] = []
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": self._prefix + prefix,
            "MaxKeys": self._list_page_size,
        }
        seen_tokens: set[str] = set()
        while True:
            page = await self._call("list_objects_v2", prefix, **params)
            for item in page.get("Contents") or []:
                key = str(item["Key"])[len(self._prefix) :]
                objects.append(
                    ObjectInfo(
                        key=key,
                        size=int(item["Size"]),
                        etag=str(item["ETag"]),
                        modified=_utc(item["LastModified"]),
                        content_type=content_type_for(key),
                    )
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            if token in seen_tokens:  # a server repeating itself would loop for ever
                raise StorageError(f"S3 list_objects_v2 under {prefix!r} repeated a page token")
            seen_tokens.add(token)
            params["ContinuationToken"] = token
        objects.sort(key=lambda o: o.key)
        return objects

    # -- what only S3 has -----------------------------------------------------------------

    async def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A presigned GET URL of `key`, valid for `expires_seconds` (1 s .. 7 days)."""
        check_key(key)
        if not 1 <= expires_seconds <= MAX_PRESIGNED_SECONDS:
            raise UsageError(
                f"presigned URL lifetime must be 1..{MAX_PRESIGNED_SECONDS} s,"
                f" got {expires_seconds}"
            )
        client = self._require_client()
        with self._errors("generate_presigned_url", key):
            url = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._prefix + key},
                ExpiresIn=expires_seconds,
            )
        return str(url)

    def local_path(self, key: str) -> Path | None:
        """None: the bytes are not on this machine."""
        check_key(key)
        return None

    # -- internals ------------------------------------------------------------------------

    def _require_client(self) -> Any:
        if self._client is None:
            raise UsageError(f"{self!r} used before start() or after close()")
        return self._client

    async def _call(self, operation: str, key: str, **params: Any) -> dict[str, Any]:
        """Run one client operation, translating its errors (see `_errors`)."""
        method = getattr(self._require_client(), operation)
        with self._errors(operation, key):
            return cast(dict[str, Any], await method(**params))

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        """Turn botocore/aiohttp failures into `ObjectNotFound` or `StorageError`."""
        try:
            yield
        except ClientError as exc:
            code = _error_code(exc)
            if key and operation.endswith("_object") and code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            message = self._describe(operation, key, str(exc))
            if code == "InvalidRange":
                raise _RangeNotSatisfiable(message) from exc
            raise StorageError(message) from exc
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StorageError(self._describe(operation, key, str(exc) or repr(exc))) from exc

    def _describe(self, operation: str, key: str, cause: str) -> str:
        where = f"s3://{self._bucket}/{self._prefix}{key}"
        return f"S3 {operation} of {where} failed: {cause}"


def _error_code(exc: BaseException | None) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _utc(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise StorageError(f"S3 answered a timestamp that is not a date: {value!r}")
    return value.astimezone(UTC)


@contextlib.contextmanager
def _destination_errors(key: str, path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot download {key!r} to {str(path)!r}: {exc}") from exc
