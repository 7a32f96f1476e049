"""Filesystem-specific guarantees: atomic create-only files, typed errors on damage, linear bytes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import (
    CheckpointConflictError,
    CorruptCheckpointError,
    UnsupportedSchemaError,
    provider_from_url,
)
from persistency.ids import checkpoint_id_for
from persistency.testing import make_chain, make_checkpoint
from tests.fs_records import RecordInSegment, record_file, run_racers
from tests.records import reframed


def _record(root: Path, session: str, step: int) -> RecordInSegment:
    return record_file(root, session, checkpoint_id_for(1, step))


def test_layout_is_one_browsable_json_segment_per_session(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "conv-42", 3)
    files = sorted((tmp_path / "conv-42" / "checkpoints").iterdir())
    assert [f.name for f in files] == ["records.jsonl"]  # no file, inode or folder entry per step
    lines = files[0].read_text("utf-8").splitlines()
    assert len(lines) == 9  # per record: two JSON lines (one object), then its end line
    docs = [json.loads(lines[i] + lines[i + 1]) for i in range(0, 9, 3)]
    ends = [json.loads(lines[i + 2]) for i in range(0, 9, 3)]
    assert [d["info"]["checkpoint_id"] for d in docs] == [e["end"] for e in ends] == [
        checkpoint_id_for(1, s) for s in (1, 2, 3)]
    assert all(set(e) == {"end"} for e in ends)  # fully determined by its record
    assert docs[-1]["payload"]["messages"][0]["content"].startswith("message 2")  # only the new message


def test_listing_reads_no_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 20)
    fresh = FilesystemStorageProvider(tmp_path)  # no cache

    def forbidden(*a: object, **k: object) -> bytes:
        raise AssertionError("listing read a whole record")

    monkeypatch.setattr(fresh, "read_records", forbidden)
    assert len(fresh.list_checkpoints("s")) == 20


def test_stray_temporary_files_are_ignored(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 2)
    (tmp_path / "s" / "checkpoints" / ".tmp-deadbeef").write_bytes(b'{"info":{"trunc')
    (tmp_path / "stray-file.txt").write_text("not a session")
    (tmp_path / "empty-session" / "checkpoints").mkdir(parents=True)
    assert [i.step for i in p.list_checkpoints("s")] == [1, 2]
    assert p.list_sessions() == ["s"]


# -- damaged and hostile files ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: bytes(random.Random(7).getrandbits(8) for _ in range(300)), id="random-bytes"),
        pytest.param(lambda b: b'{"info": [1, 2, 3],\n"payload": {}}', id="wrong-shape"),
        pytest.param(lambda b: b"[]", id="json-array"),
        pytest.param(lambda b: b.replace(b'"step":3', b'"step":"three"'), id="bad-field-type"),
        pytest.param(lambda b: b.replace(b'"base_step":2', b'"base_step":1'), id="inconsistent-base"),
        pytest.param(lambda b: b.replace(b'"format":2', b'"format":99'), id="unknown-format"),
        pytest.param(lambda b: b.replace(b'"session_id":"s"', b'"session_id":"other"'), id="foreign-session"),
        pytest.param(lambda b: b"\xff\xfe" + b, id="not-utf8"),
    ],
)
def test_damaged_record_raises_corrupt_naming_the_file(tmp_path: Path, damage: object) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "s", 4)
    path = _record(tmp_path, "s", 3)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    fresh = FilesystemStorageProvider(tmp_path)
    with pytest.raises(CorruptCheckpointError, match=str(path.name)):
        fresh.get_checkpoint("s", chain[2].checkpoint_id)
    # its child needs it to rebuild the transcript, so it fails the same way, never silently
    with pytest.raises(CorruptCheckpointError):
        fresh.get_checkpoint("s", chain[3].checkpoint_id)
    # what does not depend on it is intact
    assert fresh.get_checkpoint("s", chain[1].checkpoint_id).messages == chain[1].messages


def test_damaged_info_line_fails_listing_loudly(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 3)
    _record(tmp_path, "s", 2).write_bytes(b"garbage\n")
    with pytest.raises(CorruptCheckpointError, match="0000002"):
        FilesystemStorageProvider(tmp_path).list_checkpoints("s")


def test_newer_schema_fails_fast(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 1)
    path = _record(tmp_path, "s", 1)
    # as a newer version would write it: checksums valid, schema newer
    newer = reframed(path.read_bytes(), lambda info: info.replace(b'"schema_version":1', b'"schema_version":99'))
    path.write_bytes(newer)
    fresh = FilesystemStorageProvider(tmp_path)
    with pytest.raises(UnsupportedSchemaError, match="99"):
        fresh.get_checkpoint("s", checkpoint_id_for(1, 1))
    with pytest.raises(UnsupportedSchemaError):
        fresh.list_checkpoints("s")


# -- create-only across processes, and no torn writes ---------------------------------------------------
def _race_worker(root: str, i: int, start: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    p = FilesystemStorageProvider(root)
    cp = make_checkpoint("race", 1, metadata={"writer": i})
    while time.time() < start:
        pass
    try:
        p.save_checkpoint(cp)
        q.put(("won", i))
    except CheckpointConflictError:
        q.put(("lost", i))


def test_processes_racing_for_one_id_exactly_one_wins(tmp_path: Path) -> None:
    results = run_racers(_race_worker, tmp_path, 6)
    winners = [i for r, i in results if r == "won"]
    assert len(winners) == 1, results
    got = FilesystemStorageProvider(tmp_path).get_checkpoint("race", checkpoint_id_for(1, 1))
    assert got.metadata == {"writer": winners[0]}


_WRITER = textwrap.dedent(
    """
    import sys
    from persistency.testing import make_checkpoint
    from persistency.providers.filesystem import FilesystemStorageProvider
    p = FilesystemStorageProvider(sys.argv[1])
    msgs, parent = [], None
    for step in range(1, 100000):
        msgs.append({"content": "y" * 200_000, "role": "assistant", "name": "bob"})
        cp = make_checkpoint("torn", step, parent_id=parent, messages=list(msgs))
        p.save_checkpoint(cp)
        parent = cp.checkpoint_id
        print(step, flush=True)
    """
)


def test_a_writer_killed_mid_write_never_leaves_a_torn_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for round_ in range(8):
        root = tmp_path / f"r{round_}"
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one checkpoint is stored
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        p = FilesystemStorageProvider(root)
        infos = p.list_checkpoints("torn")
        assert infos, "the first acknowledged checkpoint must survive"
        assert [i.step for i in infos] == list(range(1, len(infos) + 1))
        latest = p.get_latest_checkpoint("torn")
        assert latest is not None and latest.step == len(infos) and len(latest.messages) == latest.step


# -- linear storage ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url_kind", ["file", "memory"])
def test_bytes_stored_grow_linearly(tmp_path: Path, url_kind: str) -> None:
    url = str(tmp_path / "lin") if url_kind == "file" else f"memory://lin-{os.getpid()}-{time.time_ns()}"
    p = provider_from_url(url)
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyz     "
    msgs: list[dict[str, object]] = []
    parent = None
    for step in range(1, 1001):
        text = "".join(rng.choice(alphabet) for _ in range(500))
        msgs.append({"content": text, "role": "assistant", "name": ("alice", "bob", "carol")[step % 3]})
        cp = make_checkpoint("lin", step, parent_id=parent, messages=list(msgs),  # type: ignore[arg-type]
                             manager_state={"rounds_used": step, "last_speaker": msgs[-1]["name"],
                                            "max_round": 2000, "speaker_selection_method": "round_robin"})
        p.save_checkpoint(cp)
        parent = cp.checkpoint_id
    transcript = len(json.dumps(msgs, ensure_ascii=False).encode())
    if url_kind == "file":
        stored = sum(f.stat().st_size for f in (tmp_path / "lin").rglob("*") if f.is_file())
    else:
        fs = p._files.fs  # type: ignore[attr-defined]
        stored = sum(len(fs.cat_file(f)) for f in fs.find(p._root))  # type: ignore[attr-defined]
    assert stored > transcript
    ratio = stored / transcript
    assert ratio < 2.0, f"stored {stored} bytes for a {transcript}-byte transcript ({ratio:.2f}x)"
    latest = provider_from_url(url).get_latest_checkpoint("lin") if url_kind == "file" else p.get_latest_checkpoint(
        "lin"
    )
    assert latest is not None and latest.messages == msgs


def test_mutating_a_loaded_checkpoint_never_leaks_into_the_next_load(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "s", 3)
    first = p.get_checkpoint("s", chain[-1].checkpoint_id)
    first.messages[0]["content"] = "mutated"
    first.agent_states["alice"]["system_message"] = "mutated"
    first.metadata["problem"] = "mutated"
    again = p.get_checkpoint("s", chain[-1].checkpoint_id)
    assert again.model_dump() == chain[-1].model_dump()


def test_older_schema_is_migrated_on_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import persistency.models as models

    p = FilesystemStorageProvider(tmp_path)
    chain = make_chain(p, "old", 2)  # written as schema 1

    def one_to_two(info: dict, payload: dict | None) -> tuple[dict, dict | None]:  # type: ignore[type-arg]
        meta = info["metadata"]
        if "full" in meta:
            meta["full"] = {"task": meta["full"].pop("problem")}
        return info, payload

    monkeypatch.setattr(models, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(models.MIGRATIONS, 1, one_to_two)
    got = FilesystemStorageProvider(tmp_path).get_checkpoint("old", chain[-1].checkpoint_id)
    assert got.schema_version == 2 and got.metadata == {"task": "2+2"}
    assert got.messages == chain[-1].messages
    assert [i.metadata for i in FilesystemStorageProvider(tmp_path).list_checkpoints("old")] == [{"task": "2+2"}] * 2
