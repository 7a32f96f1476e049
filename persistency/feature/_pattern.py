"""Group patterns (`autogen.agentchat.group`): attaching through a pattern, and the state a pattern chat keeps.

A pattern builds a new GroupChat and GroupChatManager for every chat in ``prepare_group_chat``
(AG2's documented extension point). `PatternHook` wraps that method on the pattern instance, so
the manager it builds gets the feature's interceptors before the chat starts.

Besides the transcript, a pattern chat has state AG2 keeps outside it: the `ContextVariables`
the pattern shares with its agents, whether the group transition has made its first selection,
and a handoff the group tool executor holds between a tool call and the next selection. Each
step checkpoint stores them as JSON (`capture`), and a resume puts them back before the loop
runs (`restore`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from persistency import _ag2
from persistency.redaction import redact

__all__ = ["PatternHook", "capture", "is_pattern", "pattern_spec", "restore", "unrestorable_selection"]

log = logging.getLogger("persistency.feature.pattern")

_HOOK_NAME = "persistency_prepare_group_chat"


def is_pattern(obj: object) -> bool:
    """True for an ``autogen.agentchat.group.patterns`` Pattern."""
    try:
        from autogen.agentchat.group.patterns.pattern import Pattern
    except ImportError:  # pragma: no cover - AG2 without group patterns
        return False
    return isinstance(obj, Pattern)


def pattern_spec(pattern: Any) -> dict[str, Any]:
    """A JSON description of a pattern (kind, initial agent, agents, user agent) for rebuilds."""
    user = getattr(pattern, "user_agent", None)
    after = getattr(pattern, "group_after_work", None)
    ag2_kind = next((c.__name__ for c in type(pattern).__mro__ if c.__module__.startswith("autogen.")), None)
    return {
        "kind": ag2_kind,
        "class": f"{type(pattern).__module__}.{type(pattern).__qualname__}",
        "initial_agent": getattr(getattr(pattern, "initial_agent", None), "name", None),
        "agents": [a.name for a in getattr(pattern, "agents", [])],
        "user_agent": None if user is None else user.name,
        "group_after_work": None if after is None else type(after).__name__,
        "summary_method": pattern.summary_method if isinstance(getattr(pattern, "summary_method", None), str) else None,
    }


class PatternHook:
    """Wraps ``pattern.prepare_group_chat`` so that each manager it builds is handed to ``on_manager``."""

    def __init__(self, pattern: Any, on_manager: Callable[[Any], None]) -> None:
        if isinstance(pattern.__dict__.get("prepare_group_chat"), Callable) and (  # type: ignore[arg-type]
            getattr(pattern.__dict__["prepare_group_chat"], "__name__", "") == _HOOK_NAME
        ):
            from persistency.errors import PersistencyError

            raise PersistencyError(f"pattern {type(pattern).__name__} already has a Persistency attached")
        self.pattern = pattern
        original = pattern.prepare_group_chat

        def persistency_prepare_group_chat(*args: Any, **kwargs: Any) -> Any:
            prepared = original(*args, **kwargs)
            on_manager(prepared[8])  # (agents, wrapped, user, context, initial, after_work, executor, gc, manager...)
            return prepared

        self._wrapper = persistency_prepare_group_chat
        pattern.prepare_group_chat = persistency_prepare_group_chat

    def remove(self) -> None:
        """Give the pattern its own ``prepare_group_chat`` back."""
        if self.pattern.__dict__.get("prepare_group_chat") is self._wrapper:
            del self.pattern.__dict__["prepare_group_chat"]


# -- the state of a pattern chat ------------------------------------------------------------------------------
def _target_json(target: Any) -> dict[str, Any] | None:
    if target is None:
        return None
    try:
        data = target.model_dump(mode="json")
        json.dumps(data, allow_nan=False)
    except Exception:  # a target holding objects (a nested chat config) is named, not stored
        return {"class": type(target).__name__, "restorable": False}
    return {"class": type(target).__name__, "data": data}


def _target_classes() -> dict[str, Any]:
    """The handoff target classes a checkpoint may name: an allow-list, never an import by stored name."""
    from autogen.agentchat.group.targets import transition_target as tt
    from autogen.agentchat.group.targets.group_manager_target import GroupManagerTarget

    known = [GroupManagerTarget]
    for name in ("AgentTarget", "AgentNameTarget", "TerminateTarget", "StayTarget", "RevertToUserTarget"):
        known.append(getattr(tt, name))
    for name in ("AskUserTarget", "RandomAgentTarget"):
        if hasattr(tt, name):
            known.append(getattr(tt, name))
    return {cls.__name__: cls for cls in known}


def _target_from_json(data: Any) -> Any | None:
    if not isinstance(data, dict) or "data" not in data:
        if isinstance(data, dict):
            log.warning("a pending %s handoff cannot be restored; the pattern's after-work applies", data.get("class"))
        return None
    cls = _target_classes().get(str(data.get("class")))
    if cls is None:
        log.warning("unknown handoff target class %r in a checkpoint; not restored", data.get("class"))
        return None
    try:
        return cls.model_validate(data["data"])
    except Exception:  # targets whose __init__ takes agents (AgentTarget): fields as stored
        return cls.model_construct(**data["data"])


def _context_json(executor: Any) -> dict[str, Any]:
    ctx = getattr(executor, "context_variables", None)
    data = ctx.to_dict() if ctx is not None else {}
    try:
        json.dumps(data, allow_nan=False)
        return redact(data)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        kept = {}
        for key, value in data.items():
            try:
                json.dumps(value, allow_nan=False)
                kept[key] = value
            except (TypeError, ValueError):
                log.warning("context variable %r is not JSON and is not stored", key)
        return redact(kept)  # type: ignore[no-any-return]


def capture(groupchat: Any, manager: Any) -> dict[str, Any] | None:
    """The pattern state of a group chat built by a pattern, as JSON (None for a plain group chat)."""
    executor = _ag2.group_tool_executor(groupchat.agents)
    started = _ag2.transition_started(groupchat.speaker_selection_method)
    if executor is None and started is None:
        return None
    state: dict[str, Any] = {"transition_started": started}
    if executor is not None:
        state["context_variables"] = _context_json(executor)
        state["next_target"] = _target_json(_ag2.next_target(executor))
        state["tool_call_originator"] = _ag2.tool_call_originator(executor)
    forced = _ag2.manager_forced_target(manager)
    if forced is not None:
        state["forced_target"] = _target_json(forced)
    return state


def restore(groupchat: Any, state: Any, *, whole: bool) -> None:
    """Put a stored pattern state back; ``whole`` False restores the context variables only (a new run)."""
    if not isinstance(state, dict):
        return
    executor = _ag2.group_tool_executor(groupchat.agents)
    ctx = getattr(executor, "context_variables", None) if executor is not None else None
    saved = state.get("context_variables")
    if ctx is not None and isinstance(saved, dict):
        ctx.clear()  # the one object the pattern shares with every agent and the manager: update in place
        ctx.update(saved)
    if not whole:
        return
    if isinstance(state.get("transition_started"), bool):
        _ag2.set_transition_started(groupchat.speaker_selection_method, state["transition_started"])
    if executor is not None:
        _ag2.set_next_target(executor, _target_from_json(state.get("next_target")))
        originator = state.get("tool_call_originator")
        _ag2.set_tool_call_originator(executor, originator if isinstance(originator, str) else None)


def unrestorable_selection(groupchat: Any) -> str | None:
    """Why the next speakers of a resumed chat may differ: random selection, or a custom function's own state."""
    method = groupchat.speaker_selection_method
    if method == "random":
        return "speaker_selection_method='random' (Python's global random state is not stored)"
    if callable(method) and not _ag2.is_group_transition(method):
        name = getattr(method, "__qualname__", None) or type(method).__qualname__
        return f"custom speaker selection function {name!r} (any state it keeps of its own is not stored)"
    return None
