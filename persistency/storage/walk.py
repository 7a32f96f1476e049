"""Walking a session's checkpoints with each record read and decoded once: `StorageBackend.iter_checkpoints`.

Loading each of a session's n checkpoints with ``get_checkpoint`` rebuilds every transcript from its
chain of delta records: n(n+1)/2 record reads and decodes. The walk reads the records in batches of
`BATCH` ids (one ``read_records`` each), decodes each once, and builds each checkpoint's transcript on
the one already built for its base (usually the checkpoint just before; a branch's base may be older,
and is rebuilt from the decoded records without reading them again). A base or keyframe outside the
ids walked is read when first needed (``read_chain``: one request where the backend indexes chains).

The logic is one I/O-free plan (`walk_plan`), as the contract's plans are: it yields
`persistency.storage.ops` reads and `Emit` items; `iterate` drives it with the sync primitives and
`aiterate` with their async twins. What it yields for an id is what ``get_checkpoint`` gives for it:
the same `Checkpoint`, or an error of the type ``get_checkpoint`` raises (a damaged record, a missing
base or keyframe, a record without its key), and the walk goes on with the next id.
`StorageUnavailableError` (the store cannot be reached) is raised, not yielded: it says nothing about
one checkpoint.

Memory: the decoded records of the session (what loading its latest checkpoint holds anyway) and a
few built transcripts. Consecutive checkpoints share their message dicts: copy one before mutating it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persistency.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidIdentifierError,
    PersistencyError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.models import Checkpoint
from persistency.storage.codec import materialize
from persistency.storage.ops import ListIds, Op, Plan, Read, ReadChain
from persistency.storage.records import Record

if TYPE_CHECKING:
    from persistency.storage.backend import StorageBackend

__all__ = ["BATCH", "Emit", "Loaded", "aiterate", "iterate", "walk_plan"]

#: ids read per ``read_records`` call
BATCH = 512
#: built transcripts kept as bases for the next checkpoints (a straight chain needs one)
_WINDOW = 8

Loaded = tuple[str, "Checkpoint | PersistencyError"]
"""What the walk yields per id: the id and its checkpoint, or the error loading it raises."""


@dataclass(frozen=True)
class Emit:
    """Not an operation: a checkpoint (or its error) ready for the caller."""

    checkpoint_id: str
    value: Checkpoint | PersistencyError


class _Missing(Exception):
    """Internal: the codec asked for a record the walk has not read yet."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(checkpoint_id)
        self.checkpoint_id = checkpoint_id


def _again(exc: PersistencyError) -> PersistencyError:
    """A fresh error like ``exc`` (one record's damage is reported for each checkpoint that needs it)."""
    try:
        return type(exc)(*exc.args)
    except TypeError:  # pragma: no cover - an error class with another signature
        return exc


def checked_ids(checkpoint_ids: Iterable[str] | None) -> list[str] | None:
    """The ids a caller asked for, validated before any I/O (`InvalidIdentifierError`)."""
    return None if checkpoint_ids is None else [validate_id(c, "checkpoint_id") for c in checkpoint_ids]


