"""The SQLite file behind the provider: URL parsing, options, the schema, one connection per thread.

A file database runs in WAL mode (readers never block the writer) with a ``busy_timeout``, so
processes and threads sharing one file wait for each other's short write transactions instead of
failing. Each thread gets its own connection (``sqlite3`` connections must not be shared while in
use); a forked child opens fresh ones. ``:memory:`` is one database per provider, so it has a single
connection guarded by a lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveFloat, StrictBool, StrictInt

from persistency.errors import CorruptCheckpointError, ProviderConfigError, StorageUnavailableError
from persistency.storage import BackendOptions, validate_options

__all__ = ["MEMORY", "SCHEMA_VERSION", "Database", "SqliteOptions", "parse_url"]

MEMORY = ":memory:"
SCHEMA_VERSION = 1

_SCHEMA = (
    # one row per record: the info line in its own column, so listing never reads a payload
    "CREATE TABLE IF NOT EXISTS records ("
    " session_id TEXT NOT NULL, checkpoint_id TEXT NOT NULL, parent_id TEXT, base_id TEXT,"
    " step INTEGER NOT NULL, info BLOB NOT NULL, payload BLOB NOT NULL,"
    " PRIMARY KEY (session_id, checkpoint_id)) WITHOUT ROWID",
    # a session's generation: advanced by every delete, kept after the records are gone
    "CREATE TABLE IF NOT EXISTS generations (session_id TEXT PRIMARY KEY, generation INTEGER NOT NULL)"
    " WITHOUT ROWID",
    # at most one lease per session: who owns its run, until when
    "CREATE TABLE IF NOT EXISTS leases (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " token TEXT NOT NULL, expires_at REAL NOT NULL, generation INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)
_BOOL_TEXT = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class SqliteOptions(BackendOptions):
    """The provider's options (strict: ``fsync="no"`` is refused, not read as true)."""

    model_config = ConfigDict(strict=True)
    #: seconds a statement waits for another connection's write lock before failing
    busy_timeout: PositiveFloat = 30.0
    #: ``synchronous=FULL`` (an acknowledged checkpoint survives a power loss) instead of ``NORMAL``
    fsync: StrictBool = True
    #: parent lineages and keyframes kept in memory
    cache_size: NonNegativeInt = 512
    #: permission bits of a database file the provider creates (umask ignored; SQLite gives its
    #: ``-wal`` and ``-shm`` files the same); owner read+write kept
    file_mode: StrictInt = Field(0o600, ge=0o600, le=0o666)
    #: permission bits of the folders the provider creates for it (umask ignored); owner rwx kept
    dir_mode: StrictInt = Field(0o700, ge=0o700, le=0o777)


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """``sqlite://PATH?options`` -> (path, options). Everything after ``sqlite://`` is the path:
    ``sqlite:///srv/chats.db`` is ``/srv/chats.db``, ``sqlite://chats.db`` is relative; a plain path works too."""
    raw = url
    if raw.lower().startswith("sqlite://"):
        raw = raw[len("sqlite://"):]
    elif "://" in raw:
        raise ProviderConfigError(f"a SQLite URL starts with sqlite://, not {raw.split('://', 1)[0]!r}://")
    path, _, query = raw.partition("?")
    path = unquote(path)
    if path in (MEMORY, "/" + MEMORY):
        path = MEMORY
    if not path.strip() or path.endswith("/"):
        raise ProviderConfigError("a SQLite URL names a database file: sqlite:///path/to/file.db (or sqlite:///:memory:)")
    if "\x00" in path:
        raise ProviderConfigError("a SQLite path must not contain a NUL character")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "fsync" and value.lower() in _BOOL_TEXT:
            options[name] = _BOOL_TEXT[value.lower()]
        elif name == "cache_size" and value.isdigit():
            options[name] = int(value)
        elif name in ("file_mode", "dir_mode") and value and all(c in "01234567" for c in value):
            options[name] = int(value, 8)
        elif name == "busy_timeout":
            with contextlib.suppress(ValueError):
                options[name] = float(value)
            options.setdefault(name, value)
        else:
            options[name] = value  # the options model refuses it, naming it
    return path, options


