"""Descriptors a writer keeps open per session, so a save is ``flock``, ``fstat``, ``write``, ``fdatasync``.

The session's ``checkpoints/`` folder and its segment stay open between saves (a few sessions per
provider, least recently used closed first). A delete by another process is seen, not written
past: after taking the lock, a segment with no link left is reopened, and a folder that was removed
refuses the new file (``ENOENT``), so the whole path is opened again, symlink-safe as always.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from .paths import LocalPaths
from .segment import SEGMENT

__all__ = ["Appender"]

_KEEP_OPEN = 16


class _Open:
    """One session's open folder and segment, and what was seen in the folder when it was opened."""

    def __init__(self, cps: int, seg: int, names: list[str]) -> None:
        self.cps = cps
        self.seg = seg
        self.names = names

    def close(self) -> None:
        for fd in (self.seg, self.cps):
            with contextlib.suppress(OSError):
                os.close(fd)


class Appender:
    """Open, locked segments for appending, one per recently written session."""

    def __init__(self, paths: LocalPaths, where: Callable[[str], str]) -> None:
        self.paths = paths
        self.where = where
        self.lock = threading.RLock()  # one writer per provider at a time: the descriptors are shared
        self._open: OrderedDict[str, _Open] = OrderedDict()

    def _open_session(self, sid: str) -> _Open:
        with self.paths.session(sid, create=True) as fds:
            assert fds is not None
            cps = os.dup(fds[1])
        try:
            names = os.listdir(cps)
            seg = self.paths.open_file(cps, SEGMENT, os.O_RDWR | os.O_APPEND | os.O_CREAT, self.where(sid))
        except BaseException:
            os.close(cps)
            raise
        return _Open(cps, seg, names)

    def forget(self, sid: str) -> None:
        """Close what is open for ``sid`` (after a delete, or when it went stale)."""
        with self.lock:
            got = self._open.pop(sid, None)
            if got is not None:
                got.close()

    def close(self) -> None:
        """Close every descriptor."""
        with self.lock:
            while self._open:
                self._open.popitem()[1].close()

    def acquire(self, sid: str) -> tuple[_Open, os.stat_result, bool]:
        """The session's segment under an exclusive ``flock``: (open descriptors, its stat, newly opened).

        The caller holds the appender until `release`; a segment a delete unlinked meanwhile is never
        returned (``st_nlink`` is 0 under the lock: it is reopened, or refused if ``deleted`` says so)."""
        self.lock.acquire()
        try:
            for _ in range(8):
                got = self._open.get(sid)
                fresh = got is None
                if got is None:
                    got = self._open[sid] = self._open_session(sid)
                    while len(self._open) > _KEEP_OPEN:
                        self._open.popitem(last=False)[1].close()
                else:
                    self._open.move_to_end(sid)
                fcntl.flock(got.seg, fcntl.LOCK_EX)
                st = os.fstat(got.seg)
                if st.st_nlink > 0:
                    return got, st, fresh
                fcntl.flock(got.seg, fcntl.LOCK_UN)
                self.forget(sid)  # deleted since we opened it: open the new one
            raise OSError(f"session {sid!r} keeps being deleted while it is written")  # pragma: no cover
        except BaseException:
            self.lock.release()
            raise

    def release(self, got: _Open) -> None:
        """Unlock the segment `acquire` returned and let the next writer of this provider in."""
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(got.seg, fcntl.LOCK_UN)
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def locked(self, sid: str) -> Iterator[tuple[_Open, os.stat_result, bool]]:
        """`acquire` and `release` around a block."""
        got, st, fresh = self.acquire(sid)
        try:
            yield got, st, fresh
        finally:
            self.release(got)
