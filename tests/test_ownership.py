"""The ownership decisions alone (`persistency.feature._ownership`) and in one process on a real SQLite file:
settings, waiting, idempotent starts (opening message, ``request_id``, window), branches, the lease guard."""

from __future__ import annotations

import logging
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from persistency import provider_from_url
from persistency.errors import PersistencyError, ProviderConfigError, SessionBusyError, SessionDeletedError
from persistency.feature._drive import run_sync
from persistency.feature._owner import LIVE
from persistency.feature._ownership import (
    Claim,
    LeaseIO,
    Ownership,
    branch_runs,
    claim_plan,
    dead_here,
    finished_duplicate,
    last_of_run,
    next_wait,
    owner_token,
)
from persistency.feature._plan import Incoming
from persistency.models import utcnow
from persistency.policies import ResumePolicy
from persistency.testing import make_checkpoint
from tests.ownership_harness import MAX_ROUND, Job, run_job

LATEST = ResumePolicy.resume_latest()
HELLO = Incoming({"content": "hello", "role": "user"}, "user")


def _end(*, reason: str = "max_rounds", request_id: str | None = None, age: float = 1.0, run_seq: int = 1) -> Any:
    state = {"opening": {"name": "user", "content": "hello"}, "run_base_step": 0, "round_budget": 9,
             "opening_step": 0}
    if request_id is not None:
        state["request_id"] = request_id
    cp = make_checkpoint("s", 3, run_seq=run_seq, kind="run_end", end_reason=reason, end_seq=1, manager_state=state)
    cp.created_at = utcnow() - timedelta(seconds=age)
    return cp


