"""Session leases and generations on the filesystem and memory:// backends (the primitives only)."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import ProviderConfigError
from persistency.testing import make_chain
from tests.fs_records import run_racers


@pytest.fixture(params=["file", "memory"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> FilesystemStorageProvider:
    url = str(tmp_path / "store") if request.param == "file" else f"memory://lease-{uuid.uuid4().hex}"
    return FilesystemStorageProvider(url)


def test_one_owner_at_a_time_until_release(provider: FilesystemStorageProvider) -> None:
    a = provider.acquire_lease("s", "worker-a", 30)
    assert a is not None and a.owner == "worker-a" and a.session_id == "s" and a.token
    assert a.expires_at > time.time() + 20
    assert provider.acquire_lease("s", "worker-b", 30) is None
    assert provider.acquire_lease("other", "worker-b", 30) is not None  # per session
    renewed = provider.renew_lease(a, 60)
    assert renewed is not None and renewed.expires_at > a.expires_at and renewed.token == a.token
    provider.release_lease(a)
    b = provider.acquire_lease("s", "worker-b", 30)
    assert b is not None and b.token != a.token
    assert provider.renew_lease(a, 30) is None  # a's lease is gone: it cannot renew b's
    provider.release_lease(a)  # no error, and b keeps it
    assert provider.acquire_lease("s", "worker-c", 30) is None


def test_an_expired_lease_is_taken_and_the_old_owner_cannot_renew(provider: FilesystemStorageProvider) -> None:
    a = provider.acquire_lease("s", "worker-a", 0.05)
    assert a is not None
    time.sleep(0.1)
    b = provider.acquire_lease("s", "worker-b", 30)
    assert b is not None
    assert provider.renew_lease(a, 30) is None


def test_an_expired_lease_not_taken_can_still_be_renewed(provider: FilesystemStorageProvider) -> None:
    a = provider.acquire_lease("s", "worker-a", 0.01)
    assert a is not None
    time.sleep(0.05)
    assert provider.renew_lease(a, 30) is not None


def test_delete_advances_the_generation_and_keeps_the_lease(provider: FilesystemStorageProvider) -> None:
    assert provider.session_generation("s") == 0
    make_chain(provider, "s", 2)
    a = provider.acquire_lease("s", "worker-a", 30)
    assert a is not None and a.generation == 0
    provider.delete_session("s")
    assert provider.session_generation("s") == 1
    assert provider.list_sessions() == [] and provider.list_checkpoints("s") == []
    assert provider.acquire_lease("s", "worker-b", 30) is None  # still held across the delete
    make_chain(provider, "s", 1)
    provider.delete_session("s")
    assert provider.session_generation("s") == 2
    renewed = provider.renew_lease(a, 30)
    assert renewed is not None and renewed.generation == 2


@pytest.mark.parametrize("owner, ttl", [("", 10), (None, 10), ("a", 0), ("a", -1), ("a", "10"), ("a", True)])
def test_bad_lease_arguments_are_refused(provider: FilesystemStorageProvider, owner: object, ttl: object) -> None:
    with pytest.raises(ProviderConfigError):
        provider.acquire_lease("s", owner, ttl)  # type: ignore[arg-type]


def _racer(root: str, i: int, start: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    p = FilesystemStorageProvider(root)
    while time.time() < start:
        pass
    lease = p.acquire_lease("race", f"worker-{i}", 30)
    q.put((i, lease is not None, p.session_generation("race")))


def test_eight_processes_racing_for_a_lease_exactly_one_wins(tmp_path: Path) -> None:
    make_chain(FilesystemStorageProvider(tmp_path), "race", 1)
    FilesystemStorageProvider(tmp_path).delete_session("race")
    results = run_racers(_racer, tmp_path, 8, delay=2.0)
    assert sum(won for _, won, _ in results) == 1, results
    assert {gen for _, _, gen in results} == {1}


def test_the_state_file_survives_a_delete_and_is_private(tmp_path: Path) -> None:
    p = FilesystemStorageProvider(tmp_path)
    make_chain(p, "s", 1)
    p.delete_session("s")
    assert sorted(x.name for x in (tmp_path / "s").iterdir()) == ["session.json"]
    assert (tmp_path / "s" / "session.json").stat().st_mode & 0o777 == 0o600
    assert FilesystemStorageProvider(tmp_path).session_generation("s") == 1
