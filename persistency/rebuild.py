"""Rebuild a whole group chat from a checkpoint alone, without the code that created it.

A checkpoint keeps each agent's class, system message, description, ``llm_config`` (secrets
redacted), human input mode, termination condition and code execution settings, and the group
chat's and manager's settings. `rebuild_chat` makes live AG2 objects from them, taking secrets
from the caller or the environment; `continue_chat` then resumes the session with them (what
``persistency continue`` runs). Nothing is imported or executed by a name found in stored data:
agent classes come from a fixed list and custom model clients from the caller.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen import Agent, AssistantAgent, ConversableAgent, GroupChat, GroupChatManager, UserProxyAgent
from autogen.agentchat.chat import ChatResult

from persistency import termination as _term
from persistency._capture import restore_histories
from persistency.errors import ResumeError
from persistency.models import Checkpoint
from persistency.policies import ResumePolicy
from persistency.provider import PersistencyStorageProvider
from persistency.redaction import REDACTED
from persistency.scripted import ScriptedModelClient

__all__ = ["RebuiltChat", "acontinue_chat", "continue_chat", "rebuild_chat", "recreate_agents_from_checkpoint"]

_CLASSES: dict[str, type[ConversableAgent]] = {
    "ConversableAgent": ConversableAgent,
    "AssistantAgent": AssistantAgent,
    "UserProxyAgent": UserProxyAgent,
}
_BUILTIN_CLIENTS: dict[str, type] = {"ScriptedModelClient": ScriptedModelClient}
# Where a redacted field is looked up in the environment when the caller gives no value.
_ENV_BY_KEY = {
    "aws_access_key": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "gcp_auth_token": ("GCP_AUTH_TOKEN",),
}
_API_KEY_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "together": ("TOGETHER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
}


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


def _env_names(key: str, api_type: str | None) -> tuple[str, ...]:
    if key == "api_key":
        return _API_KEY_ENV.get((api_type or "openai").lower(), ())
    return _ENV_BY_KEY.get(key, ())


def _fill_secrets(
    value: Any,
    owner: str,
    secrets: Mapping[str, str],
    env: Mapping[str, str],
    warnings: list[str],
    api_type: str | None = None,
    key: str | None = None,
) -> Any:
    """Replace each redacted field with the caller's or the environment's value, or drop it."""
    if isinstance(value, dict):
        if "__object__" in value and len(value) == 1:
            warnings.append(f"{owner}: {key} was a {value['__object__']} object and is not restored")
            return _DROP
        api = value.get("api_type", api_type)
        out = {}
        for k, v in value.items():
            filled = _fill_secrets(v, owner, secrets, env, warnings, api if isinstance(api, str) else None, k)
            if filled is not _DROP:
                out[k] = filled
        return out
    if isinstance(value, list):
        return [
            x for x in (_fill_secrets(v, owner, secrets, env, warnings, api_type, key) for v in value) if x is not _DROP
        ]
    if value == REDACTED and key is not None:
        for name in (f"{owner}.{key}", key):
            if name in secrets:
                return secrets[name]
        for var in _env_names(key, api_type):
            if env.get(var):
                return env[var]
        warnings.append(f"{owner}: no value for the redacted {key!r}; left out")
        return _DROP
    if isinstance(value, str) and REDACTED in value and key is not None:  # e.g. a URL's password
        for name in (f"{owner}.{key}", key):
            if name in secrets:
                return secrets[name]
        warnings.append(f"{owner}: {key!r} has a redacted part; pass the whole value as secrets[{owner + '.' + key!r}]")
    return value


_DROP = object()


def _llm_config(
    stored: Any, owner: str, secrets: Mapping[str, str], env: Mapping[str, str], warnings: list[str]
) -> Any:
    if stored is None or stored is False:
        return stored
    filled = _fill_secrets(copy.deepcopy(stored), owner, secrets, env, warnings)
    return filled if isinstance(filled, dict) else False


def _client_names(llm_config: Any) -> list[str]:
    if not isinstance(llm_config, dict):
        return []
    return [str(e["model_client_cls"]) for e in llm_config.get("config_list", []) if e.get("model_client_cls")]


def _restore_termination(
    spec: Mapping[str, Any], owner: str, overrides: Mapping[str, Callable[..., bool]], strict: bool, warnings: list[str]
) -> Callable[..., bool] | None:
    if owner in overrides:
        return overrides[owner]
    if _term.is_restorable(spec):
        return _term.from_spec(spec)
    message = (
        f"{owner}: termination condition {spec.get('name', '?')!r} is custom code; pass "
        f"termination={{{owner!r}: ...}} to restore it"
    )
    if strict:
        raise ResumeError(message)
    warnings.append(message + " (AG2's default used)")
    return None


def _code_execution(stored: Any, owner: str, warnings: list[str]) -> Any:
    if not isinstance(stored, dict):
        return False if stored in (None, False) else stored
    out = {}
    for k, v in stored.items():
        if isinstance(v, dict) and "__object__" in v:
            warnings.append(f"{owner}: code_execution_config[{k!r}] was a {v['__object__']} and is not restored")
            continue
        out[k] = v
    return out


def _build_agent(
    state: Mapping[str, Any],
    *,
    secrets: Mapping[str, str],
    env: Mapping[str, str],
    clients: Mapping[str, type],
    overrides: Mapping[str, Callable[..., bool]],
    llm_override: Any,
    strict: bool,
    warnings: list[str],
) -> ConversableAgent:
    name = str(state["name"])
    cls = _CLASSES.get(str(state.get("class")))
    if cls is None:
        cls = ConversableAgent
        warnings.append(f"{name}: class {state.get('class')!r} is rebuilt as a ConversableAgent")
    llm = state.get("llm_config", False)
    if llm_override is not None and llm not in (None, False):
        llm = llm_override
    else:
        llm = _llm_config(llm, name, secrets, env, warnings)
    missing = [c for c in _client_names(llm) if c not in clients]
    if missing:
        raise ResumeError(f"{name}: custom model client(s) {', '.join(missing)} needed; pass model_clients=[...]")
    kwargs: dict[str, Any] = {
        "name": name,
        "system_message": state.get("system_message"),
        "description": state.get("description"),
        "llm_config": llm,
        "human_input_mode": state.get("human_input_mode", "NEVER"),
        "is_termination_msg": _restore_termination(
            state.get("termination", {"kind": "default"}), name, overrides, strict, warnings
        ),
        "code_execution_config": _code_execution(state.get("code_execution_config", False), name, warnings),
        "max_consecutive_auto_reply": state.get("max_consecutive_auto_reply"),
        "default_auto_reply": state.get("default_auto_reply") or "",
    }
    agent = cls(**kwargs)
    for client in _client_names(llm):  # AG2 activates one config entry per registration
        agent.register_model_client(clients[client])  # type: ignore[arg-type]
    return agent


def _clients(model_clients: Mapping[str, type] | Sequence[type] | None) -> dict[str, type]:
    out = dict(_BUILTIN_CLIENTS)
    if isinstance(model_clients, Mapping):
        out.update(model_clients)
    elif model_clients:
        out.update({c.__name__: c for c in model_clients})
    return out


def rebuild_chat(
    checkpoint: Checkpoint,
    *,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    model_clients: Mapping[str, type] | Sequence[type] | None = None,
    termination: Mapping[str, Callable[..., bool]] | None = None,
    speaker_selection_method: Callable[..., Any] | None = None,
    llm_config: Any = None,
    strict: bool = True,
) -> RebuiltChat:
    """Rebuild agents, group chat and manager from ``checkpoint``, with its transcript and histories.

    Args:
        checkpoint: a checkpoint written by the `Persistency` feature.
        secrets: values for redacted fields, by field (``"api_key"``) or by agent and field
            (``"solver.api_key"``); the agent's own name is the manager's name for the manager.
        env: where to look for secrets not in ``secrets`` (default ``os.environ``:
            ``OPENAI_API_KEY``, ``AWS_ACCESS_KEY_ID``, ...). A secret found nowhere is left out.
        model_clients: custom model client classes the configs name (`ScriptedModelClient` is known).
        termination: termination conditions for agents whose condition was custom code, by name.
        speaker_selection_method: the function, when the group chat used a custom one.
        llm_config: replaces every stored non-False ``llm_config`` (e.g. another model).
        strict: raise `ResumeError` for anything custom that cannot be restored; with False, fall
            back to AG2's defaults and list what was lost in ``warnings``.
    """
    env = os.environ if env is None else env
    secrets = secrets or {}
    overrides = termination or {}
    clients = _clients(model_clients)
    warnings: list[str] = []
    ms = checkpoint.manager_state
    gc_state = ms.get("groupchat")
    if not isinstance(gc_state, dict) or not isinstance(ms.get("initiator"), str):
        raise ResumeError(f"checkpoint {checkpoint.checkpoint_id!r} has no group chat state to rebuild from")
    kw = {
        "secrets": secrets,
        "env": env,
        "clients": clients,
        "overrides": overrides,
        "llm_override": llm_config,
        "strict": strict,
        "warnings": warnings,
    }
    agents = {name: _build_agent(state, **kw) for name, state in checkpoint.agent_states.items()}
    order = [str(n) for n in gc_state.get("agents", [])]
    missing = [n for n in [*order, ms["initiator"]] if n not in agents]
    if missing:
        raise ResumeError(f"checkpoint {checkpoint.checkpoint_id!r} lacks the state of agent(s) {', '.join(missing)}")
    participants: list[Agent] = [agents[n] for n in order]

    method: Any = gc_state.get("speaker_selection_method", "auto")
    if not isinstance(method, str):
        if speaker_selection_method is None:
            text = (
                f"the group chat used custom speaker selection {method.get('custom')!r}; pass speaker_selection_method="
            )
            if strict:
                raise ResumeError(text)
            warnings.append(text + " ('auto' used)")
            method = "auto"
        else:
            method = speaker_selection_method
    allow_repeat = gc_state.get("allow_repeat_speaker")
    if isinstance(allow_repeat, list):
        allow_repeat = [agents[n] for n in allow_repeat if n in agents]
    transitions = gc_state.get("allowed_or_disallowed_speaker_transitions")
    if isinstance(transitions, dict):
        transitions = {agents[k]: [agents[n] for n in v if n in agents] for k, v in transitions.items() if k in agents}
    selector_llm = _llm_config(
        gc_state.get("select_speaker_auto_llm_config"), "speaker selection", secrets, env, warnings
    )
    selector_clients = list(dict.fromkeys(_client_names(selector_llm)))
    missing = [c for c in selector_clients if c not in clients]
    if missing:
        raise ResumeError(f"speaker selection: custom model client(s) {', '.join(missing)} needed; pass model_clients")
    groupchat = GroupChat(
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
        select_speaker_auto_model_client_cls=[clients[c] for c in selector_clients] or None,  # type: ignore[misc]
    )
    mname = str(ms.get("name", "chat_manager"))
    mllm = ms.get("llm_config", False)
    mllm = (
        llm_config
        if llm_config is not None and mllm not in (None, False)
        else _llm_config(mllm, mname, secrets, env, warnings)
    )
    manager = GroupChatManager(
        groupchat,
        name=mname,
        system_message=ms.get("system_message", "Group chat manager."),
        description=ms.get("description"),
        llm_config=mllm,
        is_termination_msg=_restore_termination(
            ms.get("termination", {"kind": "default"}), mname, overrides, strict, warnings
        ),
    )
    restore_histories(manager, groupchat, agents, checkpoint.messages)
    opening_step = ms.get("opening_step")
    opening = (
        checkpoint.messages[opening_step].get("content")
        if isinstance(opening_step, int) and 0 <= opening_step < len(checkpoint.messages)
        else None
    )
    return RebuiltChat(checkpoint, agents, groupchat, manager, agents[ms["initiator"]], opening, warnings)


recreate_agents_from_checkpoint = rebuild_chat
"""The seed project's name for `rebuild_chat`."""


