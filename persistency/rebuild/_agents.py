"""One agent rebuilt from its stored state: class, settings, termination, code execution, functions.

Agent classes come from a fixed list (never imported by a stored name); termination conditions
from their spec or the caller; code executor objects, ``response_format`` classes and functions
only from the caller. What cannot come back is refused in strict mode and warned about otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autogen import AssistantAgent, ConversableAgent, UserProxyAgent

from persistency import termination as _term
from persistency.errors import ResumeError
from persistency.rebuild._secrets import Problems, client_names, fill_llm_config
from persistency.rebuild._tools import restore_functions

__all__ = ["AgentInputs", "build_agent", "report_missing_functions", "restore_termination"]

_CLASSES: dict[str, type[ConversableAgent]] = {
    "ConversableAgent": ConversableAgent,
    "AssistantAgent": AssistantAgent,
    "UserProxyAgent": UserProxyAgent,
}


@dataclass
class AgentInputs:
    """What the caller passed to `rebuild_chat` that agents are built from."""

    secrets: Mapping[str, str]
    env: Mapping[str, str]
    clients: Mapping[str, type]
    termination: Mapping[str, Callable[..., Any]]
    functions: Mapping[str, Callable[..., Any]]
    code_executors: Mapping[str, Any]
    response_formats: Mapping[str, Any]
    llm_override: Any
    problems: Problems
    missing_functions: dict[str, list[str]]
    """Filled in: agent name -> the functions it lacks."""


def restore_termination(spec: Any, owner: str, inputs: AgentInputs) -> Callable[..., Any] | None:
    """The agent's termination condition: the caller's, the restored spec, or (lenient) AG2's default."""
    if owner in inputs.termination:
        return inputs.termination[owner]
    spec = spec if isinstance(spec, Mapping) else {"kind": "custom", "name": "?"}
    if _term.is_restorable(spec):
        return _term.from_spec(spec)
    inputs.problems.lossy(
        f"{owner}: termination condition {spec.get('name', '?')!r} is custom code; pass "
        f"termination={{{owner!r}: ...}} to restore it",
        "AG2's default used",
    )
    return None


def _code_execution(stored: Any, owner: str, inputs: AgentInputs) -> Any:
    if not isinstance(stored, dict):
        return False if stored in (None, False) else stored
    out = {}
    for k, v in stored.items():
        if isinstance(v, dict) and "__object__" in v:
            if k == "executor" and owner in inputs.code_executors:
                out[k] = inputs.code_executors[owner]
                continue
            inputs.problems.lossy(
                f"{owner}: code_execution_config[{k!r}] was a {v['__object__']}; "
                f"pass code_executors={{{owner!r}: ...}}",
                "code execution turned off",
            )
            return False
        out[k] = v
    return out


def _llm(state: Mapping[str, Any], name: str, inputs: AgentInputs) -> Any:
    llm = state.get("llm_config", False)
    if inputs.llm_override is not None and llm not in (None, False):
        return inputs.llm_override
    objects = {"response_format": inputs.response_formats[name]} if name in inputs.response_formats else {}
    return fill_llm_config(llm, name, inputs.secrets, inputs.env, inputs.problems, objects)


def build_agent(state: Mapping[str, Any], inputs: AgentInputs) -> ConversableAgent:
    """A live agent from its stored state (functions registered; missing ones recorded in ``inputs``)."""
    name = str(state["name"])
    cls = _CLASSES.get(str(state.get("class")))
    if cls is None:
        cls = ConversableAgent
        inputs.problems.warnings.append(f"{name}: class {state.get('class')!r} is rebuilt as a ConversableAgent")
    llm = _llm(state, name, inputs)
    missing = [c for c in client_names(llm) if c not in inputs.clients]
    if missing:
        raise ResumeError(f"{name}: custom model client(s) {', '.join(missing)} needed; pass model_clients=[...]")
    agent = cls(
        name=name,
        system_message=state.get("system_message"),
        description=state.get("description"),
        llm_config=llm,
        human_input_mode=state.get("human_input_mode", "NEVER"),
        is_termination_msg=restore_termination(state.get("termination", {"kind": "default"}), name, inputs),
        code_execution_config=_code_execution(state.get("code_execution_config", False), name, inputs),
        max_consecutive_auto_reply=state.get("max_consecutive_auto_reply"),
        default_auto_reply=state.get("default_auto_reply") or "",
    )
    for client in client_names(llm):  # AG2 activates one config entry per registration
        agent.register_model_client(inputs.clients[client])  # type: ignore[arg-type]
    lacking = restore_functions(agent, state.get("functions"), inputs.functions)
    if lacking:
        inputs.missing_functions[name] = lacking
    return agent


def report_missing_functions(inputs: AgentInputs) -> None:
    """One refusal (strict) or warning naming every function the caller did not pass, and its agents."""
    if not inputs.missing_functions:
        return
    by_name: dict[str, list[str]] = {}
    for agent, names in inputs.missing_functions.items():
        for n in names:
            by_name.setdefault(n, []).append(agent)
    listed = ", ".join(f"{n!r} (of {', '.join(agents)})" for n, agents in sorted(by_name.items()))
    inputs.problems.lossy(
        f"function(s) {listed} are not restored; pass functions={{name: callable}}", "the agents lack them"
    )
