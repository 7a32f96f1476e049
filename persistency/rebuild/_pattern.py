"""Patterns of ``autogen.agentchat.group`` as JSON, and back: `pattern_spec` and `rebuild_pattern`.

A pattern session is orchestrated by code AG2 builds at run time (a transition closure), so the
group chat's speaker selection cannot be stored; the pattern that builds it can, when its handoffs
are data. `pattern_spec` writes the pattern's kind, agents (as checkpoint agent states), initial
and user agent, context variables (redacted), manager arguments, after-work target and every
agent's handoffs: `AgentTarget`, `AgentNameTarget`, `TerminateTarget`, `StayTarget`,
`RevertToUserTarget`, `AskUserTarget`, `RandomAgentTarget`, `GroupManagerTarget` (its selection
message), context conditions (variable names, `ContextExpression` strings), LLM conditions (their
prompts or context-string templates) and availability conditions. What is code (a
`FunctionTarget`'s function, a nested chat, a custom class) is listed by name under ``"code"``;
`rebuild_pattern` takes functions by those names, and refuses (strict) or drops (lenient) the rest.
"""

from __future__ import annotations

from typing import Any

from autogen import ConversableAgent
from autogen.agentchat.group import (
    AgentNameTarget,
    AgentTarget,
    AskUserTarget,
    ContextStrLLMCondition,
    ExpressionAvailableCondition,
    ExpressionContextCondition,
    OnCondition,
    OnContextCondition,
    RevertToUserTarget,
    StayTarget,
    StringAvailableCondition,
    StringContextCondition,
    StringLLMCondition,
    TerminateTarget,
)
from autogen.agentchat.group.patterns import (
    AutoPattern,
    DefaultPattern,
    ManualPattern,
    RandomPattern,
    RoundRobinPattern,
)
from autogen.agentchat.group.patterns.pattern import Pattern
from autogen.agentchat.group.targets.function_target import FunctionTarget
from autogen.agentchat.group.targets.group_manager_target import (
    GroupManagerSelectionMessageContextStr,
    GroupManagerSelectionMessageString,
    GroupManagerTarget,
)
from autogen.agentchat.group.targets.transition_target import RandomAgentTarget

from persistency.redaction import redact, redact_llm_config

__all__ = ["KINDS", "SIMPLE_TARGETS", "pattern_spec"]

KINDS: dict[str, type[Pattern]] = {
    "DefaultPattern": DefaultPattern,
    "AutoPattern": AutoPattern,
    "RoundRobinPattern": RoundRobinPattern,
    "RandomPattern": RandomPattern,
    "ManualPattern": ManualPattern,
}
SIMPLE_TARGETS: dict[str, type[Any]] = {
    "TerminateTarget": TerminateTarget,
    "StayTarget": StayTarget,
    "RevertToUserTarget": RevertToUserTarget,
    "AskUserTarget": AskUserTarget,
}


class _Writer:
    """Turns one pattern's handoffs into JSON, collecting what is code under the path it was found at."""

    def __init__(self) -> None:
        self.code: list[dict[str, str]] = []

    def coded(self, where: str, kind: str, name: str) -> dict[str, Any]:
        self.code.append({"where": where, "kind": kind, "name": name})
        return {"type": kind, "code": name}

    def target(self, t: Any, where: str) -> dict[str, Any]:
        name = type(t).__name__
        if type(t) in (AgentTarget, AgentNameTarget):
            return {"type": name, "agent": t.agent_name}
        if name in SIMPLE_TARGETS and type(t) is SIMPLE_TARGETS[name]:
            return {"type": name}
        if type(t) is RandomAgentTarget:
            return {"type": "RandomAgentTarget", "agents": list(t.agent_names)}
        if type(t) is GroupManagerTarget:
            msg = t.selection_message
            if msg is None:
                return {"type": "GroupManagerTarget"}
            if isinstance(msg, GroupManagerSelectionMessageString):
                return {"type": "GroupManagerTarget", "message": msg.message}
            if isinstance(msg, GroupManagerSelectionMessageContextStr):
                return {"type": "GroupManagerTarget", "context_str": msg.context_str_template}
            return self.coded(where, "GroupManagerSelectionMessage", type(msg).__qualname__)
        if isinstance(t, FunctionTarget):
            return {**self.coded(where, "FunctionTarget", t.fn_name), "extra_args": redact(t.extra_args)}
        return self.coded(where, name, type(t).__qualname__)

    def available(self, a: Any, where: str) -> Any:
        if a is None:
            return None
        if type(a) is StringAvailableCondition:
            return {"type": "variable", "variable": a.context_variable}
        if type(a) is ExpressionAvailableCondition:
            return {"type": "expression", "expression": a.expression.expression}
        return self.coded(where, "AvailableCondition", type(a).__qualname__)

    def context_condition(self, c: OnContextCondition, where: str) -> dict[str, Any]:
        cond: Any = None
        if type(c.condition) is StringContextCondition:
            cond = {"type": "variable", "variable": c.condition.variable_name}
        elif type(c.condition) is ExpressionContextCondition:
            cond = {"type": "expression", "expression": c.condition.expression.expression}
        elif c.condition is not None:
            cond = self.coded(where, "ContextCondition", type(c.condition).__qualname__)
        return {"target": self.target(c.target, where), "condition": cond,
                "available": self.available(c.available, where)}

    def llm_condition(self, c: OnCondition, where: str) -> dict[str, Any]:
        if type(c.condition) is StringLLMCondition:
            cond: Any = {"type": "prompt", "prompt": c.condition.prompt}
        elif type(c.condition) is ContextStrLLMCondition:
            cond = {"type": "context_str", "template": c.condition.context_str.template}
        else:
            cond = self.coded(where, "LLMCondition", type(c.condition).__qualname__)
        return {"target": self.target(c.target, where), "condition": cond,
                "available": self.available(c.available, where), "llm_function_name": c.llm_function_name}


