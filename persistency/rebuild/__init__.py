"""Rebuild a whole group chat from a checkpoint alone, and continue a session from storage alone.

- `rebuild_chat`: live agents, group chat and manager from one checkpoint (secrets from the caller
  or the environment; functions, custom conditions, executors and response formats from the caller;
  strict mode refuses whatever cannot come back, naming all of it);
- `continue_chat` / `acontinue_chat`: rebuild and run on under a resume policy (what
  ``persistency continue`` runs); a step that ended its run is never continued without a new message;
- `capture_functions`: the functions (tools) of an agent as JSON, stored with each agent's state;
- `termination_held` / `closed_reason`: whether a stored step ended its run.
"""

from __future__ import annotations

from persistency.rebuild._chat import RebuiltChat, rebuild_chat, recreate_agents_from_checkpoint
from persistency.rebuild._closed import closed_reason, termination_held
from persistency.rebuild._continue import RunFinishedError, acontinue_chat, continue_chat
from persistency.rebuild._tools import capture_functions

__all__ = [
    "RebuiltChat",
    "RunFinishedError",
    "acontinue_chat",
    "capture_functions",
    "closed_reason",
    "continue_chat",
    "rebuild_chat",
    "recreate_agents_from_checkpoint",
    "termination_held",
]
