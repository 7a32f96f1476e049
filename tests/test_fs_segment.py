"""The segment's properties, counted, never timed: one sync per save, torn tails, reads per load, batches."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider
from persistency.providers.filesystem.segment import SEGMENT, SegmentIndex, scan

from persistency import CheckpointConflictError, CorruptCheckpointError
from persistency.models import Checkpoint
from persistency.testing import make_chain, make_checkpoint
from tests.fs_records import segment_path


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of the os calls that sync, read or open, through wrappers of the real functions."""
    counts: Counter[str] = Counter()
    for name in ("fsync", "fdatasync", "read", "pread", "open"):
        real = getattr(os, name)

        def wrapper(*a: object, _real: object = real, _name: str = name, **k: object) -> object:
            counts[_name] += 1
            return _real(*a, **k)  # type: ignore[operator]

        monkeypatch.setattr(os, name, wrapper)
    yield counts


def _grow(p: FilesystemStorageProvider, sid: str, steps: int, text: str = "x" * 500) -> list[Checkpoint]:
    out, msgs, parent = [], [], None
    for step in range(1, steps + 1):
        msgs.append({"content": f"{step} {text}", "role": "assistant", "name": "bob"})
        cp = make_checkpoint(sid, step, parent_id=parent, messages=list(msgs))
        p.save_checkpoint(cp)
        out.append(cp)
        parent = cp.checkpoint_id
    return out


# -- one sync per save, nothing that grows -------------------------------------------------------------
def test_each_save_after_the_first_syncs_once_and_adds_no_file(tmp_path: Path, syscalls: Counter[str]) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = _grow(p, "s", 1)
    first = syscalls["fsync"] + syscalls["fdatasync"]
    assert 1 <= first <= 5  # the data, plus the new folders' and segment's names, once per session
    for step in range(2, 60):
        syscalls.clear()
        cp = make_checkpoint("s", step, parent_id=chain[-1].checkpoint_id,
                             messages=[*chain[-1].messages, {"content": str(step), "role": "user"}])
        p.save_checkpoint(cp)
        chain.append(cp)
        assert syscalls["fdatasync"] == 1 and syscalls["fsync"] == 0, (step, syscalls)
        assert syscalls["read"] + syscalls["pread"] == 0  # the index is current: nothing is re-read
    assert os.listdir(tmp_path / "s" / "checkpoints") == [SEGMENT]
    assert FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s") == chain[-1]


def test_fsync_false_syncs_nothing(tmp_path: Path, syscalls: Counter[str]) -> None:
    make_chain(FilesystemStorageProvider(tmp_path, fsync=False), "s", 5)
    assert syscalls["fsync"] + syscalls["fdatasync"] == 0


def test_another_process_append_is_seen_and_create_only_holds(tmp_path: Path) -> None:
    a, b = FilesystemStorageProvider(tmp_path), FilesystemStorageProvider(tmp_path)  # two descriptors, two indexes
    chain = make_chain(a, "s", 3)
    nxt = make_checkpoint("s", 4, parent_id=chain[-1].checkpoint_id, messages=[*chain[-1].messages, {"content": "4"}])
    b.save_checkpoint(nxt)
    with pytest.raises(CheckpointConflictError):
        a.save_checkpoint(nxt)  # a's index catches up under the lock and refuses the taken id
    assert a.get_latest_checkpoint("s") == nxt


# -- torn tails -------------------------------------------------------------------------------------------
def _last_entry_start(data: bytes) -> int:
    idx = SegmentIndex(0, 0)
    scan(data, 0, idx)
    return max(e.start for e in idx.entries.values())


def test_a_tail_torn_at_every_byte_of_the_last_record_loads_the_one_before(tmp_path: Path) -> None:
    src = tmp_path / "src"
    chain = _grow(FilesystemStorageProvider(src, fsync=False), "s", 4, text="é✓ \"quoted\" \\ ")
    data = segment_path(src, "s").read_bytes()
    start = _last_entry_start(data)
    root = tmp_path / "torn"
    make_chain(FilesystemStorageProvider(root, fsync=False), "s", 1)  # creates the folders
    seg = segment_path(root, "s")
    for cut in range(start, len(data)):
        seg.write_bytes(data[:cut])
        p = FilesystemStorageProvider(root, fsync=False)
        assert p.get_latest_checkpoint("s") == chain[2], cut
        assert [i.step for i in p.list_checkpoints("s")] == [1, 2, 3]
        if cut % 9 == 0 or cut == len(data) - 1:  # the next writer cuts the tear and appends whole
            p.save_checkpoint(chain[3])
            assert seg.read_bytes() == data
            assert FilesystemStorageProvider(root).get_latest_checkpoint("s") == chain[3]
    seg.write_bytes(data)
    assert FilesystemStorageProvider(root).get_latest_checkpoint("s") == chain[3]


def test_every_flipped_byte_of_the_last_record_is_reported_never_dropped(tmp_path: Path) -> None:
    chain = _grow(FilesystemStorageProvider(tmp_path, fsync=False), "s", 3)
    seg = segment_path(tmp_path, "s")
    data = seg.read_bytes()
    start = _last_entry_start(data)
    for at in range(start, len(data)):
        seg.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
        p = FilesystemStorageProvider(tmp_path, fsync=False)
        try:
            got = p.get_latest_checkpoint("s")
        except CorruptCheckpointError:
            continue
        # a flip the record's checksums cannot see (in the end line) loads the right checkpoint or fails:
        # it never falls back silently to the one before
        assert got == chain[-1], at
        assert at > data.rfind(b"\n", 0, len(data) - 1), at


