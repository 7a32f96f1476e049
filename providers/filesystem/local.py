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
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from persistency.errors import (
    CorruptCheckpointError,
    InvalidIdentifierError,
)
from persistency.ids import validate_id

from .appender import Appender
from .paths import CHECKPOINTS, DIR_FLAGS, LocalPaths, SymlinkRefusedError, read_fd
from .segment import SEGMENT, Entry, SegmentIndex, scan
from .writing import LEGACY_SUFFIX, TMP_PREFIX, Seen, SegmentWriter, agree, head_of, read_head

__all__ = ["LEGACY_SUFFIX", "TMP_PREFIX", "SegmentStore"]

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


@dataclass(frozen=True)
class _View:
    """A session opened for reading."""

    cps: int
    legacy: set[str]
    seg: int | None
    #: the segment's index brought up to date, and the bytes just read with their offset
    scanned: tuple[SegmentIndex, int, bytes] | None


class SegmentStore(SegmentWriter):
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
        self._seen: dict[str, Seen] = {}
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
                    and (idx.dev, idx.ino) == ident and not agree(prev.head, read_head(fd)):
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
                head = head_of(buf) if idx.end > 0 else b""  # a torn first entry is no head: it is cut
            elif prev is not None and not prev.head:  # seen before its first record was complete
                head = read_head(fd)
            elif prev is not None and (prev.dev, prev.ino) == ident:
                head = prev.head
            else:  # pragma: no cover - an index is kept only with what was seen of it
                head = read_head(fd)
            replaced = prev is not None and ((prev.dev, prev.ino) != ident or not agree(prev.head, head))
            self._seen[sid] = Seen(st.st_dev, st.st_ino, head)
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
