"""`StorageBackend`: the documented base class for a storage backend, built on byte-level primitives.

A backend stores opaque record bytes under (session id, checkpoint id) and gives them back; the
base does the rest once for every backend: ids, linear storage (each record holds what is new
since its parent), checksums, encryption, caching, "latest", listing, typed errors, and the
async twins. A minimal backend implements five methods::

    class MyBackend(StorageBackend):
        backend_name = "mystore"
        def write_record(self, record): ...            # create-only; CheckpointConflictError if taken
        def read_records(self, session_id, ids): ...   # {id: bytes} of those that exist
        def list_ids(self, session_id): ...            # sorted ids ([] for an unknown session)
        def list_session_ids(self): ...                # sorted session ids with a record
        def delete_records(self, session_id): ...      # remove all; no error if absent

and may override `read_chain` (a whole chain in one request), `read_info_lines` (listing without
payloads), the lease primitives, `session_generation`, and the ``a``-prefixed async twins (which
default to a worker thread). `persistency.testing` checks the result.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

from pydantic import ConfigDict, NonNegativeInt

from persistency.errors import PersistencyError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.storage.cache import LRUCache
from persistency.storage.driver import PlanDriver
from persistency.storage.lease import Lease
from persistency.storage.ops import Plan
from persistency.storage.options import BackendOptions, validate_options
from persistency.storage.plans import ContractPlans
from persistency.storage.records import NewRecord, Record
from persistency.storage.walk import aiterate, iterate

__all__ = ["StorageBackend"]

T = TypeVar("T")


class _BaseOptions(BackendOptions):
    """The options every backend takes from the base."""

    model_config = ConfigDict(strict=True)
    cache_size: NonNegativeInt = 512


class StorageBackend(ContractPlans, PersistencyStorageProvider):
    """Base class for backends: implement the byte-level primitives, inherit the contract.

    Args:
        cache_size: how many parent lineages and keyframe records to keep in memory, so a save
            needs no read (records never change once written). 0 turns caching off.
        encryption_key: seal payloads with AES-256-GCM (`persistency.encryption`); the info line
            stays readable and is authenticated with the payload.
    """

    #: a short name for messages ("filesystem", "redis", "sqlite"): errors name the backend
    backend_name: ClassVar[str] = "storage"
    #: False for a store that lives in one process (``memory://``): the kit skips its process races
    shared_across_processes: bool = True

    def __init__(self, *, cache_size: int = 512, encryption_key: str | bytes | None = None) -> None:
        validate_options(_BaseOptions, {"cache_size": cache_size}, self.backend_name)
        self._lineages = LRUCache(cache_size)
        self._stripped = LRUCache(cache_size)
        self._cipher = None
        if encryption_key is not None:
            from persistency.encryption import PayloadCipher

            self._cipher = PayloadCipher(encryption_key)

    @classmethod
    def accepted_options(cls) -> frozenset[str] | None:
        """Keyword options ``from_url`` takes (None: any), so the registry passes only those."""
        params = inspect.signature(cls.__init__).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    # -- primitives a backend implements ------------------------------------------------------------------
    @abstractmethod
    def write_record(self, record: NewRecord) -> None:
        """Store ``record.data`` under (session, checkpoint) create-only and atomically: a reader sees
        all of it or nothing; `CheckpointConflictError` if the id is taken (of racers, one wins)."""

    def write_records(self, records: Sequence[NewRecord]) -> None:
        """Store a batch of new records (parents before children), each create-only.

        The default writes them one by one (a failure leaves the ones before it stored); a backend
        that can makes the batch one write and one sync (the filesystem: all or nothing).
        """
        for record in records:
            self.write_record(record)

    def read_record(self, session_id: str, checkpoint_id: str) -> bytes | None:
        """One record's bytes, or None if it does not exist (default: `read_records` of one id)."""
        return self.read_records(session_id, [checkpoint_id]).get(checkpoint_id)

    @abstractmethod
    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The bytes of those of ``checkpoint_ids`` that exist (a batch: one request where possible)."""

    def read_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """A record (None: the greatest id) and as many of its bases as are cheap to read, head first.

        The default reads the head only; the base reads the rest with `read_records`. A backend that
        indexes `NewRecord.base_id` can return the whole chain in one request.
        """
        if checkpoint_id is None:
            ids = self.list_ids(session_id)
            if not ids:
                return []
            checkpoint_id = ids[-1]
        data = self.read_record(session_id, checkpoint_id)
        return [] if data is None else [(checkpoint_id, data)]

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The first line of each record that exists (default: from `read_records`); listing reads only these."""
        return {cid: data.split(b"\n", 1)[0] for cid, data in self.read_records(session_id, checkpoint_ids).items()}

    @abstractmethod
    def list_ids(self, session_id: str) -> list[str]:
        """Every checkpoint id of the session, sorted (empty for an unknown session)."""

    @abstractmethod
    def list_session_ids(self) -> list[str]:
        """Every session id with at least one record, sorted."""

    @abstractmethod
    def delete_records(self, session_id: str) -> None:
        """Remove everything stored for the session (no error if absent), advancing its generation."""

    def decode_stored(self, session_id: str, checkpoint_id: str, data: bytes) -> Record:
        """Decode bytes this backend stored (checksums, the key and the ids checked), for a backend that
        must look inside its records (compaction): the `Record` with its raw info and deltas."""
        return self._decode(session_id, checkpoint_id, data)

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """Where a record or session lives, for messages (never a secret); override to name a path or key."""
        where = f"{self.backend_name} session {session_id!r}"
        return where if checkpoint_id is None else f"{where} checkpoint {checkpoint_id!r}"

    # -- generations and leases (the ownership issue); defaults for backends without them -------------------
    def session_generation(self, session_id: str) -> int:
        """A number that `delete_records` advances, so caches can key on (session, generation, id).

        The default, 0, means "not tracked": this process drops its caches on its own deletes only.
        """
        return 0

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session's lease for ``ttl`` seconds if nobody holds a live one; None if someone does."""
        raise NotImplementedError(f"the {self.backend_name} backend does not implement session leases")

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease by ``ttl`` seconds from now; None if it was lost (expired and taken)."""
        raise NotImplementedError(f"the {self.backend_name} backend does not implement session leases")

    def release_lease(self, lease: Lease) -> None:
        """Give a held lease up (no error if it was already lost)."""
        raise NotImplementedError(f"the {self.backend_name} backend does not implement session leases")

    # -- async twins of the primitives: a worker thread unless a backend has a native client -----------------
    async def awrite_record(self, record: NewRecord) -> None:
        """Async `write_record`."""
        await asyncio.to_thread(self.write_record, record)

    async def awrite_records(self, records: Sequence[NewRecord]) -> None:
        """Async `write_records`."""
        await asyncio.to_thread(self.write_records, records)

    async def aread_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Async `read_records`."""
        return await asyncio.to_thread(self.read_records, session_id, checkpoint_ids)

    async def aread_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """Async `read_chain`."""
        return await asyncio.to_thread(self.read_chain, session_id, checkpoint_id)

    async def aread_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Async `read_info_lines`."""
        return await asyncio.to_thread(self.read_info_lines, session_id, checkpoint_ids)

    async def alist_ids(self, session_id: str) -> list[str]:
        """Async `list_ids`."""
        return await asyncio.to_thread(self.list_ids, session_id)

    async def alist_session_ids(self) -> list[str]:
        """Async `list_session_ids`."""
        return await asyncio.to_thread(self.list_session_ids)

    async def adelete_records(self, session_id: str) -> None:
        """Async `delete_records`."""
        await asyncio.to_thread(self.delete_records, session_id)

    # -- drivers: one plan, run on the sync primitives or their async twins ----------------------------------
    def _run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` with the sync primitives."""
        driver = PlanDriver(self.backend_name, plan)
        for call in driver:
            try:
                driver.reply = getattr(self, call.name)(*call.args)
            except Exception as exc:  # `failed` re-raises all but the plan's own signal
                driver.failed(call, exc)
        return driver.result

    async def _arun(self, plan: Plan[T]) -> T:
        """Drive ``plan`` with the async twins (``a`` + the primitive's name)."""
        driver = PlanDriver(self.backend_name, plan)
        for call in driver:
            try:
                driver.reply = await getattr(self, "a" + call.name)(*call.args)
            except Exception as exc:  # `failed` re-raises all but the plan's own signal
                driver.failed(call, exc)
        return driver.result

    # -- the contract (sync), each a plan ---------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` create-only, keeping only what is new since its parent."""
        self._run(self._save_plan(checkpoint))

    def save_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store a batch (parents before children) with `write_records`: one sync where the backend can."""
        self._run(self._save_many_plan(checkpoints))

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint, its transcript rebuilt from its bases."""
        cp = self._run(self._load_plan(session_id, checkpoint_id))
        assert cp is not None  # a named id either loads or raises
        return cp

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The checkpoint with the greatest id, or None for an empty session."""
        return self._run(self._load_plan(session_id, None))

    def list_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                         before: str | None = None) -> list[CheckpointInfo]:
        """Infos oldest first, reading info lines only (never a message payload)."""
        return self._run(self._list_plan(session_id, run_id, limit, before))

    def iter_checkpoints(self, session_id: str, checkpoint_ids: Iterable[str] | None = None
                         ) -> Iterator[tuple[str, Checkpoint | PersistencyError]]:
        """What `get_checkpoint` gives for each id, each record read once (`persistency.storage.walk`):
        ``read_records`` in batches, each transcript built on its base's. The checkpoints share their
        message dicts: copy one (``model_copy(deep=True)``) before changing its messages."""
        return iterate(self, session_id, checkpoint_ids)

    def list_checkpoint_ids(self, session_id: str) -> list[str]:
        """Every checkpoint id of the session, sorted, from the listing alone (no record decoded)."""
        return self._run(self._ids_plan(session_id))

    def list_sessions(self) -> list[str]:
        """Every session id with at least one checkpoint, sorted."""
        return self._run(self._sessions_plan())

    def delete_session(self, session_id: str) -> None:
        """Remove the session; a missing session is not an error."""
        self._run(self._delete_plan(session_id))

    # -- the contract (async): the same plans on the async twins ------------------------------------------------
    async def asave_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Async `save_checkpoint`."""
        await self._arun(self._save_plan(checkpoint))

    async def asave_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Async `save_checkpoints`."""
        await self._arun(self._save_many_plan(checkpoints))

    async def aget_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Async `get_checkpoint`."""
        cp = await self._arun(self._load_plan(session_id, checkpoint_id))
        assert cp is not None
        return cp

    async def aget_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """Async `get_latest_checkpoint`."""
        return await self._arun(self._load_plan(session_id, None))

    async def alist_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                                before: str | None = None) -> list[CheckpointInfo]:
        """Async `list_checkpoints`."""
        return await self._arun(self._list_plan(session_id, run_id, limit, before))

    async def alist_checkpoint_ids(self, session_id: str) -> list[str]:
        """Async `list_checkpoint_ids`."""
        return await self._arun(self._ids_plan(session_id))

    def aiter_checkpoints(self, session_id: str, checkpoint_ids: Iterable[str] | None = None
                          ) -> AsyncIterator[tuple[str, Checkpoint | PersistencyError]]:
        """Async `iter_checkpoints`: the same walk on the async twins."""
        return aiterate(self, session_id, checkpoint_ids)

    async def alist_sessions(self) -> list[str]:
        """Async `list_sessions`."""
        return await self._arun(self._sessions_plan())

    async def adelete_session(self, session_id: str) -> None:
        """Async `delete_session`."""
        await self._arun(self._delete_plan(session_id))