@pytest.mark.parametrize(("kw", "needle"), [
    ({"lease_ttl": 0}, "lease_ttl"), ({"lease_ttl": True}, "lease_ttl"), ({"poll": -1}, "poll"),
    ({"wait": -1}, "wait"), ({"dedupe_window": "1"}, "dedupe_window"),
])
def test_settings_are_checked(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(PersistencyError, match=needle):
        Ownership(**kw)


def test_a_request_id_is_checked_and_belongs_to_one_run() -> None:
    o = Ownership()
    with pytest.raises(PersistencyError, match="request_id"):
        o.for_request("has space")
    assert o.for_request("order-42").take_request_id() == "order-42" and o.take_request_id() is None
    assert owner_token() != owner_token()


def test_waiting_decisions() -> None:
    assert next_wait(now=10, give_up_at=None, until_free=5, poll=0.2) is None  # no wait asked: busy at once
    assert next_wait(now=10, give_up_at=10, until_free=5, poll=0.2) is None  # no wait left
    assert next_wait(now=10, give_up_at=20, until_free=0.6, poll=0.2) == 0.6  # sleep until it lapses
    assert next_wait(now=10, give_up_at=20, until_free=5, poll=0.2) == 1.0  # looking again each second
    assert next_wait(now=10, give_up_at=10.5, until_free=5, poll=0.2) == 0.5  # but not past the deadline
    assert next_wait(now=10, give_up_at=20, until_free=0.1, poll=0.2) == 0.2  # then poll


def test_what_counts_as_the_same_request() -> None:
    now, kw = utcnow(), {"own_latest": None, "window": 60.0}
    assert finished_duplicate(LATEST, _end(), HELLO, request_id=None, now=now, **kw)
    other = Incoming({"content": "something else", "role": "user"}, "user")
    assert not finished_duplicate(LATEST, _end(), other, request_id=None, now=now, **kw)
    assert not finished_duplicate(LATEST, _end(age=120), HELLO, request_id=None, now=now, **kw)  # too old
    assert not finished_duplicate(LATEST, _end(), HELLO, request_id=None, now=now, own_latest=None, window=0)
    assert not finished_duplicate(LATEST, _end(reason="error"), HELLO, request_id=None, now=now, **kw)
    assert not finished_duplicate(LATEST, _end(reason="cancelled"), HELLO, request_id=None, now=now, **kw)
    mine = _end()
    assert not finished_duplicate(LATEST, mine, HELLO, request_id=None, now=now, own_latest=mine.checkpoint_id,
                                  window=60)  # this feature's own last run: a new turn, as in plain AG2
    assert not finished_duplicate(ResumePolicy.fresh(), _end(), HELLO, request_id=None, now=now, **kw)
    # an explicit request id decides alone: same id (any message, any age) yes; other or none no
    assert finished_duplicate(LATEST, _end(request_id="r1", age=9999), other, request_id="r1", now=now, **kw)
    assert not finished_duplicate(LATEST, _end(request_id="r1"), HELLO, request_id="r2", now=now, **kw)
    assert not finished_duplicate(LATEST, _end(), HELLO, request_id="r1", now=now, **kw)
    assert not finished_duplicate(LATEST, _end(request_id="r1"), HELLO, request_id=None, now=now, **kw)


def test_branches_from_a_checkpoint() -> None:
    a = [make_checkpoint("s", i, run_seq=1, parent_id=None if i == 1 else f"000001-000000{i - 1}") for i in (1, 2, 3)]
    b = [make_checkpoint("s", 3, run_seq=2, parent_id=a[1].checkpoint_id),
         make_checkpoint("s", 4, run_seq=2, parent_id="000002-0000003")]
    c = [make_checkpoint("s", 4, run_seq=3, parent_id=a[2].checkpoint_id)]
    infos: list[Any] = [*a, *b, *c]
    assert branch_runs(infos, a[1].checkpoint_id) == ["run-000002"]
    assert branch_runs(infos, a[2].checkpoint_id) == ["run-000003"]
    assert branch_runs(infos, a[0].checkpoint_id) == []  # run 1 itself goes on from it: not a branch
    assert last_of_run(infos, "run-000002") == "000002-0000004" and last_of_run(infos, "run-000009") is None


# -- with a real SQLite file ----------------------------------------------------------------------------------
def test_a_busy_session_is_refused_naming_when_it_frees(tmp_path: Path) -> None:
    p = provider_from_url(f"sqlite://{tmp_path}/o.db")
    held = p.acquire_lease("s", "someone-else", 30)  # type: ignore[attr-defined]
    with pytest.raises(SessionBusyError) as caught:
        run_sync(claim_plan(p, "s", Ownership()))
    assert caught.value.session_id == "s" and caught.value.expires_at == pytest.approx(held.expires_at)
    assert "'s'" in str(caught.value) and "busy" in str(caught.value)
    with pytest.raises(SessionBusyError):  # a wait that runs out ends the same way
        run_sync(claim_plan(p, "s", Ownership(wait=0.3, poll=0.05)))
    p.release_lease(held)  # type: ignore[attr-defined]
    claim = run_sync(claim_plan(p, "s", Ownership(wait=5)))
    assert isinstance(claim, Claim)
    run_sync(claim.release_plan())
    assert run_sync(claim_plan(p, "s", None)) is None  # ownership off: nothing taken
    p.close()


def test_the_lease_is_renewed_while_the_run_goes_on(tmp_path: Path) -> None:
    p = provider_from_url(f"sqlite://{tmp_path}/r.db")
    claim = run_sync(claim_plan(p, "s", Ownership(lease_ttl=1.5)))
    assert claim is not None
    first = claim.lease.expires_at
    limit = time.monotonic() + 30
    while time.time() <= first + 0.5:  # past the first expiry: only renewals keep it
        assert time.monotonic() < limit
        time.sleep(0.05)
    claim.check()
    assert p.acquire_lease("s", "intruder", 5) is None  # type: ignore[attr-defined]
    held = p.current_lease("s")  # type: ignore[attr-defined]
    assert held is not None and held.token == claim.lease.token and held.expires_at > first
    run_sync(claim.release_plan())
    assert p.acquire_lease("s", "next", 5) is not None  # type: ignore[attr-defined]
    p.close()


def test_a_lost_lease_and_a_new_generation_stop_the_next_save(tmp_path: Path) -> None:
    p = provider_from_url(f"sqlite://{tmp_path}/g.db")
    lease = p.acquire_lease("s", "me", 30)  # type: ignore[attr-defined]
    claim = Claim(LeaseIO(p), lease, Ownership(lease_ttl=30), None)
    claim.check_generation = True  # as on Redis and S3 (SQLite checks inside its write transaction)
    cp = make_checkpoint("s", 1)
    run_sync(claim.before_save_plan(cp))
    p.delete_session("s")
    with pytest.raises(SessionDeletedError, match="deleted while this chat ran"):
        run_sync(claim.before_save_plan(cp))
    claim.lost = "its lease was taken by another worker after it lapsed"
    with pytest.raises(SessionBusyError, match="lost the run"):
        claim.check()
    run_sync(claim.release_plan())  # a lost lease is not released: it is the new holder's
    assert p.acquire_lease("s", "other", 30) is None  # type: ignore[attr-defined]
    p.close()


def test_request_ids_decide_which_start_is_a_retry(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/req.db"
    first = run_job(Job(url, "s", str(tmp_path), "a", ownership={"request_id": "r1"}))
    assert first["outcome"] == "ran" and first["calls"] == MAX_ROUND - 1
    retry = run_job(Job(url, "s", str(tmp_path), "b", message="reworded", ownership={"request_id": "r1"}))
    assert retry["outcome"] == "returned" and retry["calls"] == 0 and retry["transcript"] == first["transcript"]
    new = run_job(Job(url, "s", str(tmp_path), "c", ownership={"request_id": "r2"}))
    assert new["outcome"] == "ran" and new["calls"] > 0  # another request: a new turn, same opening or not
    plain = run_job(Job(url, "s", str(tmp_path), "d", ownership={"dedupe_window": 0}))
    assert plain["outcome"] == "ran"  # no window, no request id: the same message is a new turn


# -- the default, and providers without leases ----------------------------------------------------------------
def test_runs_are_owned_by_default_where_the_provider_has_leases(tmp_path: Path) -> None:
    from persistency import Persistency

    for url in (str(tmp_path / "fs"), f"memory://d-{uuid.uuid4().hex}", f"sqlite://{tmp_path}/d.db"):
        with Persistency(url, "s") as feature:
            assert isinstance(feature.ownership, Ownership) and feature.ownership == Ownership()
        with Persistency(url, "s", ownership=None) as feature:
            assert feature.ownership is None
        tuned = Ownership(lease_ttl=5, wait=1)
        with Persistency(url, "s", ownership=tuned) as feature:
            assert feature.ownership is tuned
    with pytest.raises(TypeError, match="ownership"):
        Persistency(str(tmp_path / "fs"), "s", ownership=30)  # type: ignore[arg-type]


def test_a_provider_without_leases_warns_once_and_runs_as_before(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from persistency import Persistency
    from persistency.feature import _ownership
    from tests.negative_providers import SnapshotProvider

    _ownership._WARNED.discard("SnapshotProvider")
    with caplog.at_level(logging.WARNING, logger="persistency"):
        first = Persistency(SnapshotProvider(str(tmp_path / "a")), "s")
        Persistency(SnapshotProvider(str(tmp_path / "b")), "s")
        Persistency(SnapshotProvider(str(tmp_path / "c")), "s", ownership=None)
    warned = [r for r in caplog.records if "has no session leases" in r.getMessage()]
    assert len(warned) == 1 and "ownership=None" in warned[0].getMessage() and first.ownership is None
    with pytest.raises(ProviderConfigError, match="no session leases"):
        Persistency(SnapshotProvider(str(tmp_path / "d")), "s", ownership=Ownership())


def test_a_lease_left_by_a_dead_process_of_this_machine_is_free_at_once(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits at once: its PID is then free
        os._exit(0)
    os.waitpid(pid, 0)
    mine = owner_token()
    host, ns, _, _ = mine.split("@")
    ghost = f"{host}@{ns}@{pid}@deadbeef0000"
    assert dead_here(ghost) and dead_here(mine)  # gone; this process's token no run of it holds any more
    LIVE.add(mine)
    assert not dead_here(mine)  # a run of this process claims it: alive
    LIVE.discard(mine)
    assert not dead_here(f"otherhost@{ns}@{pid}@x") and not dead_here(f"{host}@1@{pid}@x")  # elsewhere: alive
    assert not dead_here(f"{host}@{ns}@1@x") and not dead_here("someone-else")  # a running PID; a foreign token
    p = provider_from_url(f"sqlite://{tmp_path}/dead.db")
    held = p.acquire_lease("s", ghost, 60)  # type: ignore[attr-defined]
    assert held is not None
    with pytest.raises(SessionBusyError):
        run_sync(claim_plan(p, "s", Ownership(take_dead_local=False)))  # waited out when asked to
    claim = run_sync(claim_plan(p, "s", Ownership()))  # taken over long before its expiry
    assert isinstance(claim, Claim) and time.time() < held.expires_at
    run_sync(claim.release_plan())
    p.close()
