"""Exactly-once runs on ``memory://``, which lives in one process: workers are threads and asyncio tasks.

The same scenarios as the process tests (tests/test_ownership_workers.py) where a thread or a task can
play them: 8 workers on one session, each with its own provider instance and model-call log. A worker
that "died" is a lease left by an owner that never renews it (a thread cannot be killed). No timing
assertions: an owner is held at a step by a file gate; expiry is the lease's own ``expires_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from persistency import provider_from_url
from persistency.feature._ownership import branch_runs
from tests.ownership_harness import MAX_ROUND, Job, arun_job, calls, record, run_job, wait_for

WORKERS = 8
WAIT = {"lease_ttl": 1.5, "wait": 60.0}
NO_WAIT = {"lease_ttl": 1.5}


@pytest.fixture
def url() -> str:
    return f"memory://own-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with contextlib.redirect_stdout(io.StringIO()):  # once for all threads: the redirect is process-wide
        yield


def _jobs(url: str, tmp_path: Path, prefix: str, n: int = WORKERS, **kw: Any) -> list[Job]:
    start = time.time() + 0.3
    return [Job(url, "s", str(tmp_path), f"{prefix}{i}", start_at=start, quiet=False, **kw) for i in range(n)]


def _threads(jobs: list[Job]) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = [{} for _ in jobs]

    def work(i: int) -> None:
        reports[i] = run_job(jobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    record(reports)
    return reports


def _tasks(jobs: list[Job]) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(arun_job(j) for j in jobs)))

    reports = asyncio.run(main())
    record(reports)
    return reports


def _async_tasks(jobs: list[Job]) -> list[dict[str, Any]]:
    return _tasks([dataclasses.replace(j, is_async=True) for j in jobs])


RUNNERS: dict[str, Callable[[list[Job]], list[dict[str, Any]]]] = {"threads": _threads, "tasks": _async_tasks}


def _one_ran(reports: list[dict[str, Any]], others: set[str]) -> dict[str, Any]:
    ran = [r for r in reports if r.get("outcome") == "ran"]
    assert len(ran) == 1, [(r.get("outcome"), r.get("message", "")[:300]) for r in reports]
    rest = [r for r in reports if r is not ran[0]]
    assert all(r["outcome"] in others and r["calls"] == 0 for r in rest), [(r["outcome"], r["calls"]) for r in rest]
    assert all(r["transcript"] == ran[0]["transcript"] for r in rest if r["outcome"] == "returned")
    return ran[0]


def _ends(url: str) -> list[str]:
    with provider_from_url(url) as p:
        return [str(i.end_reason) for i in p.list_checkpoints("s") if i.kind == "run_end"]


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_eight_workers_on_a_fresh_session_one_runs(url: str, tmp_path: Path, runner: str) -> None:
    reports = RUNNERS[runner](_jobs(url, tmp_path, "w", ownership=WAIT))
    winner = _one_ran(reports, {"returned"})
    assert winner["calls"] == MAX_ROUND - 1 and len(winner["transcript"]) == MAX_ROUND
    assert _ends(url) == ["max_rounds"]


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_run_that_ended_with_an_error_is_continued_once(url: str, tmp_path: Path, runner: str) -> None:
    first = run_job(Job(url, "s", str(tmp_path), "first", ownership=NO_WAIT, fail_at=4, quiet=False))
    assert first["outcome"] == "failed" and first["calls"] == 2
    winner = _one_ran(RUNNERS[runner](_jobs(url, tmp_path, "w", ownership=WAIT)), {"returned"})
    assert winner["calls"] == MAX_ROUND - 3 and len(winner["transcript"]) == MAX_ROUND
    assert _ends(url) == ["error", "max_rounds"]


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_dead_owners_lease_is_taken_over_by_exactly_one(url: str, tmp_path: Path, runner: str) -> None:
    first = run_job(Job(url, "s", str(tmp_path), "first", ownership=NO_WAIT, fail_at=6, quiet=False))
    assert first["outcome"] == "failed"
    with provider_from_url(url) as p:  # a worker on another machine holds it, then vanishes (never renews)
        ghost = p.acquire_lease("s", "elsewhere@1@1@ghost", 1.0)  # type: ignore[attr-defined]
    assert ghost is not None
    winner = _one_ran(RUNNERS[runner](_jobs(url, tmp_path, "t", ownership=WAIT)), {"returned"})
    assert time.time() >= ghost.expires_at  # nobody started before the dead owner's lease lapsed
    assert winner["calls"] == MAX_ROUND - 5 and _ends(url) == ["error", "max_rounds"]


def test_late_joiner_threads_touch_nothing_while_the_owner_runs(url: str, tmp_path: Path) -> None:
    reports: dict[str, dict[str, Any]] = {}

    def work(job: Job) -> None:
        reports[job.tag] = run_job(job)

    owner = threading.Thread(target=work, args=(Job(url, "s", str(tmp_path), "owner", ownership=NO_WAIT, hold_at=5,
                                                    quiet=False),))
    owner.start()
    wait_for(tmp_path / "owner.reached")
    joiners = [threading.Thread(target=work, args=(j,)) for j in _jobs(url, tmp_path, "busy", 4, ownership=NO_WAIT)]
    waiters = [threading.Thread(target=work, args=(j,)) for j in _jobs(url, tmp_path, "wait", 3, ownership=WAIT)]
    for t in joiners + waiters:
        t.start()
    for t in joiners:
        t.join(60)
    assert all(reports[f"busy{i}"]["outcome"] == "busy" and reports[f"busy{i}"]["calls"] == 0 for i in range(4))
    with provider_from_url(url) as p:
        assert len(p.list_checkpoints("s")) == 4 and _ends(url) == []  # nothing written for the live run
    (tmp_path / "owner.go").write_text("go")
    for t in [owner, *waiters]:
        t.join(60)
    assert reports["owner"]["outcome"] == "ran" and len(reports["owner"]["transcript"]) == MAX_ROUND
    assert all(reports[f"wait{i}"]["outcome"] == "returned" and calls(str(tmp_path), f"wait{i}") == 0
               for i in range(3))
    assert _ends(url) == ["max_rounds"]


def test_identical_resume_from_threads_make_one_branch(url: str, tmp_path: Path) -> None:
    assert run_job(Job(url, "s", str(tmp_path), "first", ownership=NO_WAIT, quiet=False))["outcome"] == "ran"
    with provider_from_url(url) as p:
        source = next(i.checkpoint_id for i in p.list_checkpoints("s") if i.step == 5 and i.kind == "step")
    _one_ran(_threads(_jobs(url, tmp_path, "w", ownership=WAIT, policy=source, message="try again")), {"returned"})
    with provider_from_url(url) as p:
        infos = p.list_checkpoints("s")
    assert len(branch_runs(infos, source)) == 1 and len({i.run_id for i in infos}) == 2


def test_a_session_deleted_under_a_live_thread_stops_it_typed(url: str, tmp_path: Path) -> None:
    reports: dict[str, dict[str, Any]] = {}
    job = Job(url, "s", str(tmp_path), "owner", ownership=NO_WAIT, hold_at=5, quiet=False)
    owner = threading.Thread(target=lambda: reports.update(owner=run_job(job)))
    owner.start()
    wait_for(tmp_path / "owner.reached")
    with provider_from_url(url) as p:
        p.delete_session("s")
    (tmp_path / "owner.go").write_text("go")
    owner.join(60)
    assert reports["owner"]["outcome"] == "deleted", reports
    with provider_from_url(url) as p:
        assert p.list_checkpoint_ids("s") == []
