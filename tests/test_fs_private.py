"""Private files on a local disk: modes whatever the umask, no symlink out of the root, ids checked, kills."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import CorruptCheckpointError, ProviderConfigError, StorageUnavailableError
from persistency.storage.framing import frame, split
from persistency.testing import make_chain, make_checkpoint
from tests.fs_records import record_file
from tests.test_filesystem_provider import _WRITER


@pytest.fixture
def umask() -> Iterator[object]:
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path, umask: object, mask: int) -> None:
    umask(mask)  # type: ignore[operator]
    root = tmp_path / "store" / "deep"
    p = FilesystemStorageProvider(root)
    chain = make_chain(p, "s", 3)
    assert p.acquire_lease("s", "me", 30) is not None  # the state file too
    modes = _modes(root)
    assert modes == {".": 0o700, "s": 0o700, "s/checkpoints": 0o700, "s/checkpoints/records.jsonl": 0o600,
                     "s/session.json": 0o600}, {k: oct(v) for k, v in modes.items()}
    assert FilesystemStorageProvider(root).get_latest_checkpoint("s") == chain[-1]


def test_modes_can_be_widened_exactly(tmp_path: Path, umask: object) -> None:
    umask(0o077)  # type: ignore[operator]
    p = FilesystemStorageProvider(tmp_path / "shared", file_mode=0o640, dir_mode=0o750)
    make_chain(p, "s", 1)
    modes = _modes(tmp_path / "shared")
    assert set(modes.values()) == {0o750, 0o640}
    assert modes["s/checkpoints/records.jsonl"] == 0o640
    q = FilesystemStorageProvider(f"file://{tmp_path / 'q'}?file_mode=0660&dir_mode=0770")
    make_chain(q, "s", 1)
    assert _modes(tmp_path / "q")["s/checkpoints/records.jsonl"] == 0o660


@pytest.mark.parametrize("bad", [{"file_mode": 0o400}, {"file_mode": 0o1777}, {"dir_mode": 0o600},
                                 {"file_mode": "0640"}, {"dir_mode": True}])
def test_bad_modes_are_refused_naming_the_option(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ProviderConfigError, match=next(iter(bad))):
        FilesystemStorageProvider(tmp_path, **bad)  # type: ignore[arg-type]


# -- symlinks ----------------------------------------------------------------------------------------------
def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    return out


def test_a_symlinked_checkpoints_folder_is_neither_written_nor_read(tmp_path: Path) -> None:
    root, out = tmp_path / "root", _outside(tmp_path)
    (root / "s").mkdir(parents=True)
    (root / "s" / "checkpoints").symlink_to(out)
    p = FilesystemStorageProvider(root)
    with pytest.raises(StorageUnavailableError, match="symlink"):
        make_chain(p, "s", 1)
    assert list(out.iterdir()) == []
    # records planted outside are not read through it either
    make_chain(FilesystemStorageProvider(out.parent / "elsewhere"), "s", 2)
    (root / "s" / "checkpoints").unlink()
    (root / "s" / "checkpoints").symlink_to(out.parent / "elsewhere" / "s" / "checkpoints")
    with pytest.raises(StorageUnavailableError, match="symlink"):
        p.get_latest_checkpoint("s")
    with pytest.raises(StorageUnavailableError, match="symlink"):
        p.list_checkpoints("s")
    assert p.list_sessions() == []


def test_a_symlinked_session_folder_is_refused_and_not_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_chain(FilesystemStorageProvider(tmp_path / "elsewhere"), "s", 2)
    make_chain(FilesystemStorageProvider(root), "mine", 1)
    (root / "s").symlink_to(tmp_path / "elsewhere" / "s")
    p = FilesystemStorageProvider(root)
    assert p.list_sessions() == ["mine"]
    with pytest.raises(StorageUnavailableError, match="symlink"):
        p.get_latest_checkpoint("s")
    with pytest.raises(StorageUnavailableError, match="symlink"):
        make_chain(p, "s", 1)


def test_a_symlinked_segment_or_record_is_refused(tmp_path: Path) -> None:
    root, out = tmp_path / "root", _outside(tmp_path)
    src = FilesystemStorageProvider(tmp_path / "elsewhere")
    make_chain(src, "s", 2)
    (root / "s" / "checkpoints").mkdir(parents=True)
    seg = root / "s" / "checkpoints" / "records.jsonl"
    seg.symlink_to(tmp_path / "elsewhere" / "s" / "checkpoints" / "records.jsonl")
    p = FilesystemStorageProvider(root)
    for call in (lambda: p.get_latest_checkpoint("s"), lambda: p.list_checkpoints("s"), lambda: make_chain(p, "s", 1)):
        with pytest.raises(StorageUnavailableError, match="symlink"):
            call()
    seg.unlink()
    # a 0.1 record file symlinked from outside is not loaded
    target = out / "planted.json"
    target.write_bytes(record_file(tmp_path / "elsewhere", "s", "000001-0000001").read_bytes())
    (root / "s" / "checkpoints" / "000001-0000001.json").symlink_to(target)
    with pytest.raises(StorageUnavailableError, match="symlink"):
        p.get_checkpoint("s", "000001-0000001")


# -- ids read from storage ---------------------------------------------------------------------------------
def test_a_stored_parent_id_that_climbs_out_never_reaches_a_path(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path / "root")
    chain = make_chain(p, "s", 2)
    rec = record_file(tmp_path / "root", "s", chain[1].checkpoint_id)
    info, payload = split(rec.read_bytes(), "x")
    evil_info = info.replace(chain[0].checkpoint_id.encode(), b"../../../x")
    line1, line2 = frame(evil_info, payload)
    rec.write_bytes(line1 + b"\n" + line2 + b"\n")  # checksums valid: as a hostile writer would store it
    (tmp_path / "x.json").write_bytes(b"planted")
    fresh = FilesystemStorageProvider(tmp_path / "root")
    with pytest.raises(CorruptCheckpointError, match="stored checkpoint id"):
        fresh.get_checkpoint("s", chain[1].checkpoint_id)
    # and an end line naming such an id marks its entry damaged instead: never a path
    seg = tmp_path / "root" / "s" / "checkpoints" / "records.jsonl"
    end = b'{"end":"' + chain[1].checkpoint_id.encode() + b'"}'
    assert end in seg.read_bytes()
    seg.write_bytes(seg.read_bytes().replace(end, b'{"end":"../../../x"}'))
    fresh = FilesystemStorageProvider(tmp_path / "root")
    assert "../../../x" not in fresh.list_checkpoint_ids("s")
    with pytest.raises(CorruptCheckpointError):
        fresh.get_checkpoint("s", chain[1].checkpoint_id)


# -- temporary files and killed writers --------------------------------------------------------------------
def test_temporary_files_of_dead_01_writers_are_removed_at_the_next_write(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 1)
    folder = tmp_path / "s" / "checkpoints"
    old, fresh = folder / ".tmp-0123abcd", folder / ".tmp-live"
    old.write_bytes(b'{"info":{"the conversation')
    fresh.write_bytes(b'{"info":{"being written')
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    q = FilesystemStorageProvider(tmp_path)
    q.save_checkpoint(make_checkpoint("s", 2, parent_id="000001-0000001",
                                      messages=[*q.get_checkpoint("s", "000001-0000001").messages, {"content": "2"}]))
    assert not old.exists() and fresh.exists()  # a live 0.1 writer's file is left to it


def test_a_writer_killed_mid_save_leaves_nothing_others_can_read(tmp_path: Path) -> None:
    os.umask(old := os.umask(0o002))  # a permissive umask, as on a shared machine
    try:
        os.umask(0o002)
        for round_ in range(4):
            root = tmp_path / f"r{round_}"
            proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            proc.stdout.readline()
            time.sleep(0.02 * round_)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            for path, mode in _modes(root).items():
                assert mode & 0o077 == 0, (path, oct(mode))
            names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            assert names == ["torn", "torn/checkpoints", "torn/checkpoints/records.jsonl"]  # no temporary file
            latest = FilesystemStorageProvider(root).get_latest_checkpoint("torn")
            assert latest is not None and len(latest.messages) == latest.step
    finally:
        os.umask(old)


# -- SQLite: the database file and its -wal/-shm files ----------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_sqlite_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path, umask: object, mask: int) -> None:
    """SQLite itself makes a new database 0644 (and its -wal/-shm files take the database's mode), so the
    provider creates the file first, privately; missing folders are made 0700."""
    from persistency.providers.sqlite import SqliteStorageProvider

    umask(mask)  # type: ignore[operator]
    with SqliteStorageProvider(f"sqlite://{tmp_path}/new/deep/chats.db") as p:
        chain = make_chain(p, "s", 3)
        assert p.acquire_lease("s", "me", 30) is not None
        modes = _modes(tmp_path / "new")
    assert modes == {".": 0o700, "deep": 0o700, "deep/chats.db": 0o600, "deep/chats.db-wal": 0o600,
                     "deep/chats.db-shm": 0o600}, {k: oct(v) for k, v in modes.items()}
    with SqliteStorageProvider(f"sqlite://{tmp_path}/new/deep/chats.db") as q:
        assert q.get_latest_checkpoint("s") == chain[-1]


def test_sqlite_modes_can_be_widened_and_an_existing_file_keeps_its_own(tmp_path: Path, umask: object) -> None:
    from persistency import provider_from_url

    umask(0o077)  # type: ignore[operator]
    with provider_from_url(f"sqlite://{tmp_path}/shared/c.db?file_mode=0640&dir_mode=0750") as p:
        make_chain(p, "s", 1)
    assert set(_modes(tmp_path / "shared").values()) == {0o750, 0o640}
    with provider_from_url(f"sqlite://{tmp_path}/kw/c.db", file_mode=0o660) as p:
        make_chain(p, "s", 1)
    assert _modes(tmp_path / "kw")["c.db"] == 0o660
    mine = tmp_path / "mine.db"
    mine.touch(0o644)
    os.chmod(mine, 0o644)
    with provider_from_url(f"sqlite://{mine}") as p:
        make_chain(p, "s", 1)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o644  # the owner's choice, not changed behind them


@pytest.mark.parametrize("bad", [{"file_mode": 0o400}, {"file_mode": 0o1777}, {"dir_mode": 0o600},
                                 {"file_mode": "0640"}, {"dir_mode": True}])
def test_sqlite_bad_modes_are_refused_naming_the_option(tmp_path: Path, bad: dict[str, object]) -> None:
    from persistency import provider_from_url

    with pytest.raises(ProviderConfigError, match=next(iter(bad))):
        provider_from_url(f"sqlite://{tmp_path}/x/c.db", **bad)
    assert not (tmp_path / "x").exists()


# the filesystem test's writer, on a SQLite file: saves of growing 200 KB transcripts, each acknowledged on stdout
_SQLITE_WRITER = _WRITER.replace("from persistency.providers.filesystem import FilesystemStorageProvider",
                                 "from persistency import provider_from_url").replace(
    "FilesystemStorageProvider(sys.argv[1])", 'provider_from_url("sqlite://" + sys.argv[1])')


def test_a_sqlite_writer_killed_mid_save_leaves_nothing_others_can_read(tmp_path: Path, umask: object) -> None:
    """A real writer process, SIGKILLed at different points under a permissive umask: the database and the
    journal files it leaves are 0600, nothing else is left, and the next reader sees whole checkpoints."""
    from persistency import provider_from_url

    umask(0o002)  # type: ignore[operator]
    for round_ in range(3):
        db = tmp_path / f"r{round_}" / "c.db"
        proc = subprocess.Popen([sys.executable, "-c", _SQLITE_WRITER, str(db)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        for _ in range(round_ + 1):
            proc.stdout.readline()  # 1, 2, 3 checkpoints acknowledged, then killed in the next save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = _modes(db.parent)
        assert set(left) <= {".", "c.db", "c.db-wal", "c.db-shm"}, left
        assert all(mode & 0o077 == 0 for mode in left.values()), {k: oct(v) for k, v in left.items()}
        with provider_from_url(f"sqlite://{db}") as p:
            latest = p.get_latest_checkpoint("torn")
            assert latest is not None and latest.step >= round_ + 1 and len(latest.messages) == latest.step
