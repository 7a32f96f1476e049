"""`rebuild_pattern`: a live ``autogen.agentchat.group`` pattern from `pattern_spec`'s JSON (or a pattern session).

Agents are rebuilt like a group chat's (`build_agent`: secrets, termination, functions, code
executors, response formats from the caller); handoffs are put back in their stored order with
targets pointing at the rebuilt agents; what the spec lists as code comes from ``functions`` by
name (a `FunctionTarget`'s function, a custom ``summary_method``), and anything else that is code is
refused in strict mode and left out, with a warning, in lenient mode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen import ConversableAgent
from autogen.agentchat.group import (
    AgentNameTarget,
    AgentTarget,
    ContextExpression,
    ContextStr,
    ContextStrLLMCondition,
    ContextVariables,
    ExpressionAvailableCondition,
    ExpressionContextCondition,
    OnCondition,
    OnContextCondition,
    StringAvailableCondition,
    StringContextCondition,
    StringLLMCondition,
    TerminateTarget,
)
from autogen.agentchat.group.patterns import AutoPattern, ManualPattern
from autogen.agentchat.group.patterns.pattern import Pattern
from autogen.agentchat.group.targets.function_target import FunctionTarget
from autogen.agentchat.group.targets.group_manager_target import (
    GroupManagerSelectionMessageContextStr,
    GroupManagerSelectionMessageString,
    GroupManagerTarget,
)
from autogen.agentchat.group.targets.transition_target import RandomAgentTarget

from persistency.errors import ResumeError
from persistency.models import Checkpoint
from persistency.rebuild._agents import AgentInputs, build_agent, report_missing_functions
from persistency.rebuild._pattern import KINDS, SIMPLE_TARGETS
from persistency.rebuild._secrets import Problems, clients, fill_llm_config
from persistency.redaction import REDACTED

__all__ = ["RebuiltPattern", "rebuild_pattern"]


@dataclass
class RebuiltPattern:
    """A live pattern rebuilt from its spec, ready for ``initiate_group_chat(pattern, messages, ...)``."""

    pattern: Pattern
    agents: dict[str, ConversableAgent]
    """Every agent by name, the user agent included."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """A pattern session's transcript (from a checkpoint): pass it as ``messages`` to resume it."""
    warnings: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, agents: Mapping[str, ConversableAgent], functions: Mapping[str, Callable[..., Any]],
                 problems: Problems) -> None:
        self.agents, self.functions, self.problems = agents, functions, problems

    def agent(self, name: Any) -> ConversableAgent:
        if name not in self.agents:
            raise ResumeError(f"the pattern spec names an agent {name!r} it does not describe")
        return self.agents[name]

    def target(self, spec: Mapping[str, Any], where: str) -> Any:
        """The target, or None when it is code the caller did not pass."""
        kind = spec.get("type")
        if kind == "AgentTarget":
            return AgentTarget(self.agent(spec.get("agent")))
        if kind == "AgentNameTarget":
            return AgentNameTarget(str(spec.get("agent")))
        if kind in SIMPLE_TARGETS and "code" not in spec:
            return SIMPLE_TARGETS[str(kind)]()
        if kind == "RandomAgentTarget":
            return RandomAgentTarget([self.agent(n) for n in spec.get("agents", [])])
        if kind == "GroupManagerTarget" and "code" not in spec:
            if "message" in spec:
                return GroupManagerTarget(selection_message=GroupManagerSelectionMessageString(message=spec["message"]))
            if "context_str" in spec:
                msg = GroupManagerSelectionMessageContextStr(context_str_template=spec["context_str"])
                return GroupManagerTarget(selection_message=msg)
            return GroupManagerTarget()
        if kind == "FunctionTarget" and spec.get("code") in self.functions:
            return FunctionTarget(self.functions[spec["code"]], extra_args=dict(spec.get("extra_args") or {}))
        self.code(where, spec)
        return None

    def code(self, where: str, spec: Mapping[str, Any]) -> None:
        name = spec.get("code", spec.get("type"))
        self.problems.lossy(f"{where}: {spec.get('type')} {name!r} is code; pass functions={{{name!r}: ...}}",
                            "handoff left out")

    def available(self, spec: Any, where: str) -> tuple[bool, Any]:
        if spec is None:
            return True, None
        if spec.get("type") == "variable":
            return True, StringAvailableCondition(context_variable=spec["variable"])
        if spec.get("type") == "expression":
            return True, ExpressionAvailableCondition(expression=ContextExpression(spec["expression"]))
        self.code(where, spec)
        return False, None

    def context_condition(self, spec: Mapping[str, Any], where: str) -> OnContextCondition | None:
        target = self.target(spec["target"], where)
        ok, available = self.available(spec.get("available"), where)
        cond: Any = spec.get("condition")
        if cond is not None:
            if cond.get("type") == "variable":
                cond = StringContextCondition(variable_name=cond["variable"])
            elif cond.get("type") == "expression":
                cond = ExpressionContextCondition(expression=ContextExpression(cond["expression"]))
            else:
                self.code(where, cond)
                return None
        if target is None or not ok:
            return None
        return OnContextCondition(target=target, condition=cond, available=available)

    def llm_condition(self, spec: Mapping[str, Any], where: str) -> OnCondition | None:
        target = self.target(spec["target"], where)
        ok, available = self.available(spec.get("available"), where)
        cond: Any = spec.get("condition") or {}
        if cond.get("type") == "prompt":
            cond = StringLLMCondition(prompt=cond["prompt"])
        elif cond.get("type") == "context_str":
            cond = ContextStrLLMCondition(context_str=ContextStr(template=cond["template"]))
        else:
            self.code(where, cond)
            return None
        if target is None or not ok:
            return None
        return OnCondition(target=target, condition=cond, available=available,
                           llm_function_name=spec.get("llm_function_name"))


