"""`SegmentStore`: a local disk, one append-only segment per session, one data sync per save.

Layout::

    ROOT/SESSION/checkpoints/records.jsonl   # every record of the session, appended (see `segment`)
    ROOT/SESSION/checkpoints/ID.json         # records written by 0.1 (one file each), still read
    ROOT/SESSION/session.json                # generation and lease (see `lease`)

A save takes an exclusive ``flock`` on the segment, reads what other processes appended since
this process last looked (usually nothing: one ``fstat``), refuses an id already stored
(create-only across processes), cuts a torn tail a dead writer left, appends the entry with one
``write`` (``O_APPEND``) and makes it durable with one ``fdatasync``. No file, inode or folder
entry per step; the first save of a session also syncs the folder that names the new segment.
A load reads the segment once (or only what was appended since) and hands the base the whole
chain, head first, without decoding anything here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from persistency.errors import (
    CheckpointConflictError,
    CorruptCheckpointError,
    InvalidIdentifierError,
    SessionDeletedError,
)
from persistency.ids import validate_id
from persistency.storage import NewRecord

from .appender import Appender
from .paths import CHECKPOINTS, DIR_FLAGS, LocalPaths, SymlinkRefusedError, read_fd
from .segment import SEGMENT, Entry, SegmentIndex, entry_bytes, scan

__all__ = ["LEGACY_SUFFIX", "TMP_PREFIX", "SegmentStore"]

LEGACY_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
#: a 0.1 writer's temporary file older than this is a dead writer's, removed at the next write
TMP_MAX_AGE = 60.0
_INDEXES = 64
_SPAN_SLACK = 1 << 16


def _legacy_ids(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        if name.endswith(LEGACY_SUFFIX) and not name.startswith("."):
            try:
                out.append(validate_id(name[: -len(LEGACY_SUFFIX)]))
            except InvalidIdentifierError:
                continue
    return out


class _Seen(NamedTuple):
    """A segment as last seen: its device and inode, and its head (the first record's two checksums),
    which tells a new segment from the old one should the new one get the freed inode's number."""

    dev: int
    ino: int
    head: bytes


def _head_of(data: bytes) -> bytes:
    """The first record's info and payload checksums from the segment's first bytes (b"" if they are not
    all there: an empty segment, or a first entry not yet complete)."""
    nl = data.find(b"\n")
    if nl < 0 or len(data) < nl + 25:
        return b""
    return data[15:31] + data[nl + 9:nl + 25]  # '{"v":2,"isum":"' SUM ... '\n"psum":"' SUM


def _read_head(fd: int) -> bytes:
    """`_head_of` the segment behind ``fd`` (a read of its first line; only for a descriptor opened anew)."""
    size = 4096
    while True:
        data = os.pread(fd, size, 0)
        head = _head_of(data)
        if head or len(data) < size:
            return head
        size *= 4


def _agree(old: bytes, now: bytes) -> bool:
    """True if two heads of one segment agree (one seen before its first record was complete is b"")."""
    return not old or not now or old == now


@dataclass(frozen=True)
class _View:
    """A session opened for reading."""

    cps: int
    legacy: set[str]
    seg: int | None
    #: the segment's index brought up to date, and the bytes just read with their offset
    scanned: tuple[SegmentIndex, int, bytes] | None


class SegmentStore:
    """Records of a local folder in per-session segments; symlink-safe, private modes, 0.1 files read."""

    def __init__(self, root: str, *, fsync: bool, file_mode: int, dir_mode: int) -> None:
        self.paths = LocalPaths(root, file_mode, dir_mode, fsync)
        self.root = root
        self.fsync = fsync
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, SegmentIndex] = OrderedDict()
        self._appender = Appender(self.paths, self.where)
        #: session -> the segment this store last read or wrote: a delete by anyone unlinks it, so a save
        #: whose parent was read from another one is refused (see `_append`)
        self._seen: dict[str, _Seen] = {}
        #: called with a session id when its segment turned out replaced (the provider drops its caches)
        self.on_replaced: Callable[[str], None] = lambda sid: None

    def where(self, session_id: str) -> str:
        """The session's segment path, for messages."""
        return f"{self.root}/{session_id}/{CHECKPOINTS}/{SEGMENT}"

    # -- the index ----------------------------------------------------------------------------------------
    def _refresh(self, sid: str, fd: int, st: os.stat_result | None = None,
                 opened: bool = True) -> tuple[SegmentIndex, int, bytes]:
        """The segment's index brought up to date; plus the bytes just read and their offset.

        ``opened``: ``fd`` was opened since the index was made, so the file may be a new segment under
        the old one's inode number (freed by a delete): its head is compared before the index is kept."""
        st = st or os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        with self._lock:
            prev = self._seen.get(sid)
            idx = self._indexes.get(sid)
            if idx is not None and opened and prev is not None and prev.head and (prev.dev, prev.ino) == ident \
                    and (idx.dev, idx.ino) == ident and not _agree(prev.head, _read_head(fd)):
                idx = None  # another segment: scan it whole
            if idx is None or (idx.dev, idx.ino) != ident or st.st_size < idx.end:
                idx = SegmentIndex(st.st_dev, st.st_ino)
                self._indexes[sid] = idx
                while len(self._indexes) > _INDEXES:
                    self._indexes.popitem(last=False)
            else:
                self._indexes.move_to_end(sid)
            start = idx.end
            buf = read_fd(fd, start, st.st_size - start) if st.st_size > start else b""
            if buf:
                scan(buf, start, idx)
            if start == 0:
                head = _head_of(buf) if idx.end > 0 else b""  # a torn first entry is no head: it is cut
            elif prev is not None and not prev.head:  # seen before its first record was complete
                head = _read_head(fd)
            elif prev is not None and (prev.dev, prev.ino) == ident:
                head = prev.head
            else:  # pragma: no cover - an index is kept only with what was seen of it
                head = _read_head(fd)
            replaced = prev is not None and ((prev.dev, prev.ino) != ident or not _agree(prev.head, head))
            self._seen[sid] = _Seen(st.st_dev, st.st_ino, head)
        if replaced:  # deleted (and maybe written again) by another provider: what was cached is stale
            self.on_replaced(sid)
        return idx, start, buf

    def _slices(self, sid: str, fd: int, entries: list[tuple[str, Entry]], start: int,
                buf: bytes) -> dict[str, bytes]:
        """The records' bytes: from what was just read where it covers them, else one read of their span."""
        out: dict[str, bytes] = {}
        rest = []
        for cid, e in entries:
            if e.damage is not None:
                raise CorruptCheckpointError(f"{self.where(sid)} checkpoint {cid!r}: {e.damage}")
            if e.start >= start and e.stop <= start + len(buf):
                out[cid] = buf[e.start - start:e.stop - start]
            else:
                rest.append((cid, e))
        if rest:
            lo = min(e.start for _, e in rest)
            hi = max(e.stop for _, e in rest)
            if hi - lo <= 2 * sum(e.stop - e.start for _, e in rest) + _SPAN_SLACK:
                span = read_fd(fd, lo, hi - lo)
                out.update((cid, span[e.start - lo:e.stop - lo]) for cid, e in rest)
            else:
                out.update((cid, read_fd(fd, e.start, e.stop - e.start)) for cid, e in rest)
        return out

    # -- writing ------------------------------------------------------------------------------------------
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

    def _open_locked(self, cps: int, sid: str) -> int:
        """The segment opened for appending, exclusively locked, and not unlinked by a delete meanwhile."""
        while True:
            fd = self.paths.open_file(cps, SEGMENT, os.O_RDWR | os.O_APPEND | os.O_CREAT, self.where(sid))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink > 0:
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # deleted between open and lock: open the new one

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
                if (prev.dev, prev.ino) != ident or (fresh and not _agree(prev.head, _read_head(got.seg))):
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
                self._seen[sid] = _Seen(st.st_dev, st.st_ino, _head_of(data))
            elif prev is None or (prev.dev, prev.ino) != (st.st_dev, st.st_ino) or not prev.head:
                # first contact with a segment others wrote (a first checkpoint): once per session
                self._seen[sid] = _Seen(st.st_dev, st.st_ino, _read_head(seg))
            if sid in self._indexes:
                self._indexes.move_to_end(sid)

    def close(self) -> None:
        """Close the descriptors kept open for writing."""
        self._appender.close()

    # -- reading ------------------------------------------------------------------------------------------
    def _open_segment(self, cps: int, sid: str) -> int | None:
        try:
            return self.paths.open_file(cps, SEGMENT, os.O_RDONLY, self.where(sid))
        except FileNotFoundError:
            return None

    def _read_legacy(self, cps: int, sid: str, cid: str) -> bytes | None:
        try:
            fd = self.paths.open_file(cps, cid + LEGACY_SUFFIX, os.O_RDONLY, f"{sid}/{CHECKPOINTS}/{cid}.json")
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return read_fd(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _view(self, sid: str) -> Iterator[_View | None]:
        """The session for reading: its folder, the 0.1 ids in it, the segment (None if absent)."""
        with self.paths.session(sid, create=False) as fds:
            if fds is None:
                yield None
                return
            cps = fds[1]
            legacy = set(_legacy_ids(os.listdir(cps)))
            fd = self._open_segment(cps, sid)
            try:
                yield _View(cps, legacy, fd, None if fd is None else self._refresh(sid, fd))
            finally:
                if fd is not None:
                    os.close(fd)

    def read_records(self, sid: str, ids: Sequence[str], first_line: bool = False) -> dict[str, bytes]:
        """Each stored record of ``ids`` (or its first line): segment entries in one read, 0.1 files each."""
        out: dict[str, bytes] = {}
        with self._view(sid) as view:
            if view is None:
                return {}
            if view.seg is not None and view.scanned is not None:
                idx, start, buf = view.scanned
                found = [(c, idx.entries[c]) for c in ids if c in idx.entries]
                self._once(sid, found, view.legacy)
                out = self._slices(sid, view.seg, found, start, buf)
            for cid in ids:
                if cid not in out and cid in view.legacy:
                    data = self._read_legacy(view.cps, sid, validate_id(cid, "checkpoint_id"))
                    if data is not None:
                        out[cid] = data
        if first_line:
            return {c: d.split(b"\n", 1)[0] for c, d in out.items()}
        return out

    def read_chain(self, sid: str, cid: str | None) -> list[tuple[str, bytes]]:
        """The record (None: the greatest id) and its bases in the segment, head first, in one read."""
        with self._view(sid) as view:
            if view is None:
                return []
            idx = None if view.scanned is None else view.scanned[0]
            head = cid if cid is not None else self._latest(view.legacy, idx)
            if idx is not None and view.seg is not None and view.scanned is not None and head in idx.entries:
                chain = self._chain(idx, head)
                self._once(sid, chain, view.legacy)
                got = self._slices(sid, view.seg, chain, view.scanned[1], view.scanned[2])
                return [(c, got[c]) for c, _ in chain]
            if head is None or head not in view.legacy:
                return []
            data = self._read_legacy(view.cps, sid, head)
            return [] if data is None else [(head, data)]

    def _once(self, sid: str, entries: list[tuple[str, Entry]], legacy: set[str]) -> None:
        """An id both in the segment and in a 0.1 file is damage (which one is the checkpoint?)."""
        for cid, _ in entries:
            if cid in legacy:
                raise CorruptCheckpointError(
                    f"{self.where(sid)} checkpoint {cid!r}: stored twice, in the segment and as {cid}{LEGACY_SUFFIX}"
                )

    @staticmethod
    def _latest(legacy: set[str], idx: SegmentIndex | None) -> str | None:
        ids = list(legacy)
        if idx is not None and idx.entries:
            ids.append(max(idx.entries))
        return max(ids) if ids else None

    @staticmethod
    def _chain(idx: SegmentIndex, head: str) -> list[tuple[str, Entry]]:
        chain, seen, cur = [], set(), head
        while cur in idx.entries and cur not in seen:
            seen.add(cur)
            e = idx.entries[cur]
            chain.append((cur, e))
            if e.base is None:
                break
            cur = e.base
        return chain

    def list_ids(self, sid: str) -> list[str]:
        """Every id of the session: the segment's and 0.1's files'."""
        with self._view(sid) as view:
            if view is None:
                return []
            ids = set(view.legacy)
            if view.scanned is not None:
                ids.update(view.scanned[0].entries)
        return sorted(ids)

    def list_session_ids(self) -> list[str]:
        """Session folders holding a non-empty segment or a 0.1 record (symlinked folders are skipped)."""
        root = self.paths.open_root(create=False)
        if root is None:
            return []
        out = []
        try:
            for name in os.listdir(root):
                try:
                    validate_id(name)
                    with self.paths.session(name, create=False) as fds:
                        if fds is not None and self._has_records(fds[1]):
                            out.append(name)
                except (InvalidIdentifierError, SymlinkRefusedError, NotADirectoryError):
                    continue
        finally:
            os.close(root)
        return sorted(out)

    @staticmethod
    def _has_records(cps: int) -> bool:
        names = os.listdir(cps)
        if SEGMENT in names:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(SEGMENT, dir_fd=cps, follow_symlinks=False).st_size > 0:
                    return True
        return bool(_legacy_ids(names))

    # -- deleting -----------------------------------------------------------------------------------------
    def delete(self, sid: str, keep: str) -> None:
        """Remove the session's records and anything else in its folder but ``keep`` (its state file)."""
        self._appender.forget(sid)
        with self.paths.session(sid, create=False) as fds:
            if fds is not None:
                sess, cps = fds
                with contextlib.suppress(FileNotFoundError):
                    fd = self._open_locked(cps, sid)
                    try:
                        os.unlink(SEGMENT, dir_fd=cps)  # writers waiting on the lock see it unlinked
                    finally:
                        os.close(fd)
                for name in os.listdir(cps):
                    _remove(cps, name)
                for name in os.listdir(sess):
                    if name != keep:
                        _remove(sess, name)
                if self.fsync:
                    os.fsync(sess)
        with self._lock:
            self._indexes.pop(sid, None)
            self._seen.pop(sid, None)


def _remove(parent: int, name: str) -> None:
    """Unlink a file or remove a folder tree under ``parent``, never following a symlink."""
    try:
        os.unlink(name, dir_fd=parent)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        for inner in os.listdir(fd):
            _remove(fd, inner)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
