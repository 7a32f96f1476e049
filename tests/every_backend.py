"""Every backend, SQLite included: fixtures for the issue #13 tests that must hold "on every backend".

``tests/conftest.py`` parametrizes ``storage_url`` over the filesystem, ``memory://``, Redis, Redis
Cluster and S3. A test module that imports ``backend`` and ``storage_url`` from here runs on a SQLite
file too (``sqlite://TMP/store.db``), with the same URLs for the others. `sqlite_values` and
`sqlite_cells` read a SQLite store around the provider: the raw file bytes and every column value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, url_for

ALL_BACKENDS = [*BACKENDS, "sqlite"]
#: the columns of a record row that a load reads (``parent_id`` and ``step`` only serve writes and
#: listing order is the primary key's), each read and written around the provider
SQLITE_COLUMNS = ("info", "payload", "base_id")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test instance runs on (the shared ones and SQLite)."""
    return str(request.param)


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty storage URL on ``backend`` (as ``tests/conftest.py``, plus a SQLite file)."""
    if backend == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    return url_for(backend, tmp_path, request)


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite://`` URL."""
    return Path(url[len("sqlite://"):].split("?", 1)[0])


def sqlite_values(url: str) -> list[bytes]:
    """The database file, its ``-wal`` file (raw pages) and every value of every table, as bytes."""
    path = sqlite_path(url)
    chunks = [Path(f"{path}{suffix}").read_bytes() for suffix in ("", "-wal") if Path(f"{path}{suffix}").exists()]
    with sqlite3.connect(path) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in raw.execute(f"SELECT * FROM {table}"):
                chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None]
    return chunks


def sqlite_cells(url: str) -> list[tuple[str, Callable[[], bytes], Callable[[bytes], None]]]:
    """(name, get, put) of each non-null record column in `SQLITE_COLUMNS`; put writes the value back
    as a blob (a flipped text column may no longer be valid UTF-8)."""
    path = sqlite_path(url)

    def cell(sid: str, cid: str, column: str) -> tuple[str, Callable[[], bytes], Callable[[bytes], None]]:
        where = "WHERE session_id = ? AND checkpoint_id = ?"

        def get() -> bytes:
            with sqlite3.connect(path) as raw:
                value = raw.execute(f"SELECT CAST({column} AS BLOB) FROM records {where}", (sid, cid)).fetchone()[0]
            return bytes(value)

        def put(data: bytes) -> None:
            value: bytes | str = data
            if column == "base_id":
                try:
                    value = data.decode()
                except UnicodeDecodeError:
                    value = data
            with sqlite3.connect(path) as raw:
                raw.execute(f"UPDATE records SET {column} = ? {where}", (value, sid, cid))

        return f"sqlite {sid}/{cid}/{column}", get, put

    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT session_id, checkpoint_id, parent_id, base_id FROM records"
                           " ORDER BY session_id, checkpoint_id").fetchall()
    out = []
    for sid, cid, _parent, base in rows:
        present = {"info": True, "payload": True, "base_id": base is not None}
        out += [cell(sid, cid, c) for c in SQLITE_COLUMNS if present[c]]
    return out
