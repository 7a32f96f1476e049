"""Checkpoints as files, through fsspec: a local folder (the embedded default), ``memory://``, or any
fsspec protocol the user has installed.

Layout, browsable by a person::

    ROOT/SESSION_ID/checkpoints/CHECKPOINT_ID.json   # one record per checkpoint (two JSON lines)

On a local disk a save is atomic and create-only across processes: the record is written to a
hidden temporary file, flushed, then hard-linked to its final name (``link`` fails if the name
exists, so exactly one racer wins) and the temporary name removed. A process killed at any
instant leaves either no record or a whole one; stray temporary files are ignored. Other fsspec
protocols are create-only within one process; ``memory://`` works on fsspec's in-memory store
directly, because its generic ``info``/``ls`` scan the whole store on every call.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from persistency._recordstore import RecordStorageProvider
from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.redaction import redact_text, redact_url, scrub_exception

__all__ = ["FilesystemStorageProvider"]

_SUFFIX = ".json"
_TMP_PREFIX = ".tmp-"


class _Files:
    """Byte I/O on one fsspec filesystem; subclasses take faster paths where fsspec allows."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self._lock = threading.Lock()  # create-only within this process

    def create(self, path: str, data: bytes) -> None:
        """Write a new file; `FileExistsError` if the name is taken."""
        with self._lock:
            if self.fs.exists(path):
                raise FileExistsError(path)
            self.fs.pipe_file(path, data)

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def read_line(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return bytes(f.readline())

    def names(self, directory: str) -> list[str]:
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(directory, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete_tree(self, directory: str) -> None:
        try:
            self.fs.rm(directory, recursive=True)
        except FileNotFoundError:
            pass


class _LocalFiles(_Files):
    """A local disk: create-only and atomic across processes (temporary file, fsync, hard link)."""

    def __init__(self, fs: Any, fsync: bool) -> None:
        super().__init__(fs)
        self.fsync = fsync

    def create(self, path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.link(tmp, path)  # atomic, and fails if the name exists: create-only
            if self.fsync:
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def read(self, path: str) -> bytes:
        fd = os.open(path, os.O_RDONLY)  # no buffered file object: a load opens a thousand of these
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_line(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.readline()

    def names(self, directory: str) -> list[str]:
        try:
            return os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []


_MEMORY_LOCK = threading.Lock()  # fsspec's memory store is one dict per process


class _MemoryFiles(_Files):
    """fsspec's ``memory://`` store, used as the dict it is (its info/ls scan every key)."""

    def create(self, path: str, data: bytes) -> None:
        with _MEMORY_LOCK:
            if path in self.fs.store:
                raise FileExistsError(path)
            MemoryFile(self.fs, path, data).commit()

    def read(self, path: str) -> bytes:
        try:
            return bytes(self.fs.store[path].getvalue())
        except KeyError:
            raise FileNotFoundError(path) from None

    def read_line(self, path: str) -> bytes:
        data = self.read(path)
        return data[: data.find(b"\n") + 1] or data

    def _under(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return [k[len(prefix):] for k in list(self.fs.store) if k.startswith(prefix)]

    def names(self, directory: str) -> list[str]:
        return sorted({rest.split("/", 1)[0] for rest in self._under(directory)})

    def delete_tree(self, directory: str) -> None:
        prefix = directory.rstrip("/") + "/"
        with _MEMORY_LOCK:
            for key in [k for k in list(self.fs.store) if k.startswith(prefix)]:
                self.fs.store.pop(key, None)
            for d in [d for d in self.fs.pseudo_dirs if d == directory or d.startswith(prefix)]:
                self.fs.pseudo_dirs.remove(d)

    def session_dirs(self, root: str) -> set[str]:
        """Sessions that hold at least one record, in one pass over the store."""
        out = set()
        for rest in self._under(root):
            parts = rest.split("/")
            if len(parts) == 3 and parts[1] == "checkpoints" and parts[2].endswith(_SUFFIX) \
                    and not parts[2].startswith("."):
                out.add(parts[0])
        return out


class FilesystemStorageProvider(RecordStorageProvider):
    """Stores each checkpoint as a readable JSON record under ``ROOT/SESSION/checkpoints/``.

    Args:
        url: a local path, ``file://`` URL, ``memory://`` URL or any fsspec URL.
        fsync: flush each record to the disk before it is published (local disks only), so a
            power loss cannot lose an acknowledged checkpoint. Costs a little per step.
        cache_size: how many decoded records to keep in memory (records never change).
        encryption_key: seal payloads with AES-256-GCM (`persistency.encryption`); listing
            stays readable without it.
        storage_options: passed to fsspec for the URL's protocol.
    """

    schemes = ("file", "memory")

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool = True, cache_size: int = 512,
                 encryption_key: str | bytes | None = None, **storage_options: Any) -> None:
        super().__init__(cache_size=cache_size, encryption_key=encryption_key)
        url = os.fspath(url)
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError, TypeError) as exc:
            raise ProviderConfigError(
                f"cannot open {redact_url(url)!r} with fsspec: {redact_text(str(exc))}"
            ) from scrub_exception(exc)
        self.url = url
        self._root = root.rstrip("/") or "/"
        self._files: _Files
        if isinstance(fs, LocalFileSystem):
            self._files = _LocalFiles(fs, fsync)
        elif isinstance(fs, MemoryFileSystem):
            self._files = _MemoryFiles(fs)
        else:
            self._files = _Files(fs)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FilesystemStorageProvider:
        """Build from a URL; fsspec parses the URL, keyword options go to the provider or fsspec."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"FilesystemStorageProvider({redact_url(self.url)!r})"

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
        try:
            with self._translate(f"writing {path}"):
                self._files.create(path, data)
        except StorageUnavailableError as exc:
            if isinstance(exc.__cause__, FileExistsError):
                raise CheckpointConflictError(
                    f"checkpoint {checkpoint_id!r} already exists in session {session_id!r} ({path})"
                ) from exc.__cause__
            raise

    def _read(self, session_id: str, checkpoint_id: str) -> bytes:
        path = self._path(session_id, checkpoint_id)
        with self._translate(f"checkpoint {checkpoint_id!r} of session {session_id!r} ({path})"):
            return self._files.read(path)

    def _read_info_line(self, session_id: str, checkpoint_id: str) -> bytes:
        path = self._path(session_id, checkpoint_id)
        with self._translate(f"checkpoint {checkpoint_id!r} of session {session_id!r} ({path})"):
            return self._files.read_line(path)

    def _list_ids(self, session_id: str) -> list[str]:
        with self._translate(f"listing session {session_id!r}"):
            names = self._files.names(self._dir(session_id))
        return sorted(n[: -len(_SUFFIX)] for n in names if n.endswith(_SUFFIX) and not n.startswith("."))

    def _list_session_ids(self) -> list[str]:
        with self._translate("listing sessions"):
            if isinstance(self._files, _MemoryFiles):
                candidates = sorted(self._files.session_dirs(self._root))
            else:
                candidates = [n for n in self._files.names(self._root) if self._list_ids_safe(n)]
        out = []
        for name in candidates:
            try:
                out.append(validate_id(name))
            except PersistencyError:
                continue  # not one of ours: a folder a person put there
        return sorted(out)

    def _list_ids_safe(self, name: str) -> bool:
        try:
            validate_id(name)
        except PersistencyError:
            return False
        return bool(self._list_ids(name))

    def _delete(self, session_id: str) -> None:
        with self._translate(f"deleting session {session_id!r}"):
            self._files.delete_tree(f"{self._root}/{session_id}")