class _Walk:
    """The state of one walk over one session: decoded records, damage found, built transcripts."""

    def __init__(self, backend: StorageBackend, sid: str) -> None:
        self.backend = backend
        self.sid = sid
        self.records: dict[str, Record] = {}
        self.broken: dict[str, PersistencyError] = {}  # read, and does not decode (or its read failed)
        self.absent: set[str] = set()  # read, and not stored
        self.built: OrderedDict[str, Record] = OrderedDict()  # id -> its record holding the whole transcript

    def _known(self, cid: str) -> bool:
        return cid in self.records or cid in self.broken or cid in self.absent

    def _decode(self, cid: str, data: bytes) -> None:
        try:
            self.records[cid] = self.backend.decode_stored(self.sid, cid, data)
        except StorageUnavailableError:
            raise
        except PersistencyError as exc:
            self.broken[cid] = exc

    def read(self, ids: Iterable[str]) -> Generator[Op, Any, None]:
        """Read and decode those of ``ids`` not read yet: one request; one per id if the batch fails."""
        wanted = tuple(c for c in dict.fromkeys(ids) if not self._known(c))
        if not wanted:
            return
        try:
            rows = yield Read(self.sid, wanted)
        except StorageUnavailableError:
            raise
        except PersistencyError as exc:  # one damaged record fails a batch on some backends: find which
            if len(wanted) == 1:
                self.broken[wanted[0]] = exc
                return
            for cid in wanted:
                yield from self.read([cid])
            return
        for cid in wanted:
            data = rows.get(cid)
            if data is None:
                self.absent.add(cid)
            else:
                self._decode(cid, data)

    def _read_chain(self, cid: str) -> Generator[Op, Any, None]:
        """Read ``cid`` and as many of its bases as the backend returns with it."""
        try:
            rows = yield ReadChain(self.sid, cid)
        except StorageUnavailableError:
            raise
        except PersistencyError:
            rows = []  # find the damage record by record
        for raw_id, data in rows:
            try:
                rid = validate_id(raw_id.decode() if isinstance(raw_id, bytes) else raw_id, "stored checkpoint id")
            except (InvalidIdentifierError, UnicodeDecodeError):
                continue  # not one we asked for; the read below decides
            if not self._known(rid):
                self._decode(rid, data)
        yield from self.read([cid])

    def _damage(self, ref: str, who: str) -> PersistencyError | None:
        if ref in self.broken:
            return _again(self.broken[ref])
        if ref in self.absent:
            return CorruptCheckpointError(
                f"{self.backend.describe(self.sid, ref)}: missing, but checkpoint {who!r} refers to it "
                "(the session is damaged)"
            )
        return None

    def _bases(self, rec: Record) -> Generator[Op, Any, None]:
        """Decode the record's bases back to a built transcript (or the first record), reading what is missing."""
        cur, seen = rec, {rec.checkpoint_id}
        while cur.base is not None and cur.base not in self.built:
            base = cur.base
            if base in seen:
                raise CorruptCheckpointError(f"{cur.where}: base chain loops at {base!r}")
            seen.add(base)
            if not self._known(base):
                yield from self._read_chain(base)
            damage = self._damage(base, cur.checkpoint_id)
            if damage is not None:
                raise damage
            cur = self.records[base]

    def _materialize(self, rec: Record) -> Generator[Op, Any, Checkpoint]:
        """The checkpoint of ``rec``, its transcript on its base's built one; keyframes read when needed."""

        def fetch(ref: str) -> Record:
            hit = self.built.get(ref)
            if hit is not None:
                return hit
            found = self.records.get(ref)
            if found is not None:
                return found
            damage = self._damage(ref, rec.checkpoint_id)
            if damage is not None:
                raise damage
            raise _Missing(ref)

        while True:
            try:
                return self._on_base(rec, fetch) or materialize(rec, fetch)
            except _Missing as miss:
                yield from self.read([miss.checkpoint_id])

    def _on_base(self, rec: Record, fetch: Callable[[str], Record]) -> Checkpoint | None:
        """The fast path: validate what is new in ``rec`` only and put its base's transcript in front.

        The base's messages were checked when it was built (and every stored message is a JSON object,
        all a transcript holds), so this accepts exactly what `materialize` accepts; anything it does not
        recognise (no built base, a step that does not add up) returns None for `materialize` to decide,
        with the error ``get_checkpoint`` raises.
        """
        step = rec.info.get("step")
        prefix: list[dict[str, Any]] = []
        if rec.base is not None:
            base = self.built.get(rec.base)
            if base is None or base.info.get("step") != rec.base_step:
                return None
            prefix = base.messages
        if type(step) is not int or rec.base_step != len(prefix) or step != len(prefix) + len(rec.messages):
            return None
        own = Record(rec.where, {**rec.info, "step": len(rec.messages)}, None, 0, rec.messages, rec.deltas)
        partial = materialize(own, fetch)
        return partial.model_copy(update={"step": step, "messages": prefix + partial.messages})

    def load(self, cid: str) -> Generator[Op, Any, Checkpoint | PersistencyError]:
        """What ``get_checkpoint`` gives for ``cid``: the checkpoint, or the error it raises."""
        if not self._known(cid):
            yield from self.read([cid])
        if cid in self.broken:
            return _again(self.broken[cid])
        if cid in self.absent:
            return CheckpointNotFoundError(
                f"no checkpoint {cid!r} in session {self.sid!r} ({self.backend.describe(self.sid, cid)})"
            )
        rec = self.records[cid]
        try:
            yield from self._bases(rec)
            cp = yield from self._materialize(rec)
        except StorageUnavailableError:
            raise
        except PersistencyError as exc:
            return exc
        # its own list: a caller that appends to the checkpoint's transcript does not change the next one's
        self.built[cid] = Record(rec.where, rec.info, None, 0, list(cp.messages), rec.deltas)
        while len(self.built) > _WINDOW:
            self.built.popitem(last=False)
        return cp


