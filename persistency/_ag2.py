"""Every touch of AG2 Classic internals the feature makes, in one place, each checked against a version.

AG2 Classic (the ``autogen`` distribution, or ``ag2<1.0``) exposes no per-step hook and no
state API for group chats, so the feature reads and writes a few private attributes. Each one
is wrapped here, with the AG2 version it was read against (0.14.1; the team notes measured 0.10.0
to 0.14.x sharing this code), so a new AG2 release is checked in one module. `require_ag2` refuses
an AG2 outside that range.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from persistency.errors import AG2VersionError

__all__ = [
    "AG2_VERSION",
    "TESTED_RANGE",
    "find_loop",
    "group_tool_executor",
    "next_target",
    "oai_messages",
    "oai_normalizer",
    "reply_funcs",
    "require_ag2",
    "set_next_target",
    "set_transition_started",
    "tool_call_originator",
    "transition_started",
]

TESTED_RANGE = ((0, 10), (0, 15))
"""AG2 Classic versions the feature is tested with: ``>=0.10,<0.15``."""

_EXTRAS = (
    "pip install 'ag2-persistency[autogen]' (AG2 Classic, the 'autogen' distribution) "
    "or 'ag2-persistency[ag2]' (ag2<1.0)"
)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def require_ag2() -> str:
    """The installed AG2 Classic version; `AG2VersionError` if it is missing or outside the tested range."""
    try:
        import autogen
    except ImportError as exc:
        raise AG2VersionError(f"the Persistency feature needs AG2 Classic (module 'autogen'): {_EXTRAS}") from exc
    version = str(getattr(autogen, "__version__", "") or "")
    low, high = TESTED_RANGE
    parsed = _version_tuple(version)
    if not parsed or not (low <= parsed[:2] < high) or not hasattr(autogen, "GroupChat"):
        raise AG2VersionError(
            f"the Persistency feature is tested with AG2 Classic >=0.10,<0.15 and found autogen "
            f"{version or '(no version)'}; ag2 1.x has no GroupChat. {_EXTRAS}"
        )
    return version


AG2_VERSION = require_ag2()
"""The AG2 Classic version in use: importing this module (the feature does) refuses any other."""


# -- GroupChatManager (read in 0.14.1; same code 0.10-0.14 per shared notes) ------------------------------------------
def reply_funcs(agent: Any) -> list[dict[str, Any]]:
    """The agent's reply-function list (``ConversableAgent._reply_func_list``), mutable in place."""
    funcs: list[dict[str, Any]] = agent._reply_func_list
    return funcs


def find_loop(manager: Any, is_async: bool) -> tuple[Callable[..., Any], Any] | None:
    """AG2's own ``run_chat``/``a_run_chat`` reply function of ``manager`` and the GroupChat it was registered with."""
    from autogen import GroupChat

    name = "a_run_chat" if is_async else "run_chat"
    for entry in reply_funcs(manager):
        if isinstance(entry["config"], GroupChat) and getattr(entry["reply_func"], "__name__", "") == name:
            return entry["reply_func"], entry["config"]
    return None


def auto_reply_counts(agent: Any) -> dict[Any, int]:
    """The agent's consecutive auto-reply counters by peer (``_consecutive_auto_reply_counter``)."""
    counts: dict[Any, int] = agent._consecutive_auto_reply_counter
    return counts


def oai_messages(agent: Any) -> dict[Any, list[dict[str, Any]]]:
    """The agent's conversations by peer (``ConversableAgent._oai_messages``; public view ``chat_messages``)."""
    messages: dict[Any, list[dict[str, Any]]] = agent._oai_messages
    return messages


def append_oai_message(agent: Any, message: dict[str, Any] | str, peer: Any, *, role: str, name: str) -> None:
    """Add ``message`` to the agent's conversation with ``peer`` as AG2's ``send``/``receive`` do.

    ``ConversableAgent._append_oai_message(message, conversation_id, role, name)``: the 0.10+
    signature (0.9.x differs, hence the tested range)."""
    agent._append_oai_message(message, peer, role=role, name=name)


def oai_normalizer(agents: Any) -> Callable[[dict[str, Any], str, str], dict[str, Any] | None] | None:
    """AG2's own conversion of a message into the entry ``_append_oai_message`` appends, as a function
    ``(message, role, name) -> entry or None`` (None: AG2 would not append it).

    ``ConversableAgent._append_oai_message`` appends ``normilize_message_to_oai(message, name, role)``
    (read against 0.14.1). None when that function is missing or any of ``agents`` overrides
    ``_append_oai_message``: the caller then appends through each agent, as AG2 does.
    """
    from autogen.agentchat import conversable_agent as ca

    normalize = getattr(ca, "normilize_message_to_oai", None)
    own = getattr(ca.ConversableAgent, "_append_oai_message", None)
    overridden = any(getattr(type(a), "_append_oai_message", None) is not own for a in agents)
    if normalize is None or own is None or overridden:
        return None

    def entry(message: dict[str, Any], role: str, name: str) -> dict[str, Any] | None:
        valid, oai = normalize(message, name=name, role=role)
        return oai if valid else None

    return entry


