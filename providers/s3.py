"""Checkpoints in S3, or any S3-compatible store (MinIO, Ceph, R2, moto), through s3fs.

Layout under ``s3://BUCKET/PREFIX/``::

    SESSION/checkpoints/CHECKPOINT_ID.json   # one record per checkpoint (the shared codec's bytes),
                                             # or an empty object once a pack holds the record
    SESSION/packs/FIRST~LAST.pack.gz         # a segment of a chain: its records, whole, gzipped
    SESSION/packs/FIRST~LAST.index.gz        # the same segment's info lines only, for listing

Why this shape:

- A save is one ``PutObject`` with ``If-None-Match: *``: S3 stores it only if the key is new, so
  of two writers racing for one id exactly one wins and the other gets `CheckpointConflictError`
  (HTTP 412), never an overwrite. The record key stays forever (emptied, never deleted, once
  packed), so an id stays taken, and "latest" is simply the greatest id among the record keys.
- Packs keep reads cheap. Whenever a chain's step count crosses a multiple of ``pack_every``,
  the writer that won that checkpoint writes the chain segment since the previous crossing as one
  pack and one index (both create-only), and only then empties the records they hold. Loading a
  session costs one listing plus one GET per pack and per record not yet packed, all concurrent;
  listing reads the small indexes and the info line (a ranged GET) of unpacked records only.
- Packs merge in levels: the winner of the checkpoint that crosses every 16th boundary writes one
  pack for the whole segment since the previous such crossing and deletes the small packs it
  holds, so a session keeps a few dozen packs however long it grows.
- Bytes stored stay near the transcript's size: a packed record is stored once, gzipped; its
  per-step object is empty.

Crash safety and concurrent readers: a pack is complete before any record it holds is emptied, so
every acknowledged checkpoint is readable at every instant; a reader that finds an emptied record
looks the id up in the packs. A writer killed mid-compaction leaves some records both whole and
packed (a few extra bytes, never a loss). A compaction that fails is logged; the save it follows
has already succeeded.

Transient errors are retried by botocore (``retries`` in its config, standard mode, with
backoff); s3fs's own retry loop is switched off. Connect and read timeouts are short so an outage
surfaces in seconds as `StorageUnavailableError`, naming the URL and never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from persistency._recordstore import _LRU, RecordStorageProvider
from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.registry import redact_url

__all__ = ["S3StorageProvider", "parse_s3_url"]

logger = logging.getLogger("persistency.s3")
T = TypeVar("T")

_RECORDS = "checkpoints/"
_WRITER_META = "persistency-writer"
_PACKS = "packs/"
_RECORD_SUFFIX = ".json"
_PACK_SUFFIX = ".pack.gz"
_INDEX_SUFFIX = ".index.gz"
_PACK_FORMAT = "persistency-pack/1"
_INDEX_FORMAT = "persistency-index/1"
_NAME_SEP = "~"  # a pack is named FIRST~LAST; "~" is never part of an id
_FANOUT = 16  # a level-n+1 pack merges the chain of 16 level-n packs
_INFO_RANGE = 512  # bytes read for a record's info line; read on if the line is longer
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId", "UnrecognizedClientException",
    "AllAccessDisabled", "AccountProblem",
})


def _parse_bool(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value!r} is not a positive number")
    return number


#: URL query options and how each value is parsed (keyword arguments of the same name win).
URL_QUERY_OPTIONS: dict[str, Callable[[str], Any]] = {
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "anon": _parse_bool,
    "requester_pays": _parse_bool,
    "connect_timeout": _positive_float,
    "read_timeout": _positive_float,
    "max_attempts": _positive_int,
    "max_concurrency": _positive_int,
    "pack_every": _positive_int,
    "cache_size": _positive_int,
}


def parse_s3_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``s3://bucket/prefix?opt=value`` into (bucket, prefix, options), with no I/O.

    Raises `ProviderConfigError` for another scheme, a malformed bucket, credentials in the URL,
    or an unknown or unparseable query option (the message names it).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ProviderConfigError(f"malformed S3 URL: {exc}") from exc
    if parts.scheme.lower() not in ("s3", "s3a"):
        raise ProviderConfigError(f"not an S3 URL (s3://bucket/prefix): {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ProviderConfigError(
            "credentials do not belong in an S3 URL: use the standard AWS chain (environment, "
            "~/.aws profile, instance role) or the key=/secret= keyword arguments"
        )
    bucket = parts.netloc
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ProviderConfigError(
            f"malformed S3 bucket name {bucket!r} in {redact_url(url)!r}: 3-63 characters of "
            "lowercase letters, digits, '.' and '-'"
        )
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ProviderConfigError(f"S3 prefix must not contain '.' or '..' segments: {redact_url(url)!r}")
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        parser = URL_QUERY_OPTIONS.get(name)
        if parser is None:
            raise ProviderConfigError(
                f"unknown S3 URL option {name!r}; known: {', '.join(sorted(URL_QUERY_OPTIONS))}"
            )
        if name in options:
            raise ProviderConfigError(f"S3 URL option {name!r} given twice")
        try:
            options[name] = parser(raw)
        except ValueError as exc:
            raise ProviderConfigError(f"S3 URL option {name!r}: {exc}") from exc
    return bucket, "/".join(segments), options


def _error_code(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind ``exc`` (s3fs keeps botocore's error as the cause)."""
    for err in (exc, exc.__cause__, exc.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(response["Error"].get("Code", "")), int(status or 0)
    return "", 0


@dataclass
class _Listing:
    """One listing of a session: record ids (with sizes; 0 = packed) and packs (name -> ETag)."""

    records: dict[str, int] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    packs: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)


