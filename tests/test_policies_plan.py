"""The policy decision alone (pure, no AG2 run): which run, what history, which budget."""

from __future__ import annotations

from typing import Any

import pytest

from persistency import Checkpoint, ResumeError, ResumePolicy
from persistency.feature._plan import Incoming, needs, plan_run


def cp(
    cid: str,
    step: int,
    *,
    kind: str = "step",
    end_reason: str | None = None,
    base: int = 0,
    budget: int = 9,
    opening: int = 0,
) -> Checkpoint:
    messages = [
        {"content": "hello" if i == opening else f"m{i}", "role": "user", "name": "user" if i == opening else "alice"}
        for i in range(step)
    ]
    return Checkpoint(
        checkpoint_id=cid,
        session_id="s",
        run_id=f"run-{cid[:6]}",
        step=step,
        kind=kind,  # type: ignore[arg-type]
        end_reason=end_reason,
        messages=messages,  # type: ignore[arg-type]
        manager_state={"run_base_step": base, "round_budget": budget, "opening_step": opening},
    )


HELLO = Incoming({"content": "hello", "role": "user", "name": "user"}, "user")
OTHER = Incoming({"content": "other", "role": "user", "name": "user"}, "user")


def plan(
    policy: ResumePolicy, incoming: Incoming = HELLO, latest: Any = None, target: Any = None, max_seq: int = 1
) -> Any:
    return plan_run(policy, incoming=incoming, latest=latest, target=target, max_run_seq=max_seq, fresh_budget=9)


def test_what_each_policy_loads() -> None:
    assert needs(ResumePolicy.resume_latest()) == (True, None)
    assert needs(ResumePolicy.fresh_with_history()) == (True, None)
    assert needs(ResumePolicy.fresh_with_history("000001-0000002")) == (False, "000001-0000002")
    assert needs(ResumePolicy.resume_from("000001-0000002")) == (False, "000001-0000002")
    assert needs(ResumePolicy.fresh()) == (False, None)


def test_dead_run_same_message_continues_with_the_budget_left_and_a_claim() -> None:
    p = plan(ResumePolicy.resume_latest(), latest=cp("000001-0000004", 4))
    assert (p.mode, p.run_seq, len(p.history), p.pending["content"]) == ("continue", 1, 3, "m3")
    assert p.closing is not None and p.closing.checkpoint_id == "000001-0000004-end1"
    assert p.closing.end_reason == "cancelled" and p.parent_id == "000001-0000004-end1"
    assert p.loop_rounds == 9 - 4 + 1  # what is left, plus the re-appended message
    assert p.end_seqs == {4: 1}


def test_failed_run_continues_without_another_end() -> None:
    p = plan(
        ResumePolicy.resume_latest(max_rounds=2),
        latest=cp("000001-0000004-end1", 4, kind="run_end", end_reason="error"),
    )
    assert p.mode == "continue" and p.closing is None and p.parent_id == "000001-0000004-end1"
    assert p.budget == 4 + 2 and p.loop_rounds == 3 and p.end_seqs == {4: 1}


def test_a_different_message_supersedes() -> None:
    p = plan(ResumePolicy.resume_latest(), OTHER, latest=cp("000001-0000004", 4))
    assert p.mode == "new" and p.run_seq == 2 and len(p.history) == 4
    assert p.closing is not None and p.closing.end_reason == "superseded"
    assert p.parent_id == p.closing.checkpoint_id == "000001-0000004-end1"


@pytest.mark.parametrize("reason", ["termination_message", "max_rounds", "superseded"])
def test_a_closed_run_is_never_continued(reason: str) -> None:
    p = plan(ResumePolicy.resume_latest(), latest=cp("000001-0000006-end1", 6, kind="run_end", end_reason=reason))
    assert p.mode == "new" and p.run_seq == 2 and len(p.history) == 6 and p.pending is None and p.closing is None
    assert p.budget == 9 and p.opening_step == 6


def test_resume_from_a_finished_run_with_a_new_message_gets_a_fresh_budget() -> None:
    done = cp("000001-0000009-end1", 9, kind="run_end", end_reason="max_rounds")
    p = plan(ResumePolicy.resume_from(done.checkpoint_id), OTHER, latest=done, target=done)
    assert p.mode == "new" and p.budget == 9 and p.run_seq == 2
    left = plan(ResumePolicy.resume_from("000001-0000003"), OTHER, target=cp("000001-0000003", 3), max_seq=4)
    assert left.budget == 9 - 3 and left.run_seq == 5 and left.parent_id == "000001-0000003"


def test_resume_from_needs_the_checkpoint() -> None:
    with pytest.raises(ResumeError):
        plan(ResumePolicy.resume_from("000001-0000003"), target=None)


def test_fresh_ignores_everything() -> None:
    p = plan(ResumePolicy.fresh(), latest=cp("000003-0000004", 4), max_seq=3)
    assert (p.mode, p.run_seq, p.history, p.parent_id, p.budget) == ("new", 4, [], None, 9)


def test_fresh_with_its_own_budget() -> None:
    assert plan(ResumePolicy.fresh(max_rounds=3)).budget == 3
