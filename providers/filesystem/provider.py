"""`FilesystemStorageProvider`: checkpoints as files through fsspec, on the public storage base.

Layout, browsable by a person:

- a local disk (a plain path, ``file://``, ``local://``): one append-only segment per session,
  ``ROOT/SESSION_ID/checkpoints/records.jsonl`` (each record's two checksummed JSON lines and an
  end line; see `local` and `segment`), one ``fdatasync`` per save; records written by 0.1
  (``checkpoints/CHECKPOINT_ID.json``) are still read. Folders are 0700 and files 0600 whatever
  the umask (``dir_mode``/``file_mode`` widen them); nothing below the root is read or written
  through a symlink. The session's generation and lease live in ``ROOT/SESSION_ID/session.json``.
- any other store: one file per record, ``ROOT/SESSION_ID/checkpoints/CHECKPOINT_ID.json``.

Which stores keep "create-only" across processes (two workers racing for one id: one wins):

- a local disk: yes, by an exclusive ``flock`` on the segment and a check of its index;
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
from pydantic import ConfigDict, Field, NonNegativeInt, StrictBool, StrictInt

from persistency.errors import (
    CheckpointConflictError,
    InvalidIdentifierError,
    PersistencyError,
    ProviderConfigError,
    StorageUnavailableError,
)
from persistency.ids import validate_id
from persistency.storage import BackendOptions, Lease, NewRecord, StorageBackend, validate_options
from persistency.storage.framing import base_hint

from .files import SUFFIX, Files, MemoryFiles
from .lease import STATE_FILE, LocalLeases, MemoryLeases, check_lease_args
from .local import SegmentStore

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
    #: permission bits of files the provider creates on a local disk (umask ignored); owner read+write kept
    file_mode: StrictInt = Field(0o600, ge=0o600, le=0o666)
    #: permission bits of folders the provider creates on a local disk (umask ignored); owner rwx kept
    dir_mode: StrictInt = Field(0o700, ge=0o700, le=0o777)


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
        elif name in ("file_mode", "dir_mode") and value and all(c in "01234567" for c in value):
            out[name] = int(value, 8)
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
        file_mode: permission bits of the files it creates on a local disk (default 0o600, private
            whatever the umask); e.g. 0o640 to let a group read the checkpoints.
        dir_mode: permission bits of the folders it creates on a local disk (default 0o700).
        storage_options: passed to fsspec for the URL's protocol.

    Options may also be given in the query of a ``file://`` or ``memory://`` URL; the keyword wins.
    """

    backend_name = "filesystem"
    schemes = ("file", "local", "memory")

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool | None = None, cache_size: int | None = None,
                 encryption_key: str | bytes | None = None, single_writer: bool | None = None,
                 file_mode: int | None = None, dir_mode: int | None = None, **storage_options: Any) -> None:
        raw = os.fspath(url)
        if not isinstance(raw, str) or not raw.strip():
            raise ProviderConfigError("filesystem URL must be a non-empty path or URL")
        if "\x00" in raw:
            raise ProviderConfigError("filesystem path must not contain a NUL character")
        base_url, query = _query_options(raw)
        given = {k: v for k, v in (("fsync", fsync), ("cache_size", cache_size), ("single_writer", single_writer),
                                   ("file_mode", file_mode), ("dir_mode", dir_mode)) if v is not None}
        opts = validate_options(FilesystemOptions, {**query, **given}, "filesystem")
        super().__init__(cache_size=opts.cache_size, encryption_key=encryption_key)
        try:
            fs, root = fsspec.core.url_to_fs(base_url, **storage_options)
        except (ValueError, ImportError, TypeError, OSError) as exc:
            raise ProviderConfigError(f"cannot open {base_url!r} with fsspec: {type(exc).__name__}: {exc}") from exc
        self.url = raw
        self._root = root.rstrip("/") or "/"
        self._files: Files | None = None
        self._segments: SegmentStore | None = None
        self._leases: LocalLeases | MemoryLeases | None = None
        if storage_options and isinstance(fs, LocalFileSystem | MemoryFileSystem):
            # these take no options worth passing; an unknown name is a typo, never silently ignored
            raise ProviderConfigError(
                f"filesystem option(s) refused: {', '.join(sorted(storage_options))} (unknown option; the options "
                f"are: {', '.join(FilesystemOptions.model_fields)}, encryption_key)"
            )
        if isinstance(fs, LocalFileSystem):
            if os.path.exists(self._root) and not os.path.isdir(self._root):
                raise ProviderConfigError(f"filesystem root {self._root!r} exists and is not a folder")
            self._segments = SegmentStore(self._root, fsync=opts.fsync, file_mode=opts.file_mode,
                                          dir_mode=opts.dir_mode)
            self._segments.on_replaced = self._forget
            self._leases = LocalLeases(self._segments.paths, opts.fsync)
        elif isinstance(fs, MemoryFileSystem):
            self._files = MemoryFiles(fs)
            self._leases = MemoryLeases(self._root)
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

    @property
    def checks_generation_on_write(self) -> bool:
        """True on a local disk: a save refuses, under the segment's lock, a parent read from a segment a
        delete has unlinked since (`SessionDeletedError`), so the feature reads no generation per save."""
        return self._segments is not None

    def _forget(self, session_id: str) -> None:
        """Drop what this provider cached of a session another provider deleted."""
        self._lineages.drop_session(session_id)
        self._stripped.drop_session(session_id)

    # -- paths --------------------------------------------------------------------------------------------
    def _dir(self, session_id: str) -> str:
        return f"{self._root}/{session_id}/checkpoints"

    def _path(self, session_id: str, checkpoint_id: str) -> str:
        return f"{self._dir(session_id)}/{checkpoint_id}{SUFFIX}"

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """The record's file (on a local disk: the segment and the checkpoint), or the session's folder."""
        if checkpoint_id is None:
            return f"{self._root}/{session_id}"
        if self._segments is not None:
            return f"{self._segments.where(session_id)} checkpoint {checkpoint_id!r}"
        return self._path(session_id, checkpoint_id)

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except PersistencyError:
            raise
        except FileExistsError:
            raise
        except OSError as exc:
            raise self._unavailable(what, exc) from exc

    def _unavailable(self, what: str, exc: OSError) -> StorageUnavailableError:
        return StorageUnavailableError(f"filesystem {self._root}: {what}: {exc.strerror or exc}")

    def _per_file(self) -> Files:
        assert self._files is not None
        return self._files

    # -- primitives -----------------------------------------------------------------------------------------
    def write_record(self, record: NewRecord) -> None:
        """Append the record to the session's segment (local disk) or create its file; create-only."""
        if self._segments is not None:
            try:
                self._segments.write((record,))
            except (PersistencyError, FileExistsError):
                raise
            except OSError as exc:  # the message is made only when it is needed
                raise self._unavailable(f"writing {self._segments.where(record.session_id)}", exc) from exc
            return
        path = self._path(record.session_id, record.checkpoint_id)
        try:
            with self._translate(f"writing {path}"):
                self._per_file().create(path, record.data)
        except FileExistsError as exc:
            raise CheckpointConflictError(
                f"checkpoint {record.checkpoint_id!r} already exists in session {record.session_id!r} ({path})"
            ) from exc

    def write_records(self, records: Sequence[NewRecord]) -> None:
        """On a local disk a batch is one write and one sync per session (all or nothing); else one by one."""
        if self._segments is None:
            super().write_records(records)
            return
        with self._translate(f"writing {self._root}"):
            self._segments.write(records)

    def _read_each(self, session_id: str, ids: Sequence[str], line: bool) -> dict[str, bytes]:
        if self._segments is not None:
            with self._translate(f"reading {self._segments.where(session_id)}"):
                return self._segments.read_records(session_id, ids, first_line=line)
        out = {}
        files = self._per_file()
        read = files.read_line if line else files.read
        for cid in ids:
            path = self._path(session_id, cid)
            with self._translate(f"reading {path}"):
                try:
                    out[cid] = read(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
        return out

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The records' bytes: from the segment in one read, or one raw read per file."""
        return self._read_each(session_id, checkpoint_ids, line=False)

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The first line of each record (the payload is not decoded)."""
        return self._read_each(session_id, checkpoint_ids, line=True)

    def read_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """On a local disk the whole chain from one read of the segment, head first; else the head."""
        if self._segments is None:
            return self._walk_files(session_id, checkpoint_id)
        with self._translate(f"reading {self._segments.where(session_id)}"):
            return self._segments.read_chain(session_id, checkpoint_id)

    def _walk_files(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """One file per record: the head and the bases its bytes name, read in one call (the same reads
        the base would make one by one), so the base decodes the chain in one pass."""
        chain = super().read_chain(session_id, checkpoint_id)
        seen = {cid for cid, _ in chain}
        while chain and (base := base_hint(chain[-1][1])) is not None and base not in seen:
            got = self._read_each(session_id, [base], line=False).get(base)
            if got is None:
                break  # the base's plan reports what is missing
            seen.add(base)
            chain.append((base, got))
        return chain

    def list_ids(self, session_id: str) -> list[str]:
        """The session's ids (segment index and record files); other files (a person's notes) are ignored."""
        if self._segments is not None:
            with self._translate(f"listing session {session_id!r}"):
                return self._segments.list_ids(session_id)
        with self._translate(f"listing session {session_id!r}"):
            names = self._per_file().names(self._dir(session_id))
        return sorted(stem for n in names if n.endswith(SUFFIX) and _is_id(stem := n[: -len(SUFFIX)]))

    def list_session_ids(self) -> list[str]:
        """Folders of the root that hold at least one record."""
        with self._translate("listing sessions"):
            if self._segments is not None:
                return self._segments.list_session_ids()
            if isinstance(self._files, MemoryFiles):
                candidates = sorted(self._files.session_dirs(self._root))
            else:
                candidates = [n for n in self._per_file().names(self._root) if _is_id(n) and self.list_ids(n)]
        return sorted(n for n in candidates if _is_id(n))

    def delete_records(self, session_id: str) -> None:
        """Remove the session's records (its state file stays) and advance its generation."""
        with self._translate(f"deleting session {session_id!r}"):
            if self._segments is not None:
                assert isinstance(self._leases, LocalLeases)
                with self._leases.advancing(session_id):
                    self._segments.delete(session_id, keep=STATE_FILE)
                return
            if self._leases is not None:
                with self._leases.advancing(session_id):
                    self._per_file().delete_tree(f"{self._root}/{session_id}")
                return
            self._per_file().delete_tree(f"{self._root}/{session_id}")

    def close(self) -> None:
        """Close the descriptors kept open for appending (idempotent; a later save reopens them)."""
        if self._segments is not None:
            self._segments.close()

    # -- generations and leases (local disk and memory://) ---------------------------------------------------
    @property
    def supports_leases(self) -> bool:
        """True on a local disk and ``memory://``; other fsspec protocols have no lease store."""
        return self._leases is not None

    def _lease_store(self) -> LocalLeases | MemoryLeases:
        if self._leases is None:
            raise NotImplementedError("session leases need a local disk or memory://, not this fsspec protocol")
        return self._leases

    def session_generation(self, session_id: str) -> int:
        """How many times the session was deleted (kept in its state file, so it only grows)."""
        if self._leases is None:
            return 0
        with self._translate(f"reading the generation of {session_id!r}"):
            return self._leases.generation(session_id)

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session's lease for ``ttl`` seconds unless another owner holds a live one (then None)."""
        store = self._lease_store()
        sid = check_lease_args(session_id, owner, ttl)
        with self._translate(f"taking the lease of {sid!r}"):
            return store.acquire(sid, owner, float(ttl))

    def current_lease(self, session_id: str) -> Lease | None:
        """The session's live lease as stored (None if none or lapsed): who owns the run, until when."""
        store = self._lease_store()
        sid = validate_id(session_id, "session_id")
        with self._translate(f"reading the lease of {sid!r}"):
            return store.current(sid)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease from now; None if it was lost."""
        store = self._lease_store()
        check_lease_args(lease.session_id, lease.owner, ttl)
        with self._translate(f"renewing the lease of {lease.session_id!r}"):
            return store.renew(lease, float(ttl))

    def release_lease(self, lease: Lease) -> None:
        """Give a held lease up (no error if it was lost)."""
        store = self._lease_store()
        validate_id(lease.session_id, "session_id")
        with self._translate(f"releasing the lease of {lease.session_id!r}"):
            store.release(lease)


def _is_id(name: str) -> bool:
    try:
        validate_id(name)
    except InvalidIdentifierError:
        return False
    return True
