"""``copy``, ``verify`` and ``prune`` do work linear in the number of records.

Proved by counting what the provider's public primitives read and write (records, info lines),
never by timing: loading each of n checkpoints one by one through ``get_checkpoint`` reads
n(n+1)/2 records; the commands walk each session with ``iter_checkpoints``, which reads each record
once, so doubling the session at most ~doubles the reads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import PersistencyStorageProvider, provider_from_url
from persistency.errors import CheckpointNotFoundError, CorruptCheckpointError, InvalidIdentifierError
from persistency.ids import checkpoint_id_for
from persistency.storage import NewRecord
from persistency.testing import make_chain
from tests.fs_records import record_file
from tests.servers.s3_server import S3Server
from tests.test_cli import run


@dataclass
class Calls:
    reads: int = 0  # whole records returned by read_records / read_chain
    lines: int = 0  # info lines returned by read_info_lines (listing)
    writes: int = 0  # records stored by write_record / write_records
    batches: int = 0  # calls that stored records


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts what the filesystem provider's public primitives read and write (the real ones still run)."""
    counted = Calls()
    cls = FilesystemStorageProvider
    read_records, read_chain, read_lines = cls.read_records, cls.read_chain, cls.read_info_lines
    write_record, write_records = cls.write_record, cls.write_records
    inside = [False]  # the default write_records calls write_record: count the batch once

    def counting_read_records(self: FilesystemStorageProvider, sid: str, ids: Sequence[str]) -> dict[str, bytes]:
        got = read_records(self, sid, ids)
        counted.reads += len(got)
        return got

    def counting_read_chain(self: FilesystemStorageProvider, sid: str, cid: str | None) -> list[tuple[str, bytes]]:
        got = read_chain(self, sid, cid)
        counted.reads += len(got)
        return got

    def counting_read_lines(self: FilesystemStorageProvider, sid: str, ids: Sequence[str]) -> dict[str, bytes]:
        got = read_lines(self, sid, ids)
        counted.lines += len(got)
        return got

    def counting_write_record(self: FilesystemStorageProvider, record: NewRecord) -> None:
        write_record(self, record)
        if not inside[0]:
            counted.writes += 1
            counted.batches += 1

    def counting_write_records(self: FilesystemStorageProvider, records: Sequence[NewRecord]) -> None:
        inside[0] = True
        try:
            write_records(self, records)
        finally:
            inside[0] = False
        counted.writes += len(records)
        counted.batches += 1

    monkeypatch.setattr(cls, "read_records", counting_read_records)
    monkeypatch.setattr(cls, "read_chain", counting_read_chain)
    monkeypatch.setattr(cls, "read_info_lines", counting_read_lines)
    monkeypatch.setattr(cls, "write_record", counting_write_record)
    monkeypatch.setattr(cls, "write_records", counting_write_records)
    yield counted


def _store(steps: int, second_run: int = 0) -> str:
    url = f"memory://lin-{uuid.uuid4().hex}"
    p = provider_from_url(url)
    make_chain(p, "conv", steps)
    if second_run:
        make_chain(p, "conv", second_run, run_seq=2)  # a run of its own (no parent in run 1)
    return url


def _measure(calls: Calls, *args: str) -> Calls:
    before = Calls(calls.reads, calls.lines, calls.writes, calls.batches)
    r = run(*args)
    assert r.exit_code == 0, r.stderr
    return Calls(calls.reads - before.reads, calls.lines - before.lines, calls.writes - before.writes,
                 calls.batches - before.batches)


@pytest.mark.timeout(600)
def test_copy_reads_and_writes_each_record_a_bounded_number_of_times(calls: Calls) -> None:
    per: dict[int, Calls] = {}
    for n in (1000, 2000):
        src = _store(n)
        per[n] = _measure(calls, "copy", src, f"memory://lin-{uuid.uuid4().hex}", "--json")
        assert per[n].writes == n
        assert per[n].reads == n, (n, per[n])  # the walk reads each record once
        assert per[n].lines <= n, (n, per[n])  # the source's listing; the destination's is empty
        assert per[n].batches <= n / 100, (n, per[n])  # written in batches (one sync each on a local disk)
    assert per[2000].reads <= 2.2 * per[1000].reads, per


@pytest.mark.timeout(600)
def test_verify_reads_each_record_a_bounded_number_of_times(calls: Calls) -> None:
    per = {n: _measure(calls, "verify", "-u", _store(n), "--json") for n in (1000, 2000)}
    for n, c in per.items():
        assert c.writes == 0 and c.reads == n and c.lines <= n, (n, c)  # each record once; one listing
    assert per[2000].reads <= 2.2 * per[1000].reads, per


