"""S3 requests on s3fs's async client (aiobotocore), and the translation of their errors.

Every request is a coroutine on the s3fs instance's own event loop; the sync primitives run
them there (`S3Transport._run`), so a load's GETs go out concurrently, bounded by
``max_concurrency``. Errors become `StorageUnavailableError` (or `ProviderConfigError` for a bad
profile) naming the bucket and endpoint, never a credential.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from persistency.errors import PersistencyError, ProviderConfigError, StorageUnavailableError
from persistency.storage import StorageBackend

__all__ = ["S3Transport", "error_code"]

T = TypeVar("T")
_WRITER_META = "persistency-writer"
_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId", "UnrecognizedClientException",
    "AllAccessDisabled", "AccountProblem",
})


def error_code(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind ``exc`` (s3fs keeps botocore's error as the cause)."""
    for err in (exc, exc.__cause__, exc.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(response["Error"].get("Code", "")), int(status or 0)
    return "", 0


class S3Transport(StorageBackend):
    """The S3 requests of the provider (set up by `S3StorageProvider.__init__`)."""

    backend_name = "s3"
    _fs: Any
    _bucket: str
    _display: str
    _secrets: list[str]
    _concurrency: int

    def _scrub(self, text: str) -> str:
        for secret in (*self._secrets, os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "****")
        return text

    def _unavailable(self, exc: BaseException, what: str) -> StorageUnavailableError:
        code, status = error_code(exc)
        name = type(exc).__name__
        if code == "NoSuchBucket":
            reason = f"bucket {self._bucket!r} does not exist"
        elif code in _AUTH_CODES or status in (401, 403):
            reason = (f"access denied ({code or status}): check the AWS credentials (environment, profile, "
                      "instance role) and the bucket policy")
        elif name == "NoCredentialsError":
            reason = "no AWS credentials found (environment, ~/.aws profile, instance role); or pass anon=true"
        elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                      "ReadTimeoutError", "ProxyConnectionError", "ClientConnectorError", "TimeoutError"):
            reason = f"cannot reach the endpoint ({name})"
        elif code:
            reason = f"{code} (HTTP {status})"
        else:
            reason = f"{name}: {str(exc)[:200]}"
        return StorageUnavailableError(f"S3 {self._display}: {what}: {self._scrub(reason)}")

    def _s3(self, what: str, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an S3 coroutine on s3fs's loop, its errors translated (``what`` names the operation)."""
        from fsspec.asyn import sync

        try:
            return sync(self._fs.loop, func, *args)  # type: ignore[no-any-return]
        except PersistencyError:
            raise
        except Exception as exc:
            if type(exc).__name__ in ("ProfileNotFound", "PartialCredentialsError", "InvalidConfigError"):
                raise ProviderConfigError(f"S3 {self._display}: {self._scrub(str(exc))}") from exc
            raise self._unavailable(exc, what) from exc

    async def _aget(self, key: str, first: int | None = None) -> bytes | None:
        """The object's bytes (or its first ``first`` bytes); None if there is no such key."""
        extra = {"Range": f"bytes=0-{first - 1}"} if first else {}
        try:
            resp = await self._fs._call_s3("get_object", Bucket=self._bucket, Key=key, **extra)
        except Exception as exc:
            code, _ = error_code(exc)
            if code == "NoSuchKey":
                return None
            if code == "InvalidRange":  # a ranged read of an empty (packed) record
                return b""
            raise
        body = resp["Body"]
        try:
            return bytes(await body.read())
        finally:
            body.close()

    async def _aput(self, key: str, data: bytes, create: bool) -> str | None:
        """Store ``data``; with ``create`` only if the key is new. The ETag, or None when it existed."""
        extra: dict[str, Any] = {}
        if create:
            # A token per save, sent as object metadata: botocore retries the very same request, so a
            # retried PUT whose first attempt was stored (its reply lost) can recognise its own object.
            extra = {"IfNoneMatch": "*", "Metadata": {_WRITER_META: uuid.uuid4().hex}}
        try:
            resp = await self._fs._call_s3("put_object", Bucket=self._bucket, Key=key, Body=data, **extra)
        except Exception as exc:
            code, status = error_code(exc)
            # 412: the key exists. 409: another conditional write of the same key is in flight
            # (AWS tells the loser to retry, which could only end in 412): both are a lost race,
            # unless the object there is our own first attempt.
            if create and (code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)):
                return await self._aown_write(key, extra["Metadata"][_WRITER_META])
            raise
        return str(resp.get("ETag", ""))

    async def _aown_write(self, key: str, token: str) -> str | None:
        """After a refused create-only PUT: the object's ETag if this very save stored it, else None."""
        try:
            head = await self._fs._call_s3("head_object", Bucket=self._bucket, Key=key)
        except Exception:  # any failure to prove it ours leaves it a conflict
            return None
        if head.get("Metadata", {}).get(_WRITER_META) == token:
            return str(head.get("ETag", ""))
        return None

    async def _alist(self, prefix: str, delimiter: str = "") -> tuple[list[dict[str, Any]], list[str]]:
        """Every object under ``prefix`` (Key, Size, ETag), and the common prefixes for ``delimiter``."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            resp = await self._fs._call_s3("list_objects_v2", **kwargs)
            objects.extend(resp.get("Contents", []))
            prefixes.extend(p["Prefix"] for p in resp.get("CommonPrefixes", []))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return objects, prefixes
            kwargs["ContinuationToken"] = token

    async def _agather(self, coros: list[Awaitable[T]]) -> list[T]:
        sem = asyncio.Semaphore(self._concurrency)

        async def one(coro: Awaitable[T]) -> T:
            async with sem:
                return await coro

        return list(await asyncio.gather(*(one(c) for c in coros)))

    async def _aget_many(self, keys: list[str], first: int | None = None) -> list[bytes | None]:
        return await self._agather([self._aget(k, first) for k in keys])

    async def _adelete_keys(self, keys: list[str]) -> list[str]:
        """Delete ``keys`` (1,000 per request); the ones S3 refused, with its reason."""
        failed: list[str] = []
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            resp = await self._fs._call_s3("delete_objects", Bucket=self._bucket, Delete=batch)
            failed.extend(f"{e.get('Key')}: {e.get('Code')}" for e in resp.get("Errors", []))
        return failed