class _PackCache:
    """Decoded packs and indexes by (key, ETag), bounded in bytes: they never change once written."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._data: OrderedDict[tuple[str, str], dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(entries: dict[str, bytes]) -> int:
        return sum(len(v) for v in entries.values())

    def get(self, key: str, etag: str) -> dict[str, bytes] | None:
        with self._lock:
            entries = self._data.get((key, etag))
            if entries is not None:
                self._data.move_to_end((key, etag))
            return entries

    def put(self, key: str, etag: str, entries: dict[str, bytes]) -> None:
        with self._lock:
            old = self._data.pop((key, etag), None)
            if old is not None:
                self._bytes -= self._size(old)
            self._data[(key, etag)] = entries
            self._bytes += self._size(entries)
            while self._bytes > self._max_bytes and len(self._data) > 1:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= self._size(evicted)

    def find(self, prefix: str, suffix: str, checkpoint_id: str) -> bytes | None:
        """The entry for ``checkpoint_id`` in any cached object under ``prefix`` ending in ``suffix``."""
        with self._lock:
            for (key, _), entries in reversed(self._data.items()):
                if key.startswith(prefix) and key.endswith(suffix) and checkpoint_id in entries:
                    return entries[checkpoint_id]
        return None

    def drop(self, prefix: str) -> None:
        with self._lock:
            for k in [k for k in self._data if k[0].startswith(prefix)]:
                self._bytes -= self._size(self._data.pop(k))


class _View:
    """What one public call has fetched of one session, so a chain walk never costs a GET per step."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.listing: _Listing | None = None
        self.records: dict[str, bytes] = {}
        self.infos: dict[str, bytes] = {}
        self.filled = False
        self.info_window = 16


