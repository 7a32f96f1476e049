"""Opening a session's folders on a local disk without following a symlink out of the root.

Every component below the root is opened relative to its parent's descriptor with
``O_NOFOLLOW`` (``openat``), so a symlinked session folder, ``checkpoints/`` folder or record
is refused whatever it points at, and no path is re-resolved between the check and the use.
Folders are created with the provider's ``dir_mode`` and files with its ``file_mode``, set
explicitly (``fchmod``), so the umask neither widens nor narrows them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from persistency.errors import StorageUnavailableError
from persistency.ids import validate_id

__all__ = ["CHECKPOINTS", "DIR_FLAGS", "LocalPaths", "SymlinkRefusedError", "read_fd"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHECKPOINTS = "checkpoints"


class SymlinkRefusedError(StorageUnavailableError):
    """A path component under the root is a symlink (or not a folder): refused, never followed."""


class LocalPaths:
    """Descriptors of a root's session folders, opened symlink-safe, created with fixed modes."""

    def __init__(self, root: str, file_mode: int, dir_mode: int, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.file_mode = file_mode
        self.dir_mode = dir_mode

    def _refuse(self, exc: OSError, what: str) -> SymlinkRefusedError:
        return SymlinkRefusedError(f"filesystem {self.root}: {what} is a symlink or not a folder; refused")

    def open_root(self, create: bool) -> int | None:
        """The root folder's descriptor (the root itself may be a symlink: the user named it)."""
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
        os.makedirs(self.root, mode=self.dir_mode, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with contextlib.suppress(PermissionError):  # a root made now gets dir_mode whatever the umask
            os.fchmod(fd, self.dir_mode)
        return fd

    def open_dir(self, parent: int, name: str, create: bool, what: str) -> int | None:
        """``name`` under ``parent`` as a folder (None if missing and not ``create``); symlinks refused."""
        if name != CHECKPOINTS:
            validate_id(name, what)
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse(exc, what) from exc
            raise
        try:
            os.mkdir(name, self.dir_mode, dir_fd=parent)
            made = True
        except FileExistsError:
            made = False
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse(exc, what) from exc
            raise
        if made:
            os.fchmod(fd, self.dir_mode)
            if self.fsync:
                os.fsync(parent)  # the new folder's name is durable before anything in it is acknowledged
        return fd

    @contextlib.contextmanager
    def session(self, session_id: str, create: bool, checkpoints: bool = True) -> Iterator[tuple[int, int] | None]:
        """(session folder fd, checkpoints folder fd), or None if absent and not ``create``.

        With ``checkpoints=False`` only the session folder is opened (the second fd is -1)."""
        fds: list[int] = []
        try:
            root = self.open_root(create)
            if root is None:
                yield None
                return
            fds.append(root)
            sess = self.open_dir(root, session_id, create, f"session folder {session_id!r}")
            if sess is None:
                yield None
                return
            fds.append(sess)
            if not checkpoints:
                yield sess, -1
                return
            cps = self.open_dir(sess, CHECKPOINTS, create, f"{session_id}/{CHECKPOINTS}")
            if cps is None:
                yield None
                return
            fds.append(cps)
            yield sess, cps
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def open_file(self, parent: int, name: str, flags: int, what: str) -> int:
        """A file under ``parent`` with ``O_NOFOLLOW``; created with ``file_mode`` exactly."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(exc, what) from exc
            raise
        if flags & os.O_CREAT:
            st = os.fstat(fd)
            if st.st_mode & 0o777 != self.file_mode and st.st_uid == os.geteuid():
                os.fchmod(fd, self.file_mode)
        return fd


def read_fd(fd: int, start: int = 0, size: int | None = None) -> bytes:
    """``size`` bytes (None: to the end) of ``fd`` from ``start``, in as few reads as the kernel allows."""
    if size is None:
        size = os.fstat(fd).st_size - start
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
