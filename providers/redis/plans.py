"""The Redis side of each storage primitive as an I/O-free plan (run by `client.RedisConnection`).

- write: one round trip. Generation check (see `Generations`), create-only check, parent check
  (its signature, when this process knows it, so a session deleted and re-created elsewhere is
  noticed), record, index, TTL, atomically in one script; with ``min_replicas``, ``WAIT`` in the
  same pipeline.
- chain: one round trip. The script walks the base pointers server-side and returns the chain,
  with the session's generation it belongs to.
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
    SessionDeletedError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.storage import LRUCache, NewRecord
from persistency.storage.ops import StaleParent

from .formats import pack_payload, rows, signature, text, unpack_reply
from .scripts import CONNECT, Batch, Call, Keys, Plan, Script

__all__ = ["Generations", "Layout"]

_SESSIONS_REMEMBERED = 100_000  # sessions whose generation a provider keeps (about 100 bytes each)


class Generations:
    """The generation of each session this provider instance last worked in: the one a save expects.

    A session's generation (the ``P:{S}:gen`` counter) is advanced by each delete, in the delete's
    own script. This provider notes the generation it *observed* for a session, each time atomically
    with what it observed:

    - taking the session's lease (the acquire script reads it as it sets the lease): a worker owns
      the run in that generation;
    - loading a chain (the load script returns it with the records): what was read belongs to it;
    - every save (the save script returns it): the first save of an instance that saw nothing yet
      starts working in the current one;
    - its own delete (the new one: the delete script advances it and returns it).

    A save with a parent passes the expected generation to the save script, which compares it with
    the stored one *before* writing anything: another instance's delete since then (or a delete and
    a re-creation under the same ids) fails the save with `SessionDeletedError` and stores nothing,
    so no orphan and no splice, in the same round trip as the write. The expectation is not moved by
    the refusal: every later child of that old generation is refused too, until this instance reads
    the session again (a new turn of its worker) or takes its lease again. That is SQLite's rule too.

    Not checked:

    - a save without a parent (a session's first): it depends on nothing stored, so it cannot orphan
      or splice; it starts the session in its current generation;
    - a session this instance never observed (a fresh process that saves a child without reading it
      first, or one of more than 100,000 sessions this instance forgot): the script's parent checks
      (the parent exists; its signature, when known) are what guard it, as before.

    One instance shared by several chats of one process shares the expectation per session: a read by
    another chat of the same session moves it (the owned run holds the lease, so that other chat is
    only a reader); a child of the deleted generation then still fails, on its missing parent.
    """

    def __init__(self, size: int = _SESSIONS_REMEMBERED) -> None:
        self._seen = LRUCache(size)

    def expected(self, session_id: str) -> int | None:
        """The generation this instance last worked in for the session (None: never observed)."""
        got = self._seen.get((session_id,))
        return None if got is None else int(got)

    def observe(self, session_id: str, generation: int) -> bool:
        """Note the generation just observed; True if it differs from the one before (a delete happened)."""
        before = self.expected(session_id)
        self._seen.put((session_id,), generation)
        return before is not None and before != generation


def _generation(value: Any, where: str) -> int:
    try:
        return int(text(value))
    except (TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{where}: the session's generation counter is not a number") from exc


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
    #: the generation this instance last worked in, per session (what a save with a parent expects)
    gens: Generations
    #: called with a session id when a newer generation is observed (drop what was cached of the old)
    forget: Callable[[str], None]

    @property
    def index_key(self) -> str:
        """The session index (a sorted set of session ids)."""
        return f"{self.key_prefix}:sessions"

    def keys(self, session_id: str) -> Keys:
        """The session's keys: ``PREFIX:{SESSION}:...``, one hash tag, one slot."""
        base = f"{self.key_prefix}:{{{session_id}}}"
        return Keys(f"{base}:ids", f"{base}:info", f"{base}:payload", f"{base}:gen")

    def where(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """Where a record lives, for messages (URL without password, keys, field)."""
        keys = self.keys(session_id)
        field = f" field {checkpoint_id!r}" if checkpoint_id else ""
        return f"{self.url} keys {keys.info!r}/{keys.payload!r}{field}"

    def session_keys(self, keys: Keys) -> tuple[str, ...]:
        """The keys a save or delete names: the generation, and the index too on a single node (atomic there)."""
        return keys.with_gen if self.cluster() else (*keys.with_gen, self.index_key)

    def observe(self, sid: str, generation: int) -> None:
        """Note an observed generation; a newer one drops this process's signatures and lineages of the session."""
        if self.gens.observe(sid, generation):
            self.sigs.drop_session(sid)
            self.forget(sid)

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
        expected = self.gens.expected(sid) if pid is not None else None
        what = f"saving checkpoint {cid!r} of session {sid!r}"
        if self.cluster() and pid is None:
            # The index entry goes first, so a crash after the record cannot leave it unlisted.
            yield Call(("ZADD", self.index_key, 0, sid), f"indexing session {sid!r}")
        reply = yield Script("save", self.session_keys(keys),
                             (cid, record.info_line, payload, nonce, pid or "", sig, self.ttl_ms, sid,
                              "" if expected is None else str(expected)), what, self.wait)
        (status, gen_value), acked = (reply[0], int(reply[1])) if self.wait else (reply, 0)
        status, gen = text(status), _generation(gen_value, self.where(sid))
        if status == "deleted":
            self.sigs.drop_session(sid)
            self.forget(sid)  # the expectation stays: every child of the old generation is refused
            raise SessionDeletedError(
                f"session {sid!r} was deleted while this provider worked in it (generation {expected} -> {gen}, "
                f"{self.where(sid)}); checkpoint {cid!r} was not saved, the chat must stop (reload the session "
                "to work in its new generation)")
        self.observe(sid, gen)  # what the script saw: the generation this save worked in
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
        gen_value, *reply = yield Script("load", keys.with_gen, (cid or "",), what)
        self.observe(sid, _generation(gen_value, self.where(sid)))  # before the head's signature is noted
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
        gen = yield Script("delete", self.session_keys(keys), (sid,), what)  # the keys and the generation
        self.sigs.drop_session(sid)
        self.observe(sid, _generation(gen, self.where(sid)))
        if self.cluster():
            yield Call(("ZREM", self.index_key, sid), what)
            if (yield Call(("EXISTS", keys.ids), what)):  # re-created meanwhile: keep it listed
                yield Call(("ZADD", self.index_key, 0, sid), what)
