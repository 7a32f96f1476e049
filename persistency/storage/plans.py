"""The contract's logic as I/O-free plans: save, load, list, delete, written once for sync and async.

Each plan yields `persistency.storage.ops` operations and gets their replies; it validates ids,
encodes against the parent's cached `Lineage`, follows base pointers, resolves keyframes, and
checks that every record read belongs where it was found. Records are decoded once per load.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidIdentifierError,
)
from persistency.ids import MAX_ID_LENGTH, validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.storage.assemble import info_from_raw, lineage_of, materialize
from persistency.storage.cache import LRUCache
from persistency.storage.decode import decode_info_line, decode_record, decode_records
from persistency.storage.encode import SEALED_ERROR, encode
from persistency.storage.ops import (
    Delete,
    ListIds,
    ListSessions,
    Plan,
    Read,
    ReadChain,
    ReadInfos,
    StaleParent,
    Write,
    WriteMany,
)
from persistency.storage.options import check_limit
from persistency.storage.records import Lineage, Record

if TYPE_CHECKING:
    from persistency.encryption import PayloadCipher

__all__ = ["ContractPlans"]

T = TypeVar("T")


class _Missing(Exception):
    """Internal: the codec asked for a record the plan has not read yet."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(checkpoint_id)
        self.checkpoint_id = checkpoint_id


