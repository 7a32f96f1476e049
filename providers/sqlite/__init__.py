"""Checkpoints in one SQLite file (stdlib ``sqlite3``, WAL): ``sqlite:///path/to/file.db``.

Create-only across every process on the machine, listing without payloads, a whole chain in one
query, session generations and leases. See `provider` for the tables and the guarantees.
"""

from __future__ import annotations

from .provider import SqliteOptions, SqliteStorageProvider

__all__ = ["SqliteOptions", "SqliteStorageProvider"]