def _agent_state(agent: ConversableAgent) -> dict[str, Any]:
    from persistency._capture import agent_state

    state = agent_state(agent)
    handoff_tools = {c.llm_function_name for c in agent.handoffs.llm_conditions if c.llm_function_name}
    if handoff_tools:  # what prepare_group_chat registered for the handoffs: it registers them again
        state["functions"] = [f for f in state.get("functions", []) if f.get("name") not in handoff_tools]
        llm = state.get("llm_config")
        if isinstance(llm, dict) and isinstance(llm.get("tools"), list):
            llm["tools"] = [t for t in llm["tools"] if (t.get("function") or {}).get("name") not in handoff_tools]
            if not llm["tools"]:
                del llm["tools"]
    return state


def pattern_spec(pattern: Pattern) -> dict[str, Any]:
    """The JSON description of ``pattern`` that `rebuild_pattern` builds an equal pattern from."""
    writer = _Writer()
    # the AG2 kind it is (a subclass names its nearest AG2 base, and the subclass itself is code)
    kind = next((c.__name__ for c in type(pattern).__mro__ if KINDS.get(c.__name__) is c), type(pattern).__name__)
    if KINDS.get(kind) is not type(pattern):
        writer.code.append({"where": "pattern", "kind": "Pattern", "name": type(pattern).__qualname__})
    handoffs = {}
    for agent in pattern.agents:
        h = agent.handoffs
        handoffs[agent.name] = {
            "context_conditions": [writer.context_condition(c, f"{agent.name}.context_conditions[{i}]")
                                   for i, c in enumerate(h.context_conditions)],
            "llm_conditions": [writer.llm_condition(c, f"{agent.name}.llm_conditions[{i}]")
                               for i, c in enumerate(h.llm_conditions)],
            "after_works": [writer.context_condition(c, f"{agent.name}.after_works[{i}]")
                            for i, c in enumerate(h.after_works)],
        }
    manager_args = dict(pattern.group_manager_args)
    if "llm_config" in manager_args:
        manager_args["llm_config"] = redact_llm_config(manager_args["llm_config"])
    summary = pattern.summary_method
    return {
        "kind": kind,
        "class": f"{type(pattern).__module__}.{type(pattern).__qualname__}",
        "initial_agent": pattern.initial_agent.name,
        "agents": [_agent_state(a) for a in pattern.agents],
        "user_agent": None if pattern.user_agent is None else _agent_state(pattern.user_agent),
        "context_variables": redact(pattern.context_variables.to_dict()),
        "group_manager_args": redact(manager_args),
        "group_after_work": writer.target(pattern.group_after_work, "group_after_work"),
        "exclude_transit_message": pattern.exclude_transit_message,
        "summary_method": summary if isinstance(summary, str) or summary is None else writer.coded(
            "summary_method", "summary_method", getattr(summary, "__qualname__", type(summary).__qualname__)
        ),
        "handoffs": handoffs,
        "code": writer.code,
    }
