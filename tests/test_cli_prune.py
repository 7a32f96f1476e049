"""``persistency prune``: drops old runs and sessions, keeps every checkpoint a kept one needs, and
finishes a prune that was interrupted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from persistency import provider_from_url
from persistency.cli import _prune
from persistency.cli._copy import copy_checkpoints
from persistency.models import Checkpoint, utcnow
from persistency.provider import PersistencyStorageProvider
from persistency.testing import make_chain, make_checkpoint
from tests.test_cli import populate, run


def _dump(p: PersistencyStorageProvider, sid: str) -> dict[str, dict[str, Any]]:
    return {i.checkpoint_id: p.get_checkpoint(sid, i.checkpoint_id).model_dump(mode="json")
            for i in p.list_checkpoints(sid)}


def _chain_at(p: PersistencyStorageProvider, sid: str, steps: int, run_seq: int, age: timedelta,
              start: Checkpoint | None = None) -> list[Checkpoint]:
    """Like make_chain, but written ``age`` ago (make_chain stamps a fixed date)."""
    out: list[Checkpoint] = []
    parent = start
    for _ in range(steps):
        step = (parent.step if parent else 0) + 1
        msgs = [*(parent.messages if parent else []), {"content": f"m{step}", "role": "user", "name": "alice"}]
        cp = make_checkpoint(sid, step, run_seq=run_seq, parent_id=parent.checkpoint_id if parent else None,
                             messages=msgs).model_copy(update={"created_at": utcnow() - age})
        p.save_checkpoint(cp)
        out.append(cp)
        parent = cp
    return out


NOW, LONG_AGO = timedelta(0), timedelta(days=30)


def test_keep_last_runs_keeps_the_branch_trunk(storage_url: str) -> None:
    with provider_from_url(storage_url) as p:
        made = populate(p)
        before = _dump(p, "conv-1")
        other = _dump(p, "conv-2")
    dry = run("prune", "--keep-last-runs", "1", "--dry-run", "-u", storage_url, "--json")
    assert dry.exit_code == 0, dry.stderr
    plan = {s["session_id"]: s for s in dry.json()["sessions"]}
    assert plan["conv-1"]["action"] == "rewrite" and plan["conv-1"]["dropped_runs"] == ["run-000001"]
    assert plan["conv-1"]["retained_for_lineage"] == [c.checkpoint_id for c in made["run1"][:3]]
    assert plan["conv-1"]["dropped_checkpoints"] == [c.checkpoint_id for c in made["run1"][3:]] + [
        made["end"].checkpoint_id]
    assert plan["conv-2"]["action"] == "keep"
    with provider_from_url(storage_url) as p:
        assert _dump(p, "conv-1") == before  # dry run changed nothing

    r = run("prune", "--yes", "--keep-last-runs", "1", "-u", storage_url)
    assert r.exit_code == 0, r.stderr
    assert "rewrite" in r.stdout
    with provider_from_url(storage_url) as p:
        after = _dump(p, "conv-1")
        kept = [c.checkpoint_id for c in made["run1"][:3] + made["run2"]]
        assert list(after) == kept
        assert after == {cid: before[cid] for cid in kept}  # byte-for-byte the same checkpoints
        assert _dump(p, "conv-2") == other
        assert p.list_sessions() == ["conv-1", "conv-2"]  # no staging session left behind
    assert run("verify", "-u", storage_url).exit_code == 0
    again = run("prune", "--yes", "--keep-last-runs", "1", "-u", storage_url, "--json")
    assert {s["action"] for s in again.json()["sessions"]} == {"keep"}


def test_older_than_deletes_old_sessions_and_old_runs(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    _chain_at(p, "old", 3, 1, LONG_AGO)
    _chain_at(p, "new", 2, 1, NOW)
    _chain_at(p, "mixed", 2, 1, LONG_AGO)  # an old run ...
    _chain_at(p, "mixed", 2, 2, NOW)  # ... and a new, unrelated one
    r = run("prune", "--yes", "--older-than", "7d", "-u", url, "--json")
    assert r.exit_code == 0, r.stderr
    plan = {s["session_id"]: s for s in r.json()["sessions"]}
    assert plan["old"]["action"] == "delete" and plan["new"]["action"] == "keep"
    assert plan["mixed"]["action"] == "rewrite" and plan["mixed"]["dropped_runs"] == ["run-000001"]
    assert p.list_sessions() == ["mixed", "new"]
    assert {i.run_id for i in p.list_checkpoints("mixed")} == {"run-000002"}
    assert run("verify", "-u", url).exit_code == 0


def test_keep_last_runs_protects_recent_history_from_older_than(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    for seq in (1, 2, 3):
        _chain_at(p, "s", 2, seq, LONG_AGO)  # three old, independent runs
    r = run("prune", "--yes", "--older-than", "1h", "--keep-last-runs", "1", "-u", url, "--json")
    assert r.json()["sessions"][0]["dropped_runs"] == ["run-000001", "run-000002"]
    assert {i.run_id for i in p.list_checkpoints("s")} == {"run-000003"}


def test_a_run_that_continues_an_older_one_keeps_it_whole(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    first = make_chain(p, "s", 3)
    make_chain(p, "s", 2, run_seq=2, start=first[-1])
    before = _dump(p, "s")
    r = run("prune", "--yes", "--keep-last-runs", "1", "-u", url, "--json")
    [plan] = r.json()["sessions"]
    assert plan["action"] == "keep" and plan["dropped_checkpoints"] == []
    assert "needed by a kept run" in plan["note"]
    assert _dump(p, "s") == before


def test_an_interrupted_prune_is_finished_by_the_next(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    made = populate(p)
    before = _dump(p, "conv-1")
    kept = made["run1"][:3] + made["run2"]
    # As if prune died after staging the kept checkpoints, deleting conv-1 and restoring two of them.
    copy_checkpoints(p, p, "conv-1", [c.info() for c in kept], dst_session="conv-1.pruning")
    p.delete_session("conv-1")
    for cp in kept[:2]:
        p.save_checkpoint(cp)
    r = run("prune", "--yes", "--keep-last-runs", "1", "-u", url, "--json")
    assert r.exit_code == 0, r.stderr
    assert {s["session_id"]: s["action"] for s in r.json()["sessions"]}["conv-1"] == "recover"
    assert p.list_sessions() == ["conv-1", "conv-2"]
    assert _dump(p, "conv-1") == {c.checkpoint_id: before[c.checkpoint_id] for c in kept}


def test_a_session_deleted_before_its_restore_began_comes_back(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    made = populate(p)
    before = _dump(p, "conv-1")
    kept = made["run1"][:3] + made["run2"]
    copy_checkpoints(p, p, "conv-1", [c.info() for c in kept], dst_session="conv-1.pruning")
    p.delete_session("conv-1")  # died right after the delete: conv-1 is not even listed
    r = run("prune", "--yes", "--keep-last-runs", "1", "-u", url)
    assert r.exit_code == 0, r.stderr
    assert p.list_sessions() == ["conv-1", "conv-2"]
    assert _dump(p, "conv-1") == {c.checkpoint_id: before[c.checkpoint_id] for c in kept}


def test_a_prune_interrupted_while_staging_leaves_the_session_whole(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    made = populate(p)
    before = _dump(p, "conv-1")
    copy_checkpoints(p, p, "conv-1", [c.info() for c in made["run1"][:2]], dst_session="conv-1.pruning")
    assert run("prune", "--yes", "--keep-last-runs", "5", "-u", url).exit_code == 0
    assert p.list_sessions() == ["conv-1", "conv-2"]
    assert _dump(p, "conv-1") == before


def test_a_session_written_to_while_pruning_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    made = populate(p)
    real_check = _prune._check_copy

    def chat_writes_meanwhile(prov: PersistencyStorageProvider, sid: str, staging: str, ids: list[str]) -> None:
        real_check(prov, sid, staging, ids)
        make_chain(prov, sid, 1, run_seq=2, start=made["run2"][-1])

    monkeypatch.setattr(_prune, "_check_copy", chat_writes_meanwhile)
    r = run("prune", "--yes", "--keep-last-runs", "1", "-u", url, "--session", "conv-1")
    assert r.exit_code == 1
    assert "changed while pruning" in r.stderr
    assert len(p.list_checkpoints("conv-1")) == 11  # nothing dropped, the new checkpoint kept
    assert p.list_sessions() == ["conv-1", "conv-2"]


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("1d12h", timedelta(hours=36)),
    ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2)), ("90s", timedelta(seconds=90)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert _prune.parse_duration(text) == expected


def test_unknown_session_and_bad_duration(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    populate(provider_from_url(url))
    r = run("prune", "--keep-last-runs", "1", "-s", "nope", "-u", url)
    assert r.exit_code == 1 and r.stderr.startswith("error: no session 'nope'")
    bad = run("prune", "--older-than", "7 days", "-u", url)
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


def test_a_session_written_to_after_planning_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store")
    p = provider_from_url(url)
    old = _chain_at(p, "s", 2, 1, LONG_AGO)
    real_plan = _prune.plan_session

    def plan_then_chat_writes(*args: Any, **kwargs: Any) -> _prune.PrunePlan:
        plan = real_plan(*args, **kwargs)
        make_chain(p, "s", 1, start=old[-1])
        return plan

    monkeypatch.setattr(_prune, "plan_session", plan_then_chat_writes)
    r = run("prune", "--yes", "--older-than", "1d", "-u", url, "--json")
    assert r.exit_code == 1 and "changed while pruning" in r.stderr
    assert r.json()["sessions"][0]["action"] == "delete"
    assert len(p.list_checkpoints("s")) == 3
