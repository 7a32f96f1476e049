"""A delete by another provider or process is seen by the next save under the segment's lock (counted, not timed).

The filesystem checks the generation on write (``checks_generation_on_write``): a save whose parent was read
from a segment a delete has since unlinked, or whose parent is gone, fails with `SessionDeletedError` and
stores nothing; so an owned chat reads no generation file per step. A steady save opens and stats nothing
but the one ``fstat`` of the segment under its lock, and syncs once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider
from persistency.providers.filesystem.lease import STATE_FILE

from persistency.errors import CheckpointConflictError, CheckpointNotFoundError, SessionDeletedError
from persistency.models import Checkpoint
from persistency.testing import make_chain, make_checkpoint
from tests.ownership_harness import MAX_ROUND, Job, run_job


def _child(of: Checkpoint, text: str = "more") -> Checkpoint:
    return make_checkpoint(of.session_id, of.step + 1, parent_id=of.checkpoint_id,
                           messages=[*of.messages, {"content": text, "role": "assistant", "name": "bob"}])


def _delete_in_another_process(root: str, remake: int) -> None:
    p = FilesystemStorageProvider(root)
    p.delete_session("s")
    if remake:
        make_chain(p, "s", remake)
    p.close()


def _delete_elsewhere(root: Path, where: str, remake: int = 0) -> list[Checkpoint] | None:
    """Delete session "s" from another provider instance or another (forked) process, then write
    ``remake`` checkpoints under the same ids; the instance's new chain, if made here."""
    if where == "process":
        proc = mp.get_context("fork").Process(target=_delete_in_another_process, args=(str(root), remake))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        return None
    other = FilesystemStorageProvider(root)
    other.delete_session("s")
    theirs = make_chain(other, "s", remake) if remake else None
    other.close()
    return theirs


def test_the_local_disk_checks_on_write_and_memory_does_not(tmp_path: Path) -> None:
    assert FilesystemStorageProvider(tmp_path).checks_generation_on_write is True
    assert FilesystemStorageProvider(f"memory://g-{uuid.uuid4().hex}").checks_generation_on_write is False


@pytest.mark.parametrize("where", ["instance", "process"])
def test_a_delete_between_two_saves_refuses_the_second(tmp_path: Path, where: str) -> None:
    live = FilesystemStorageProvider(tmp_path)
    chain = make_chain(live, "s", 2)
    _delete_elsewhere(tmp_path, where)
    with pytest.raises(SessionDeletedError, match="deleted while this chat ran") as err:
        live.save_checkpoint(_child(chain[-1]))
    assert isinstance(err.value, CheckpointConflictError)
    with pytest.raises((SessionDeletedError, CheckpointNotFoundError)):  # again: its parent is read, not there
        live.save_checkpoint(_child(chain[-1]))
    fresh = FilesystemStorageProvider(tmp_path)
    assert fresh.list_checkpoint_ids("s") == [] and fresh.list_sessions() == []  # nothing stored after it
    live.close()


@pytest.mark.parametrize("where", ["instance", "process"])
def test_a_session_deleted_and_written_again_under_the_same_ids_is_never_spliced(tmp_path: Path, where: str) -> None:
    live = FilesystemStorageProvider(tmp_path)
    mine = make_chain(live, "s", 3)
    theirs = _delete_elsewhere(tmp_path, where, 3)  # the same ids, another conversation
    with pytest.raises(SessionDeletedError):
        live.save_checkpoint(_child(mine[-1], "A's step 4"))
    fresh = FilesystemStorageProvider(tmp_path)
    assert fresh.list_checkpoint_ids("s") == [c.checkpoint_id for c in mine]  # only the other's three
    latest = fresh.get_latest_checkpoint("s")
    assert latest is not None and latest.step == 3 and "A's step 4" not in str(latest.messages)
    if theirs is not None:
        assert latest.messages == theirs[-1].messages
    # a new turn of the live worker reads the session again, and then works in the new one
    start = live.get_latest_checkpoint("s")
    assert start is not None
    live.save_checkpoint(_child(start))
    assert len(fresh.list_checkpoint_ids("s")) == 4
    live.close()


