"""Session leases and generations in SQLite: one row per session, changed only inside a write transaction.

``BEGIN IMMEDIATE`` takes the database's write lock before the lease row is read, so "is the
current lease expired? then it is mine" is one atomic step across every process on the file: of
racers for an expired or absent lease exactly one wins. Renew and release compare the holder's
token, so a worker whose lease expired and was taken cannot extend or drop the new holder's.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from persistency.ids import validate_id
from persistency.storage import Lease

from .._leases import check_lease, check_lease_args, check_ttl, new_token

if TYPE_CHECKING:
    from .db import Database

__all__ = ["SqliteLeases", "generation_of"]


def generation_of(conn: sqlite3.Connection, session_id: str) -> int:
    """The session's generation as ``conn`` sees it (0 until its first delete)."""
    row = conn.execute("SELECT generation FROM generations WHERE session_id = ?", (session_id,)).fetchone()
    return int(row[0]) if row else 0


class SqliteLeases:
    """The lease primitives and `session_generation` of `SqliteStorageProvider` (mixed in)."""

    _db: Database

    def session_generation(self, session_id: str) -> int:
        """The number `delete_records` advances (0 for a session never deleted)."""
        sid = validate_id(session_id, "session_id")
        with self._db.connection() as conn:
            return generation_of(conn, sid)

    def acquire_lease(self, session_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the session's lease for ``ttl`` seconds unless another holds a live one (then None)."""
        sid, owner, ttl = check_lease_args(session_id, owner, ttl)
        with self._db.transaction() as conn:
            now = time.time()
            row = conn.execute("SELECT expires_at FROM leases WHERE session_id = ?", (sid,)).fetchone()
            if row is not None and float(row[0]) > now:
                return None
            lease = Lease(sid, owner, now + ttl, generation_of(conn, sid), new_token())
            conn.execute(
                "INSERT INTO leases (session_id, owner, token, expires_at, generation) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, token = excluded.token,"
                " expires_at = excluded.expires_at, generation = excluded.generation",
                (sid, owner, lease.token, lease.expires_at, lease.generation),
            )
            return lease

    def current_lease(self, session_id: str) -> Lease | None:
        """The session's live lease as stored (None if none or expired): who owns the run, until when."""
        sid = validate_id(session_id, "session_id")
        with self._db.connection() as conn:
            row = conn.execute("SELECT owner, token, expires_at, generation FROM leases WHERE session_id = ?",
                               (sid,)).fetchone()
        if row is None or float(row[2]) <= time.time():
            return None
        return Lease(sid, str(row[0]), float(row[2]), int(row[3]), str(row[1]))

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease to ``ttl`` seconds from now; None if it was taken by another holder."""
        lease, ttl = check_lease(lease), check_ttl(ttl)
        with self._db.transaction() as conn:
            expires = time.time() + ttl
            cur = conn.execute("UPDATE leases SET expires_at = ? WHERE session_id = ? AND token = ?",
                               (expires, lease.session_id, lease.token))
            if cur.rowcount != 1:
                return None
        return Lease(lease.session_id, lease.owner, expires, lease.generation, lease.token)

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a lease already taken by another holder is left alone."""
        lease = check_lease(lease)
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE session_id = ? AND token = ?", (lease.session_id, lease.token))
