"""Checkpoints as files, through fsspec: a local folder (the embedded default), ``memory://``, or any
fsspec protocol the user has installed.

Layout, browsable by a person::

    ROOT/SESSION_ID/checkpoints/CHECKPOINT_ID.json   # one record per checkpoint (two JSON lines)

On a local disk a save is atomic and create-only across processes: the record is written to a
hidden temporary file, flushed, then hard-linked to its final name (``link`` fails if the name
exists, so exactly one racer wins) and the temporary name removed. A process killed at any
instant leaves either no record or a whole one; stray temporary files are ignored. Other fsspec
protocols are create-only within one process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from persistency._recordstore import RecordStorageProvider
from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)

__all__ = ["FilesystemStorageProvider"]

_SUFFIX = ".json"
_TMP_PREFIX = ".tmp-"


class FilesystemStorageProvider(RecordStorageProvider):
    """Stores each checkpoint as a readable JSON record under ``ROOT/SESSION/checkpoints/``.

    Args:
        url: a local path, ``file://`` URL, ``memory://`` URL or any fsspec URL.
        fsync: flush each record to the disk before it is published (local disks only), so a
            power loss cannot lose an acknowledged checkpoint. Costs a little per step.
        storage_options: passed to fsspec for the URL's protocol.
    """

    schemes = ("file", "memory")

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool = True, cache_size: int = 512,
                 **storage_options: Any) -> None:
        super().__init__(cache_size=cache_size)
        url = os.fspath(url)
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise ProviderConfigError(f"cannot open {url!r} with fsspec: {exc}") from exc
        self.url = url
        self._fs = fs
        self._root = root.rstrip("/") or "/"
        self._local = isinstance(fs, LocalFileSystem)
        self._fsync = fsync and self._local
        self._lock = threading.Lock()  # create-only for non-local protocols, within this process

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FilesystemStorageProvider:
        """Build from a URL; keyword options win over nothing (fsspec parses the URL itself)."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"FilesystemStorageProvider({self.url!r})"

    # -- paths ------------------------------------------------------------------------------------------
    def _dir(self, session_id: str) -> str:
        return f"{self._root}/{session_id}/checkpoints"

    def _path(self, session_id: str, checkpoint_id: str) -> str:
        return f"{self._dir(session_id)}/{checkpoint_id}{_SUFFIX}"

    def _where(self, session_id: str, checkpoint_id: str) -> str:
        return self._path(session_id, checkpoint_id)

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except PersistencyError:
            raise
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(f"{what}: not found") from exc
        except OSError as exc:
            raise StorageUnavailableError(f"filesystem {self._root}: {what}: {exc.strerror or exc}") from exc

    # -- primitives -------------------------------------------------------------------------------------
    def _write_new(self, session_id: str, checkpoint_id: str, data: bytes) -> None:
        path = self._path(session_id, checkpoint_id)
        with self._translate(f"writing {path}"):
            if self._local:
                self._write_local(path, data)
            else:
                with self._lock:
                    if self._fs.exists(path):
                        raise CheckpointConflictError(
                            f"checkpoint {checkpoint_id!r} already exists in session {session_id!r}"
                        )
                    self._fs.pipe_file(path, data)

    def _write_local(self, path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        for attempt in (0, 1):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileNotFoundError:
                if attempt:
                    raise
                os.makedirs(directory, exist_ok=True)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if the name exists: create-only
            except FileExistsError as exc:
                raise CheckpointConflictError(
                    f"checkpoint {os.path.basename(path)[: -len(_SUFFIX)]!r} already exists at {path}"
                ) from exc
            if self._fsync:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        path = self._path(session_id, checkpoint_id)
        with self._translate(f"checkpoint {checkpoint_id!r} of session {session_id!r} ({path})"):
            if self._local:
                with open(path, "rb") as f:
                    return f.read()
            return bytes(self._fs.cat_file(path))

    def _read_info_line(self, session_id: str, checkpoint_id: str) -> bytes:
        path = self._path(session_id, checkpoint_id)
        with self._translate(f"checkpoint {checkpoint_id!r} of session {session_id!r} ({path})"):
            if self._local:
                with open(path, "rb") as f:
                    return f.readline()
            with self._fs.open(path, "rb") as f:
                return bytes(f.readline())

    def _names(self, directory: str) -> list[str]:
        if self._local:
            try:
                return os.listdir(directory)
            except FileNotFoundError:
                return []
            except NotADirectoryError:
                return []
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(directory, detail=False)]
        except FileNotFoundError:
            return []

    def _list_ids(self, session_id: str) -> list[str]:
        with self._translate(f"listing session {session_id!r}"):
            names = self._names(self._dir(session_id))
        return sorted(n[: -len(_SUFFIX)] for n in names if n.endswith(_SUFFIX) and not n.startswith("."))

    def _list_session_ids(self) -> list[str]:
        from persistency.ids import validate_id

        out = []
        with self._translate("listing sessions"):
            for name in self._names(self._root):
                try:
                    validate_id(name)
                except PersistencyError:
                    continue  # not one of ours (a stray file or folder a person put there)
                if any(n.endswith(_SUFFIX) and not n.startswith(".") for n in self._names(self._dir(name))):
                    out.append(name)
        return sorted(out)

    def _delete(self, session_id: str) -> None:
        path = f"{self._root}/{session_id}"
        with self._translate(f"deleting session {session_id!r}"):
            try:
                self._fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