def test_an_own_delete_and_a_first_save_are_not_refused(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 2)
    p.delete_session("s")
    again = make_chain(p, "s", 2)  # a new session under the same id, by the provider that deleted it
    other = FilesystemStorageProvider(tmp_path)
    other.delete_session("s")
    make_chain(p, "s", 1)  # a first checkpoint has no parent to lose: stored in the session as it is now
    assert [c.checkpoint_id for c in again[:1]] == FilesystemStorageProvider(tmp_path).list_checkpoint_ids("s")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of os calls that open, stat or sync (and opens of the session's state file)."""
    counts: Counter[str] = Counter()
    for name in ("open", "stat", "fstat", "lstat", "fsync", "fdatasync", "read", "pread"):
        real = getattr(os, name)

        def wrapper(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
            counts[_name] += 1
            if _name == "open" and a and os.fspath(a[0]).endswith(STATE_FILE):
                counts["state_file_open"] += 1
            return _real(*a, **k)

        monkeypatch.setattr(os, name, wrapper)
    yield counts


def test_a_steady_save_opens_nothing_stats_once_and_syncs_once(tmp_path: Path, calls: Counter[str]) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "s", 2)
    for _ in range(30):
        calls.clear()
        cp = _child(chain[-1])
        p.save_checkpoint(cp)
        chain.append(cp)
        assert calls["open"] == 0 and calls["stat"] + calls["lstat"] == 0, calls
        assert calls["fstat"] == 1, calls  # the segment's, under the lock: a delete or an append is seen
        assert calls["fdatasync"] == 1 and calls["fsync"] == 0, calls
        assert calls["read"] + calls["pread"] == 0, calls
    assert FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s") == chain[-1]


def test_an_owned_chat_reads_no_generation_per_step(tmp_path: Path, calls: Counter[str]) -> None:
    url = str(tmp_path / "store")
    report = run_job(Job(url, "s", str(tmp_path), "owner", ownership={"lease_ttl": 30.0}))
    assert report["outcome"] == "ran", report
    with FilesystemStorageProvider(url) as p:
        saved = len(p.list_checkpoint_ids("s"))
    assert saved >= MAX_ROUND  # a checkpoint per step, and the run end
    # the lease: taken and released (plus at most one look at it); nothing per step
    assert calls["state_file_open"] <= 2, calls  # 12 in this chat when the feature reads it before each save


def test_a_new_segment_under_the_old_inode_number_is_told_by_its_head(tmp_path: Path) -> None:
    """A freed inode's number may be given to the re-created segment: a descriptor opened just now is checked
    by the segment's first bytes (one pread, only then). Simulated: what was seen is made to name the new
    segment's inode, with the old segment's head."""
    live = FilesystemStorageProvider(tmp_path)
    mine = make_chain(live, "s", 3)
    live.close()  # no descriptor pins the old segment's inode any more
    assert live._segments is not None
    old = live._segments._seen["s"]
    other = FilesystemStorageProvider(tmp_path)
    other.delete_session("s")
    parent = None
    for step in (1, 2, 3):  # the same ids, another conversation
        cp = make_checkpoint("s", step, parent_id=parent, messages=[{"content": f"B {i}", "role": "user"}
                                                                    for i in range(step)])
        other.save_checkpoint(cp)
        parent = cp.checkpoint_id
    other.close()
    st = os.stat(tmp_path / "s" / "checkpoints" / "records.jsonl")
    live._segments._seen["s"] = old._replace(dev=st.st_dev, ino=st.st_ino)
    with pytest.raises(SessionDeletedError):
        live.save_checkpoint(_child(mine[-1], "A's step 4"))
    assert len(FilesystemStorageProvider(tmp_path).list_checkpoint_ids("s")) == 3


def test_a_reopened_segment_of_the_same_session_is_not_refused(tmp_path: Path, calls: Counter[str]) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "s", 3)
    p.close()  # the next save opens the segment again: its head is read once and agrees
    calls.clear()
    cp = _child(chain[-1])
    p.save_checkpoint(cp)
    assert calls["pread"] == 1 and calls["fdatasync"] == 1, calls
    assert FilesystemStorageProvider(tmp_path).get_latest_checkpoint("s") == cp


def test_a_reader_sees_the_new_segment_even_under_the_old_inode_number(tmp_path: Path) -> None:
    reader = FilesystemStorageProvider(tmp_path)
    make_chain(reader, "s", 3)
    assert reader.get_latest_checkpoint("s") is not None  # its index of the segment is cached
    reader.close()
    other = FilesystemStorageProvider(tmp_path)
    other.delete_session("s")
    parent, cp = None, None
    for step in (1, 2, 3):  # longer than the old segment: the index's end is no hint
        cp = make_checkpoint("s", step, parent_id=parent,
                             messages=[{"content": f"B {i} " + "y" * 400, "role": "user"} for i in range(step)])
        other.save_checkpoint(cp)
        parent = cp.checkpoint_id
    latest = reader.get_latest_checkpoint("s")
    assert latest == cp
    assert [c.checkpoint_id for c in reader.list_checkpoints("s")] == other.list_checkpoint_ids("s")