@pytest.mark.timeout(600)
def test_prune_rewrite_is_linear(calls: Calls) -> None:
    per: dict[int, Calls] = {}
    for n in (1000, 2000):
        url = _store(n // 2, second_run=n // 2)  # run 1 is dropped, run 2 kept: a staged rewrite
        per[n] = _measure(calls, "prune", "--keep-last-runs", "1", "--yes", "-u", url, "--json")
        assert per[n].writes == n  # n/2 to the staging session, n/2 back
        assert per[n].reads == 2 * n, (n, per[n])  # n/2 records, each read by 4 walks (copy, 2 checks, back)
        assert per[n].lines <= 1.5 * n, (n, per[n])  # the session's listing, the staging copy's
        assert provider_from_url(url).list_sessions() == ["conv"]
        assert len(provider_from_url(url).list_checkpoint_ids("conv")) == n // 2
    assert per[2000].reads <= 2.2 * per[1000].reads, per
    assert per[2000].writes <= 2.2 * per[1000].writes, per


def test_the_walk_gives_what_get_checkpoint_gives_on_every_backend(provider: PersistencyStorageProvider) -> None:
    run1 = make_chain(provider, "conv", 12)
    make_chain(provider, "conv", 4, run_seq=2, start=run1[4])  # a branch from step 5
    make_chain(provider, "conv", 3, run_seq=3, start=run1[-1])  # a continuation
    ids = provider.list_checkpoint_ids("conv")
    walked = dict(provider.iter_checkpoints("conv"))
    assert list(walked) == ids
    for cid in ids:
        assert walked[cid] == provider.get_checkpoint("conv", cid), cid
    backwards = list(reversed(ids))  # children before parents: slower, still exact

    async def walk() -> list[tuple[str, object]]:
        return [item async for item in provider.aiter_checkpoints("conv", backwards)]

    assert asyncio.run(walk()) == [(cid, walked[cid]) for cid in backwards]
    some = [ids[13], ids[2]]  # a branch checkpoint whose bases are not walked, then an old one
    assert list(provider.iter_checkpoints("conv", some)) == [(c, walked[c]) for c in some]


def test_the_walk_reports_damage_as_get_checkpoint_does_and_goes_on(tmp_path: Path) -> None:
    store = tmp_path / "store"
    p = provider_from_url(str(store))
    run1 = make_chain(p, "conv", 8)
    branch = make_chain(p, "conv", 2, run_seq=2, start=run1[2])
    record_file(store, "conv", run1[4].checkpoint_id).write_bytes(b'{"not": "a record"}\n')
    fresh = provider_from_url(str(store))
    ids = fresh.list_checkpoint_ids("conv")
    missing = checkpoint_id_for(1, 99)  # asked for, not stored
    walked = list(fresh.iter_checkpoints("conv", [*ids, missing]))
    assert [c for c, _ in walked] == [*ids, missing]
    for cid, got in walked:
        try:
            expected: object = fresh.get_checkpoint("conv", cid)
        except (CorruptCheckpointError, CheckpointNotFoundError) as exc:
            expected = exc
        if isinstance(expected, Exception):
            assert type(got) is type(expected), (cid, got, expected)
        else:
            assert got == expected, cid
    bad = {c for c, got in walked if isinstance(got, Exception)}
    # step 5 is damaged, and every later step of run 1 is built on it; the branch from step 3 is not
    assert bad == {c.checkpoint_id for c in run1[4:]} | {missing}
    assert all(not isinstance(got, Exception) for c, got in walked if c in {b.checkpoint_id for b in branch})
    with pytest.raises(InvalidIdentifierError):
        list(fresh.iter_checkpoints("conv", ["../x"]))


@pytest.mark.timeout(600)
def test_copy_from_s3_makes_a_bounded_number_of_requests_per_record(s3_server: S3Server) -> None:
    per: dict[int, int] = {}
    for n in (130, 260):
        src = s3_server.url(f"lin-{uuid.uuid4().hex}")
        with provider_from_url(src) as p:
            make_chain(p, "conv", n)
        mark = s3_server.mark()
        r = run("copy", src, f"memory://lin-{uuid.uuid4().hex}", "--json")
        assert r.exit_code == 0, r.stderr
        per[n] = len(s3_server.since(mark))
        assert per[n] <= n, per  # packs of 64 steps: far fewer requests than records
    assert per[260] <= 2.2 * per[130], per
