"""Rebuild a whole group chat from a checkpoint alone, and continue a session from storage alone.

- `rebuild_chat`: live agents, group chat and manager from one checkpoint (secrets from the caller
  or the environment; functions, custom conditions, executors and response formats from the caller;
  strict mode refuses whatever cannot come back, naming all of it);
- `continue_chat` / `acontinue_chat`: rebuild and run on under a resume policy (what
  ``persistency continue`` runs); a step that ended its run is never continued without a new message;
- `capture_functions`: the functions (tools) of an agent as JSON, stored with each agent's state;
- `pattern_spec` / `rebuild_pattern`: an ``autogen.agentchat.group`` pattern as JSON and back;
- `termination_held` / `closed_reason`: whether a stored step ended its run.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistency.rebuild._chat import RebuiltChat, rebuild_chat, recreate_agents_from_checkpoint
    from persistency.rebuild._closed import closed_reason, termination_held
    from persistency.rebuild._continue import RunFinishedError, acontinue_chat, continue_chat
    from persistency.rebuild._pattern import pattern_spec
    from persistency.rebuild._pattern_build import RebuiltPattern, rebuild_pattern
    from persistency.rebuild._tools import capture_functions

# Loaded on first use: the checkpoint capture imports `_tools` from here, and `_chat` imports the
# capture module back, so nothing may be imported eagerly by this package.
_LAZY = {
    "RebuiltChat": "_chat",
    "rebuild_chat": "_chat",
    "recreate_agents_from_checkpoint": "_chat",
    "closed_reason": "_closed",
    "termination_held": "_closed",
    "RunFinishedError": "_continue",
    "acontinue_chat": "_continue",
    "continue_chat": "_continue",
    "capture_functions": "_tools",
    "pattern_spec": "_pattern",
    "RebuiltPattern": "_pattern_build",
    "rebuild_pattern": "_pattern_build",
}


def _module(name: str) -> ModuleType:
    """One of this package's own modules, by a name from the fixed table above (never a stored name)."""
    from persistency.rebuild import _chat, _closed, _continue, _pattern, _pattern_build, _tools

    modules = {"_chat": _chat, "_closed": _closed, "_continue": _continue, "_pattern": _pattern,
               "_pattern_build": _pattern_build, "_tools": _tools}
    return modules[name]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(_module(_LAZY[name]), name)
    raise AttributeError(f"module 'persistency.rebuild' has no attribute {name!r}")


__all__ = [
    "RebuiltChat",
    "RebuiltPattern",
    "RunFinishedError",
    "acontinue_chat",
    "capture_functions",
    "closed_reason",
    "continue_chat",
    "pattern_spec",
    "rebuild_chat",
    "rebuild_pattern",
    "recreate_agents_from_checkpoint",
    "termination_held",
]
