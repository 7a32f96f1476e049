"""Applying a resume policy: from the stored checkpoints and the opening message to a run plan.

Pure logic, no I/O: the feature fetches what `needs` asks for (sync or async), and `plan_run`
decides. Keeping the decision apart means sync and async chats share it, and it is tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from autogen.code_utils import content_str

from persistency.errors import ResumeError
from persistency.ids import checkpoint_id_for, parse_checkpoint_id
from persistency.models import Checkpoint, CheckpointInfo, utcnow
from persistency.policies import ResumePolicy

__all__ = ["Incoming", "RunPlan", "closing_end", "needs", "plan_run", "same_opening"]


@dataclass(frozen=True)
class Incoming:
    """The message ``initiate_chat`` was called with, as the manager received it, and its sender."""

    message: dict[str, Any]
    sender: str


@dataclass
class RunPlan:
    """What the next run does: which run it is, what it restores, its round budget."""

    run_seq: int
    mode: Literal["new", "continue"]
    history: list[dict[str, Any]]
    """Messages restored as already broadcast (the transcript before the loop's first message)."""
    pending: dict[str, Any] | None
    """Continue mode: the last saved message; the loop appends it again without a checkpoint."""
    parent_id: str | None
    base_step: int
    """Transcript length the round budget counts from."""
    budget: int
    """Messages the run may append counting from ``base_step`` (AG2's max_round)."""
    opening_step: int
    """Index in the transcript of the run's opening message."""
    source: Checkpoint | None = None
    closing: Checkpoint | None = None
    """A run_end to store before the run starts: it closes the latest run as "superseded", or, when
    a run whose process died is continued, records that attempt as "cancelled". Without a lease
    (``ownership=None``) it is stored first and, being create-only, is this worker's claim: a second
    worker starting the same way at the same time fails with `CheckpointConflictError` before any
    model call. With the lease held it is stored in one batch with the run's first checkpoint."""
    end_seqs: dict[int, int] = field(default_factory=dict)
    """Run-end sequence numbers this run already used, by id step."""
    rounds_used: int = 0
    """Messages the run appended before this attempt (continue mode: the pending one included)."""
    id_step: int = 0
    """The step number in the id of the checkpoint continued from: a run numbers its own steps, so
    ids keep growing when the transcript shrinks ("clear history") or is replaced."""
    live: bool = False
    """The in-memory chat is authoritative (an empty session, or the run this feature just completed
    in this process): nothing is restored, AG2 runs exactly as it would without the feature."""

    @property
    def loop_rounds(self) -> int:
        """The ``max_round`` the AG2 loop gets: what is left, plus one for the re-appended message."""
        if self.mode == "continue":
            return max(self.budget - self.rounds_used, 0) + 1
        return max(self.budget, 1)


def needs(policy: ResumePolicy) -> tuple[bool, str | None]:
    """What to load for ``policy``: (the latest checkpoint in full?, the id of a target checkpoint)."""
    if policy.kind in ("resume_latest",) or (policy.kind == "fresh_with_history" and policy.checkpoint_id is None):
        return True, None
    if policy.kind == "fresh":
        return False, None
    return False, policy.checkpoint_id


def _norm_content(content: Any) -> Any:
    if isinstance(content, list):
        return content
    if not isinstance(content, str):
        content = str(content)
    return content_str(content)


def same_opening(stored: dict[str, Any] | None, incoming: Incoming) -> bool:
    """True when ``incoming`` is the same opening message (content and sender) as ``stored``."""
    if stored is None:
        return False
    return stored.get("name") == incoming.sender and _norm_content(stored.get("content")) == _norm_content(
        incoming.message.get("content")
    )


def _run_seq(cp: CheckpointInfo) -> int:
    parsed = parse_checkpoint_id(cp.checkpoint_id)
    if parsed is None:
        raise ResumeError(f"checkpoint {cp.checkpoint_id!r} was not written by the Persistency feature")
    return parsed[0]


def _end_seq(cp: CheckpointInfo) -> int:
    parsed = parse_checkpoint_id(cp.checkpoint_id)
    return parsed[2] if parsed else 0


def _ms(cp: Checkpoint) -> dict[str, Any]:
    ms = cp.manager_state
    base = ms.get("run_base_step")
    budget = ms.get("round_budget")
    opening = ms.get("opening_step")
    if not all(isinstance(v, int) for v in (base, budget, opening)):
        raise ResumeError(f"checkpoint {cp.checkpoint_id!r} has no run counters; it was not written by the feature")
    return ms


def _opening(cp: Checkpoint) -> dict[str, Any] | None:
    """The run's opening message: stored as such (it survives a cleared transcript), else by index."""
    ms = cp.manager_state
    stored = ms.get("opening")
    if isinstance(stored, dict):
        return stored
    step = ms["opening_step"]
    return cp.messages[step] if 0 <= step < cp.step else None


def _is_closed(cp: CheckpointInfo) -> bool:
    return cp.kind == "run_end" and cp.end_reason in ("termination_message", "max_rounds", "superseded")


def _rounds_used(cp: Checkpoint) -> int:
    ms = cp.manager_state
    used = ms.get("rounds_used")
    return used if type(used) is int else cp.step - int(ms["run_base_step"])


def _continue(cp: Checkpoint, run_seq: int, max_rounds: int | None, *, same_run: bool) -> RunPlan:
    ms = _ms(cp)
    k = cp.step
    base, budget = int(ms["run_base_step"]), int(ms["round_budget"])
    used = _rounds_used(cp)
    if max_rounds is not None:
        budget = used + max_rounds
    parsed = parse_checkpoint_id(cp.checkpoint_id)
    id_step = parsed[1] if parsed else k
    end_seqs = {id_step: _end_seq(cp)} if same_run and cp.kind == "run_end" else {}
    return RunPlan(
        run_seq=run_seq,
        mode="continue",
        history=list(cp.messages[: k - 1]),
        pending=cp.messages[k - 1],
        parent_id=cp.checkpoint_id,
        base_step=base,
        budget=budget,
        opening_step=int(ms["opening_step"]),
        source=cp,
        end_seqs=end_seqs,
        rounds_used=used,
        id_step=id_step,
    )


def _new(
    run_seq: int, history: list[dict[str, Any]], parent: str | None, budget: int, source: Checkpoint | None = None
) -> RunPlan:
    n = len(history)
    return RunPlan(run_seq, "new", history, None, parent, n, budget, n, source)


def closing_end(cp: Checkpoint, reason: Literal["superseded", "cancelled"], detail: str | None = None) -> Checkpoint:
    """A run_end closing ``cp``'s run (or attempt) at its step, right after ``cp``."""
    seq, step, end = parse_checkpoint_id(cp.checkpoint_id) or (0, cp.step, 0)
    state = cp.manager_state if detail is None else {**cp.manager_state, "end_detail": detail}
    return Checkpoint.model_construct(
        schema_version=cp.schema_version,
        checkpoint_id=checkpoint_id_for(seq, step, end + 1),
        session_id=cp.session_id,
        run_id=cp.run_id,
        parent_id=cp.checkpoint_id,
        step=cp.step,
        kind="run_end",
        end_reason=reason,
        error=None,
        created_at=utcnow(),
        metadata=cp.metadata,
        messages=cp.messages,
        agent_states=cp.agent_states,
        manager_state=state,
    )


_DIED = "the process running this run stopped without ending it; recorded when the run was resumed"


def plan_run(
    policy: ResumePolicy,
    *,
    incoming: Incoming,
    latest: CheckpointInfo | None,
    target: Checkpoint | None,
    max_run_seq: int,
    fresh_budget: int,
    live: list[dict[str, Any]] | None = None,
    own_latest: str | None = None,
    nested: bool = False,
) -> RunPlan:
    """Decide the next run. ``latest`` must be the full `Checkpoint` when `needs` asked for it.

    ``live`` is the in-memory transcript and ``own_latest`` the last checkpoint this feature stored
    in this process: under ``resume_latest``, an empty session or a run this process completed
    leaves AG2's own state alone (see `RunPlan.live`), so a chat that never crashes is plain AG2.
    ``nested``: the chat starts inside another recorded chat (a nested chat); the outer chat's
    checkpoints restore its in-memory state, so a completed latest run leaves it alone too.
    """
    next_seq = max_run_seq + 1
    budget = policy.max_rounds or fresh_budget
    if policy.kind == "resume_latest" and live is not None and (
        latest is None or (latest.run_complete and (nested or latest.checkpoint_id == own_latest))
    ):
        plan = _new(next_seq, list(live), None if latest is None else latest.checkpoint_id, budget)
        plan.live = True
        return plan
    if policy.kind == "fresh":
        return _new(next_seq, [], None, budget)

    if policy.kind == "fresh_with_history":
        src = target if policy.checkpoint_id is not None else latest
        if src is None:
            return _new(next_seq, [], None, budget)
        assert isinstance(src, Checkpoint)
        return _new(next_seq, list(src.messages), src.checkpoint_id, budget, src)

    if policy.kind == "resume_from":
        if target is None:
            raise ResumeError(f"checkpoint {policy.checkpoint_id!r} not found")
        ms = _ms(target)
        opening = _opening(target)
        if target.step > 0 and same_opening(opening, incoming):
            return _continue(target, next_seq, policy.max_rounds, same_run=False)
        left = int(ms["round_budget"]) - _rounds_used(target)
        if policy.max_rounds is None and (left < 1 or target.run_complete):
            left = fresh_budget
        return _new(next_seq, list(target.messages), target.checkpoint_id, policy.max_rounds or left, target)

    # resume_latest
    if latest is None:
        return _new(next_seq, [], None, budget)
    assert isinstance(latest, Checkpoint)
    if _is_closed(latest):
        return _new(next_seq, list(latest.messages), latest.checkpoint_id, budget, latest)
    ms = _ms(latest)
    if same_opening(_opening(latest), incoming):
        if latest.kind == "step":  # its process died: close that attempt, which is also our claim
            claim = closing_end(latest, "cancelled", _DIED)
            plan = _continue(claim, _run_seq(latest), policy.max_rounds, same_run=True)
            plan.closing = claim
            return plan
        return _continue(latest, _run_seq(latest), policy.max_rounds, same_run=True)
    end = closing_end(latest, "superseded")
    plan = _new(next_seq, list(latest.messages), end.checkpoint_id, budget, latest)
    plan.closing = end
    return plan