class ContractPlans:
    """The plans behind `StorageBackend`'s contract methods (state: caches and the cipher)."""

    _cipher: PayloadCipher | None
    _lineages: LRUCache
    _stripped: LRUCache

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """Where a record (or a session) lives, for messages; no secrets."""
        raise NotImplementedError

    # -- decoding what was read --------------------------------------------------------------------------
    def _decode(self, sid: str, cid: str, data: bytes) -> Record:
        where = self.describe(sid, cid)
        rec = decode_record(data, where, self._cipher)
        _check_identity(rec.info, sid, cid, where)
        if any("full" in d for d in rec.deltas.values()):  # keyframes are what later lookups need
            self._stripped.put((sid, cid), _stripped(rec))
        return rec

    def _decode_all(self, sid: str, rows: dict[str, bytes] | list[tuple[str, bytes]]) -> dict[str, Record]:
        """Decode what a backend returned in one pass (`decode_records`): each checksum checked, the JSON
        parsed together, the ids checked against the keys they were found under."""
        items = list(rows.items()) if isinstance(rows, dict) else list(rows)
        if not _all_ids(items):  # the common case is checked in one match; else name the bad one
            items = [(_referenced(self, sid, cid), data) for cid, data in items]
        if len(items) == 1:
            cid, data = items[0]
            return {cid: self._decode(sid, cid, data)}
        where = self._wheres(sid)
        recs = decode_records(items, where, self._cipher)
        refs = {d["ref"] for rec in recs for d in rec.deltas.values() if "ref" in d}
        out: dict[str, Record] = {}
        for i, ((cid, _), rec) in enumerate(zip(items, recs, strict=True)):
            _check_identity(rec.info, sid, cid, rec.where)
            out[cid] = rec
            # Keep the keyframes this chain refers to (what a later save or listing looks up), and the head's.
            if (i == 0 or cid in refs) and any("full" in d for d in rec.deltas.values()):
                self._stripped.put((sid, cid), _stripped(rec))
        return out

    def _wheres(self, sid: str) -> Callable[[str], str]:
        """``describe`` of the session's records, for messages (the session's part formatted once)."""
        return lambda cid: self.describe(sid, cid)

    def _read_plan(self, sid: str, ids: list[str], records: dict[str, Record], who: str) -> Plan[None]:
        """Add ``ids`` to ``records`` (one read); an id that is not stored is damage, named by ``who``."""
        wanted = tuple(dict.fromkeys(_referenced(self, sid, c) for c in ids if c not in records))
        if not wanted:
            return
        got = self._decode_all(sid, (yield Read(sid, wanted)))
        for cid in wanted:
            if cid not in got:
                raise CorruptCheckpointError(
                    f"{self.describe(sid, cid)}: missing, but {who} refers to it (the session is damaged)"
                )
        records.update(got)

    def _gather_plan(self, sid: str, head: Record, records: dict[str, Record], *, chain: bool = True) -> Plan[None]:
        """Read the head's base chain (unless not ``chain``) and the keyframes it names, where ``records``
        lacks them."""
        cur, seen = head, {head.checkpoint_id}
        while chain and cur.base is not None:
            if cur.base in seen:
                raise CorruptCheckpointError(f"{cur.where}: base chain loops at {cur.base!r}")
            seen.add(cur.base)
            if cur.base not in records:
                yield from self._read_plan(sid, [cur.base], records, f"checkpoint {cur.checkpoint_id!r}")
            cur = records[cur.base]
        refs = [str(d["ref"]) for d in head.deltas.values() if "ref" in d]
        yield from self._read_plan(sid, refs, records, f"checkpoint {head.checkpoint_id!r}")

    def _resolve_plan(self, sid: str, records: dict[str, Record],
                      fn: Callable[[Callable[[str], Record]], T]) -> Plan[T]:
        """Run codec ``fn`` over ``records``, reading any record it asks for that is not there yet."""

        def lookup(cid: str) -> Record:
            if cid in records:
                return records[cid]
            cached: Record | None = self._stripped.get((sid, cid))
            if cached is not None:
                return cached
            raise _Missing(cid)

        while True:
            try:
                return fn(lookup)
            except _Missing as miss:
                yield from self._read_plan(sid, [miss.checkpoint_id], records, "another checkpoint")

    # -- the contract's plans ---------------------------------------------------------------------------
    def _load_plan(self, session_id: str, checkpoint_id: str | None) -> Plan[Checkpoint | None]:
        """Load one checkpoint (or the latest): its chain as the backend reads it, then what is missing."""
        sid = validate_id(session_id, "session_id")
        cid = None if checkpoint_id is None else validate_id(checkpoint_id, "checkpoint_id")
        rows = yield ReadChain(sid, cid)
        if not rows:
            if cid is None:
                return None
            raise CheckpointNotFoundError(f"no checkpoint {cid!r} in session {sid!r} ({self.describe(sid, cid)})")
        head_id = _referenced(self, sid, rows[0][0])
        if cid is not None and head_id != cid:
            raise CorruptCheckpointError(f"{self.describe(sid, cid)}: the backend returned {head_id!r} instead")
        records = self._decode_all(sid, rows)
        head = records[head_id]
        yield from self._gather_plan(sid, head, records)
        checkpoint = yield from self._resolve_plan(sid, records, lambda fetch: materialize(head, fetch))
        # A worker that resumes loads the latest and then saves its child: keep what that save needs.
        lineage = yield from self._resolve_plan(sid, records, lambda fetch: lineage_of(head, fetch))
        self._lineages.put((sid, head_id), lineage)
        return checkpoint

    def _lineage_plan(self, sid: str, pid: str, cid: str, *, cached: bool = True) -> Plan[Lineage]:
        """What the encoder needs of the parent: from the cache, else read from storage."""
        hit: Lineage | None = self._lineages.get((sid, pid)) if cached else None
        if hit is not None:
            return hit
        rows = yield Read(sid, (pid,))
        if pid not in rows:
            raise CheckpointNotFoundError(f"checkpoint {cid!r} names parent {pid!r}, which is not in session {sid!r}")
        records = self._decode_all(sid, rows)
        parent = records[pid]
        yield from self._gather_plan(sid, parent, records, chain=False)  # a lineage needs the keyframes only
        lineage = yield from self._resolve_plan(sid, records, lambda fetch: lineage_of(parent, fetch))
        self._lineages.put((sid, pid), lineage)
        return lineage

    def _save_plan(self, checkpoint: Checkpoint) -> Plan[None]:
        """Store ``checkpoint`` create-only, keeping only what is new since its parent."""
        sid = validate_id(checkpoint.session_id, "session_id")
        cid = validate_id(checkpoint.checkpoint_id, "checkpoint_id")
        pid = None if checkpoint.parent_id is None else validate_id(checkpoint.parent_id, "parent_id")
        for attempt in range(3):
            parent: Lineage | None = None
            if pid is not None:  # the usual save: the parent's lineage is cached (no plan to step through)
                parent = self._lineages.get((sid, pid)) if attempt == 0 else None
                if parent is None:
                    parent = yield from self._lineage_plan(sid, pid, cid, cached=False)
            record = encode(checkpoint, parent, self._cipher)
            try:
                yield Write(record)
            except StaleParent:
                self._lineages.drop_session(sid)  # the session was re-created under us: re-read the parent
                self._stripped.drop_session(sid)
                continue
            self._lineages.put((sid, cid), record.lineage)
            return
        raise CheckpointConflictError(
            f"checkpoint {cid!r}: its parent {pid!r} in session {sid!r} kept changing while saving "
            "(the session is being deleted and re-created concurrently)"
        )

    def _save_many_plan(self, checkpoints: Sequence[Checkpoint]) -> Plan[None]:
        """Store ``checkpoints`` (parents before children) create-only as one batch (one sync where the
        backend can): each encoded against its parent, from the batch itself when it is there."""
        for attempt in range(3):
            pending: dict[tuple[str, str], Lineage] = {}
            records = []
            for checkpoint in checkpoints:
                sid = validate_id(checkpoint.session_id, "session_id")
                cid = validate_id(checkpoint.checkpoint_id, "checkpoint_id")
                parent = None
                if checkpoint.parent_id is not None:
                    pid = validate_id(checkpoint.parent_id, "parent_id")
                    parent = pending.get((sid, pid))
                    if parent is None:
                        parent = yield from self._lineage_plan(sid, pid, cid, cached=attempt == 0)
                record = encode(checkpoint, parent, self._cipher)
                pending[(sid, cid)] = record.lineage
                records.append(record)
            if not records:
                return
            try:
                yield WriteMany(tuple(records))
            except StaleParent:  # the first record's parent was re-created under us (nothing stored yet)
                for sid in {r.session_id for r in records}:
                    self._lineages.drop_session(sid)
                    self._stripped.drop_session(sid)
                continue
            for key, lineage in pending.items():
                self._lineages.put(key, lineage)
            return
        raise CheckpointConflictError("a batch's parents kept changing while saving (sessions re-created concurrently)")

    def _list_plan(self, session_id: str, run_id: str | None, limit: object,
                   before: str | None) -> Plan[list[CheckpointInfo]]:
        """Infos oldest first, reading info lines only (newest first, so a limit reads what it returns)."""
        sid = validate_id(session_id, "session_id")
        if before is not None:
            validate_id(before, "before")
        if run_id is not None:
            validate_id(run_id, "run_id")
        lim = check_limit(limit)
        if lim == 0:
            return []
        ids: list[str] = yield ListIds(sid)
        if before is not None:
            ids = [i for i in ids if i < before]
        raws: dict[str, dict[str, Any]] = {}
        selected: list[str] = []
        window = len(ids) if lim is None or run_id is not None else lim
        end = len(ids)
        while end > 0 and (lim is None or len(selected) < lim):
            batch = ids[max(0, end - window):end]
            end -= len(batch)
            yield from self._infos_plan(sid, batch, raws)
            for cid in reversed(batch):
                if run_id is not None and raws[cid].get("run_id") != run_id:
                    continue
                selected.append(cid)
                if lim is not None and len(selected) >= lim:
                    break
        refs = [str(m["ref"]) for c in selected if "ref" in (m := raws[c]["metadata"])]
        yield from self._infos_plan(sid, refs, raws)
        out = []
        for cid in reversed(selected):
            raw = raws[cid]
            if raw.get(SEALED_ERROR) and self._cipher is not None:  # error text lives in the sealed payload
                got = yield Read(sid, (cid,))
                if cid in got:
                    raw = dict(self._decode(sid, cid, got[cid]).info)
            out.append(info_from_raw(raw, self.describe(sid, cid), raws.__getitem__))
        return out

    def _infos_plan(self, sid: str, ids: list[str], raws: dict[str, dict[str, Any]]) -> Plan[None]:
        """Add the raw infos of ``ids`` to ``raws`` (cached ones without I/O); a missing one is damage."""
        wanted = []
        for cid in dict.fromkeys(_referenced(self, sid, c) for c in ids):
            if cid in raws:
                continue
            cached: Record | None = self._stripped.get((sid, cid))
            if cached is not None:
                raws[cid] = cached.info
            else:
                wanted.append(cid)
        if not wanted:
            return
        lines = yield ReadInfos(sid, tuple(wanted))
        for cid in wanted:
            where = self.describe(sid, cid)
            if cid not in lines:
                raise CorruptCheckpointError(f"{where}: listed, or referred to, but its record is missing")
            info = decode_info_line(lines[cid], where)
            _check_identity(info, sid, cid, where)
            raws[cid] = info

    def _ids_plan(self, session_id: str) -> Plan[list[str]]:
        """Every checkpoint id of the session from the backend's listing (no record decoded)."""
        return list((yield ListIds(validate_id(session_id, "session_id"))))

    def _sessions_plan(self) -> Plan[list[str]]:
        """Every session id the backend lists, sorted."""
        return sorted((yield ListSessions()))

    def _delete_plan(self, session_id: str) -> Plan[None]:
        """Remove the session; forget what this process cached of it."""
        sid = validate_id(session_id, "session_id")
        self._lineages.drop_session(sid)
        self._stripped.drop_session(sid)
        yield Delete(sid)
        self._lineages.drop_session(sid)
        self._stripped.drop_session(sid)