# -- loads in a few reads ---------------------------------------------------------------------------------
def test_latest_of_a_long_session_loads_in_a_handful_of_reads(tmp_path: Path, syscalls: Counter[str]) -> None:
    chain = _grow(FilesystemStorageProvider(tmp_path, fsync=False), "s", 300)
    fresh = FilesystemStorageProvider(tmp_path)  # nothing cached
    syscalls.clear()
    assert fresh.get_latest_checkpoint("s") == chain[-1]
    assert syscalls["read"] + syscalls["pread"] <= 3, syscalls
    assert syscalls["open"] <= 8, syscalls  # root, session, checkpoints folder, segment (and a keyframe read)
    syscalls.clear()
    assert fresh.get_checkpoint("s", chain[150].checkpoint_id) == chain[150]
    assert syscalls["read"] + syscalls["pread"] <= 3, syscalls


def test_listing_a_long_session_reads_the_segment_once(tmp_path: Path, syscalls: Counter[str]) -> None:
    _grow(FilesystemStorageProvider(tmp_path, fsync=False), "s", 300)
    fresh = FilesystemStorageProvider(tmp_path)
    syscalls.clear()
    assert len(fresh.list_checkpoints("s")) == 300
    assert syscalls["read"] + syscalls["pread"] <= 3, syscalls


def test_copy_reads_grow_linearly_with_the_session(tmp_path: Path, syscalls: Counter[str]) -> None:
    from persistency.cli._copy import copy_checkpoints

    reads = {}
    for n in (50, 100):
        src = FilesystemStorageProvider(tmp_path / f"src{n}", fsync=False)
        _grow(src, "s", n)
        fresh = FilesystemStorageProvider(tmp_path / f"src{n}")
        dst = FilesystemStorageProvider(tmp_path / f"dst{n}", fsync=False)
        syscalls.clear()
        copy_checkpoints(fresh, dst, "s", fresh.list_checkpoints("s"))
        reads[n] = syscalls["read"] + syscalls["pread"]
        assert dst.get_latest_checkpoint("s") == src.get_latest_checkpoint("s")
    assert reads[100] <= 2.2 * reads[50] + 4, reads


# -- the fast JSON parser gives the standard library's values, and hands it what it refuses --------------
def test_values_orjson_refuses_still_round_trip(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path, fsync=False)
    odd = {"big": 2**70, "neg": -(2**65), "lone": "half \ud83d emoji", "pair": "😀", "deep": [[[[1.5e-300]]]]}
    cp = make_checkpoint("s", 1, metadata=odd, messages=[{"content": "\ud800 x", "role": "user"}])
    p.save_checkpoint(cp)
    got = FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s")
    assert got == cp and got.metadata == odd


# -- batches: one write and one sync -------------------------------------------------------------------
def _batch(sid: str, start: Checkpoint, n: int) -> list[Checkpoint]:
    out, parent = [], start
    for step in range(start.step + 1, start.step + 1 + n):
        cp = make_checkpoint(sid, step, parent_id=parent.checkpoint_id,
                             messages=[*parent.messages, {"content": f"m{step}", "role": "user"}])
        out.append(cp)
        parent = cp
    return out


def test_a_batch_of_saves_is_one_sync_and_loads_like_single_saves(tmp_path: Path, syscalls: Counter[str]) -> None:
    p = FilesystemStorageProvider(tmp_path)
    [first] = make_chain(p, "s", 1)
    batch = _batch("s", first, 10)
    syscalls.clear()
    p.save_checkpoints(batch)
    assert syscalls["fdatasync"] == 1 and syscalls["fsync"] == 0, syscalls
    fresh = FilesystemStorageProvider(tmp_path)
    assert fresh.get_latest_checkpoint("s") == batch[-1]
    assert [i.step for i in fresh.list_checkpoints("s")] == list(range(1, 12))
    assert fresh.get_checkpoint("s", batch[4].checkpoint_id) == batch[4]


def test_a_batch_with_a_taken_id_stores_nothing(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    [first] = make_chain(p, "s", 1)
    batch = _batch("s", first, 4)
    p.save_checkpoint(batch[0])
    before = segment_path(tmp_path, "s").read_bytes()
    with pytest.raises(CheckpointConflictError):  # the last of the batch is taken: the first two are not stored
        FilesystemStorageProvider(tmp_path).save_checkpoints([batch[1], batch[2], batch[0]])
    assert segment_path(tmp_path, "s").read_bytes() == before


async def test_async_batch_and_the_default_loop_on_memory(tmp_path: Path) -> None:
    import uuid

    from persistency import provider_from_url

    for url in (str(tmp_path / "a"), f"memory://batch-{uuid.uuid4().hex}"):
        p = provider_from_url(url)
        [first] = make_chain(p, "s", 1)
        batch = _batch("s", first, 5)
        await p.asave_checkpoints(batch)  # type: ignore[attr-defined]
        assert await provider_from_url(url).aget_latest_checkpoint("s") == batch[-1]


def test_readers_and_a_writer_of_one_instance_keep_its_index_exact(tmp_path: Path) -> None:
    import threading

    p = FilesystemStorageProvider(tmp_path, fsync=False)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                p.list_checkpoint_ids("s")
                p.get_latest_checkpoint("s")
            except BaseException as exc:  # a failure fails the test below
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        chain = _grow(p, "s", 150, text="y" * 50)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert errors == []
    assert p.list_checkpoint_ids("s") == [c.checkpoint_id for c in chain]
    more = _batch("s", chain[-1], 3)
    p.save_checkpoints(more)
    assert FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s") == more[-1] == p.get_latest_checkpoint("s")
