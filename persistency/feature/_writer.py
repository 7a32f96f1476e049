"""Storing one run's checkpoints in order: parent links, the on_error policy, the background writer.

`RunWriter` stores checkpoints one after another and links each to the last one actually stored
(so a lost checkpoint never leaves a child pointing at nothing). `BackgroundWriter` is the
"async" durability mode: a bounded queue drained by one thread, whose failures surface at the next
step or at the flush, never silently.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from persistency.errors import CheckpointConflictError, PersistencyError
from persistency.feature._drive import Plan, io, run_async, run_sync
from persistency.feature._observe import notify, size_of, span, timed_debug
from persistency.models import Checkpoint, CheckpointInfo
from persistency.provider import PersistencyStorageProvider

__all__ = ["BackgroundWriter", "LostCheckpoint", "OnError", "RunWriter", "can_batch"]

log = logging.getLogger(__name__)

OnError = Literal["raise", "continue"]


@dataclass(frozen=True)
class LostCheckpoint:
    """A checkpoint that could not be stored while the chat went on (``on_error="continue"``)."""

    checkpoint_id: str
    step: int
    error: str


def can_batch(provider: PersistencyStorageProvider, on_error: OnError) -> bool:
    """True when ``provider`` stores a batch in one call and a failure stops the chat (``on_error="raise"``)."""
    return on_error == "raise" and hasattr(provider, "save_checkpoints") and hasattr(provider, "asave_checkpoints")


class RunWriter:
    """Saves a run's checkpoints in order, each parented to the last one stored."""

    def __init__(
        self,
        provider: PersistencyStorageProvider,
        parent_id: str | None,
        on_error: OnError,
        on_stored: Callable[[CheckpointInfo], None] | None = None,
    ) -> None:
        self.provider = provider
        self.on_stored = on_stored
        self.last_stored = parent_id
        self.on_error = on_error
        self.lost: list[LostCheckpoint] = []
        self.saved = 0
        self.guard: Any = None  # p12: the run's lease `Claim` (feature/_ownership.py), checked before each save
        self.deferred: list[Checkpoint] = []
        """Checkpoints stored in one batch with the next one (`defer`)."""

    def can_batch(self) -> bool:
        """True when a batch is one provider call whose failure stops the chat (`can_batch`)."""
        return can_batch(self.provider, self.on_error)

    def defer(self, cp: Checkpoint) -> None:
        """Store ``cp`` (a run_end closing the dead attempt this run continues) with the run's first
        checkpoint, in one batch: one write and one sync instead of two. Only for a run whose lease is
        held (another worker cannot start it meanwhile) and a writer that `can_batch`; if this run stores
        nothing, the session is left as it was, and the next start closes the attempt the same way."""
        assert self.can_batch() and not self.deferred
        self.deferred = [cp]
        self.last_stored = cp.parent_id

    def _link(self, cp: Checkpoint) -> None:
        cp.parent_id = self.last_stored

    def _failed(self, cp: Checkpoint, exc: PersistencyError) -> None:
        if isinstance(exc, CheckpointConflictError) and type(exc) is not CheckpointConflictError:
            raise exc  # p12: busy or deleted session: typed, and the chat stops whatever on_error says
        if isinstance(exc, CheckpointConflictError):
            raise CheckpointConflictError(
                f"another worker stored checkpoint {cp.checkpoint_id!r} of session {cp.session_id!r} first: "
                f"{cp.run_id} is theirs now, so this chat stops here ({exc})"
            ) from exc
        if self.on_error == "raise":
            raise exc
        self.lost.append(LostCheckpoint(cp.checkpoint_id, cp.step, str(exc)))
        log.warning("checkpoint %s of session %s was not stored: %s", cp.checkpoint_id, cp.session_id, exc)

    def _save_plan(self, cp: Checkpoint) -> Plan[None]:
        if self.deferred:
            yield from self._save_many_plan([cp])
            return
        self._link(cp)
        what = f"saved checkpoint {cp.checkpoint_id} of session {cp.session_id} ({len(cp.messages)} messages)"
        try:
            if self.guard is not None:  # p12: still the owner, session not deleted meanwhile (an outage
                yield from self.guard.before_save_plan(cp)  # reading the generation follows on_error)
            with span("save", session=cp.session_id, checkpoint=cp.checkpoint_id, step=cp.step, kind=cp.kind):
                with timed_debug(log, what, lambda: size_of(cp.messages)):
                    yield io(self.provider, "save_checkpoint", cp)
        except PersistencyError as exc:
            self._failed(cp, exc)
            return
        self.last_stored = cp.checkpoint_id
        self.saved += 1
        if self.on_stored is not None:
            notify(self.on_stored, cp.info())

    def _save_many_plan(self, batch: list[Checkpoint]) -> Plan[None]:
        """Store ``batch`` in order with one provider call (one write and one sync on the filesystem)
        where the provider has ``save_checkpoints`` and a failure stops the chat anyway; else one by one."""
        deferred, self.deferred = self.deferred, []
        batch = deferred + batch
        if len(batch) == 1 or not self.can_batch():
            for cp in batch:
                yield from self._save_plan(cp)
            return
        before = self.last_stored
        for cp in batch:
            self._link(cp)
            self.last_stored = cp.checkpoint_id
        last = batch[-1]
        try:
            if self.guard is not None:  # p12: one lease and generation check for the whole batch
                yield from self.guard.before_save_plan(batch[0])
            with span("save", session=last.session_id, checkpoint=last.checkpoint_id, step=last.step, kind=last.kind):
                yield io(self.provider, "save_checkpoints", batch)
        except PersistencyError as exc:
            self.last_stored, self.deferred = before, deferred  # a retried run_end stores them again
            self._failed(batch[0], exc)  # on_error="raise": raises
            return
        self.saved += len(batch)
        if self.on_stored is not None:
            for cp in batch:
                notify(self.on_stored, cp.info())

    def save_many(self, batch: list[Checkpoint]) -> None:
        """Store a batch now (what the background writer found queued at one wake-up)."""
        run_sync(self._save_many_plan(batch))

    def save(self, cp: Checkpoint) -> None:
        """Store ``cp`` now; raise or record the failure according to ``on_error``."""
        run_sync(self._save_plan(cp))

    async def asave(self, cp: Checkpoint) -> None:
        """`save` through the provider's async twin (never blocks the event loop)."""
        await run_async(self._save_plan(cp))