class S3StorageProvider(RecordStorageProvider):
    """Stores checkpoints in an S3 bucket under a prefix; create-only by S3 conditional writes.

    Args:
        bucket: the bucket (it must exist; this provider never creates buckets).
        prefix: a key prefix under which sessions live ("" for the bucket's root).
        endpoint_url: an S3-compatible endpoint (MinIO, Ceph, R2, a test server); AWS by default.
        region: the bucket's region (else the AWS chain's default).
        profile: a named profile of the shared AWS config.
        anon: unsigned requests (public buckets).
        requester_pays: send ``RequestPayer=requester``.
        connect_timeout, read_timeout: seconds per attempt, short so an outage surfaces quickly.
        max_attempts: attempts per request, retried by botocore with backoff (standard mode).
        max_concurrency: GETs in flight at once when loading or listing a session.
        pack_every: how many steps of a chain go into one pack.
        cache_size: records kept decoded in memory (they never change once written).
        pack_cache_bytes: memory for packs already read, so a second load of a session costs a listing.
        encryption_key: seal payloads (see `persistency.encryption`).
        s3fs_options: passed to ``s3fs.S3FileSystem`` (``key``, ``secret``, ``token``,
            ``client_kwargs``, ``config_kwargs``, ...). Credentials otherwise come from the
            standard AWS chain and are never needed in the URL.
    """

    schemes = ("s3", "s3a")

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        anon: bool = False,
        requester_pays: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        max_concurrency: int = 32,
        pack_every: int = 64,
        cache_size: int = 512,
        pack_cache_bytes: int = 64 * 2**20,
        encryption_key: str | bytes | None = None,
        **s3fs_options: Any,
    ) -> None:
        super().__init__(cache_size=cache_size, encryption_key=encryption_key)
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - the registry checks this first
            from persistency.errors import MissingDependencyError

            raise MissingDependencyError("the s3:// provider needs the 's3' extra: pip install "
                                         "'ag2-persistency[s3]'") from exc
        if not _BUCKET_RE.fullmatch(bucket or ""):
            raise ProviderConfigError(f"malformed S3 bucket name {bucket!r}")
        if pack_every < 2:
            raise ProviderConfigError("pack_every must be at least 2")
        self._bucket = bucket
        self._prefix = "/".join(s for s in prefix.split("/") if s)
        self._root = f"{self._prefix}/" if self._prefix else ""
        self._endpoint = endpoint_url
        self._pack_every = pack_every
        self._concurrency = max_concurrency
        self._secrets = [str(s3fs_options[k]) for k in ("key", "secret", "token", "password")
                         if s3fs_options.get(k)]
        shown = f"s3://{bucket}/{self._prefix}".rstrip("/")
        self._display = f"{shown} (endpoint {redact_url(endpoint_url)})" if endpoint_url else shown
        config = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "max_pool_connections": max(10, max_concurrency),
        }
        config.update(s3fs_options.pop("config_kwargs", None) or {})
        client_kwargs = dict(s3fs_options.pop("client_kwargs", None) or {})
        if region:
            client_kwargs.setdefault("region_name", region)
        if profile:
            s3fs_options["profile"] = profile
        try:
            self._fs = s3fs.S3FileSystem(
                anon=anon, endpoint_url=endpoint_url, client_kwargs=client_kwargs, config_kwargs=config,
                requester_pays=requester_pays, skip_instance_cache=True, **s3fs_options,
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ProviderConfigError(f"S3 {self._display}: bad option: {self._scrub(str(exc))}") from exc
        self._fs.retries = 1  # botocore's retry config retries, with backoff; no second loop on top
        self._recent = _LRU(max(4 * pack_every, 256))  # (ETag, bytes) of unpacked records
        self._packs = _PackCache(pack_cache_bytes)
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3StorageProvider:
        """Build from ``s3://bucket/prefix?option=value``; a keyword option wins over the same query option.

        Query options: see `URL_QUERY_OPTIONS` (``endpoint_url``, ``region``, ``profile``, ``anon``,
        timeouts, ``pack_every``, ...). Credentials come from the AWS chain, or ``key``/``secret``
        keyword arguments; they are refused in the URL.
        """
        bucket, prefix, query = parse_s3_url(url)
        return cls(bucket, prefix, **{**query, **options})

    def __repr__(self) -> str:
        return f"S3StorageProvider({self._display!r})"

    # -- keys ---------------------------------------------------------------------------------------------
    def _session_root(self, session_id: str) -> str:
        return f"{self._root}{session_id}/"

    def _record_key(self, session_id: str, checkpoint_id: str) -> str:
        return f"{self._root}{session_id}/{_RECORDS}{checkpoint_id}{_RECORD_SUFFIX}"

    def _pack_key(self, session_id: str, name: str, suffix: str) -> str:
        return f"{self._root}{session_id}/{_PACKS}{name}{suffix}"

    def _where(self, session_id: str, checkpoint_id: str) -> str:
        return f"s3://{self._bucket}/{self._record_key(session_id, checkpoint_id)}"

    # -- I/O on s3fs's event loop, errors translated at this boundary --------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in (*self._secrets, os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "****")
        return text

    def _unavailable(self, exc: BaseException, what: str) -> StorageUnavailableError:
        code, status = _error_code(exc)
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

    def _run(self, what: str, func: Callable[..., Awaitable[T]], *args: Any) -> T:
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
            code, _ = _error_code(exc)
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
            code, status = _error_code(exc)
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

    # -- listings, packs and indexes -------------------------------------------------------------------
    def _list_session(self, session_id: str, only_packs: bool = False) -> _Listing:
        root = self._session_root(session_id)
        prefix = root + _PACKS if only_packs else root
        objects, _ = self._run(f"listing session {session_id!r}", self._alist, prefix)
        out = _Listing()
        for obj in objects:
            rel = obj["Key"][len(root):]
            if rel.startswith(_RECORDS) and rel.endswith(_RECORD_SUFFIX):
                cid = rel[len(_RECORDS):-len(_RECORD_SUFFIX)]
                if cid and "/" not in cid:
                    out.records[cid] = int(obj.get("Size", 0))
                    out.etags[cid] = str(obj.get("ETag", ""))
            elif rel.startswith(_PACKS):
                name = rel[len(_PACKS):]
                if name.endswith(_PACK_SUFFIX):
                    out.packs[name[:-len(_PACK_SUFFIX)]] = str(obj.get("ETag", ""))
                elif name.endswith(_INDEX_SUFFIX):
                    out.indexes[name[:-len(_INDEX_SUFFIX)]] = str(obj.get("ETag", ""))
        return out

    @staticmethod
    def _gunzip(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
        """Split a pack or index object into its JSON header and body; `CorruptCheckpointError` if damaged."""
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptCheckpointError(f"{where}: not a valid gzip stream ({exc})") from exc
        head, sep, body = raw.partition(b"\n")
        try:
            header = json.loads(head) if sep else None
        except ValueError as exc:
            raise CorruptCheckpointError(f"{where}: header is not JSON ({exc})") from exc
        ids = header.get("ids") if isinstance(header, dict) else None
        if not isinstance(header, dict) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CorruptCheckpointError(f"{where}: header has no list of checkpoint ids")
        return header, body

    def _decode_pack(self, data: bytes, where: str) -> dict[str, bytes]:
        header, body = self._gunzip(data, where)
        ids, sizes = header["ids"], header.get("sizes")
        if (header.get("format") != _PACK_FORMAT or not isinstance(sizes, list) or len(sizes) != len(ids)
                or not all(isinstance(s, int) and s > 0 for s in sizes) or sum(sizes) != len(body)):
            raise CorruptCheckpointError(f"{where}: pack header does not match its body")
        out: dict[str, bytes] = {}
        pos = 0
        for cid, size in zip(ids, sizes, strict=True):
            out[cid] = body[pos:pos + size]
            pos += size
        return out

    def _decode_index(self, data: bytes, where: str) -> dict[str, bytes]:
        header, body = self._gunzip(data, where)
        lines = body.split(b"\n") if body else []
        if header.get("format") != _INDEX_FORMAT or len(lines) != len(header["ids"]):
            raise CorruptCheckpointError(f"{where}: index header does not match its body")
        return dict(zip(header["ids"], lines, strict=True))

    def _uncached(self, session_id: str, names: dict[str, str], suffix: str) -> list[str]:
        """Keys of the named packs (or indexes) not in memory yet."""
        keys = [(self._pack_key(session_id, name, suffix), etag) for name, etag in names.items()]
        return [key for key, etag in keys if self._packs.get(key, etag) is None]

    def _load_packed(self, session_id: str, names: dict[str, str], suffix: str,
                     fetched: dict[str, bytes | None] | None = None) -> dict[str, bytes]:
        """Every entry of the named packs (or indexes): from memory, from ``fetched``, else fetched at once."""
        decode = self._decode_pack if suffix == _PACK_SUFFIX else self._decode_index
        out: dict[str, bytes] = {}
        todo: list[tuple[str, str]] = []
        got: list[tuple[str, str, bytes | None]] = []
        for name, etag in sorted(names.items()):
            key = self._pack_key(session_id, name, suffix)
            cached = self._packs.get(key, etag)
            if cached is not None:
                out.update(cached)
            elif fetched is not None and key in fetched:
                got.append((key, etag, fetched[key]))
            else:
                todo.append((key, etag))
        if todo:
            blobs = self._run(f"reading packs of session {session_id!r}", self._aget_many, [k for k, _ in todo])
            got.extend((key, etag, blob) for (key, etag), blob in zip(todo, blobs, strict=True))
        for key, etag, blob in got:
            if blob is None:
                continue  # deleted since the listing (the session is being deleted)
            entries = decode(blob, f"s3://{self._bucket}/{key}")
            self._packs.put(key, etag, entries)
            out.update(entries)
        return out

    @staticmethod
    def _covering(names: dict[str, str], ids: list[str]) -> dict[str, str]:
        """The packs whose id range (ids grow along a chain) can hold one of ``ids``."""
        out = {}
        for name, etag in names.items():
            first, _, last = name.partition(_NAME_SEP)
            if any(first <= cid <= (last or first) for cid in ids):
                out[name] = etag
        return out

    def _indexed_infos(self, session_id: str, listing: _Listing, ids: list[str]) -> dict[str, bytes]:
        """Info lines of packed ``ids`` from the indexes that can hold them (all of them as a fallback)."""
        names = {n: e for n, e in listing.indexes.items() if n in listing.packs}
        found = self._load_packed(session_id, self._covering(names, ids), _INDEX_SUFFIX)
        if any(cid not in found for cid in ids):
            found.update(self._load_packed(session_id, names, _INDEX_SUFFIX))
        return found

    def _find_packed(self, session_id: str, checkpoint_id: str) -> bytes:
        """The record of an id whose object has been emptied: it lives in a pack, found by the indexes."""
        listing = self._list_session(session_id, only_packs=True)
        names = {n: e for n, e in listing.indexes.items() if n in listing.packs}
        for group in (self._covering(names, [checkpoint_id]), names):
            for name, etag in sorted(group.items(), reverse=True):
                if checkpoint_id in self._load_packed(session_id, {name: etag}, _INDEX_SUFFIX):
                    pack = self._load_packed(session_id, {name: listing.packs[name]}, _PACK_SUFFIX)
                    if checkpoint_id in pack:
                        return pack[checkpoint_id]
        raise CorruptCheckpointError(
            f"{self._where(session_id, checkpoint_id)}: the record is empty and no pack holds it"
        )

    # -- the per-call view -------------------------------------------------------------------------------
    def _view(self, session_id: str) -> _View | None:
        view: _View | None = getattr(self._local, "view", None)
        return view if view is not None and view.session_id == session_id else None

    @contextlib.contextmanager
    def _viewing(self, session_id: str) -> Iterator[_View]:
        current = self._view(session_id)
        if current is not None:
            yield current
            return
        outer = getattr(self._local, "view", None)
        view = _View(session_id)
        self._local.view = view
        try:
            yield view
        finally:
            self._local.view = outer

    def _listing(self, view: _View) -> _Listing:
        if view.listing is None:
            view.listing = self._list_session(view.session_id)
        return view.listing

    def _fill(self, view: _View) -> None:
        """Fetch, concurrently, every pack and every unpacked record of the session not yet in memory."""
        view.filled = True
        sid = view.session_id
        listing = self._listing(view)
        wanted = [cid for cid, size in listing.records.items()
                  if size > 0 and cid not in view.records]
        recent = {cid: self._recalled(sid, cid, listing.etags.get(cid)) for cid in wanted}
        view.records.update({cid: data for cid, data in recent.items() if data is not None})
        fetch = [cid for cid, data in recent.items() if data is None]
        packs = {n: e for n, e in listing.packs.items() if n in listing.indexes}
        emptied = False
        # one concurrent round: the unpacked records and the packs not in memory
        keys = [self._record_key(sid, cid) for cid in fetch] + self._uncached(sid, packs, _PACK_SUFFIX)
        fetched: dict[str, bytes | None] = {}
        if keys:
            fetched = dict(zip(keys, self._run(f"reading session {sid!r}", self._aget_many, keys), strict=True))
        if fetch:
            blobs = [fetched[self._record_key(sid, cid)] for cid in fetch]
            for cid, blob in zip(fetch, blobs, strict=True):
                if blob:
                    view.records[cid] = blob
                    self._remember(sid, cid, listing.etags.get(cid, ""), blob)
                elif blob is not None:
                    emptied = True  # packed since the listing
        if emptied or any(k.endswith(_PACK_SUFFIX) and v is None for k, v in fetched.items()):
            fresh = self._list_session(sid, only_packs=True)  # packed or merged since the listing
            packs = {n: e for n, e in fresh.packs.items() if n in fresh.indexes}
        for cid, data in self._load_packed(sid, packs, _PACK_SUFFIX, fetched).items():
            view.records.setdefault(cid, data)

    def _remember(self, session_id: str, checkpoint_id: str, etag: str, data: bytes) -> None:
        self._recent.put((session_id, checkpoint_id), (etag, data))

    def _recalled(self, session_id: str, checkpoint_id: str, etag: str | None = None) -> bytes | None:
        """A record this process wrote or read, if its ETag still matches a listing (when one is given).

        The check keeps a session deleted and written again by another process from being served stale.
        """
        hit: tuple[str, bytes] | None = self._recent.get((session_id, checkpoint_id))
        if hit is None or (etag is not None and hit[0] != etag):
            return None
        return hit[1]

    # -- primitives -------------------------------------------------------------------------------------
    def _write_new(self, session_id: str, checkpoint_id: str, data: bytes) -> None:
        key = self._record_key(session_id, checkpoint_id)
        etag = self._run(f"saving checkpoint {checkpoint_id!r} of session {session_id!r}",
                         self._aput, key, data, True)
        if etag is None:
            raise CheckpointConflictError(
                f"checkpoint {checkpoint_id!r} already exists in session {session_id!r} "
                f"(s3://{self._bucket}/{key}); another writer saved it first"
            )
        self._remember(session_id, checkpoint_id, etag, data)

    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        view = self._view(session_id)
        if view is not None:
            if checkpoint_id not in view.records and not view.filled:
                self._fill(view)
            data = view.records.get(checkpoint_id)
            if data is not None:
                return data
        cached = self._recalled(session_id, checkpoint_id)
        if cached is None:
            cached = self._packs.find(self._session_root(session_id) + _PACKS, _PACK_SUFFIX, checkpoint_id)
        if cached is not None:
            return cached
        key = self._record_key(session_id, checkpoint_id)
        blob = self._run(f"reading checkpoint {checkpoint_id!r} of session {session_id!r}", self._aget, key)
        if blob is None:
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} in session {session_id!r} (s3://{self._bucket}/{key})"
            )
        return blob or self._find_packed(session_id, checkpoint_id)

    def _read_info_line(self, session_id: str, checkpoint_id: str) -> bytes:
        view = self._view(session_id)
        if view is None:
            with self._viewing(session_id) as view:
                return self._info_line(view, checkpoint_id)
        return self._info_line(view, checkpoint_id)

    def _info_line(self, view: _View, checkpoint_id: str) -> bytes:
        """The info line of one record; fetches a window of its elders with it, since listing walks back."""
        if checkpoint_id in view.infos:
            return view.infos[checkpoint_id]
        sid = view.session_id
        listing = self._listing(view)
        ids = sorted(listing.records)
        if checkpoint_id in listing.records:
            end = ids.index(checkpoint_id) + 1
            window = [c for c in ids[max(0, end - view.info_window):end] if c not in view.infos]
            view.info_window *= 2
        else:
            window = [checkpoint_id]  # written after the listing
        known = {c: view.records.get(c) or self._recalled(sid, c, listing.etags.get(c)) for c in window}
        for cid, data in known.items():
            if data:
                view.infos[cid] = data.split(b"\n", 1)[0]
        unpacked = [c for c in window if c not in view.infos and listing.records.get(c, 1) > 0]
        packed = [c for c in window if c not in view.infos and listing.records.get(c, 1) == 0]
        if unpacked:
            keys = [self._record_key(sid, c) for c in unpacked]
            heads = self._run(f"listing session {sid!r}", self._aget_many, keys, _INFO_RANGE)
            for cid, head in zip(unpacked, heads, strict=True):
                if head is None:
                    continue
                if head and b"\n" not in head and len(head) >= _INFO_RANGE:  # a long info line: read on
                    head = self._run(f"listing session {sid!r}", self._aget, self._record_key(sid, cid))
                if head:
                    view.infos[cid] = head.split(b"\n", 1)[0]
                else:
                    packed.append(cid)  # packed since the listing
        if packed:
            for cid, line in self._indexed_infos(sid, listing, packed).items():
                view.infos.setdefault(cid, line)
            if any(c not in view.infos for c in packed):  # packed since the listing
                fresh = self._list_session(sid, only_packs=True)
                for cid, line in self._indexed_infos(sid, fresh, packed).items():
                    view.infos.setdefault(cid, line)
        if checkpoint_id not in view.infos:
            if checkpoint_id not in listing.records:
                raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in session {sid!r}")
            raise CorruptCheckpointError(
                f"{self._where(sid, checkpoint_id)}: the record is empty and no pack index holds it"
            )
        return view.infos[checkpoint_id]

    def _list_ids(self, session_id: str) -> list[str]:
        view = self._view(session_id)
        listing = self._listing(view) if view is not None else self._list_session(session_id)
        return sorted(listing.records)

    def _list_session_ids(self) -> list[str]:
        _, prefixes = self._run("listing sessions", self._alist, self._root, "/")
        out = []
        for prefix in prefixes:
            name = prefix[len(self._root):].rstrip("/")
            try:
                out.append(validate_id(name))
            except PersistencyError:
                continue  # not one of ours
        return sorted(out)

    async def _adelete_keys(self, keys: list[str]) -> list[str]:
        failed: list[str] = []
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            resp = await self._fs._call_s3("delete_objects", Bucket=self._bucket, Delete=batch)
            failed.extend(f"{e.get('Key')}: {e.get('Code')}" for e in resp.get("Errors", []))
        return failed

    def _delete(self, session_id: str) -> None:
        root = self._session_root(session_id)
        objects, _ = self._run(f"deleting session {session_id!r}", self._alist, root)
        keys = sorted((o["Key"] for o in objects), key=lambda k: not k[len(root):].startswith(_RECORDS))
        failed = self._run(f"deleting session {session_id!r}", self._adelete_keys, keys) if keys else []
        self._recent.drop_session(session_id)
        self._packs.drop(root)
        self._leases().advance_generation(session_id)  # p12: generations (providers/_s3_lease.py)
        if failed:
            raise StorageUnavailableError(
                f"S3 {self._display}: deleting session {session_id!r}: {len(failed)} objects not deleted "
                f"({'; '.join(failed[:3])})"
            )

    # -- the contract, wrapped so that one call lists and fetches a session once ----------------------------
    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint: one listing, then its packs and unpacked records fetched concurrently."""
        sid = validate_id(session_id, "session_id")
        with self._viewing(sid):
            return super().get_checkpoint(sid, checkpoint_id)

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The checkpoint with the greatest id (from one listing of the record keys), or None."""
        sid = validate_id(session_id, "session_id")
        with self._viewing(sid):
            return super().get_latest_checkpoint(sid)

    def list_checkpoints(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Infos oldest first, from pack indexes and the info lines of unpacked records: no payloads."""
        sid = validate_id(session_id, "session_id")
        with self._viewing(sid):
            return super().list_checkpoints(sid, run_id=run_id, limit=limit, before=before)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` with one conditional PUT; every ``pack_every`` steps, pack the chain behind it."""
        super().save_checkpoint(checkpoint)
        try:
            self._maybe_pack(checkpoint.session_id, checkpoint.checkpoint_id)
        except Exception as exc:  # the save succeeded; a failed compaction only costs reads later
            logger.warning("S3 %s: packing session %r after %r failed: %s", self._display,
                           checkpoint.session_id, checkpoint.checkpoint_id, exc)

    # -- compaction ----------------------------------------------------------------------------------------
    def _level(self, session_id: str, checkpoint_id: str) -> tuple[int, str | None]:
        """The highest pack level whose boundary the record's step crosses from its base (-1: none); its base.

        Level 0 boundaries are the multiples of ``pack_every``; level n+1 ones are every `_FANOUT`-th
        boundary of level n. The winner of a record that crosses level n packs the chain segment back
        to the previous crossing of level n or higher.
        """
        rec = self._record(session_id, checkpoint_id)
        step, base_step = int(rec.info["step"]), rec.base_step
        level, size = -1, self._pack_every
        while step // size > base_step // size:
            level += 1
            size *= _FANOUT
        return level, rec.base

    def _maybe_pack(self, session_id: str, checkpoint_id: str) -> None:
        level, base = self._level(session_id, checkpoint_id)
        if level < 0:
            return
        if level == 0:  # the segment's records are in memory: this process usually just wrote them
            self._pack_segment(session_id, checkpoint_id, level, base)
            return
        with self._viewing(session_id) as view:  # merging: read the session's packs in one round
            self._fill(view)
            self._pack_segment(session_id, checkpoint_id, level, base)

    def _pack_segment(self, session_id: str, checkpoint_id: str, level: int, base: str | None) -> None:
        """Pack the chain from ``checkpoint_id`` back to the previous crossing of ``level`` or higher."""
        segment = [checkpoint_id]
        whole = 1  # the newest records, after the previous level-0 crossing, are still whole objects
        packed_below = False
        cap = 4 * self._pack_every * _FANOUT**level
        while base is not None and len(segment) < cap:
            older_level, older_base = self._level(session_id, base)
            if older_level >= level:
                break  # the previous pack of this level ends there
            packed_below = packed_below or older_level >= 0  # from there back, smaller packs hold them
            segment.append(base)
            whole += 0 if packed_below else 1
            base = older_base
        if len(segment) < 2:
            return
        segment.reverse()
        tail = segment[-whole:]
        view = self._view(session_id)
        if view is not None and view.listing is not None:  # a merge: also empty what a crash left whole
            tail = [cid for cid in segment if view.listing.records.get(cid, 1) > 0]
        records = [self._read(session_id, cid) for cid in segment]
        name = f"{segment[0]}{_NAME_SEP}{segment[-1]}"
        self._write_pack(session_id, name, segment, records, tail)
        if level > 0:
            self._drop_packs_within(session_id, set(segment), keep=name)

    def _write_pack(self, session_id: str, name: str, ids: list[str], records: list[bytes], empty: list[str]) -> None:
        """Pack, then index (both create-only), then empty the records: each step leaves every record readable."""
        pack_header = json.dumps({"format": _PACK_FORMAT, "ids": ids, "sizes": [len(r) for r in records]})
        pack = gzip.compress(pack_header.encode() + b"\n" + b"".join(records), compresslevel=6, mtime=0)
        index_header = json.dumps({"format": _INDEX_FORMAT, "ids": ids})
        infos = [r.split(b"\n", 1)[0] for r in records]
        index = gzip.compress(index_header.encode() + b"\n" + b"\n".join(infos), compresslevel=6, mtime=0)
        pack_key = self._pack_key(session_id, name, _PACK_SUFFIX)
        index_key = self._pack_key(session_id, name, _INDEX_SUFFIX)
        what = f"packing session {session_id!r}"
        etag = self._run(what, self._aput, pack_key, pack, True)
        if etag is not None:
            self._packs.put(pack_key, etag, dict(zip(ids, records, strict=True)))
        etag = self._run(what, self._aput, index_key, index, True)
        if etag is not None:
            self._packs.put(index_key, etag, dict(zip(ids, infos, strict=True)))
        keys = [self._record_key(session_id, cid) for cid in empty]
        self._run(what, self._agather, [self._aput(k, b"", False) for k in keys])

    def _drop_packs_within(self, session_id: str, ids: set[str], keep: str) -> None:
        """Delete the smaller packs a merged pack now holds (readers that listed them fall back to it)."""
        listing = self._list_session(session_id, only_packs=True)
        doomed = []
        for name in set(listing.packs) | set(listing.indexes):
            first, _, last = name.partition(_NAME_SEP)
            if name != keep and first in ids and last in ids:
                doomed += [self._pack_key(session_id, name, _PACK_SUFFIX),
                           self._pack_key(session_id, name, _INDEX_SUFFIX)]
        if doomed:
            failed = self._run(f"merging packs of session {session_id!r}", self._adelete_keys, sorted(doomed))
            if failed:
                logger.warning("S3 %s: %d merged packs not deleted: %s", self._display, len(failed), failed[:3])

    # -- leases and generations (p12, providers/_s3_lease.py) ------------------------------------------------
    def _leases(self) -> Any:
        from ._s3_lease import S3Leases

        async def call(operation: str, **params: Any) -> Any:
            return await self._fs._call_s3(operation, **params)

        return S3Leases(call, self._run, self._bucket, self._root)

    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        return int(self._leases().session_generation(session_id))

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Any:
        """Take the session's lease (a conditional PUT) unless a live one exists (then None)."""
        return self._leases().acquire(session_id, owner, ttl)

    def current_lease(self, session_id: str) -> Any:
        """The session's live lease as stored, or None."""
        return self._leases().current(session_id)

    def renew_lease(self, lease: Any, ttl: float) -> Any:
        """Extend a held lease (If-Match on its ETag); None if it was taken."""
        return self._leases().renew(lease, ttl)

    def release_lease(self, lease: Any) -> None:
        """Give a held lease up (a taken one is left alone)."""
        self._leases().release(lease)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the S3 client's connections (a later call reopens them). Idempotent."""
        creator = getattr(self._fs, "_s3creator", None)
        if creator is not None:
            with contextlib.suppress(Exception):
                type(self._fs).close_session(self._fs.loop, creator)
        self._fs._s3 = None
        self._fs._s3creator = None
