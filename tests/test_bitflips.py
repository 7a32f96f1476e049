"""Integrity: one flipped bit anywhere in a stored record is detected, on every backend, with and
without encryption (issue #13, item 3). Never a silently altered conversation, never an empty one.

The stored values are read and written around the provider (files, fsspec's memory store, Redis
hash fields, S3 objects including packs and indexes, SQLite's info, payload and base_id columns);
after each flip a fresh provider loads every checkpoint (the heads of both branches, whose chains
hold every record) and lists the session. Every flip in a record must make one of those raise a
`PersistencyError`, and none may return altered data. SQLite's base_id column is an index the chain
query follows but each record's own base id overrules: a flip there may go unseen, never alter data.
Index keys that are not records (Redis's sorted sets, SQLite's parent_id and step columns, which no
load reads) are covered by the damage tests of each provider instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from persistency import Checkpoint, PersistencyError, provider_from_url
from persistency.encryption import generate_key
from persistency.testing import make_chain, make_checkpoint
from tests.every_backend import backend, sqlite_cells, storage_url

__all__ = ["backend", "storage_url"]  # fixtures: every backend of tests/conftest.py and SQLite

FLIPS = 200
KEY = generate_key()


@dataclass
class Cell:
    """One stored value: how to read it and how to write it back."""

    name: str
    get: Callable[[], bytes]
    put: Callable[[bytes], object]
    #: an index a load may consult but never trusts (SQLite's base_id column: the chain query's hint,
    #: each record's own base id decides): a flip there may go unseen, but must never alter data
    index: bool = False


def _cells(backend: str, url: str, request: pytest.FixtureRequest) -> list[Cell]:
    if backend == "sqlite":
        return [Cell(name, get, put, index=name.endswith("/base_id")) for name, get, put in sqlite_cells(url)]
    if backend == "file":
        return [Cell(str(f), f.read_bytes, f.write_bytes) for f in sorted(Path(url).rglob("*.json*"))]  # + segments
    if backend == "memory":
        from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

        store, prefix = MemoryFileSystem.store, "/" + url.split("://", 1)[1] + "/"

        def memory_cell(key: str) -> Cell:
            return Cell(key, lambda: bytes(store[key].getvalue()),
                        lambda data: store.__setitem__(key, MemoryFile(None, key, data)))

        return [memory_cell(k) for k in sorted(store) if k.startswith(prefix)]
    if backend in ("redis", "redis_cluster"):
        import redis
        import redis.cluster

        base, prefix = url.split("?")[0], url.split("key_prefix=")[1].split("&")[0]
        client: Any = redis.cluster.RedisCluster.from_url(base) if backend == "redis_cluster" \
            else redis.Redis.from_url(base)
        request.addfinalizer(client.close)

        def field_cell(key: bytes, field: bytes) -> Cell:
            return Cell(f"{key!r}/{field!r}", lambda: client.hget(key, field),
                        lambda data: client.hset(key, field, data))

        return [field_cell(k, f) for k in sorted(client.scan_iter(match=f"{prefix}:*"))
                if client.type(k) == b"hash" for f in sorted(client.hkeys(k))]
    server = request.getfixturevalue("s3_server")
    s3 = server.client()
    prefix = url.split("/", 3)[3].split("?")[0] + "/"

    def object_cell(key: str) -> Cell:
        return Cell(key, lambda: s3.get_object(Bucket=server.bucket, Key=key)["Body"].read(),
                    lambda data: s3.put_object(Bucket=server.bucket, Key=key, Body=data))

    listing = s3.list_objects_v2(Bucket=server.bucket, Prefix=prefix).get("Contents", [])
    return [object_cell(o["Key"]) for o in listing if o["Size"] > 0]


def _record_of(backend: str, cell_name: str) -> str | None:
    """The checkpoint id of an S3 record object (None for anything else)."""
    if backend != "s3" or "/checkpoints/" not in cell_name or not cell_name.endswith(".json"):
        return None
    return cell_name.rsplit("/", 1)[1][: -len(".json")]


def _write(url: str, options: dict[str, Any]) -> list[Checkpoint]:
    with provider_from_url(url, **options) as p:
        main = make_chain(p, "flip", 6)
        end = make_checkpoint("flip", 6, parent_id=main[-1].checkpoint_id, messages=main[-1].messages,
                              kind="run_end", end_reason="error", end_seq=1)
        end = end.model_copy(update={"error": "the model failed"})
        p.save_checkpoint(end)
        branch = make_chain(p, "flip", 2, run_seq=2, start=main[2])
    return [end, branch[-1]]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_every_flipped_bit_is_detected(backend: str, storage_url: str, request: pytest.FixtureRequest,
                                       encrypted: bool) -> None:
    options: dict[str, Any] = {"encryption_key": KEY} if encrypted else {}
    url = storage_url + ("&pack_every=3" if backend == "s3" else "")  # packs and indexes are flipped too
    heads = _write(url, options)
    with provider_from_url(url, **options) as p:
        infos = p.list_checkpoints("flip")
    cells = [(c, c.get()) for c in _cells(backend, storage_url, request)]
    sizes = [len(data) for _, data in cells]
    assert cells and sum(sizes) > 1000
    rng = random.Random(f"{backend}-{encrypted}")
    undetected: list[str] = []
    unseen_index_flips = 0
    # On S3 one reader without caches serves every flip (a new client per flip costs most of a second);
    # what it remembers of objects is keyed by their ETag, which a flip changes.
    shared = provider_from_url(url, cache_size=0, **options) if backend == "s3" else None
    request.addfinalizer(lambda: shared.close() if shared else None)
    for _ in range(FLIPS):
        (cell, original), = rng.choices(cells, weights=sizes)
        pos, bit = rng.randrange(len(original)), rng.randrange(8)
        damaged = bytearray(original)
        damaged[pos] ^= 1 << bit
        cell.put(bytes(damaged))
        try:
            fresh = shared or provider_from_url(url, **options)
            try:
                got = [fresh.get_checkpoint("flip", h.checkpoint_id) for h in heads]
                listed = fresh.list_checkpoints("flip")
                own = _record_of(backend, cell.name)
                if own is not None:
                    # On S3 a head's load reads the copies of its elders that its own object carries
                    # (checksummed), not their objects: a flip there shows when that checkpoint loads.
                    fresh.get_checkpoint("flip", own)
            finally:
                if fresh is not shared:
                    fresh.close()
            same = [g.model_dump() for g in got] == [h.model_dump() for h in heads] and listed == infos
            if cell.index and same:
                unseen_index_flips += 1
            else:
                undetected.append(f"{cell.name} byte {pos} bit {bit}: {'no effect seen' if same else 'ALTERED DATA'}")
        except PersistencyError:
            pass
        finally:
            cell.put(original)
    assert not undetected, f"{len(undetected)} of {FLIPS} flips not detected: {undetected[:5]}"
    print(f"{backend} {'encrypted' if encrypted else 'plain'}: {FLIPS} flips over {len(cells)} values, "
          f"{FLIPS - unseen_index_flips} in record bytes all detected, {unseen_index_flips} in an index column "
          "with the data intact")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_every_bit_of_a_stored_value_tail_is_detected(backend: str, storage_url: str,
                                                      request: pytest.FixtureRequest, encrypted: bool) -> None:
    """Exhaustive where random flips are weakest: every bit of the last 8 bytes of every stored
    value. A deflate stream's padding bits sit there and zlib ignores them, so only a checksum over
    the stored bytes themselves sees them (a random flip hit one on Redis about once in five runs)."""
    options: dict[str, Any] = {"encryption_key": KEY} if encrypted else {}
    url = storage_url + ("&pack_every=3" if backend == "s3" else "")
    heads = _write(url, options)
    undetected: list[str] = []
    reader = provider_from_url(url, cache_size=0, **options)  # no cache: every load reads the store
    request.addfinalizer(reader.close)
    infos = reader.list_checkpoints("flip")
    cells = [c for c in _cells(backend, storage_url, request) if not c.index]  # index flips: above
    tried = 0
    for cell in cells:
        original = cell.get()
        for pos in range(max(0, len(original) - 8), len(original)):
            for bit in range(8):
                tried += 1
                damaged = bytearray(original)
                damaged[pos] ^= 1 << bit
                cell.put(bytes(damaged))
                try:
                    # files are read by a fresh instance (a reader that already indexed a segment reads
                    # records by offset and rightly never looks at the end lines again); servers by one
                    fresh = provider_from_url(url, **options) if backend in ("file", "memory") else reader
                    try:
                        got = [fresh.get_checkpoint("flip", h.checkpoint_id) for h in heads]
                        listed = fresh.list_checkpoints("flip")
                        own = _record_of(backend, cell.name)
                        if own is not None:  # as in the random flips: a carried copy served the heads
                            fresh.get_checkpoint("flip", own)
                    finally:
                        if fresh is not reader:
                            fresh.close()
                    same = [g.model_dump() for g in got] == [h.model_dump() for h in heads] and listed == infos
                    if same:
                        undetected.append(f"{cell.name} byte {pos} bit {bit}")
                except PersistencyError:
                    pass
                finally:
                    cell.put(original)
    assert not undetected, f"{len(undetected)} tail flips not detected: {undetected[:5]}"
    mode = "encrypted" if encrypted else "plain"
    print(f"{backend} {mode}: {tried} tail flips over {len(cells)} values, all detected")
