"""`S3StorageProvider`: checkpoints in S3, or any S3-compatible store (MinIO, Ceph, R2, moto), on the storage base.

Layout under ``s3://BUCKET/PREFIX/``::

    SESSION/checkpoints/CHECKPOINT_ID.json   # one record per checkpoint, or an empty object once packed
    SESSION/packs/FIRST~LAST.pack.gz         # a segment of a chain: its records, whole, compressed
    SESSION/packs/FIRST~LAST.index.gz        # the same segment's info lines only, for listing

A save is one ``PutObject`` with ``If-None-Match: *``: S3 stores it only if the key is new, so of
two writers racing for one id exactly one wins and the other gets `CheckpointConflictError`. The
record key stays forever (emptied, never deleted, once packed), so an id stays taken, and
"latest" is the greatest id among the record keys. Packs keep reads cheap (see `compaction`);
reading is in `reads`, requests and their errors in `transport`, URL options in `options`.
Transient errors are retried by botocore (standard mode, with backoff); s3fs's own retry loop
is switched off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.redaction import redact_url, scrub_exception
from persistency.storage import Lease, LRUCache, NewRecord
from persistency.storage.framing import base_hint

from ._lease import S3Leases
from .compaction import S3Compaction, logger
from .formats import PackCache, carried
from .options import BUCKET_RE, S3Options, check_options, parse_s3_url
from .reads import RECORDS

__all__ = ["S3StorageProvider"]

#: s3fs.S3FileSystem keywords passed through (the provider sets the others itself)
_S3FS_OPTIONS = frozenset({
    "key", "secret", "token", "use_ssl", "client_kwargs", "config_kwargs", "s3_additional_kwargs", "session",
    "username", "password", "cache_regions", "version_aware", "default_block_size",
})


class S3StorageProvider(S3Compaction):
    """Stores checkpoints in an S3 bucket under a prefix; create-only by S3 conditional writes.

    Args:
        bucket: the bucket (it must exist; this provider never creates buckets).
        prefix: a key prefix under which sessions live ("" for the bucket's root).
        endpoint_url: an S3-compatible endpoint (MinIO, Ceph, R2, a test server); AWS by default.
        region: the bucket's region (else the AWS chain's default).
        profile: a named profile of the shared AWS config.
        anon: unsigned requests (public buckets).
        requester_pays: send ``RequestPayer=requester``.
        connect_timeout: seconds to connect, per attempt: short, so an outage surfaces quickly.
        read_timeout: seconds to wait for a response, per attempt.
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

    backend_name = "s3"
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
        check_options({k: v for k, v in locals().items() if k in S3Options.model_fields})
        unknown = sorted(set(s3fs_options) - _S3FS_OPTIONS)
        if unknown:
            raise ProviderConfigError(
                f"S3 option(s) refused: {', '.join(unknown)} (unknown option; the options are: "
                f"{', '.join(S3Options.model_fields)}, encryption_key, and s3fs's {', '.join(sorted(_S3FS_OPTIONS))})"
            )
        super().__init__(cache_size=cache_size, encryption_key=encryption_key)
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - the registry checks this first
            from persistency.errors import MissingDependencyError

            raise MissingDependencyError("the s3:// provider needs the 's3' extra: pip install "
                                         "'ag2-persistency[s3]'") from exc
        if not BUCKET_RE.fullmatch(bucket or ""):
            raise ProviderConfigError(f"malformed S3 bucket name {bucket!r}")
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
            raise ProviderConfigError(f"S3 {self._display}: bad option: {self._scrub(str(exc))}") from scrub_exception(
                exc, self._scrub)
        self._fs.retries = 1  # botocore's retry config retries, with backoff; no second loop on top
        self._recent = LRUCache(max(4 * pack_every, 256))  # (ETag, bytes) of unpacked records
        self._carries = LRUCache(64)  # (session, id) -> the unpacked chain a child of it carries
        self._carry_seen = LRUCache(64)  # (session, id) -> (ETag, what its object carries)
        self._packs = PackCache(pack_cache_bytes)

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

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """The record's ``s3://`` key (or the session's prefix)."""
        if checkpoint_id is None:
            return f"s3://{self._bucket}/{self._session_root(session_id)}"
        return self._where(session_id, checkpoint_id)

    # -- primitives -------------------------------------------------------------------------------------------
    def write_record(self, record: NewRecord) -> None:
        """One conditional PUT (``If-None-Match: *``); every ``pack_every`` steps, pack the chain behind it."""
        session_id, checkpoint_id, data = record.session_id, record.checkpoint_id, record.data
        key = self._record_key(session_id, checkpoint_id)
        # The records of its chain since the last pack ride along, so a load GETs one object for them.
        carry: tuple[tuple[str, bytes], ...] = ()
        if record.base_id is not None:
            carry = self._carries.get((session_id, record.base_id)) or ()
        body = carried(data, [c for c, _ in carry], [d for _, d in carry])
        etag = self._s3(f"saving checkpoint {checkpoint_id!r} of session {session_id!r}",
                         self._aput, key, body, True)
        if etag is None:
            raise CheckpointConflictError(
                f"checkpoint {checkpoint_id!r} already exists in session {session_id!r} "
                f"(s3://{self._bucket}/{key}); another writer saved it first"
            )
        self._remember(session_id, checkpoint_id, etag, data)
        if carry:
            self._carry_seen.put((session_id, checkpoint_id), (etag, dict(carry)))
        packed = False
        try:
            packed = self._maybe_pack(session_id, checkpoint_id)
        except Exception as exc:  # the save succeeded; a failed compaction only costs reads later
            logger.warning("S3 %s: packing session %r after %r failed: %s", self._display, session_id,
                           checkpoint_id, exc)
        # what a child carries: nothing after a pack; else this record's carry and the record itself
        self._carries.put((session_id, checkpoint_id),
                          () if packed else (*carry, (checkpoint_id, data))[-self._pack_every:])

    def read_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """The head (None: the greatest id in the listing) and as much of its chain as one concurrent round
        brings: the head's object with the records it carries, and the packs. The base reads the rest."""
        with self._viewing(session_id) as view:
            listing = self._listing(view)
            head = checkpoint_id if checkpoint_id is not None else max(listing.records, default=None)
            if head is None:
                return []
            if head in listing.records and not self._fetch_chain(view, head):
                self._fill(view)  # the listing went stale: the general path re-lists what it must
            try:
                data = self._read(session_id, head)
            except CheckpointNotFoundError:
                return []
            chain, seen = [(head, data)], {head}
            while (base := base_hint(chain[-1][1])) is not None and base not in seen and base in view.records:
                seen.add(base)
                chain.append((base, view.records[base]))
            return chain

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The records (from the call's view: one listing, one concurrent round of GETs)."""
        out = {}
        with self._viewing(session_id):
            for cid in checkpoint_ids:
                with contextlib.suppress(CheckpointNotFoundError):
                    out[cid] = self._read(session_id, cid)
        return out

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Info lines from the pack indexes and ranged GETs of unpacked records (no payload)."""
        out = {}
        with self._viewing(session_id):
            for cid in sorted(checkpoint_ids, reverse=True):  # newest first: one window holds its elders
                with contextlib.suppress(CheckpointNotFoundError):
                    out[cid] = self._read_info_line(session_id, cid)
        return out

    def list_ids(self, session_id: str) -> list[str]:
        """The record keys of the session (one listing per call)."""
        return self._list_ids(session_id)

    def list_session_ids(self) -> list[str]:
        """The prefixes under the root that name a session."""
        return self._list_session_ids()

    def delete_records(self, session_id: str) -> None:
        """Delete every object of the session (records last, so a reader never sees a pack without them)."""
        root = self._session_root(session_id)
        objects, _ = self._s3(f"deleting session {session_id!r}", self._alist, root)
        keys = sorted((o["Key"] for o in objects), key=lambda k: not k[len(root):].startswith(RECORDS))
        failed = self._s3(f"deleting session {session_id!r}", self._adelete_keys, keys) if keys else []
        self._recent.drop_session(session_id)
        self._carries.drop_session(session_id)
        self._carry_seen.drop_session(session_id)
        self._packs.drop(root)
        self._leases().advance_generation(session_id)  # p12: generations (s3/_lease.py)
        if failed:
            raise StorageUnavailableError(
                f"S3 {self._display}: deleting session {session_id!r}: {len(failed)} objects not deleted "
                f"({'; '.join(failed[:3])})"
            )

    # -- the contract, wrapped so that one call lists and fetches a session once -----------------------------
    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint: one listing, then its packs and unpacked records fetched concurrently."""
        with self._viewing(validate_id(session_id, "session_id")):
            return super().get_checkpoint(session_id, checkpoint_id)

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The checkpoint with the greatest id (from one listing of the record keys), or None."""
        with self._viewing(validate_id(session_id, "session_id")):
            return super().get_latest_checkpoint(session_id)

    def list_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                         before: str | None = None) -> list[CheckpointInfo]:
        """Infos oldest first, from pack indexes and the info lines of unpacked records: no payloads."""
        with self._viewing(validate_id(session_id, "session_id")):
            return super().list_checkpoints(session_id, run_id=run_id, limit=limit, before=before)

    async def aget_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Async `get_checkpoint` (one view for the whole call)."""
        with self._viewing(validate_id(session_id, "session_id")):
            return await super().aget_checkpoint(session_id, checkpoint_id)

    async def aget_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """Async `get_latest_checkpoint` (one view for the whole call)."""
        with self._viewing(validate_id(session_id, "session_id")):
            return await super().aget_latest_checkpoint(session_id)

    async def alist_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                                before: str | None = None) -> list[CheckpointInfo]:
        """Async `list_checkpoints` (one view for the whole call)."""
        with self._viewing(validate_id(session_id, "session_id")):
            return await super().alist_checkpoints(session_id, run_id=run_id, limit=limit, before=before)

    # -- leases and generations (p12: s3/_lease.py) ---------------------------------------------------------------
    def _leases(self) -> S3Leases:
        async def call(operation: str, **params: Any) -> Any:
            return await self._fs._call_s3(operation, **params)

        return S3Leases(call, self._s3, self._bucket, self._root)

    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        return self._leases().session_generation(session_id)

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session's lease (a conditional PUT) unless a live one exists (then None)."""
        return self._leases().acquire(session_id, owner, ttl)

    def current_lease(self, session_id: str) -> Lease | None:
        """The session's live lease as stored, or None."""
        return self._leases().current(session_id)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease (If-Match on its ETag); None if it was taken."""
        return self._leases().renew(lease, ttl)

    def release_lease(self, lease: Lease) -> None:
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