def _prepare_continue(
    cp: Checkpoint | None,
    session_id: str,
    checkpoint_id: str | None,
    message: Any,
    max_rounds: int | None,
    rebuild_kwargs: dict[str, Any],
) -> tuple[RebuiltChat, Any, ResumePolicy]:
    if cp is None:
        raise ResumeError(f"session {session_id!r} has no checkpoints to continue")
    chat = rebuild_chat(cp, **rebuild_kwargs)
    if message is None:
        if (
            checkpoint_id is None
            and cp.kind == "run_end"
            and cp.end_reason in ("termination_message", "max_rounds", "superseded")
        ):
            raise ResumeError(
                f"the latest run of session {session_id!r} is finished ({cp.end_reason}); give a message to "
                "start the next turn"
            )
        message = chat.opening_message
    policy = (
        ResumePolicy.resume_from(checkpoint_id, max_rounds)
        if checkpoint_id is not None
        else ResumePolicy.resume_latest(max_rounds)
    )
    return chat, message, policy


def continue_chat(
    provider: PersistencyStorageProvider,
    session_id: str,
    *,
    checkpoint_id: str | None = None,
    message: Any = None,
    max_rounds: int | None = None,
    silent: bool = True,
    **rebuild_kwargs: Any,
) -> RebuiltChat:
    """Rebuild the chat of a session from its latest (or the given) checkpoint and run it on.

    Without ``message`` an unfinished run continues (resume_latest), or, with ``checkpoint_id``, a
    branch continues from that checkpoint (resume_from); with ``message`` it is the next turn.
    ``rebuild_kwargs`` go to `rebuild_chat` (``secrets``, ``model_clients``, ...).
    """
    from persistency.feature import Persistency

    cp = (
        provider.get_checkpoint(session_id, checkpoint_id)
        if checkpoint_id is not None
        else provider.get_latest_checkpoint(session_id)
    )
    chat, message, policy = _prepare_continue(cp, session_id, checkpoint_id, message, max_rounds, rebuild_kwargs)
    assert cp is not None
    feature = Persistency(provider, session_id, policy=policy, metadata=cp.metadata).attach(chat.manager)
    try:
        chat.result = chat.initiator.initiate_chat(chat.manager, message=message, silent=silent)
    finally:
        feature.detach()
    return chat


async def acontinue_chat(
    provider: PersistencyStorageProvider,
    session_id: str,
    *,
    checkpoint_id: str | None = None,
    message: Any = None,
    max_rounds: int | None = None,
    silent: bool = True,
    **rebuild_kwargs: Any,
) -> RebuiltChat:
    """Async `continue_chat` (``a_initiate_chat``; storage through the provider's async twins)."""
    from persistency.feature import Persistency

    cp = (
        await provider.aget_checkpoint(session_id, checkpoint_id)
        if checkpoint_id is not None
        else await provider.aget_latest_checkpoint(session_id)
    )
    chat, message, policy = _prepare_continue(cp, session_id, checkpoint_id, message, max_rounds, rebuild_kwargs)
    assert cp is not None
    feature = Persistency(provider, session_id, policy=policy, metadata=cp.metadata).attach(chat.manager)
    try:
        chat.result = await chat.initiator.a_initiate_chat(chat.manager, message=message, silent=silent)
    finally:
        feature.detach()
    return chat
