"""`FilesystemStorageProvider`: checkpoints as files through fsspec, on the public storage base.

Layout, browsable by a person::

    ROOT/SESSION_ID/checkpoints/CHECKPOINT_ID.json   # one record per checkpoint (two JSON lines)

Which stores keep "create-only" across processes (two workers racing for one id: one wins):

- a local disk (a plain path, ``file://``, ``local://``): yes, by ``link`` onto the final name;
- ``memory://``: one process only by nature, create-only within it;
- any other fsspec protocol (``sftp://``, ``gcs://``, chained ``simplecache::...``): fsspec exposes
  no conditional write for them, so create-only would hold within one process only. The provider
  refuses them unless ``single_writer=True`` says that only one process writes the store.

The URL is parsed by fsspec itself (``fsspec.core.url_to_fs``), so chained URLs work. A query on
a ``file://``/``local://``/``memory://`` URL carries the provider's options (``?fsync=false``);
an unknown one is refused, never taken as part of a folder name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from pydantic import ConfigDict, NonNegativeInt, StrictBool

from persistency.errors import (
    CheckpointConflictError,
    InvalidIdentifierError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.storage import BackendOptions, NewRecord, StorageBackend, validate_options

from .files import SUFFIX, Files, LocalFiles, MemoryFiles

__all__ = ["FilesystemOptions", "FilesystemStorageProvider"]

_QUERY_SCHEMES = ("file", "local", "memory")
_BOOL_TEXT = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class FilesystemOptions(BackendOptions):
    """The provider's own options (strict: ``fsync="no"`` is refused, not read as true)."""

    model_config = ConfigDict(strict=True)
    #: flush each record to the disk before it is published (local disks only)
    fsync: StrictBool = True
    #: parent lineages and keyframes kept in memory
    cache_size: NonNegativeInt = 512
    #: acknowledge that only this process writes a store whose protocol has no create-only write
    single_writer: StrictBool = False