class Database:
    """One SQLite database: connections per thread (or one, locked, for ``:memory:``), the schema made once."""

    def __init__(self, path: str, opts: SqliteOptions) -> None:
        self.path = path
        self._opts = opts
        self._local = threading.local()
        #: every connection opened, each with the lock held while it is in use, so `close` never closes
        #: a connection another thread (a lease renewer, a writer) is running a statement on
        self._all: list[tuple[sqlite3.Connection, threading.RLock]] = []
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        if path != MEMORY:
            folder = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(path):
                raise ProviderConfigError(f"SQLite path {path!r} is a folder; name a database file")
            try:
                _private_file(path, folder, opts.file_mode, opts.dir_mode)
            except OSError as exc:
                raise ProviderConfigError(f"cannot create SQLite database {path!r}: {exc.strerror}") from exc
        with self.connection() as conn:  # fail now on a file that is not a database, not at the first save
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            except sqlite3.DatabaseError as exc:
                raise ProviderConfigError(f"cannot use {path!r} as a SQLite database: {exc}") from exc

    def _open(self) -> tuple[sqlite3.Connection, threading.RLock]:
        try:
            conn = sqlite3.connect(self.path, timeout=self._opts.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"sqlite {self.path}: cannot open the database: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._opts.busy_timeout * 1000)}")
            if self.path != MEMORY:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ProviderConfigError(f"SQLite database {self.path!r} refused WAL mode ({mode})")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._opts.fsync else 'NORMAL'}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ProviderConfigError(f"cannot use {self.path!r} as a SQLite database: {exc}") from exc
        entry = (conn, threading.RLock())
        with self._lock:
            if self._closed:  # closed while this one was opening
                conn.close()
                raise StorageUnavailableError(f"sqlite {self.path}: the provider is closed")
            self._all.append(entry)
        return entry

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (opened on first use; fresh after a fork)."""
        if self._closed:
            raise StorageUnavailableError(f"sqlite {self.path}: the provider is closed")
        if os.getpid() != self._pid:  # a forked child must not use its parent's connections
            self._local, self._all, self._pid = threading.local(), [], os.getpid()
        with self._translated():
            if self.path == MEMORY:
                with self._lock:
                    if not self._all:
                        self._open()
                    yield self._all[0][0]
                return
            entry = getattr(self._local, "conn", None)
            if entry is None:
                entry = self._local.conn = self._open()
            conn, in_use = entry
            with in_use:
                if self._closed:
                    raise StorageUnavailableError(f"sqlite {self.path}: the provider is closed")
                yield conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's errors as this library's: busy or I/O -> `StorageUnavailableError`, damage -> corrupt."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StorageUnavailableError(f"sqlite {self.path}: {exc} (busy_timeout is "
                                          f"{self._opts.busy_timeout:g} s)") from exc
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            raise StorageUnavailableError(f"sqlite {self.path}: {type(exc).__name__}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise CorruptCheckpointError(f"sqlite {self.path}: the database file is damaged: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (``BEGIN IMMEDIATE``): committed on success, rolled back on error."""
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this provider opened (idempotent)."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        if os.getpid() != self._pid:
            return
        for conn, in_use in conns:
            with in_use, contextlib.suppress(sqlite3.Error):  # waits for a statement running on it
                conn.close()


def _private_file(path: str, folder: str, file_mode: int, dir_mode: int) -> None:
    """Create the missing folders (``dir_mode``) and a missing database file (``file_mode``) exactly,
    whatever the umask, before SQLite opens it: SQLite would make it 0644 and its ``-wal``/``-shm``
    files take the database file's mode. An existing file or folder is left as its owner made it."""
    missing = []
    head = folder
    while head and not os.path.lexists(head):
        missing.append(head)
        head = os.path.dirname(head) if os.path.dirname(head) != head else ""
    for name in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs
            os.mkdir(name, dir_mode)
            os.chmod(name, dir_mode)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, file_mode)
    finally:
        os.close(fd)


def options(values: dict[str, Any]) -> SqliteOptions:
    """The provider's options checked (`ProviderConfigError` naming a bad one)."""
    return validate_options(SqliteOptions, values, "sqlite")
