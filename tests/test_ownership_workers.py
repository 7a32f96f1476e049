"""Exactly-once runs across worker processes (the ownership issue's Done-when), on every backend with leases.

Eight forked workers per scenario, each with its own provider and model-call log. In every one:
exactly one worker runs, every other makes 0 model calls, every step appears once in the transcript
(it equals an uninterrupted run's), no run end is written for a live run, no duplicate run or
branch. ``memory://`` lives in one process: its threads and asyncio tasks are in test_ownership_memory.py.
No timing assertions: a worker is held at a step by a file gate, so "while the owner runs" is a
fact of the test, not a race; late joiners start 0.7 s and 1.5 s after the owner's claim.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from persistency import provider_from_url
from persistency.feature._ownership import branch_runs, has_leases
from persistency.testing import make_chain
from tests.ownership_harness import MAX_ROUND, Job, collect, run_job, spawn, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the workers are forked processes")

BACKENDS = ["filesystem", "sqlite", "redis", "redis_cluster", "s3"]
WORKERS = 8
WAIT = {"lease_ttl": 2.0, "wait": 60.0}
NO_WAIT = {"lease_ttl": 2.0}


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "filesystem":
        return str(tmp_path / "store")
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


_REFERENCE: dict[str, Any] = {}


@pytest.fixture
def reference(tmp_path: Path) -> list[str]:
    """The transcript of an uninterrupted run (no leases needed: one worker)."""
    if not _REFERENCE:
        ref = tmp_path / "ref"
        ref.mkdir()
        report = run_job(Job(f"sqlite://{ref}/ref.db", "ref", str(ref), "ref", ownership=None))
        assert report["outcome"] == "ran" and len(report["transcript"]) == MAX_ROUND, report
        _REFERENCE.update(report)
    return list(_REFERENCE["transcript"])


def _jobs(url: str, tmp_path: Path, n: int, prefix: str, **kw: Any) -> list[Job]:
    start = time.time() + 1.0 + 0.2 * n  # every worker forked and connected before any starts
    return [Job(url, "s", str(tmp_path), f"{prefix}{i}", start_at=start, **kw) for i in range(n)]


def _run_all(jobs: list[Job]) -> list[dict[str, Any]]:
    return collect([spawn(j) for j in jobs])


def _stored(url: str) -> tuple[list[Any], list[str] | None]:
    with provider_from_url(url) as p:
        infos = p.list_checkpoints("s")
        latest = p.get_latest_checkpoint("s")
        return infos, None if latest is None else [str(m.get("content")) for m in latest.messages]


def _check(reports: list[dict[str, Any]], reference: list[str], *, others: set[str]) -> dict[str, Any]:
    """Exactly one worker ran; every other made 0 model calls and ended as one of ``others``."""
    ran = [r for r in reports if r["outcome"] == "ran"]
    assert len(ran) == 1, [(r["outcome"], r.get("message", "")[:300]) for r in reports]
    rest = [r for r in reports if r is not ran[0]]
    assert all(r["outcome"] in others and r["calls"] == 0 for r in rest), [(r["outcome"], r["calls"]) for r in rest]
    assert ran[0]["transcript"] == reference
    for r in rest:
        if r["outcome"] == "returned":  # shown the finished run: the same transcript, no new turn
            assert r["transcript"] == reference and r["history"] == _REFERENCE["history"]
    return ran[0]


def _ends(infos: list[Any]) -> list[tuple[str, str]]:
    return [(i.checkpoint_id, str(i.end_reason)) for i in infos if i.kind == "run_end"]


def _leases_or_skip(url: str) -> None:
    with provider_from_url(url) as p:
        if not has_leases(p):
            pytest.skip(f"{p!r} has no leases")


def _killed_run(url: str, tmp_path: Path, at: int, ownership: dict[str, Any] | None = None) -> None:
    """A first run whose process dies as the reply of step ``at`` is due (no run end)."""
    [report] = _run_all([Job(url, "s", str(tmp_path), "first", ownership=ownership, kill_at=at)])
    assert report["outcome"] == "killed"


@pytest.mark.parametrize(("wait", "is_async"), [(False, False), (True, False), (True, True)],
                         ids=["busy", "wait", "wait-async"])
def test_an_unfinished_session_eight_workers_one_runs(url: str, tmp_path: Path, reference: list[str],
                                                      wait: bool, is_async: bool) -> None:
    _leases_or_skip(url)
    _killed_run(url, tmp_path, at=4)
    reports = _run_all(_jobs(url, tmp_path, WORKERS, "w", ownership=WAIT if wait else NO_WAIT, is_async=is_async))
    winner = _check(reports, reference, others={"returned"} if wait else {"busy", "returned"})
    assert winner["calls"] == MAX_ROUND - 3  # steps 4..9: nothing paid twice
    infos, final = _stored(url)
    assert final == reference
    # one run end closes the dead attempt (the winner's claim) and one ends the run: none for a live run
    assert [r for _, r in _ends(infos)] == ["cancelled", "max_rounds"]
    assert len({i.run_id for i in infos}) == 1


def test_late_joiners_while_the_owner_runs_touch_nothing(url: str, tmp_path: Path, reference: list[str]) -> None:
    _leases_or_skip(url)
    owner = spawn(Job(url, "s", str(tmp_path), "owner", ownership=NO_WAIT, hold_at=5))
    wait_for(tmp_path / "owner.reached")  # the owner holds the lease and is inside step 5's model call
    claimed = time.time()
    joiners = []
    for delay, tag, ownership in [(0.7, "busy-a", NO_WAIT), (0.7, "wait-a", WAIT), (0.7, "busy-b", NO_WAIT),
                                  (1.5, "busy-c", NO_WAIT), (1.5, "wait-b", WAIT), (1.5, "busy-d", NO_WAIT),
                                  (1.5, "wait-c", WAIT)]:
        time.sleep(max(0.0, claimed + delay - time.time()))
        joiners.append((tag, spawn(Job(url, "s", str(tmp_path), tag, ownership=ownership))))
    busy = collect([w for tag, w in joiners if tag.startswith("busy")])
    assert [r["outcome"] for r in busy] == ["busy"] * 4 and all(r["calls"] == 0 for r in busy), busy
    assert all("'s'" in r["message"] and "busy" in r["message"] for r in busy)
    infos, _ = _stored(url)
    assert _ends(infos) == [] and len(infos) == 4  # nothing written by a joiner, no run end for the live run
    (tmp_path / "owner.go").write_text("go")
    reports = collect([owner]) + busy + collect([w for tag, w in joiners if tag.startswith("wait")])
    _check(reports, reference, others={"busy", "returned"})
    assert [r["outcome"] for r in reports[-3:]] == ["returned"] * 3
    infos, final = _stored(url)
    assert final == reference and [r for _, r in _ends(infos)] == ["max_rounds"]


def test_a_run_that_ended_with_an_error_is_continued_once(url: str, tmp_path: Path, reference: list[str]) -> None:
    _leases_or_skip(url)
    [first] = _run_all([Job(url, "s", str(tmp_path), "first", ownership=NO_WAIT, fail_at=4)])
    assert first["outcome"] == "failed" and first["calls"] == 2
    reports = _run_all(_jobs(url, tmp_path, WORKERS, "w", ownership=WAIT))
    winner = _check(reports, reference, others={"returned"})
    assert winner["calls"] == MAX_ROUND - 3
    infos, final = _stored(url)
    assert final == reference and [r for _, r in _ends(infos)] == ["error", "max_rounds"]


def test_concurrent_identical_resume_from_makes_one_branch(url: str, tmp_path: Path, reference: list[str]) -> None:
    _leases_or_skip(url)
    [first] = _run_all([Job(url, "s", str(tmp_path), "first", ownership=NO_WAIT)])
    assert first["outcome"] == "ran"
    infos, _ = _stored(url)
    source = next(i.checkpoint_id for i in infos if i.step == 5 and i.kind == "step")
    reports = _run_all(_jobs(url, tmp_path, WORKERS, "w", ownership=WAIT, policy=source, message="try again"))
    ran = [r for r in reports if r["outcome"] == "ran"]
    assert len(ran) == 1 and all(r["calls"] == 0 and r["outcome"] == "returned" for r in reports if r not in ran), [
        (r["outcome"], r["calls"], r.get("message", "")[:200]) for r in reports]
    assert all(r["transcript"] == ran[0]["transcript"] for r in reports)
    infos, _ = _stored(url)
    assert len(branch_runs(infos, source)) == 1 and len({i.run_id for i in infos}) == 2


def test_a_session_deleted_while_live_stops_the_chat_typed(url: str, tmp_path: Path) -> None:
    _leases_or_skip(url)
    owner = spawn(Job(url, "s", str(tmp_path), "owner", ownership=NO_WAIT, hold_at=5))
    wait_for(tmp_path / "owner.reached")
    busy = _run_all(_jobs(url, tmp_path, WORKERS - 1, "j", ownership=NO_WAIT))
    assert [r["outcome"] for r in busy] == ["busy"] * (WORKERS - 1) and all(r["calls"] == 0 for r in busy)
    with provider_from_url(url) as p:
        p.delete_session("s")
    (tmp_path / "owner.go").write_text("go")
    [report] = collect([owner])
    assert report["outcome"] == "deleted" and "'s'" in report["message"], report
    with provider_from_url(url) as p:  # no orphan: nothing was stored after the delete
        assert p.list_checkpoint_ids("s") == [] and "s" not in p.list_sessions()


def test_two_instances_with_a_delete_in_between_never_splice(url: str, tmp_path: Path) -> None:
    _leases_or_skip(url)
    owner = spawn(Job(url, "s", str(tmp_path), "owner", ownership=NO_WAIT, hold_at=5))
    wait_for(tmp_path / "owner.reached")
    busy = _run_all(_jobs(url, tmp_path, WORKERS - 1, "j", ownership=NO_WAIT))
    assert all(r["outcome"] == "busy" and r["calls"] == 0 for r in busy)
    with provider_from_url(url) as other:  # instance B: delete, then three new steps under the same ids
        other.delete_session("s")
        b = make_chain(other, "s", 3)
    (tmp_path / "owner.go").write_text("go")
    [report] = collect([owner])
    assert report["outcome"] == "deleted", report
    with provider_from_url(url) as p:
        latest = p.get_latest_checkpoint("s")
        assert latest is not None and latest.messages == b[-1].messages  # B's conversation, nothing of A's
        assert p.list_checkpoint_ids("s") == [c.checkpoint_id for c in b]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_killed_owner_is_taken_over_by_exactly_one_worker(url: str, tmp_path: Path, reference: list[str],
                                                            is_async: bool) -> None:
    """The owner dies holding its lease; eight workers wait; exactly one takes it over, after it lapsed.
    (The workers run on the owner's machine: ``take_dead_local=False`` makes them wait the expiry out, as
    workers elsewhere must.)"""
    _leases_or_skip(url)
    _killed_run(url, tmp_path, at=6, ownership=NO_WAIT)  # dies holding its lease
    with provider_from_url(url) as p:
        held = p.current_lease("s")  # type: ignore[attr-defined]
    assert held is not None
    reports = _run_all(_jobs(url, tmp_path, WORKERS, "t", ownership={**WAIT, "take_dead_local": False},
                             is_async=is_async))
    winner = _check(reports, reference, others={"returned"})
    assert winner["calls"] == MAX_ROUND - 5
    infos, final = _stored(url)
    assert final == reference and [r for _, r in _ends(infos)] == ["cancelled", "max_rounds"]
    closed = next(i for i in infos if i.kind == "run_end")
    assert closed.created_at.timestamp() >= held.expires_at  # the dead attempt was closed only after expiry


def test_a_dead_owner_of_this_machine_is_taken_over_at_once_by_exactly_one(url: str, tmp_path: Path,
                                                                          reference: list[str]) -> None:
    """The same with the default: the dead holder was a process of this machine, so its 60 s lease is
    released by its token at once, and still exactly one worker takes the run."""
    _leases_or_skip(url)
    _killed_run(url, tmp_path, at=6, ownership={"lease_ttl": 60.0})
    with provider_from_url(url) as p:
        held = p.current_lease("s")  # type: ignore[attr-defined]
    assert held is not None
    winner = _check(_run_all(_jobs(url, tmp_path, WORKERS, "t", ownership=WAIT)), reference, others={"returned"})
    assert winner["calls"] == MAX_ROUND - 5
    infos, final = _stored(url)
    assert final == reference and [r for _, r in _ends(infos)] == ["cancelled", "max_rounds"]
    closed = next(i for i in infos if i.kind == "run_end")
    assert closed.created_at.timestamp() < held.expires_at  # long before the lease would have lapsed
