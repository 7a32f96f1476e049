"""Writing a session's segment: `SegmentWriter`, the save half of `local.SegmentStore` (see there).

A save takes the segment's ``flock`` (`appender.Appender`), checks that no delete happened since this
store last read or wrote the session (the segment's device, inode and head, `Seen`), brings the index up
to date only if the file changed, refuses a stored id, and appends with one ``write`` and one sync.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from persistency.errors import CheckpointConflictError, SessionDeletedError
from persistency.storage import NewRecord

from .appender import Appender
from .segment import Entry, SegmentIndex, entry_bytes

__all__ = ["LEGACY_SUFFIX", "TMP_MAX_AGE", "TMP_PREFIX", "Seen", "SegmentWriter", "agree", "head_of", "read_head"]

LEGACY_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
#: a 0.1 writer's temporary file older than this is a dead writer's, removed at the next write
TMP_MAX_AGE = 60.0


class Seen(NamedTuple):
    """A segment as last seen: its device and inode, and its head (the first record's two checksums),
    which tells a new segment from the old one should the new one get the freed inode's number."""

    dev: int
    ino: int
    head: bytes


def head_of(data: bytes) -> bytes:
    """The first record's info and payload checksums from the segment's first bytes (b"" if they are not
    all there: an empty segment, or a first entry not yet complete)."""
    nl = data.find(b"\n")
    if nl < 0 or len(data) < nl + 25:
        return b""
    return data[15:31] + data[nl + 9:nl + 25]  # '{"v":2,"isum":"' SUM ... '\n"psum":"' SUM


def read_head(fd: int) -> bytes:
    """`head_of` the segment behind ``fd`` (a read of its first line; only for a descriptor opened anew)."""
    size = 4096
    while True:
        data = os.pread(fd, size, 0)
        head = head_of(data)
        if head or len(data) < size:
            return head
        size *= 4


def agree(old: bytes, now: bytes) -> bool:
    """True if two heads of one segment agree (one seen before its first record was complete is b"")."""
    return not old or not now or old == now


class SegmentWriter:
    """The save half of `local.SegmentStore` (which provides these attributes and the index refresh)."""

    fsync: bool
    on_replaced: Callable[[str], None]
    _lock: threading.Lock
    _indexes: OrderedDict[str, SegmentIndex]
    _appender: Appender
    _seen: dict[str, Seen]

    def where(self, session_id: str) -> str:
        """The session's segment path, for messages."""
        raise NotImplementedError

    def _refresh(self, sid: str, fd: int, st: os.stat_result | None = None,
                 opened: bool = True) -> tuple[SegmentIndex, int, bytes]:
        raise NotImplementedError

    @staticmethod
    def _sweep(sid: str, cps: int, names: list[str]) -> None:
        """Remove temporary files that dead 0.1 writers left (when a session is first written here)."""
        now = time.time()
        for name in names:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=cps, follow_symlinks=False)
                    if now - st.st_mtime > TMP_MAX_AGE:
                        os.unlink(name, dir_fd=cps)

    def write(self, records: Sequence[NewRecord]) -> None:
        """Append ``records`` create-only, one session's in one write and one sync (all or nothing per
        session); `CheckpointConflictError` if an id is stored or given twice, `SessionDeletedError` if
        a record's parent is not in the segment this store last read or wrote (see `_append`)."""
        if len(records) == 1:
            self._append(records[0].session_id, records)
            return
        by_session: dict[str, list[NewRecord]] = {}
        for record in records:
            by_session.setdefault(record.session_id, []).append(record)
        for sid, batch in by_session.items():
            self._append(sid, batch)

    def _deleted(self, sid: str, cid: str, why: str) -> SessionDeletedError:
        self.on_replaced(sid)
        return SessionDeletedError(
            f"session {sid!r} checkpoint {cid!r} ({self.where(sid)}): {why}: the session was deleted while "
            "this chat ran; nothing was saved, the chat must stop")

    def _append(self, sid: str, batch: Sequence[NewRecord]) -> None:
        """Under the segment's lock: check that a delete did not happen since this store last looked,
        bring the index up to date (usually nothing to read), then `_write_locked`."""
        got, st, fresh = self._appender.acquire(sid)
        try:
            if fresh:
                self._sweep(sid, got.cps, got.names)
            ident = (st.st_dev, st.st_ino)
            if len(batch) == 1:  # the usual save
                one = batch[0]
                outside = [] if one.parent_id is None else [(one.checkpoint_id, one.parent_id)]
            else:
                ids = {r.checkpoint_id for r in batch}
                outside = [(r.checkpoint_id, r.parent_id) for r in batch
                           if r.parent_id is not None and r.parent_id not in ids]
            prev = self._seen.get(sid)
            unchecked = fresh  # a descriptor opened just now may name a new segment under the old inode's number
            if outside and prev is not None:
                # the segment the parent was read from was unlinked (a delete took its lock to do so), or
                # replaced by one that got its inode's number: its head tells (a descriptor kept open pins
                # its inode, so only a descriptor opened anew needs the look)
                if (prev.dev, prev.ino) != ident or (fresh and not agree(prev.head, read_head(got.seg))):
                    raise self._deleted(sid, outside[0][0], "the segment its parent was read from is gone")
                unchecked = False
            idx = self._indexes.get(sid)
            if fresh or idx is None or (idx.dev, idx.ino) != ident or idx.end != st.st_size:
                idx = self._refresh(sid, got.seg, st, unchecked)[0]  # what others appended (or a torn tail)
            for cid, pid in outside:
                if pid not in idx.entries and not self._legacy_here(got.cps, got.names, pid):
                    raise self._deleted(sid, cid, f"its parent {pid!r} is gone")
            self._write_locked(sid, got.seg, got.cps, got.names, st, idx, batch)
        finally:
            self._appender.release(got)

    @staticmethod
    def _legacy_here(cps: int, names: list[str], cid: str) -> bool:
        """True if ``cid`` is a 0.1 file of the folder (listed again if not in what was listed at opening)."""
        if cid + LEGACY_SUFFIX in names:
            return True
        names[:] = os.listdir(cps)
        return cid + LEGACY_SUFFIX in names

    def _write_locked(self, sid: str, seg: int, cps: int, names: list[str], st: os.stat_result,
                      idx: SegmentIndex, batch: Sequence[NewRecord]) -> None:
        """Append the batch's entries with one ``write`` and one sync (the caller holds the lock)."""
        entries = idx.entries
        if len(batch) == 1:
            cid = batch[0].checkpoint_id
            if cid in entries or cid + LEGACY_SUFFIX in names:
                raise CheckpointConflictError(
                    f"checkpoint {cid!r} already exists in session {sid!r} ({self.where(sid)})")
        else:
            seen: set[str] = set()
            for record in batch:
                cid = record.checkpoint_id
                if cid in entries or cid in seen or cid + LEGACY_SUFFIX in names:
                    raise CheckpointConflictError(
                        f"checkpoint {cid!r} already exists in session {sid!r} ({self.where(sid)})"
                    )
                seen.add(cid)
        end = idx.end
        if st.st_size > end:
            os.ftruncate(seg, end)  # a dead writer's torn tail: we hold the lock
        lead = b"\n" if idx.needs_newline else b""  # after a damaged tail, start on a line of our own
        if len(batch) == 1 and not lead:  # the usual save: one entry, no copy more
            data = entry_bytes(batch[0].data, batch[0].checkpoint_id)
            placed = [(batch[0], end)]
        else:
            parts, offset, placed = [lead], end + len(lead), []
            for record in batch:
                entry = entry_bytes(record.data, record.checkpoint_id)
                placed.append((record, offset))
                parts.append(entry)
                offset += len(entry)
            data = b"".join(parts)
        try:
            written = os.write(seg, data)
            if written < len(data):  # pragma: no cover - a regular file takes the whole write
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(seg, view):]
            if self.fsync:
                os.fdatasync(seg)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(seg, end)
            raise
        if self.fsync and end == 0:
            os.fsync(cps)  # the new segment's name
        with self._lock:  # a reader of this process may have scanned the new entries already: same values
            for record, start in placed:
                entries[record.checkpoint_id] = Entry(start, start + len(record.data), record.base_id)
            idx.end = end + len(data)
            idx.needs_newline = False
            prev = self._seen.get(sid)
            if end == 0:
                self._seen[sid] = Seen(st.st_dev, st.st_ino, head_of(data))
            elif prev is None or (prev.dev, prev.ino) != (st.st_dev, st.st_ino) or not prev.head:
                # first contact with a segment others wrote (a first checkpoint): once per session
                self._seen[sid] = Seen(st.st_dev, st.st_ino, read_head(seg))
            if sid in self._indexes:
                self._indexes.move_to_end(sid)
