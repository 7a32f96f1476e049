"""The storage-provider contract every backend keeps (`PersistencyStorageProvider`).

Providers know nothing of AG2: they store `Checkpoint` models and give them back. The contract
(create-only saves, "latest" = greatest checkpoint id, listing without payloads, typed errors,
validated ids) is stated once here and tested once in `persistency.testing`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any

from persistency.errors import PersistencyError, StorageUnavailableError
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo

__all__ = ["PersistencyStorageProvider"]


class PersistencyStorageProvider(ABC):
    """Where checkpoints live. Subclass it for a new backend; run `persistency.testing` against it.

    Rules every provider keeps:

    - ``save_checkpoint`` is create-only: an existing id raises `CheckpointConflictError`, and of
      two writers racing for one id exactly one wins.
    - Checkpoint ids sort in creation order; "latest" is the greatest id of the session.
    - A save stores what is new since the parent, not the whole transcript again; a load returns
      the full, materialized `Checkpoint`.
    - Every id is validated (`InvalidIdentifierError`) before it reaches a path or a key.
    - Backend errors surface as `PersistencyError` subclasses, never as raw client exceptions.

    The async twins run the sync method in a worker thread by default so that an async chat never
    blocks its event loop; a provider with a native async client overrides them.
    """

    #: URL schemes this provider serves (documentation: the registry's table decides).
    schemes: tuple[str, ...] = ()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PersistencyStorageProvider:
        """Build a provider from a URL (what `provider_from_url` calls).

        The default is ``cls(url, **options)``: the whole URL as the first argument, the options as
        keywords. Override it to parse your URL's syntax and query options; say in its docstring
        whether the URL's query or the keyword options win (ours: the keyword wins).
        """
        return cls(url, **options)  # type: ignore[call-arg]

    # -- the primitives ---------------------------------------------------------------------------
    @abstractmethod
    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint``; raise `CheckpointConflictError` if its id exists in its session."""

    @abstractmethod
    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint, materialized; `CheckpointNotFoundError` if absent."""

    @abstractmethod
    def list_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                         before: str | None = None) -> list[CheckpointInfo]:
        """The session's checkpoints, oldest first, without reading message payloads.

        Args:
            session_id: the session to list (an unknown session lists as empty).
            run_id: only checkpoints of this run.
            limit: at most this many, the newest ones (still returned oldest first).
            before: only checkpoints whose id sorts before this one.
        """

    @abstractmethod
    def list_sessions(self) -> list[str]:
        """Every session id that has at least one checkpoint, sorted."""

    @abstractmethod
    def delete_session(self, session_id: str) -> None:
        """Remove a session and everything stored for it (no error if it does not exist)."""

    # -- conveniences, written once on top of the primitives ---------------------------------------
    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of the session (greatest id), or None for an empty session."""
        infos = self.list_checkpoints(session_id, limit=1)
        return self.get_checkpoint(session_id, infos[-1].checkpoint_id) if infos else None

    def list_checkpoint_ids(self, session_id: str) -> list[str]:
        """Every checkpoint id of the session, sorted, without decoding records where the backend allows
        (so one damaged record cannot hide the others from ``verify`` or ``copy``)."""
        return [i.checkpoint_id for i in self.list_checkpoints(session_id)]

    async def alist_checkpoint_ids(self, session_id: str) -> list[str]:
        """Async `list_checkpoint_ids`."""
        return await asyncio.to_thread(self.list_checkpoint_ids, session_id)

    def iter_checkpoints(self, session_id: str, checkpoint_ids: Iterable[str] | None = None
                         ) -> Iterator[tuple[str, Checkpoint | PersistencyError]]:
        """Load many checkpoints of a session: ``(checkpoint_id, checkpoint)`` for each, in order.

        For each id it gives what `get_checkpoint` gives: the checkpoint, or, in its place, the
        `PersistencyError` that `get_checkpoint` raises for it (a damaged record, a missing base, a
        missing key), so one damaged checkpoint does not stop the walk. `StorageUnavailableError` is
        raised (the store is down: that is not about one checkpoint); a bad id is refused with
        `InvalidIdentifierError` before any read.

        Args:
            session_id: the session to walk.
            checkpoint_ids: the ids to load, in this order (parents before children is fastest);
                None: every checkpoint of the session, oldest first.

        The default calls `get_checkpoint` for each id (correct for any provider; n loads of whole
        chains). `persistency.storage.StorageBackend` overrides it with a walk that reads each record
        once and builds each transcript on its parent's.
        """
        sid = validate_id(session_id, "session_id")
        ids = self.list_checkpoint_ids(sid) if checkpoint_ids is None else _validated(checkpoint_ids)
        for cid in ids:
            try:
                loaded: Checkpoint | PersistencyError = self.get_checkpoint(sid, cid)
            except StorageUnavailableError:
                raise
            except PersistencyError as exc:
                loaded = exc
            yield cid, loaded

    async def aiter_checkpoints(self, session_id: str, checkpoint_ids: Iterable[str] | None = None
                                ) -> AsyncIterator[tuple[str, Checkpoint | PersistencyError]]:
        """Async `iter_checkpoints` (the default awaits `aget_checkpoint` for each id)."""
        sid = validate_id(session_id, "session_id")
        ids = await self.alist_checkpoint_ids(sid) if checkpoint_ids is None else _validated(checkpoint_ids)
        for cid in ids:
            try:
                loaded: Checkpoint | PersistencyError = await self.aget_checkpoint(sid, cid)
            except StorageUnavailableError:
                raise
            except PersistencyError as exc:
                loaded = exc
            yield cid, loaded

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections and files. Idempotent."""

    def __enter__(self) -> PersistencyStorageProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> PersistencyStorageProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- async twins --------------------------------------------------------------------------------
    async def asave_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Async `save_checkpoint`."""
        await asyncio.to_thread(self.save_checkpoint, checkpoint)

    async def aget_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Async `get_checkpoint`."""
        return await asyncio.to_thread(self.get_checkpoint, session_id, checkpoint_id)

    async def aget_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """Async `get_latest_checkpoint`."""
        return await asyncio.to_thread(self.get_latest_checkpoint, session_id)

    async def alist_checkpoints(self, session_id: str, *, run_id: str | None = None, limit: int | None = None,
                                before: str | None = None) -> list[CheckpointInfo]:
        """Async `list_checkpoints`."""
        return await asyncio.to_thread(
            self.list_checkpoints, session_id, run_id=run_id, limit=limit, before=before
        )

    async def alist_sessions(self) -> list[str]:
        """Async `list_sessions`."""
        return await asyncio.to_thread(self.list_sessions)

    async def adelete_session(self, session_id: str) -> None:
        """Async `delete_session`."""
        await asyncio.to_thread(self.delete_session, session_id)

    async def aclose(self) -> None:
        """Async `close`."""
        await asyncio.to_thread(self.close)


def _validated(checkpoint_ids: Iterable[str]) -> list[str]:
    """Ids a caller gave, each validated before any I/O."""
    return [validate_id(c, "checkpoint_id") for c in checkpoint_ids]