def _query_options(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``?name=value`` off a ``file://``/``memory://`` URL; text values of known booleans and
    counts are converted, anything else is left for the options model to refuse."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _QUERY_SCHEMES or "?" not in url:
        return url, {}
    base, _, query = url.partition("?")
    out: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name in ("fsync", "single_writer") and value.lower() in _BOOL_TEXT:
            out[name] = _BOOL_TEXT[value.lower()]
        elif name == "cache_size" and value.isdigit():
            out[name] = int(value)
        else:
            out[name] = value
    return base, out


class FilesystemStorageProvider(StorageBackend):
    """Stores each checkpoint as a readable JSON record under ``ROOT/SESSION/checkpoints/``.

    Args:
        url: a local path, ``file://`` URL, ``memory://`` URL or any fsspec URL (chained too).
        fsync: flush each record to the disk before it is published (local disks only), so a
            power loss cannot lose an acknowledged checkpoint. Costs a little per step.
        cache_size: parent lineages and keyframe records kept in memory (records never change).
        encryption_key: seal payloads with AES-256-GCM (`persistency.encryption`); listing
            stays readable without it.
        single_writer: allow an fsspec protocol without a create-only write (see the module).
        storage_options: passed to fsspec for the URL's protocol.

    Options may also be given in the query of a ``file://`` or ``memory://`` URL; the keyword wins.
    """

    backend_name = "filesystem"
    schemes = ("file", "local", "memory")

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool | None = None, cache_size: int | None = None,
                 encryption_key: str | bytes | None = None, single_writer: bool | None = None,
                 **storage_options: Any) -> None:
        raw = os.fspath(url)
        if not isinstance(raw, str) or not raw.strip():
            raise ProviderConfigError("filesystem URL must be a non-empty path or URL")
        if "\x00" in raw:
            raise ProviderConfigError("filesystem path must not contain a NUL character")
        base_url, query = _query_options(raw)
        given = {k: v for k, v in (("fsync", fsync), ("cache_size", cache_size), ("single_writer", single_writer))
                 if v is not None}
        opts = validate_options(FilesystemOptions, {**query, **given}, "filesystem")
        super().__init__(cache_size=opts.cache_size, encryption_key=encryption_key)
        try:
            fs, root = fsspec.core.url_to_fs(base_url, **storage_options)
        except (ValueError, ImportError, TypeError, OSError) as exc:
            raise ProviderConfigError(f"cannot open {base_url!r} with fsspec: {type(exc).__name__}: {exc}") from exc
        self.url = raw
        self._root = root.rstrip("/") or "/"
        self._files: Files
        if storage_options and isinstance(fs, LocalFileSystem | MemoryFileSystem):
            # these take no options worth passing; an unknown name is a typo, never silently ignored
            raise ProviderConfigError(
                f"filesystem option(s) refused: {', '.join(sorted(storage_options))} (unknown option; the options "
                f"are: {', '.join(FilesystemOptions.model_fields)}, encryption_key)"
            )
        if isinstance(fs, LocalFileSystem):
            if os.path.exists(self._root) and not os.path.isdir(self._root):
                raise ProviderConfigError(f"filesystem root {self._root!r} exists and is not a folder")
            self._files = LocalFiles(fs, opts.fsync)
        elif isinstance(fs, MemoryFileSystem):
            self._files = MemoryFiles(fs)
            self.shared_across_processes = False
        elif opts.single_writer:
            self._files = Files(fs)
        else:
            protocol = fs.protocol if isinstance(fs.protocol, str) else "+".join(fs.protocol)
            raise ProviderConfigError(
                f"fsspec protocol {protocol!r} has no create-only write across processes, so two workers could "
                "overwrite each other's checkpoints; pass single_writer=True if only this process writes "
                f"{base_url!r}, or use a local path, s3:// or redis://"
            )

    def __repr__(self) -> str:
        return f"FilesystemStorageProvider({self.url!r})"

    # -- paths --------------------------------------------------------------------------------------------
    def _dir(self, session_id: str) -> str:
        return f"{self._root}/{session_id}/checkpoints"

    def _path(self, session_id: str, checkpoint_id: str) -> str:
        return f"{self._dir(session_id)}/{checkpoint_id}{SUFFIX}"

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """The record's path (or the session's folder)."""
        return self._path(session_id, checkpoint_id) if checkpoint_id else f"{self._root}/{session_id}"

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except PersistencyError:
            raise
        except FileExistsError:
            raise
        except OSError as exc:
            raise StorageUnavailableError(f"filesystem {self._root}: {what}: {exc.strerror or exc}") from exc

    # -- primitives -----------------------------------------------------------------------------------------
    def write_record(self, record: NewRecord) -> None:
        """Create the record's file; `CheckpointConflictError` if it exists."""
        path = self._path(record.session_id, record.checkpoint_id)
        try:
            with self._translate(f"writing {path}"):
                self._files.create(path, record.data)
        except FileExistsError as exc:
            raise CheckpointConflictError(
                f"checkpoint {record.checkpoint_id!r} already exists in session {record.session_id!r} ({path})"
            ) from exc

    def _read_each(self, session_id: str, ids: Sequence[str], line: bool) -> dict[str, bytes]:
        out = {}
        read = self._files.read_line if line else self._files.read
        for cid in ids:
            path = self._path(session_id, cid)
            with self._translate(f"reading {path}"):
                try:
                    out[cid] = read(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
        return out

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """Each record's file, whole (one raw read per file)."""
        return self._read_each(session_id, checkpoint_ids, line=False)

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The first line of each record's file (the payload is not read)."""
        return self._read_each(session_id, checkpoint_ids, line=True)

    def list_ids(self, session_id: str) -> list[str]:
        """The ids named by the session's record files; other files (a person's notes) are ignored."""
        with self._translate(f"listing session {session_id!r}"):
            names = self._files.names(self._dir(session_id))
        return sorted(stem for n in names if n.endswith(SUFFIX) and _is_id(stem := n[: -len(SUFFIX)]))

    def list_session_ids(self) -> list[str]:
        """Folders of the root that hold at least one record."""
        with self._translate("listing sessions"):
            if isinstance(self._files, MemoryFiles):
                candidates = sorted(self._files.session_dirs(self._root))
            else:
                candidates = [n for n in self._files.names(self._root) if _is_id(n) and self.list_ids(n)]
        return sorted(n for n in candidates if _is_id(n))

    def delete_records(self, session_id: str) -> None:
        """Remove the session's folder."""
        with self._translate(f"deleting session {session_id!r}"):
            self._files.delete_tree(f"{self._root}/{session_id}")


def _is_id(name: str) -> bool:
    try:
        validate_id(name)
    except InvalidIdentifierError:
        return False
    return True