def _handoffs(reader: _Reader, agent: ConversableAgent, spec: Mapping[str, Any]) -> None:
    h = agent.handoffs
    name = agent.name
    pairs = [("context_conditions", reader.context_condition), ("after_works", reader.context_condition)]
    for key, read in pairs:
        items = [read(c, f"{name}.{key}[{i}]") for i, c in enumerate(spec.get(key) or [])]
        setattr(h, key, [c for c in items if c is not None])
    stored = spec.get("llm_conditions") or []
    llm = [reader.llm_condition(c, f"{name}.llm_conditions[{i}]") for i, c in enumerate(stored)]
    h.llm_conditions = [c for c in llm if c is not None]


def rebuild_pattern(
    spec: Mapping[str, Any] | Checkpoint,
    *,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    model_clients: Mapping[str, type] | Sequence[type] | None = None,
    termination: Mapping[str, Callable[..., Any]] | None = None,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    code_executors: Mapping[str, Any] | None = None,
    response_formats: Mapping[str, Any] | None = None,
    context_variables: Mapping[str, Any] | None = None,
    llm_config: Any = None,
    strict: bool = True,
) -> RebuiltPattern:
    """Rebuild a pattern from `pattern_spec`'s JSON, or a pattern session from its checkpoint.

    A checkpoint's pattern is ``manager_state["pattern"]``; its transcript comes back as
    ``messages``. The arguments are `rebuild_chat`'s; ``functions`` also gives the code the spec
    names (`FunctionTarget` functions, a custom ``summary_method``); ``context_variables``
    replaces stored values (a redacted one must be given).
    """
    messages: list[dict[str, Any]] = []
    if isinstance(spec, Checkpoint):
        messages = list(spec.messages)
        found = spec.manager_state.get("pattern")
        if not isinstance(found, Mapping):
            raise ResumeError(f"checkpoint {spec.checkpoint_id!r} holds no pattern description")
        spec = found
    cls = KINDS.get(str(spec.get("kind")))
    if cls is None or any(c.get("where") == "pattern" for c in spec.get("code") or []):
        raise ResumeError(f"pattern class {spec.get('kind')!r} is not one of AG2's; build it and pass its agents")
    problems = Problems(strict)
    inputs = AgentInputs(secrets or {}, os.environ if env is None else env, clients(model_clients), termination or {},
                         functions or {}, code_executors or {}, response_formats or {}, llm_config, problems, {})
    agents = {str(s["name"]): build_agent(s, inputs) for s in spec.get("agents") or []}
    order = list(agents.values())
    user = None
    if isinstance(spec.get("user_agent"), Mapping):
        user = build_agent(spec["user_agent"], inputs)
        agents.setdefault(user.name, user)
    reader = _Reader(agents, inputs.functions, problems)
    for agent in order:
        _handoffs(reader, agent, (spec.get("handoffs") or {}).get(agent.name) or {})
    after = reader.target(spec.get("group_after_work") or {"type": "TerminateTarget"}, "group_after_work")
    manager_args = dict(spec.get("group_manager_args") or {})
    if "llm_config" in manager_args:
        manager_args["llm_config"] = fill_llm_config(manager_args["llm_config"], "group manager", inputs.secrets,
                                                     inputs.env, problems)
    data = {**dict(spec.get("context_variables") or {}), **dict(context_variables or {})}
    redacted = sorted(k for k, v in data.items() if REDACTED in json.dumps(v, default=str))
    if redacted:
        problems.lossy(f"context variable(s) {', '.join(redacted)} were redacted; pass context_variables=", "kept so")
    summary: Any = spec.get("summary_method", "last_msg")
    if isinstance(summary, Mapping):
        summary = inputs.functions.get(str(summary.get("code")))
        if summary is None:
            reader.code("summary_method", spec["summary_method"])
            summary = "last_msg"
    kwargs: dict[str, Any] = {
        "initial_agent": reader.agent(spec.get("initial_agent")),
        "agents": order,
        "user_agent": user,
        "group_manager_args": manager_args,
        "context_variables": ContextVariables(data=data),
        "exclude_transit_message": bool(spec.get("exclude_transit_message", True)),
        "summary_method": summary,
    }
    if cls is AutoPattern:
        if isinstance(after, GroupManagerTarget) and after.selection_message is not None:
            kwargs["selection_message"] = after.selection_message
    elif cls is not ManualPattern:
        kwargs["group_after_work"] = after if after is not None else TerminateTarget()
    report_missing_functions(inputs)
    problems.check("the pattern")
    return RebuiltPattern(cls(**kwargs), agents, messages, problems.warnings)
