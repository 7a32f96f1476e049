"""Synthetic checkpoints shaped like the feature's, for tests of any provider (no I/O but the saves)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from persistency.ids import checkpoint_id_for, run_id_for
from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider

__all__ = ["HOSTILE_IDS", "make_chain", "make_checkpoint", "message"]

#: Ids every provider must refuse with `InvalidIdentifierError` before touching storage.
HOSTILE_IDS: tuple[str, ...] = (
    "",
    "..",
    "../escape",
    "a/../../b",
    "a/b",
    "/abs",
    "a\\b",
    "nul\x00byte",
    "ctrl\x01char",
    "new\nline",
    "tab\tchar",
    "x" * 129,
    ".hidden",
    "-option",
    "{tag}",
    "space id",
    "a:b",
    "ünïcode",
)

_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def message(i: int, size: int = 40) -> dict[str, Any]:
    """The ``i``-th message of a synthetic chat, about ``size`` characters of content."""
    names = ("alice", "bob", "carol")
    text = f"message {i} " + "x" * max(0, size - 12)
    return {"content": text, "role": "user" if i == 0 else "assistant", "name": names[i % 3]}


def make_checkpoint(
    session_id: str,
    step: int,
    *,
    run_seq: int = 1,
    parent_id: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    kind: str = "step",
    end_reason: str | None = None,
    end_seq: int = 0,
    metadata: dict[str, Any] | None = None,
    manager_state: dict[str, Any] | None = None,
    agent_states: dict[str, dict[str, Any]] | None = None,
) -> Checkpoint:
    """A synthetic checkpoint shaped like the feature's (ids, states and a transcript of ``step``)."""
    msgs = messages if messages is not None else [message(i) for i in range(step)]
    return Checkpoint(
        checkpoint_id=checkpoint_id_for(run_seq, step, end_seq),
        session_id=session_id,
        run_id=run_id_for(run_seq),
        parent_id=parent_id,
        step=step,
        kind=kind,  # type: ignore[arg-type]
        end_reason=end_reason,  # type: ignore[arg-type]
        created_at=_T0 + timedelta(seconds=step),
        messages=msgs,
        agent_states=agent_states
        if agent_states is not None
        else {n: {"name": n, "system_message": f"You are {n}.", "llm_config": False} for n in ("alice", "bob")},
        manager_state=manager_state if manager_state is not None else {"rounds_used": step, "max_round": 50},
        metadata=metadata if metadata is not None else {"problem": "2+2"},
    )


def make_chain(provider: PersistencyStorageProvider, session_id: str, steps: int,
               *, run_seq: int = 1, start: Checkpoint | None = None) -> list[Checkpoint]:
    """Save ``steps`` checkpoints, each a child of the one before; returns them in order."""
    out: list[Checkpoint] = []
    msgs = list(start.messages) if start else []
    parent = start.checkpoint_id if start else None
    first = len(msgs)
    for step in range(first + 1, first + steps + 1):
        msgs.append(message(step - 1))
        cp = make_checkpoint(session_id, step, run_seq=run_seq, parent_id=parent, messages=list(msgs))
        provider.save_checkpoint(cp)
        out.append(cp)
        parent = cp.checkpoint_id
    return out
