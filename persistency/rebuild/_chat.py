"""`rebuild_chat`: the whole group chat from a checkpoint alone, without the code that created it.

A checkpoint keeps each agent's class, system message, description, ``llm_config`` (secrets
redacted), human input mode, termination condition, code execution settings and functions (name,
description, schema), and the group chat's and manager's settings. `rebuild_chat` makes live AG2
objects from them, taking secrets from the caller or the environment and code (functions, custom
conditions, executors) from the caller. Nothing is imported or executed by a name found in stored
data: agent classes come from a fixed list, custom model clients and callables from the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager
from autogen.agentchat.chat import ChatResult

from persistency._capture import restore_histories
from persistency.errors import ResumeError
from persistency.models import Checkpoint
from persistency.rebuild._agents import AgentInputs, build_agent, report_missing_functions, restore_termination
from persistency.rebuild._secrets import Problems, client_names, clients, fill_llm_config

__all__ = ["RebuiltChat", "rebuild_chat", "recreate_agents_from_checkpoint"]


@dataclass
class RebuiltChat:
    """Live AG2 objects rebuilt from a checkpoint, ready to ``initiate_chat`` again."""

    checkpoint: Checkpoint
    agents: dict[str, ConversableAgent]
    """Every agent by name: the participants and the initiator."""
    groupchat: GroupChat
    manager: GroupChatManager
    initiator: ConversableAgent
    """The agent that opened the checkpoint's run."""
    opening_message: Any
    """The content of the checkpoint run's opening message (pass it again to continue that run)."""
    warnings: list[str] = field(default_factory=list)
    """What could not be restored exactly (dropped secrets without a value, custom code, ...)."""
    result: ChatResult | None = None
    """Set by `continue_chat`: AG2's result of the continued chat."""


def _selection(
    gc_state: Mapping[str, Any], ms: Mapping[str, Any], given: Callable[..., Any] | None, problems: Problems
) -> Any:
    method: Any = gc_state.get("speaker_selection_method", "auto")
    if isinstance(method, str):
        return method
    if given is not None:
        return given
    name = method.get("custom") if isinstance(method, Mapping) else method
    if "pattern" in ms:  # the transition function of an AG2 pattern: rebuild the pattern instead
        problems.lossy(f"this is a pattern session (selection {name!r}); rebuild it with rebuild_pattern(checkpoint)",
                       "'auto' used")
        return "auto"
    problems.lossy(
        f"the group chat used custom speaker selection {name!r}; pass speaker_selection_method=", "'auto' used"
    )
    return "auto"


def _groupchat(
    gc_state: Mapping[str, Any], ms: Mapping[str, Any], agents: Mapping[str, ConversableAgent], method: Any,
    inputs: AgentInputs,
) -> GroupChat:
    participants: list[Agent] = [agents[str(n)] for n in gc_state.get("agents", [])]
    allow_repeat = gc_state.get("allow_repeat_speaker")
    if isinstance(allow_repeat, list):
        allow_repeat = [agents[n] for n in allow_repeat if n in agents]
    transitions = gc_state.get("allowed_or_disallowed_speaker_transitions")
    if isinstance(transitions, dict):
        transitions = {agents[k]: [agents[n] for n in v if n in agents] for k, v in transitions.items() if k in agents}
    selector_llm = fill_llm_config(
        gc_state.get("select_speaker_auto_llm_config"), "speaker selection", inputs.secrets, inputs.env, inputs.problems
    )
    selector_clients = list(dict.fromkeys(client_names(selector_llm)))
    missing = [c for c in selector_clients if c not in inputs.clients]
    if missing:
        raise ResumeError(f"speaker selection: custom model client(s) {', '.join(missing)} needed; pass model_clients")
    return GroupChat(
        agents=participants,
        messages=[],
        max_round=int(gc_state.get("max_round", ms.get("max_round", 10))),
        admin_name=str(gc_state.get("admin_name", "Admin")),
        speaker_selection_method=method,
        allow_repeat_speaker=allow_repeat,
        allowed_or_disallowed_speaker_transitions=transitions or None,
        speaker_transitions_type=gc_state.get("speaker_transitions_type"),
        func_call_filter=bool(gc_state.get("func_call_filter", True)),
        send_introductions=bool(gc_state.get("send_introductions", False)),
        enable_clear_history=bool(gc_state.get("enable_clear_history", False)),
        max_retries_for_selecting_speaker=int(gc_state.get("max_retries_for_selecting_speaker", 2)),
        role_for_select_speaker_messages=gc_state.get("role_for_select_speaker_messages", "system"),
        select_speaker_auto_llm_config=selector_llm,
        select_speaker_auto_model_client_cls=[inputs.clients[c] for c in selector_clients] or None,  # type: ignore[misc]
    )