def walk_plan(backend: StorageBackend, session_id: str, checkpoint_ids: list[str] | None,
              batch: int = BATCH) -> Generator[Op | Emit, Any, None]:
    """The walk as a plan: reads (`persistency.storage.ops`) and an `Emit` per id, in the ids' order
    (None: every id of the session, oldest first)."""
    walk = _Walk(backend, validate_id(session_id, "session_id"))
    ids = checkpoint_ids if checkpoint_ids is not None else list((yield ListIds(walk.sid)))
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        yield from walk.read(chunk)
        for cid in chunk:
            value = yield from walk.load(cid)
            yield Emit(cid, value)


def _one(op: Op) -> Plan[Any]:
    """A plan of one operation, so that each read goes through the backend's driver (errors translated)."""
    return (yield op)


class _Stepper:
    """The walk plan's state between two steps, shared by the sync and the async driver."""

    def __init__(self, plan: Generator[Op | Emit, Any, None]) -> None:
        self._plan = plan
        self._reply: Any = None
        self._error: PersistencyError | None = None

    def next(self) -> Op | Emit | None:
        """The plan's next read or emit, given the last reply or error; None once it is done."""
        reply, error, self._reply, self._error = self._reply, self._error, None, None
        try:
            return self._plan.send(reply) if error is None else self._plan.throw(error)
        except StopIteration:
            return None

    def answer(self, reply: Any) -> None:
        self._reply = reply

    def fail(self, error: PersistencyError) -> None:
        """For the plan to judge: damage, or the store is down."""
        self._error = error


def iterate(backend: StorageBackend, session_id: str, checkpoint_ids: Iterable[str] | None) -> Iterator[Loaded]:
    """Drive `walk_plan` with the sync primitives."""
    steps = _Stepper(walk_plan(backend, session_id, checked_ids(checkpoint_ids)))
    while (item := steps.next()) is not None:
        if isinstance(item, Emit):
            yield item.checkpoint_id, item.value
            continue
        try:
            steps.answer(backend._run(_one(item)))
        except PersistencyError as exc:
            steps.fail(exc)


async def aiterate(backend: StorageBackend, session_id: str,
                   checkpoint_ids: Iterable[str] | None) -> AsyncIterator[Loaded]:
    """Drive `walk_plan` with the async twins."""
    steps = _Stepper(walk_plan(backend, session_id, checked_ids(checkpoint_ids)))
    while (item := steps.next()) is not None:
        if isinstance(item, Emit):
            yield item.checkpoint_id, item.value
        else:
            try:
                steps.answer(await backend._arun(_one(item)))
            except PersistencyError as exc:
                steps.fail(exc)
