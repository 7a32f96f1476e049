"""Byte I/O on an fsspec filesystem, one class per kind of store, each taking the fastest safe path.

- a local disk is not here: it keeps a segment per session (`local.SegmentStore`).
- `MemoryFiles`: fsspec's ``memory://`` store, used as the dict it is (its ``info``/``ls`` scan
  every key); one process only, by nature.
- `Files`: any other fsspec protocol, create-only within one process only (fsspec exposes no
  conditional write for most of them), so the provider refuses it unless told ``single_writer``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from fsspec.implementations.memory import MemoryFile

__all__ = ["SUFFIX", "Files", "MemoryFiles"]

SUFFIX = ".json"


class Files:
    """Byte I/O on one fsspec filesystem; subclasses take faster paths where fsspec allows."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self._lock = threading.Lock()  # create-only within this process

    def create(self, path: str, data: bytes) -> None:
        """Write a new file; `FileExistsError` if the name is taken."""
        with self._lock:
            if self.fs.exists(path):
                raise FileExistsError(path)
            with contextlib.suppress(OSError, NotImplementedError):  # object stores have no folders
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
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


_MEMORY_LOCK = threading.Lock()  # fsspec's memory store is one dict per process


class MemoryFiles(Files):
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
            if len(parts) == 3 and parts[1] == "checkpoints" and parts[2].endswith(SUFFIX) \
                    and not parts[2].startswith("."):
                out.add(parts[0])
        return out