class BackgroundWriter:
    """A bounded FIFO of checkpoints stored by one daemon thread through a `RunWriter`."""

    def __init__(self, writer: RunWriter, max_pending: int = 64) -> None:
        self.writer = writer
        self.max_pending = max(1, max_pending)
        self._queue: deque[Checkpoint] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # checkpoints taken off the queue and being written
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="persistency-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = list(self._queue)  # everything queued at this wake-up: one batch, one sync
                self._queue.clear()
                self._busy = len(batch)
            try:
                if self._error is None:
                    self.writer.save_many(batch)
            except BaseException as exc:
                self._error = exc
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def pending(self) -> int:
        """Checkpoints queued or being written."""
        with self._cond:
            return len(self._queue) + self._busy

    def submit(self, cp: Checkpoint, *, block: bool = True) -> None:
        """Queue ``cp``; with ``block`` wait while the queue is full. Raises an earlier write's error."""
        self._raise_error()
        with self._cond:
            while block and len(self._queue) >= self.max_pending and self._error is None:
                self._cond.wait()
            self._queue.append(cp)
            self._cond.notify_all()

    def wait_capacity(self) -> None:
        """Block until the queue has room (called from a worker thread in async chats)."""
        with self._cond:
            while len(self._queue) >= self.max_pending and self._error is None:
                self._cond.wait()
        self._raise_error()

    def flush(self) -> None:
        """Block until everything queued is written; raise the first write error, if any."""
        with self._cond:
            while (self._queue or self._busy) and self._error is None:
                self._cond.wait()
            if self._error is not None:
                self._queue.clear()
        self._raise_error()

    def close(self) -> None:
        """Flush, then stop the thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(timeout=30)
