"""A provider built on a handful of byte-level primitives: one immutable record per checkpoint.

Backends that store one object per checkpoint (files, S3 objects) subclass
`RecordStorageProvider` and implement six small methods; the contract's logic (ids, deltas,
keyframes, latest, listing) lives here once.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from persistency._codec import (
    Lineage,
    Record,
    decode_info_line,
    decode_record,
    encode_record,
    info_from_raw,
    lineage_of,
    materialize,
)
from persistency.errors import CheckpointNotFoundError, CorruptCheckpointError
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider
from persistency.storage.cache import LRUCache

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["RecordStorageProvider"]


_LRU = LRUCache  # the old private name, still used by the S3 provider


class RecordStorageProvider(PersistencyStorageProvider):
    """Implements the contract over per-checkpoint records; subclasses supply the byte I/O."""

    def __init__(self, *, cache_size: int = 512, encryption_key: str | bytes | None = None) -> None:
        self._records = _LRU(cache_size)
        self._lineages = _LRU(cache_size)
        self._cipher: PayloadCipher | None = None
        if encryption_key is not None:
            from persistency.encryption import PayloadCipher

            self._cipher = PayloadCipher(encryption_key)

    # -- primitives a backend implements ------------------------------------------------------------
    @abstractmethod
    def _write_new(self, session_id: str, checkpoint_id: str, data: bytes) -> None:
        """Store ``data`` atomically under a new id; `CheckpointConflictError` if it exists."""

    @abstractmethod
    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        """The record's bytes; `CheckpointNotFoundError` if absent."""

    @abstractmethod
    def _list_ids(self, session_id: str) -> list[str]:
        """Every checkpoint id of the session, sorted (empty for an unknown session)."""

    @abstractmethod
    def _list_session_ids(self) -> list[str]:
        """Every session id with at least one record, sorted."""

    @abstractmethod
    def _delete(self, session_id: str) -> None:
        """Remove everything stored for the session."""

    @abstractmethod
    def _where(self, session_id: str, checkpoint_id: str) -> str:
        """A human-readable location of the record, for error messages (no secrets)."""

    def _read_info_line(self, session_id: str, checkpoint_id: str) -> bytes:
        """The first line of the record (the info); override to avoid reading the payload."""
        data = self._read(session_id, checkpoint_id)
        return data.split(b"\n", 1)[0]

    # -- record access with caching ---------------------------------------------------------------
    def _record(self, session_id: str, checkpoint_id: str, *, messages: bool = False) -> Record:
        """A decoded record. The cache keeps records without their messages (states and infos are
        what repeat lookups need), so a caller that wants messages always gets its own fresh copy
        and nothing it mutates can leak into a later load."""
        key = (session_id, checkpoint_id)
        if not messages:
            cached: Record | None = self._records.get(key)
            if cached is not None:
                return cached
        where = self._where(session_id, checkpoint_id)
        rec = decode_record(self._read(session_id, checkpoint_id), where, self._cipher)
        self._check_identity(rec.info, session_id, checkpoint_id, where)
        if not messages:  # a transcript's chain is read once; caching it would only churn the cache
            self._records.put(key, dataclasses.replace(rec, messages=[], stripped=True))
        return rec

    @staticmethod
    def _check_identity(info: dict[str, Any], session_id: str, checkpoint_id: str, where: str) -> None:
        if info.get("checkpoint_id") != checkpoint_id or info.get("session_id") != session_id:
            raise CorruptCheckpointError(
                f"{where}: holds checkpoint {info.get('checkpoint_id')!r} of session "
                f"{info.get('session_id')!r}, not {checkpoint_id!r} of {session_id!r}"
            )

    def _raw_info(self, session_id: str, checkpoint_id: str) -> dict[str, Any]:
        rec: Record | None = self._records.get((session_id, checkpoint_id))
        if rec is not None:
            return rec.info
        where = self._where(session_id, checkpoint_id)
        info = decode_info_line(self._read_info_line(session_id, checkpoint_id), where)
        self._check_identity(info, session_id, checkpoint_id, where)
        return info

    def _lineage(self, session_id: str, checkpoint_id: str) -> Lineage:
        lin: Lineage | None = self._lineages.get((session_id, checkpoint_id))
        if lin is None:
            lin = lineage_of(
                self._record(session_id, checkpoint_id, messages=True),
                lambda c: self._record(session_id, c, messages=True),
            )
            self._lineages.put((session_id, checkpoint_id), lin)
        return lin

    # -- the contract --------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` create-only, keeping only what is new since its parent."""
        sid = validate_id(checkpoint.session_id, "session_id")
        cid = validate_id(checkpoint.checkpoint_id, "checkpoint_id")
        parent: Lineage | None = None
        if checkpoint.parent_id is not None:
            pid = validate_id(checkpoint.parent_id, "parent_id")
            try:
                parent = self._lineage(sid, pid)
            except CheckpointNotFoundError as exc:
                raise CheckpointNotFoundError(
                    f"checkpoint {cid!r} names parent {pid!r}, which is not in session {sid!r}"
                ) from exc
        data, lineage = encode_record(checkpoint, parent, self._cipher)
        self._write_new(sid, cid, data)
        self._lineages.put((sid, cid), lineage)

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        """Load one checkpoint and rebuild its full transcript from its bases."""
        sid = validate_id(session_id, "session_id")
        cid = validate_id(checkpoint_id, "checkpoint_id")
        return materialize(self._record(sid, cid, messages=True), lambda c: self._record(sid, c, messages=True))

    def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The checkpoint with the greatest id, or None for an empty session."""
        sid = validate_id(session_id, "session_id")
        ids = self._list_ids(sid)
        return self.get_checkpoint(sid, ids[-1]) if ids else None

    def list_checkpoints(
        self,
        session_id: str,
        *,
        run_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Infos oldest first, reading one info line per checkpoint and no message payloads."""
        sid = validate_id(session_id, "session_id")
        if before is not None:
            validate_id(before, "before")
        if run_id is not None:
            validate_id(run_id, "run_id")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        ids = self._list_ids(sid)
        if before is not None:
            ids = [i for i in ids if i < before]
        raws: dict[str, dict[str, Any]] = {}

        def fetch_info(cid: str) -> dict[str, Any]:
            if cid not in raws:
                raws[cid] = self._raw_info(sid, cid)
            return raws[cid]

        out: list[CheckpointInfo] = []
        for cid in reversed(ids):  # newest first, so a limit reads only what it returns
            if limit is not None and len(out) >= limit:
                break
            raw = fetch_info(cid)
            if run_id is not None and raw.get("run_id") != run_id:
                continue
            out.append(info_from_raw(raw, self._where(sid, cid), fetch_info))
        out.reverse()
        return out

    def list_checkpoint_ids(self, session_id: str) -> list[str]:
        """Every checkpoint id of the session, sorted, from names alone (no record is decoded)."""
        return self._list_ids(validate_id(session_id, "session_id"))

    def list_sessions(self) -> list[str]:
        """Every session id with at least one checkpoint, sorted."""
        return self._list_session_ids()

    def delete_session(self, session_id: str) -> None:
        """Remove the session; a missing session is not an error."""
        sid = validate_id(session_id, "session_id")
        self._delete(sid)
        self._records.drop_session(sid)
        self._lineages.drop_session(sid)
