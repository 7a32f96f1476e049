"""`SqliteStorageProvider`: checkpoints as rows of one SQLite file (stdlib ``sqlite3``, WAL), on the public base.

Tables (see `db`)::

    records(session_id, checkpoint_id PRIMARY KEY together, parent_id, base_id, step, info, payload)
    generations(session_id, generation)      -- advanced by each delete
    leases(session_id, owner, token, expires_at, generation)

- Create-only: a plain ``INSERT`` on the primary key; of racers (threads or processes) one wins and
  the others get `CheckpointConflictError`.
- Listing reads the ``info`` column only (never a payload).
- Loading follows ``base_id`` in one recursive query: the latest checkpoint of a 1,000-step session
  is one statement, plus one for the keyframes it names.
- Generations: each delete advances the session's generation; a save whose parent this provider
  saw in an older generation, or whose parent is gone, fails with `SessionDeletedError` inside the
  write transaction, so a session deleted under a live chat never gets orphans or a splice.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from persistency.errors import CheckpointConflictError, SessionDeletedError
from persistency.storage import NewRecord, StorageBackend

from .db import MEMORY, Database, SqliteOptions, options, parse_url
from .leases import SqliteLeases, generation_of

__all__ = ["SqliteOptions", "SqliteStorageProvider"]

_BATCH = 500  # ids per IN (...) list, well under SQLite's variable limit
_MAX_CHAIN = 1_000_000  # a chain is never longer than this, nor than the session's record count

# A loop in stored base pointers (a damaged base_id column) ends after as many steps as the session
# has records, so a read costs at most one pass over the session; the base then reports the loop.
_CHAIN_SQL = """
WITH RECURSIVE chain(cid, depth, most) AS (
  SELECT checkpoint_id, 0, MIN(:limit, (SELECT COUNT(*) FROM records WHERE session_id = :sid))
  FROM records WHERE session_id = :sid AND checkpoint_id =
    COALESCE(:cid, (SELECT MAX(checkpoint_id) FROM records WHERE session_id = :sid))
  UNION ALL
  SELECT r.base_id, c.depth + 1, c.most FROM chain c
  JOIN records r ON r.session_id = :sid AND r.checkpoint_id = c.cid
  WHERE r.base_id IS NOT NULL AND c.depth + 1 < c.most
)
SELECT r.checkpoint_id, r.info, r.payload FROM chain c
JOIN records r ON r.session_id = :sid AND r.checkpoint_id = c.cid ORDER BY c.depth
"""


def _record(info: bytes, payload: bytes) -> bytes:
    return bytes(info) + b"\n" + bytes(payload) + b"\n"


def _batches(ids: Sequence[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), _BATCH):
        yield unique[i:i + _BATCH]


class SqliteStorageProvider(SqliteLeases, StorageBackend):
    """Stores checkpoints in one SQLite database file (WAL mode), safe for many processes on one machine.

    Args:
        url: ``sqlite:///path/to/file.db`` (absolute), ``sqlite://relative.db``, a plain path, or
            ``sqlite:///:memory:`` (one database private to this provider object).
        busy_timeout: seconds a write waits for another's lock before `StorageUnavailableError`.
        fsync: ``synchronous=FULL`` so an acknowledged checkpoint survives a power loss (``NORMAL`` if False).
        cache_size: parent lineages and keyframe records kept in memory (records never change).
        encryption_key: seal payloads with AES-256-GCM; the info column stays readable.
        file_mode: permission bits of a database file it creates (default 0o600, private whatever
            the umask; SQLite gives the ``-wal``/``-shm`` files the same). An existing file keeps its own.
        dir_mode: permission bits of the folders it creates for the file (default 0o700).

    Options may also be given in the URL's query (``?busy_timeout=5&fsync=false&file_mode=0640``); the keyword wins.
    """

    backend_name = "sqlite"
    schemes = ("sqlite",)
    #: the generation is checked inside each write transaction (the feature needs no extra read per save)
    checks_generation_on_write = True

    def __init__(self, url: str | os.PathLike[str], *, busy_timeout: float | None = None, fsync: bool | None = None,
                 cache_size: int | None = None, encryption_key: str | bytes | None = None,
                 file_mode: int | None = None, dir_mode: int | None = None) -> None:
        raw = os.fspath(url)
        if not isinstance(raw, str) or not raw.strip():
            from persistency.errors import ProviderConfigError

            raise ProviderConfigError("sqlite URL must be a non-empty sqlite:// URL or path")
        path, query = parse_url(raw)
        given = {k: v for k, v in (("busy_timeout", busy_timeout), ("fsync", fsync), ("cache_size", cache_size),
                                   ("file_mode", file_mode), ("dir_mode", dir_mode)) if v is not None}
        opts = options({**query, **given})
        super().__init__(cache_size=opts.cache_size, encryption_key=encryption_key)
        self.url = raw
        self.path = path
        self._db = Database(path, opts)
        if path == MEMORY:
            self.shared_across_processes = False  # one database per provider object, by nature
        self._seen: dict[str, int] = {}  # session -> generation this provider last worked in
        self._seen_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteStorageProvider({self.url!r})"

    def describe(self, session_id: str, checkpoint_id: str | None = None) -> str:
        """The database file and the row's key."""
        where = f"sqlite {self.path} session {session_id!r}"
        return where if checkpoint_id is None else f"{where} checkpoint {checkpoint_id!r}"

    def close(self) -> None:
        """Close the provider's connections (idempotent)."""
        self._db.close()

    # -- generations this provider has worked in --------------------------------------------------------
    def _observe(self, session_id: str, generation: int | None) -> None:
        """Note the generation a read saw; forget cached lineages of an older one (a delete happened)."""
        gen = generation or 0
        with self._seen_lock:
            before = self._seen.get(session_id)
            self._seen[session_id] = gen
        if before is not None and before != gen:
            self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        for cache in (self._lineages, self._stripped):
            cache.drop_session(session_id)

    # -- primitives -----------------------------------------------------------------------------------------
    def write_record(self, record: NewRecord) -> None:
        """Insert the record's row create-only, in a transaction that checks the parent's generation."""
        sid, cid = record.session_id, record.checkpoint_id
        with self._db.transaction() as conn:
            gen = generation_of(conn, sid)
            if record.parent_id is not None:
                with self._seen_lock:
                    seen = self._seen.get(sid)
                if seen is not None and seen != gen:
                    self._forget(sid)
                    raise SessionDeletedError(
                        f"{self.describe(sid, cid)}: the session was deleted and started again since this chat "
                        f"read it (generation {seen} -> {gen}); nothing was saved, the chat must stop")
                if conn.execute("SELECT 1 FROM records WHERE session_id = ? AND checkpoint_id = ?",
                                (sid, record.parent_id)).fetchone() is None:
                    self._forget(sid)
                    raise SessionDeletedError(
                        f"{self.describe(sid, cid)}: its parent {record.parent_id!r} is gone (the session was "
                        "deleted under a live chat); nothing was saved, the chat must stop")
            try:
                conn.execute(
                    "INSERT INTO records (session_id, checkpoint_id, parent_id, base_id, step, info, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sid, cid, record.parent_id, record.base_id, record.step, record.info_line, record.payload_line),
                )
            except sqlite3.IntegrityError as exc:
                raise CheckpointConflictError(
                    f"checkpoint {cid!r} already exists in session {sid!r} (sqlite {self.path})") from exc
        self._observe(sid, gen)

    def read_records(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The records of those ids that exist, one query per 500 ids."""
        out: dict[str, bytes] = {}
        with self._db.connection() as conn:
            for batch in _batches(checkpoint_ids):
                marks = ",".join("?" * len(batch))
                for cid, info, payload in conn.execute(
                        f"SELECT checkpoint_id, info, payload FROM records WHERE session_id = ?"  # noqa: S608
                        f" AND checkpoint_id IN ({marks})", (session_id, *batch)):
                    out[str(cid)] = _record(info, payload)
        return out

    def read_chain(self, session_id: str, checkpoint_id: str | None) -> list[tuple[str, bytes]]:
        """A record (None: the latest) and every base it extends, head first, in one query."""
        with self._db.connection() as conn:
            conn.execute("BEGIN")  # one snapshot for the chain and the generation
            try:
                rows = conn.execute(_CHAIN_SQL, {"sid": session_id, "cid": checkpoint_id,
                                                 "limit": _MAX_CHAIN}).fetchall()
                gen = generation_of(conn, session_id)
            finally:
                conn.execute("COMMIT")
        self._observe(session_id, gen)
        return [(str(cid), _record(info, payload)) for cid, info, payload in rows]

    def read_info_lines(self, session_id: str, checkpoint_ids: Sequence[str]) -> dict[str, bytes]:
        """The info column of those ids that exist (no payload is read)."""
        out: dict[str, bytes] = {}
        with self._db.connection() as conn:
            for batch in _batches(checkpoint_ids):
                marks = ",".join("?" * len(batch))
                for cid, info in conn.execute(
                        f"SELECT checkpoint_id, info FROM records WHERE session_id = ?"  # noqa: S608
                        f" AND checkpoint_id IN ({marks})", (session_id, *batch)):
                    out[str(cid)] = bytes(info)
        return out

    def list_ids(self, session_id: str) -> list[str]:
        """The session's checkpoint ids in byte order (the primary key's order)."""
        with self._db.connection() as conn:
            return [str(r[0]) for r in conn.execute(
                "SELECT checkpoint_id FROM records WHERE session_id = ? ORDER BY checkpoint_id", (session_id,))]

    def list_session_ids(self) -> list[str]:
        """Sessions with at least one record."""
        with self._db.connection() as conn:
            return [str(r[0]) for r in conn.execute("SELECT DISTINCT session_id FROM records ORDER BY session_id")]

    def delete_records(self, session_id: str) -> None:
        """Remove the session's records and advance its generation, in one transaction."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM records WHERE session_id = ?", (session_id,))
            conn.execute("INSERT INTO generations (session_id, generation) VALUES (?, 1) ON CONFLICT (session_id)"
                         " DO UPDATE SET generation = generation + 1", (session_id,))
            gen = generation_of(conn, session_id)
        self._observe(session_id, gen)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStorageProvider:
        """``sqlite:///path/to/file.db?busy_timeout=5`` (keyword options win over the query)."""
        return cls(url, **options)

    @property
    def in_memory(self) -> bool:
        """True for ``sqlite:///:memory:`` (a database private to this object)."""
        return self.path == MEMORY