def _stripped(rec: Record) -> Record:
    """A cached copy of a keyframe record without its messages (never used to build a transcript)."""
    return Record(rec.where, rec.info, rec.base, rec.base_step, [], rec.deltas, True)


def _check_identity(info: dict[str, Any], sid: str, cid: str, where: str) -> None:
    if info.get("checkpoint_id") != cid or info.get("session_id") != sid:
        raise CorruptCheckpointError(
            f"{where}: holds checkpoint {info.get('checkpoint_id')!r} of session "
            f"{info.get('session_id')!r}, not {cid!r} of {sid!r}"
        )


_IDS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._@+=-]{0,%d}\n)*" % (MAX_ID_LENGTH - 1))


def _all_ids(items: list[tuple[Any, bytes]]) -> bool:
    """True if every key of ``items`` is a valid id (the rules of `validate_id`, in one match)."""
    if not all(type(cid) is str for cid, _ in items):
        return False
    text = "".join(cid + "\n" for cid, _ in items)
    return ".." not in text and text.count("\n") == len(items) and _IDS.fullmatch(text) is not None


def _referenced(plans: ContractPlans, sid: str, cid: object) -> str:
    """An id found in stored bytes or a backend's reply: a bad one means damage, not bad input."""
    text = cid.decode("utf-8", "replace") if isinstance(cid, bytes) else cid
    try:
        return validate_id(text, "stored checkpoint id")
    except InvalidIdentifierError as exc:
        raise CorruptCheckpointError(f"{plans.describe(sid)}: {exc}") from exc
