"""``copy``, ``verify`` and ``prune`` do work linear in the number of records.

Proved by counting the backend's record reads and writes per record (never by timing): loading each
of n checkpoints one by one through ``get_checkpoint`` reads n(n+1)/2 records; the commands' walk
reads each record a bounded number of times, so doubling the session at most ~doubles the reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from persistency import PersistencyStorageProvider, provider_from_url
from persistency.cli._walk import iter_checkpoints
from persistency.testing import make_chain
from providers.filesystem import FilesystemStorageProvider
from tests.servers.s3_server import S3Server
from tests.test_cli import run

pytestmark = pytest.mark.skip(reason="needs a public streaming read the storage rewrite left out (CHANGELOG)")


@dataclass
class Calls:
    reads: int = 0
    writes: int = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts every record read and write of the filesystem provider (the real ones still run)."""
    counted = Calls()
    read, write = FilesystemStorageProvider._read, FilesystemStorageProvider._write_new

    def counting_read(self: FilesystemStorageProvider, sid: str, cid: str) -> bytes:
        counted.reads += 1
        return read(self, sid, cid)

    def counting_write(self: FilesystemStorageProvider, sid: str, cid: str, data: bytes) -> None:
        counted.writes += 1
        write(self, sid, cid, data)

    monkeypatch.setattr(FilesystemStorageProvider, "_read", counting_read)
    monkeypatch.setattr(FilesystemStorageProvider, "_write_new", counting_write)
    yield counted


def _store(steps: int, second_run: int = 0) -> str:
    url = f"memory://lin-{uuid.uuid4().hex}"
    p = provider_from_url(url)
    make_chain(p, "conv", steps)
    if second_run:
        make_chain(p, "conv", second_run, run_seq=2)  # a run of its own (no parent in run 1)
    return url


def _measure(calls: Calls, *args: str) -> Calls:
    before = Calls(calls.reads, calls.writes)
    r = run(*args)
    assert r.exit_code == 0, r.stderr
    return Calls(calls.reads - before.reads, calls.writes - before.writes)


@pytest.mark.timeout(600)
def test_copy_reads_and_writes_each_record_a_bounded_number_of_times(calls: Calls) -> None:
    per: dict[int, Calls] = {}
    for n in (1000, 2000):
        src = _store(n)
        per[n] = _measure(calls, "copy", src, f"memory://lin-{uuid.uuid4().hex}", "--json")
        assert per[n].writes == n
        assert per[n].reads <= 1.5 * n, (n, per[n])  # the walk reads each record once
    assert per[2000].reads <= 2.2 * per[1000].reads, per


@pytest.mark.timeout(600)
def test_verify_reads_each_record_a_bounded_number_of_times(calls: Calls) -> None:
    per = {n: _measure(calls, "verify", "-u", _store(n), "--json") for n in (1000, 2000)}
    for n, c in per.items():
        assert c.writes == 0 and c.reads <= 1.5 * n, (n, c)
    assert per[2000].reads <= 2.2 * per[1000].reads, per


@pytest.mark.timeout(600)
def test_prune_rewrite_is_linear(calls: Calls) -> None:
    per: dict[int, Calls] = {}
    for n in (1000, 2000):
        url = _store(n // 2, second_run=n // 2)  # run 1 is dropped, run 2 kept: a staged rewrite
        per[n] = _measure(calls, "prune", "--keep-last-runs", "1", "--yes", "-u", url, "--json")
        assert per[n].writes == n  # n/2 to the staging session, n/2 back
        assert per[n].reads <= 2.5 * n, (n, per[n])  # n/2 records, each read by 4 walks (copy, 2 checks, back)
        assert provider_from_url(url).list_sessions() == ["conv"]
        assert len(provider_from_url(url).list_checkpoint_ids("conv")) == n // 2
    assert per[2000].reads <= 2.2 * per[1000].reads, per
    assert per[2000].writes <= 2.2 * per[1000].writes, per


def test_the_walk_gives_what_get_checkpoint_gives_on_every_backend(provider: PersistencyStorageProvider) -> None:
    run1 = make_chain(provider, "conv", 12)
    make_chain(provider, "conv", 4, run_seq=2, start=run1[4])  # a branch from step 5
    make_chain(provider, "conv", 3, run_seq=3, start=run1[-1])  # a continuation
    ids = provider.list_checkpoint_ids("conv")
    walked = dict(iter_checkpoints(provider, "conv", ids))
    assert list(walked) == ids
    for cid in ids:
        assert walked[cid] == provider.get_checkpoint("conv", cid), cid


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