def rebuild_chat(
    checkpoint: Checkpoint,
    *,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    model_clients: Mapping[str, type] | Sequence[type] | None = None,
    termination: Mapping[str, Callable[..., Any]] | None = None,
    speaker_selection_method: Callable[..., Any] | None = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    code_executors: Mapping[str, Any] | None = None,
    response_formats: Mapping[str, Any] | None = None,
    llm_config: Any = None,
    strict: bool = True,
) -> RebuiltChat:
    """Rebuild agents, group chat and manager from ``checkpoint``, with its transcript and histories.

    Args:
        checkpoint: a checkpoint written by the `Persistency` feature.
        secrets: values for redacted fields, by field (``"api_key"``) or by agent and field
            (``"solver.api_key"``); the agent's own name is the manager's name for the manager.
            A value with a redacted part (a URL) must be given whole.
        env: where to look for secrets not in ``secrets`` (default ``os.environ``:
            ``OPENAI_API_KEY``, ``AWS_ACCESS_KEY_ID``, ...). A secret found nowhere is left out.
        model_clients: custom model client classes the configs name (`ScriptedModelClient` is known).
        termination: termination conditions for agents whose condition was custom code, by name.
        speaker_selection_method: the function, when the group chat used a custom one.
        functions: the callables of the stored functions (tools), by function name; each is
            registered on the agents that had it, in the same roles (llm, execution).
        code_executors: code executor objects, by agent name (stored only by class name).
        response_formats: ``response_format`` values (pydantic classes), by agent name.
        llm_config: replaces every stored non-False ``llm_config`` (e.g. another model).
        strict: raise `ResumeError` naming everything custom that cannot be restored; with False,
            fall back (AG2's default condition, no code execution, ...) and list it in ``warnings``.
    """
    ms = checkpoint.manager_state
    gc_state = ms.get("groupchat")
    if not isinstance(gc_state, dict) or not isinstance(ms.get("initiator"), str):
        raise ResumeError(f"checkpoint {checkpoint.checkpoint_id!r} has no group chat state to rebuild from")
    problems = Problems(strict)
    inputs = AgentInputs(
        secrets=secrets or {},
        env=os.environ if env is None else env,
        clients=clients(model_clients),
        termination=termination or {},
        functions=functions or {},
        code_executors=code_executors or {},
        response_formats=response_formats or {},
        llm_override=llm_config,
        problems=problems,
        missing_functions={},
    )
    agents = {name: build_agent(state, inputs) for name, state in checkpoint.agent_states.items()}
    missing = [str(n) for n in [*gc_state.get("agents", []), ms["initiator"]] if n not in agents]
    if missing:
        raise ResumeError(f"checkpoint {checkpoint.checkpoint_id!r} lacks the state of agent(s) {', '.join(missing)}")
    method = _selection(gc_state, ms, speaker_selection_method, problems)
    groupchat = _groupchat(gc_state, ms, agents, method, inputs)
    mname = str(ms.get("name", "chat_manager"))
    mllm = ms.get("llm_config", False)
    mllm = (
        llm_config
        if llm_config is not None and mllm not in (None, False)
        else fill_llm_config(mllm, mname, inputs.secrets, inputs.env, problems, (
            {"response_format": inputs.response_formats[mname]} if mname in inputs.response_formats else None
        ))
    )
    manager = GroupChatManager(
        groupchat,
        name=mname,
        system_message=ms.get("system_message", "Group chat manager."),
        description=ms.get("description"),
        llm_config=mllm,
        is_termination_msg=restore_termination(ms.get("termination", {"kind": "default"}), mname, inputs),
    )
    report_missing_functions(inputs)
    problems.check(f"checkpoint {checkpoint.checkpoint_id!r}")
    restore_histories(manager, groupchat, agents, checkpoint.messages)
    opening_step = ms.get("opening_step")
    opening = (
        checkpoint.messages[opening_step].get("content")
        if isinstance(opening_step, int) and 0 <= opening_step < len(checkpoint.messages)
        else None
    )
    return RebuiltChat(checkpoint, agents, groupchat, manager, agents[ms["initiator"]], opening, problems.warnings)


recreate_agents_from_checkpoint = rebuild_chat
"""The seed project's name for `rebuild_chat`."""
