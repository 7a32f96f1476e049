"""The Redis side of each storage primitive as an I/O-free plan (run by `client.RedisConnection`).

- write: one round trip. Create-only check, parent check (its signature, when this process
  knows it, so a session deleted and re-created elsewhere is noticed), record, index, TTL,
  atomically in one script; with ``min_replicas``, ``WAIT`` in the same pipeline.
- chain: one round trip. The script walks the base pointers server-side and returns the chain.
- records, info lines, ids: one round trip each.
- sessions and delete: the index protocol that never loses a session on a cluster (see `provider`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    PersistencyError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.storage import LRUCache, NewRecord
from persistency.storage.ops import StaleParent

from .formats import pack_payload, rows, signature, text, unpack_reply
from .scripts import CONNECT, Batch, Call, Keys, Plan, Script

__all__ = ["Layout"]


@dataclass
class Layout:
    """Where a provider's data lives and how it writes: what every plan needs (no connection)."""

    url: str
    key_prefix: str
    ttl_ms: int
    compress: bool
    #: (replicas, timeout ms) to WAIT for after each save, or None
    wait: tuple[int, int] | None
    #: True on a cluster; read after CONNECT (None before the first connection)
    cluster: Callable[[], bool | None]
    #: parent signatures this process knows: (session, id) -> sha1 of the stored values
    sigs: LRUCache

    @property
    def index_key(self) -> str:
        """The session index (a sorted set of session ids)."""
        return f"{self.key_prefix}:sessions"

    def keys(self, session_id: str) -> Keys:
        """The session's keys: ``PREFIX:{SESSION}:...``, one hash tag, one slot."""
        base = f"{self.key_prefix}:{{{session_id}}}"
        return Keys(f"{base}:ids", f"{base}:info", f"{base}:payload")

    def where(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """Where a record lives, for messages (URL without password, keys, field)."""
        keys = self.keys(session_id)
        field = f" field {checkpoint_id!r}" if checkpoint_id else ""
        return f"{self.url} keys {keys.info!r}/{keys.payload!r}{field}"

    def session_keys(self, keys: Keys) -> tuple[str, ...]:
        """The keys a session script names: the index too on a single node, where it is atomic."""
        return keys.all if self.cluster() else (*keys.all, self.index_key)

    def _rows(self, sid: str, reply: Any, signed: int | None = None) -> dict[str, bytes]:
        got, sigs = rows(reply, lambda cid: self.where(sid, cid), signed)
        for cid, sig in sigs.items():
            self.sigs.put((sid, cid), sig)
        return got

    # -- plans --------------------------------------------------------------------------------------------
    def write_plan(self, record: NewRecord) -> Plan[None]:
        """Store ``record`` create-only; `StaleParent` if the parent was re-created under this process."""
        sid, cid, pid = record.session_id, record.checkpoint_id, record.parent_id
        keys = self.keys(sid)
        yield CONNECT
        nonce = secrets.token_hex(8)
        payload = pack_payload(nonce, record.base_id, record.payload_line, self.compress)
        sig = (self.sigs.get((sid, pid)) or "") if pid is not None else ""
        what = f"saving checkpoint {cid!r} of session {sid!r}"
        if self.cluster() and pid is None:
            # The index entry goes first, so a crash after the record cannot leave it unlisted.
            yield Call(("ZADD", self.index_key, 0, sid), f"indexing session {sid!r}")
        reply = yield Script("save", self.session_keys(keys),
                             (cid, record.info_line, payload, nonce, pid or "", sig, self.ttl_ms, sid), what, self.wait)
        status, acked = (text(reply[0]), int(reply[1])) if self.wait else (text(reply), 0)
        if status == "conflict":
            raise CheckpointConflictError(f"checkpoint {cid!r} already exists in session {sid!r}")
        if status == "noparent":
            self.sigs.drop_session(sid)
            raise CheckpointNotFoundError(f"checkpoint {cid!r} names parent {pid!r}, which is not in session {sid!r}")
        if status == "stale":
            self.sigs.drop_session(sid)
            raise StaleParent(f"parent {pid!r} of {cid!r} in session {sid!r} was re-created by another writer")
        if status not in ("ok", "created", "replay"):
            raise StorageUnavailableError(f"Redis at {self.url}: unexpected reply {status!r} while {what}")
        if self.cluster() and pid is None and status in ("created", "replay"):
            # Again after the record: a delete racing the first save may have removed the entry.
            yield Call(("ZADD", self.index_key, 0, sid), f"indexing session {sid!r}")
        self.sigs.put((sid, cid), signature(record.info_line, payload))
        if self.wait and acked < self.wait[0]:
            raise StorageUnavailableError(
                f"Redis at {self.url}: checkpoint {cid!r} of session {sid!r} was written on the primary, but "
                f"only {acked} of {self.wait[0]} replicas confirmed it within {self.wait[1]} ms; it could be "
                "lost if the primary fails before it replicates"
            )

    def chain_plan(self, sid: str, cid: str | None) -> Plan[list[tuple[str, bytes]]]:
        """A record (or the latest) and its whole base chain, head first, in one script."""
        keys = self.keys(sid)
        what = f"loading {'the latest checkpoint' if cid is None else repr(cid)} of session {sid!r}"
        reply = yield Script("load", keys.all, (cid or "",), what)
        if reply and text(reply[0]) == "damaged":
            missing = text(reply[1])
            raise CorruptCheckpointError(
                f"{self.where(sid)}: " + ("the session's index is missing but its records are not (evicted?)"
                                          if missing == "no index" else
                                          f"{missing!r} is listed but its record is missing (evicted or damaged)")
            )
        if not reply:
            return []
        reply = unpack_reply(reply, self.where(sid))
        got = self._rows(sid, reply, signed=1)  # the head: what a resuming worker saves a child of
        return [(text(i), got[text(i)]) for i in reply[0] if text(i) in got]

    def records_plan(self, sid: str, ids: Sequence[str]) -> Plan[dict[str, bytes]]:
        """The records of ``ids`` (and their bases) in one script."""
        reply = yield Script("fetch", self.keys(sid).all, tuple(ids), f"reading checkpoints of session {sid!r}")
        return self._rows(sid, reply)

    def infos_plan(self, sid: str, ids: Sequence[str]) -> Plan[dict[str, bytes]]:
        """The info lines of ``ids`` (one HMGET; no payload is read)."""
        lines = yield Call(("HMGET", self.keys(sid).info, *ids), f"listing session {sid!r}")
        return {cid: line for cid, line in zip(ids, lines, strict=True) if line is not None}

    def ids_plan(self, sid: str) -> Plan[list[str]]:
        """The session's ids; damage (records without their index) raised, never an empty session."""
        reply = yield Script("ids", self.keys(sid).all, (), f"listing session {sid!r}")
        if isinstance(reply, bytes | str):
            raise CorruptCheckpointError(f"{self.where(sid)}: the session's index is missing but its records are not")
        return [text(i) for i in reply]

    def sessions_plan(self) -> Plan[list[str]]:
        """The index, checked against the sessions (stale entries pruned with a re-check)."""
        what = "listing sessions"
        names = yield Call(("ZRANGE", self.index_key, 0, -1), what)
        sids = []
        for name in names:
            with contextlib.suppress(PersistencyError):
                sids.append(validate_id(text(name)))
        if not sids:
            return []
        exists = yield Batch(tuple(Call(("EXISTS", *self.keys(s).all), what) for s in sids), what)
        live = [s for s, e in zip(sids, exists, strict=True) if e]
        stale = [s for s, e in zip(sids, exists, strict=True) if not e]
        if stale:
            # Prune entries of sessions that expired (TTL) or were half-created by a crash; re-check
            # afterwards so that a session created meanwhile keeps its entry.
            yield Call(("ZREM", self.index_key, *stale), what)
            again = yield Batch(tuple(Call(("EXISTS", *self.keys(s).all), what) for s in stale), what)
            back = [s for s, e in zip(stale, again, strict=True) if e]
            if back:
                yield Call(("ZADD", self.index_key, *[x for s in back for x in (0, s)]), what)
            live.extend(back)
        return sorted(live)

    def delete_plan(self, sid: str) -> Plan[None]:
        """Remove the session's keys and its index entry (re-added if the session came back meanwhile)."""
        keys = self.keys(sid)
        what = f"deleting session {sid!r}"
        yield CONNECT
        yield Script("delete", self.session_keys(keys), (sid,), what)
        yield Call(("INCR", f"{self.key_prefix}:{{{sid}}}:gen"), what)  # p12: the generation (redis/_lease.py)
        self.sigs.drop_session(sid)
        if self.cluster():
            yield Call(("ZREM", self.index_key, sid), what)
            if (yield Call(("EXISTS", keys.ids), what)):  # re-created meanwhile: keep it listed
                yield Call(("ZADD", self.index_key, 0, sid), what)
