"""`RedisStorageProvider`: checkpoints in Redis with core commands and Lua scripts only, on the storage base.

Works with Redis, Valkey, ElastiCache, Memorystore and Redis Cluster. Key layout (``P`` is the
``key_prefix``, ``S`` the session id, used as the hash tag)::

    P:{S}:ids       sorted set, all scores 0: the session's checkpoint ids in byte (= creation) order
    P:{S}:info      hash  id -> the record's info line (all that listing reads)
    P:{S}:payload   hash  id -> a small header + the record's payload line (see `formats`)
    P:{S}:gen       integer: the session's generation, advanced by each delete (see `plans.Generations`)
    P:{S}:lease     the session's lease (see `_lease`)
    P:sessions      sorted set, all scores 0: the session index, for list_sessions

The base (`persistency.storage.StorageBackend`) encodes and decodes records once; this provider
stores and fetches bytes. A save is one round trip; loading the latest checkpoint is one round trip
for its whole chain (plus one for keyframes outside it); listing reads ``info`` only.

The session index cannot share every session's slot. On a single node it is named in the same
scripts, so it moves atomically with the session. On a cluster it is kept by a protocol that never
loses a session: the first save of a session adds the index entry before and after the record,
a delete removes the entry after the keys and puts it back if a concurrent writer re-created the
session, and ``list_sessions`` checks every entry against its session. Records found without
their index (partial eviction) are reported as damage, never as an empty session.

Replication is asynchronous; ``min_replicas`` makes each save also ``WAIT`` (on the writing
connection, in the same pipeline) until that many replicas have it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from persistency.ids import validate_id
from persistency.storage import Lease, LRUCache, NewRecord, StorageBackend

from ._lease import RedisLeases
from .client import RedisConnection
from .options import parse_config
from .plans import Generations, Layout
from .scripts import Call

__all__ = ["RedisStorageProvider"]


class RedisStorageProvider(StorageBackend):
    """Stores checkpoints in Redis (single node or cluster).

    Args:
        url: a redis-py URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS)
            or ``unix:///path/to/socket[?db=N]``, with redis-py's own query options
            (``socket_timeout``, ``ssl_ca_certs``, ...) and the provider's options below.
        encryption_key: seal payloads with AES-256-GCM (`persistency.encryption`); listing works
            without it. Keyword (or ``PERSISTENCY_ENCRYPTION_KEY``) only, never in the URL.
        **options: the provider's options below; any other is passed to the redis-py client
            (``password``, ``socket_timeout``, ...). Timeouts default to 5 s to connect and 10 s
            per command.

    The provider's options, each a keyword argument or a URL query parameter
    (``redis://host/0?key_prefix=app&ttl=86400``; where both are given, the keyword wins):

    - ``key_prefix``: prefix of every key (default ``persistency``); no braces.
    - ``ttl``: seconds; every key of a session expires this long after its last save (None: never).
    - ``cluster``: True for Redis Cluster, False for a single endpoint, None (``auto``) to ask the
      server (``INFO cluster``) on first use.
    - ``retries``, ``retry_backoff_base``, ``retry_backoff_cap``: redis-py's
      ``Retry(ExponentialBackoff(cap, base), retries)`` for connection errors and timeouts.
    - ``cache_size``: how many parent lineages to keep, so that a save needs no read.
    - ``compression``: ``zlib`` (default) compresses payloads over 256 bytes; ``none`` stores plain JSON.
    - ``min_replicas``, ``replica_timeout``: after each save, ``WAIT`` (same round trip) until this
      many replicas have it, up to ``replica_timeout`` seconds (default 1); fewer raise
      `StorageUnavailableError` saying the checkpoint is on the primary only. 0: no wait.
    """

    backend_name = "redis"
    schemes = ("redis", "rediss", "unix")
    #: the save script checks the session's generation itself (see `plans.Generations`), so an owned
    #: step is one round trip: the feature reads no generation before each save
    checks_generation_on_write = True

    def __init__(self, url: str, *, encryption_key: str | bytes | None = None, **options: Any) -> None:
        config = parse_config(url, options)
        settings = config.settings
        super().__init__(cache_size=max(1, settings["cache_size"]), encryption_key=encryption_key)
        self.url = config.display_url
        self.key_prefix: str = settings["key_prefix"]
        self.ttl: float | None = settings["ttl"]
        self._conn = RedisConnection(config)
        replicas: int = settings["min_replicas"]
        self._layout = Layout(
            url=self.url, key_prefix=self.key_prefix, ttl_ms=int(self.ttl * 1000) if self.ttl else 0,
            compress=settings["compression"] == "zlib",
            wait=(replicas, int(settings["replica_timeout"] * 1000)) if replicas else None,
            cluster=lambda: self._conn.cluster, sigs=LRUCache(max(1, settings["cache_size"])),
            gens=Generations(), forget=self._forget,
        )

    def _forget(self, session_id: str) -> None:
        """Drop the parent lineages cached for a session whose generation moved on (it was deleted)."""
        for cache in (self._lineages, self._stripped):
            cache.drop_session(session_id)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorageProvider:
        """Build from a Redis URL; keyword ``options`` win over the URL's query parameters."""
        return cls(url, **options)

    @classmethod
    def accepted_options(cls) -> frozenset[str] | None:
        """Any keyword: the provider's options, and redis-py's."""
        return None

    def __repr__(self) -> str:
        return f"RedisStorageProvider({self.url!r}, key_prefix={self.key_prefix!r})"

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """The URL (no password), the session's keys and the record's field."""
        return self._layout.where(session_id, checkpoint_id)

    # -- primitives (sync) ----------------------------------------------------------------------------------
    def write_record(self, record: NewRecord) -> None:
        """One script: create-only, parent check, record, index and TTL, atomically."""
        self._conn.run(self._layout.write_plan(record))

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The records (and their bases) in one script."""
        return self._conn.run(self._layout.records_plan(session_id, checkpoint_ids))

    def read_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """The record (or the latest) and its whole chain in one script."""
        return self._conn.run(self._layout.chain_plan(session_id, checkpoint_id))

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """One HMGET on the ``info`` hash."""
        return self._conn.run(self._layout.infos_plan(session_id, checkpoint_ids))

    def list_ids(self, session_id: str) -> list[str]:
        """The ``ids`` sorted set (damage raised if records exist without it)."""
        return self._conn.run(self._layout.ids_plan(session_id))

    def list_session_ids(self) -> list[str]:
        """The session index, checked against the sessions."""
        return self._conn.run(self._layout.sessions_plan())

    def delete_records(self, session_id: str) -> None:
        """Remove the session's keys and its index entry, advancing its generation in the same script."""
        self._conn.run(self._layout.delete_plan(session_id))

    # -- primitives (async, on redis.asyncio) ----------------------------------------------------------------
    async def awrite_record(self, record: NewRecord) -> None:
        """Async `write_record`."""
        await self._conn.arun(self._layout.write_plan(record))

    async def aread_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Async `read_records`."""
        return await self._conn.arun(self._layout.records_plan(session_id, checkpoint_ids))

    async def aread_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """Async `read_chain`."""
        return await self._conn.arun(self._layout.chain_plan(session_id, checkpoint_id))

    async def aread_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Async `read_info_lines`."""
        return await self._conn.arun(self._layout.infos_plan(session_id, checkpoint_ids))

    async def alist_ids(self, session_id: str) -> list[str]:
        """Async `list_ids`."""
        return await self._conn.arun(self._layout.ids_plan(session_id))

    async def alist_session_ids(self) -> list[str]:
        """Async `list_session_ids`."""
        return await self._conn.arun(self._layout.sessions_plan())

    async def adelete_records(self, session_id: str) -> None:
        """Async `delete_records`."""
        await self._conn.arun(self._layout.delete_plan(session_id))

    # -- leases and generations (p12: redis/_lease.py) -----------------------------------------------------------
    @contextlib.contextmanager
    def _leases(self, what: str) -> Iterator[RedisLeases]:
        """The lease operations on the sync client, redis-py errors translated (naming ``what``)."""
        with self._conn.translate(Call(("LEASE",), what)):
            yield RedisLeases(self._conn.sync_client(), self.key_prefix)

    def session_generation(self, session_id: str) -> int:
        """The number each delete advances (0 for a session never deleted)."""
        sid = validate_id(session_id, "session_id")
        with self._leases("reading the session generation") as leases:
            return int(leases.session_generation(sid))

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session's lease (``SET NX PX``) unless a live one exists (then None); the run's saves
        then expect the generation the lease was taken in (see `plans.Generations`)."""
        with self._leases(f"taking the lease of session {session_id!r}") as leases:
            lease = leases.acquire(session_id, owner, ttl)
        if lease is not None:
            self._layout.observe(lease.session_id, lease.generation)
        return lease

    def current_lease(self, session_id: str) -> Lease | None:
        """The session's live lease as stored, or None."""
        with self._leases(f"reading the lease of session {session_id!r}") as leases:
            return leases.current(session_id)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease; None if it was taken."""
        with self._leases("renewing a lease") as leases:
            return leases.renew(lease, ttl)

    def release_lease(self, lease: Lease) -> None:
        """Give a held lease up (a taken one is left alone)."""
        with self._leases("releasing a lease") as leases:
            leases.release(lease)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections (idempotent). Async clients are closed by `aclose`."""
        self._conn.close()

    async def aclose(self) -> None:
        """Close this event loop's async client, and the sync one."""
        await self._conn.aclose()
