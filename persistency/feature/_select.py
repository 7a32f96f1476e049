"""Speaker selections that cost something (a model call, a human's answer) are stored, never asked twice.

A step checkpoint is stored right after a message is appended, before the next speaker is
selected. Most selections are free to redo (round robin, handoffs, a pattern's transition), but
'auto' selection calls a model and 'manual' selection asks a human. When one of those ran, the
chosen speaker is stored at once in a checkpoint of its own (same transcript, the next step number
of the run, ``manager_state["selected"]``), and a resume from it starts with that speaker instead of
selecting again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autogen import Agent, GroupChat

from persistency import _ag2

if TYPE_CHECKING:
    from persistency.feature._run import Run

__all__ = ["install"]



def _flagging(run: Run, fn: Callable[..., Any]) -> Callable[..., Any]:
    def costly(*args: Any, **kwargs: Any) -> Any:
        run.costly_selection = True
        return fn(*args, **kwargs)

    return costly


def _aflagging(run: Run, fn: Callable[..., Any]) -> Callable[..., Any]:
    async def costly(*args: Any, **kwargs: Any) -> Any:
        run.costly_selection = True
        return await fn(*args, **kwargs)

    return costly


def _forced(run: Run, gc: GroupChat) -> Agent | None:
    name, run.forced_speaker = run.forced_speaker, None
    if name is None:
        return None
    try:
        return gc.agent_by_name(name)
    except Exception:  # AG2 raises when names are ambiguous; select normally then
        return None


def install(gc: GroupChat, run: Run) -> None:
    """Wrap the loop's group chat copy: forced first selection on resume, costly selections stored."""
    for name in _ag2.COSTLY_SELECTORS:
        if hasattr(gc, name):
            setattr(gc, name, _flagging(run, getattr(gc, name)))
    for name in _ag2.COSTLY_ASYNC_SELECTORS:
        if hasattr(gc, name):
            setattr(gc, name, _aflagging(run, getattr(gc, name)))
    select, a_select = gc.select_speaker, gc.a_select_speaker

    def select_speaker(last_speaker: Agent, selector: Any) -> Agent:
        forced = _forced(run, gc)
        if forced is not None:
            return forced
        run.costly_selection = False
        agent = select(last_speaker, selector)
        if run.costly_selection and agent is not None:
            run.on_selected(agent)
        return agent

    async def a_select_speaker(last_speaker: Agent, selector: Any) -> Agent:
        await run.adrain(for_capacity=True)
        forced = _forced(run, gc)
        if forced is not None:
            return forced
        run.costly_selection = False
        agent = await a_select(last_speaker, selector)
        if run.costly_selection and agent is not None:
            run.on_selected(agent)
            await run.adrain(for_capacity=True)
        return agent

    gc.select_speaker = select_speaker  # type: ignore[method-assign]
    gc.a_select_speaker = a_select_speaker  # type: ignore[method-assign]