def termination_check(agent: Any) -> Any:
    """The agent's termination predicate (``_is_termination_msg``), or None."""
    return getattr(agent, "_is_termination_msg", None)


def agent_settings(agent: Any) -> dict[str, Any]:
    """Private settings a checkpoint keeps: code execution config, reply limit, default reply."""
    return {
        "code_execution_config": agent._code_execution_config,
        "max_consecutive_auto_reply": agent._max_consecutive_auto_reply,
        "default_auto_reply": agent._default_auto_reply,
    }


def wrap_clear_agents_history(
    manager: Any, wrapper: Callable[[Callable[..., str]], Callable[..., str]]
) -> Callable[[], None]:
    """Replace the manager's ``clear_agents_history`` (called by the loop as ``self.clear_agents_history``)
    on the instance; returns the undo."""
    replacement = wrapper(manager.clear_agents_history)
    manager.clear_agents_history = replacement

    def undo() -> None:
        if manager.__dict__.get("clear_agents_history") is replacement:
            del manager.__dict__["clear_agents_history"]

    return undo


def clear_agents_history(manager: Any, reply: dict[str, Any], groupchat: Any) -> str:
    """AG2's own "clear history" handling, applied again on resume."""
    from autogen import GroupChatManager

    result: str = GroupChatManager.clear_agents_history(manager, reply, groupchat)
    return result


COSTLY_SELECTORS = ("_auto_select_speaker", "manual_select_speaker")
"""GroupChat methods that call a model or ask a human to select a speaker (sync)."""
COSTLY_ASYNC_SELECTORS = ("a_auto_select_speaker",)
"""The async one (async manual selection goes through the sync ``manual_select_speaker``)."""


# -- group patterns (autogen.agentchat.group; read in 0.14.1) ------------------------------------------------------
_TRANSITION_QUALNAME = "create_group_transition.<locals>.group_transition"


def _transition_cell(method: Any) -> dict[str, Any] | None:
    """The state dict a pattern's transition closure keeps ("use_initial_agent"), if ``method`` is one."""
    if getattr(method, "__qualname__", "") != _TRANSITION_QUALNAME:
        return None
    for cell in getattr(method, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, dict) and "use_initial_agent" in value:
            return value
    return None


def is_group_transition(method: Any) -> bool:
    """True for the speaker selection function a group pattern builds (`create_group_transition`)."""
    return _transition_cell(method) is not None


def transition_started(method: Any) -> bool | None:
    """Whether a pattern's transition has made its first selection (None: not a pattern transition)."""
    cell = _transition_cell(method)
    return None if cell is None else not bool(cell["use_initial_agent"])


def set_transition_started(method: Any, started: bool) -> None:
    """Put a pattern's transition in the state it had: first selection made or not."""
    cell = _transition_cell(method)
    if cell is not None:
        cell["use_initial_agent"] = not started


def group_tool_executor(agents: list[Any]) -> Any | None:
    """The pattern's ``GroupToolExecutor`` among the group chat's agents, if any."""
    for agent in agents:
        if type(agent).__name__ == "GroupToolExecutor":
            return agent
    return None


def next_target(executor: Any) -> Any | None:
    """The handoff the tool executor holds until the next speaker selection (``_group_next_target``)."""
    return getattr(executor, "_group_next_target", None)


def set_next_target(executor: Any, target: Any | None) -> None:
    """Restore the tool executor's pending handoff."""
    executor._group_next_target = target


def tool_call_originator(executor: Any) -> str | None:
    """The agent whose tool call the executor last ran (``_tool_call_originator``)."""
    value = getattr(executor, "_tool_call_originator", None)
    return value if isinstance(value, str) else None


def set_tool_call_originator(executor: Any, name: str | None) -> None:
    """Restore the executor's tool-call originator."""
    executor._tool_call_originator = name


def manager_forced_target(manager: Any) -> Any | None:
    """A handoff forced on the manager (``_next_target_force``, set by AG2's beta agents)."""
    return getattr(manager, "_next_target_force", None)


# -- nested chats (ConversableAgent.register_nested_chats; read in 0.14.1) ---------------------------------------------
_NESTED_NAMES = ("_summary_from_nested_chats", "_a_summary_from_nested_chats")


def nested_chat_queues(agent: Any) -> list[list[dict[str, Any]]]:
    """The chat queues ``agent`` registered with ``register_nested_chats`` (read from the reply closures)."""
    queues: list[list[dict[str, Any]]] = []
    for entry in getattr(agent, "_reply_func_list", None) or []:
        fn = entry.get("reply_func")
        code = getattr(fn, "__code__", None)
        if code is None or "chat_queue" not in code.co_freevars:
            continue
        cell = fn.__closure__[code.co_freevars.index("chat_queue")]  # type: ignore[union-attr]
        try:
            queue = cell.cell_contents
        except ValueError:
            continue
        if isinstance(queue, list):
            queues.append([c for c in queue if isinstance(c, dict)])
    return queues
