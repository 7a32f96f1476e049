"""Is a checkpoint's step the end of its run? Decided from what is stored, never from the rebuilt condition alone.

A rebuilt manager may have another termination condition than the live one had (AG2's default in
lenient mode, where the original was custom code), so "would the rebuilt chat stop here" is not
the question. The answer comes, in this order, from: the run_end records of the run at that step;
the per-step flag ``manager_state["termination_held"]`` (written by the feature on every step
checkpoint: whether the live condition held for the step's message); when the flag is absent
(checkpoints written before it existed), the stored condition's spec evaluated on the step's
message, or a condition the rebuilt manager has; and the round budget. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from autogen.code_utils import content_str

from persistency import termination as _term
from persistency.models import COMPLETE_END_REASONS, Checkpoint, CheckpointInfo

__all__ = ["closed_reason", "termination_held"]


def termination_held(cp: Checkpoint) -> bool | None:
    """Whether the live termination condition held for ``cp``'s message, as recorded; None if not recorded."""
    flag = cp.manager_state.get("termination_held")
    return flag if isinstance(flag, bool) else None


def _holds(condition: Callable[..., Any] | None, message: dict[str, Any]) -> bool:
    if condition is None:
        return False
    try:
        return bool(condition(message))
    except Exception:  # the live loop would have failed on this message, not stopped
        return False


def _stored_condition(cp: Checkpoint) -> Callable[..., Any] | None:
    spec = cp.manager_state.get("termination")
    if not isinstance(spec, dict) or not _term.is_restorable(spec):
        return None
    if spec.get("kind") in ("default", "none"):
        return lambda m: content_str(m.get("content")) == "TERMINATE"  # AG2's default, as it reads
    return _term.from_spec(spec)


def closed_reason(
    cp: Checkpoint, run_ends: Iterable[CheckpointInfo] = (), condition: Callable[..., Any] | None = None
) -> str | None:
    """Why ``cp``'s run is finished at ``cp``'s step ("termination_message", "max_rounds", ...), or None.

    ``run_ends``: the run_end records of ``cp``'s run (any order); ``condition``: the rebuilt
    manager's, consulted only when the step's flag was not recorded.
    """
    if cp.kind == "run_end" and cp.end_reason in (*COMPLETE_END_REASONS, "superseded"):
        return str(cp.end_reason)
    for info in run_ends:
        if info.run_id == cp.run_id and info.step == cp.step and info.run_complete:
            return str(info.end_reason)
    if not cp.messages:
        return None
    last = cp.messages[-1]
    held = termination_held(cp)
    if held is None:
        held = _holds(_stored_condition(cp), last) or _holds(condition, last)
    if held:
        return "termination_message"
    used, budget = cp.manager_state.get("rounds_used"), cp.manager_state.get("round_budget")
    if isinstance(used, int) and isinstance(budget, int) and used >= budget:
        return "max_rounds"
    return None
