"""Pattern sessions rebuild: ``pattern_spec`` -> JSON -> ``rebuild_pattern`` on real AG2 group patterns.

The agents are offline (scripted model clients). A rebuilt pattern must describe itself exactly as
the original did, and, run by ``initiate_group_chat``, produce the very transcript the original
produces; what is code (a ``FunctionTarget``) is named and must be passed in."""

from __future__ import annotations

import json
from typing import Any

import pytest
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
    FunctionTarget,
    FunctionTargetResult,
    OnCondition,
    OnContextCondition,
    RevertToUserTarget,
    StayTarget,
    StringAvailableCondition,
    StringContextCondition,
    StringLLMCondition,
    TerminateTarget,
)
from autogen.agentchat.group.multi_agent_chat import initiate_group_chat
from autogen.agentchat.group.patterns import AutoPattern, DefaultPattern, RoundRobinPattern
from autogen.agentchat.group.targets.group_manager_target import GroupManagerSelectionMessageString

from persistency import ResumeError
from persistency.models import Checkpoint
from persistency.rebuild import pattern_spec, rebuild_pattern
from persistency.scripted import ScriptedModelClient, scripted_config


def route(output: str, context_variables: ContextVariables) -> FunctionTargetResult:
    return FunctionTargetResult(target=TerminateTarget())


def agent(name: str) -> ConversableAgent:
    a = ConversableAgent(name, system_message=f"You are {name}.", human_input_mode="NEVER",
                         llm_config=scripted_config([f"{name} says {i}" for i in range(6)]))
    a.register_model_client(ScriptedModelClient)
    return a


def support_desk(*, llm_conditions: bool = True) -> DefaultPattern:
    """Triage -> tech -> billing with every kind of handoff that is data, and one that is code.

    ``llm_conditions``: AG2 registers a transfer tool for each when the chat starts, which rebuilds
    the agent's model client and drops the registered custom (scripted) one, so a chat that runs
    offline leaves them out.
    """
    triage, tech, billing = agent("triage"), agent("tech"), agent("billing")
    triage.handoffs.add_llm_conditions([] if not llm_conditions else [
        OnCondition(target=AgentTarget(tech), condition=StringLLMCondition(prompt="The issue is technical.")),
        OnCondition(target=AgentNameTarget("billing"),
                    condition=ContextStrLLMCondition(context_str=ContextStr(template="Customer {customer} pays")),
                    available=StringAvailableCondition(context_variable="has_invoice")),
    ])
    triage.handoffs.add_context_condition(OnContextCondition(
        target=AgentTarget(billing),
        condition=ExpressionContextCondition(ContextExpression(expression="${is_billing} == True")),
        available=ExpressionAvailableCondition(ContextExpression(expression="not ${closed}")),
    ))
    triage.handoffs.set_after_work(AgentTarget(tech))
    tech.handoffs.add_context_condition(OnContextCondition(target=StayTarget(),
                                                           condition=StringContextCondition(variable_name="stay_with_tech")))
    tech.handoffs.set_after_work(AgentTarget(billing))
    billing.handoffs.add_context_condition(OnContextCondition(target=FunctionTarget(route),
                                                              condition=StringContextCondition(variable_name="never_set")))
    billing.handoffs.add_context_condition(OnContextCondition(target=RevertToUserTarget(),
                                                              condition=StringContextCondition(variable_name="ask_user")))
    billing.handoffs.set_after_work(TerminateTarget())
    return DefaultPattern(
        initial_agent=triage,
        agents=[triage, tech, billing],
        context_variables=ContextVariables(data={"is_billing": False, "closed": False, "customer": "ACME"}),
        group_after_work=TerminateTarget(),
    )


def run(pattern: Any, rounds: int = 8) -> list[tuple[Any, Any]]:
    result, _, _ = initiate_group_chat(pattern=pattern, messages="my printer is on fire", max_rounds=rounds)
    return [(m.get("name"), m.get("content")) for m in result.chat_history]


def round_trip(spec: dict[str, Any], **kwargs: Any) -> Any:
    return rebuild_pattern(json.loads(json.dumps(spec)), **kwargs)


def test_a_default_pattern_round_trips_and_runs_the_same() -> None:
    spec = pattern_spec(support_desk())
    assert spec["kind"] == "DefaultPattern" and spec["initial_agent"] == "triage"
    assert [a["name"] for a in spec["agents"]] == ["triage", "tech", "billing"]
    triage = spec["handoffs"]["triage"]
    assert triage["llm_conditions"][0]["condition"] == {"type": "prompt", "prompt": "The issue is technical."}
    assert triage["llm_conditions"][1]["available"] == {"type": "variable", "variable": "has_invoice"}
    assert triage["context_conditions"][0]["condition"]["expression"] == "${is_billing} == True"
    assert spec["handoffs"]["tech"]["context_conditions"][0]["target"] == {"type": "StayTarget"}
    assert spec["code"] == [{"where": "billing.context_conditions[0]", "kind": "FunctionTarget", "name": "route"}]
    assert spec["context_variables"] == {"is_billing": False, "closed": False, "customer": "ACME"}

    with pytest.raises(ResumeError, match=r"billing.context_conditions\[0\]: FunctionTarget 'route' is code"):
        round_trip(spec)
    lenient = round_trip(spec, strict=False)
    assert any("'route'" in w for w in lenient.warnings)
    assert len(lenient.agents["billing"].handoffs.context_conditions) == 1  # the coded one left out, said so

    rebuilt = round_trip(spec, functions={"route": route})
    assert rebuilt.warnings == [] and pattern_spec(rebuilt.pattern) == spec
    assert rebuilt.pattern.context_variables.to_dict() == spec["context_variables"]
    offline = pattern_spec(support_desk(llm_conditions=False))
    reference = run(support_desk(llm_conditions=False))
    assert [n for n, _ in reference][1:4] == ["triage", "tech", "billing"]
    assert run(round_trip(offline, functions={"route": route}).pattern) == reference


def test_a_round_robin_pattern_round_trips_and_runs_the_same() -> None:
    def build() -> RoundRobinPattern:
        a, b, c = agent("alice"), agent("bob"), agent("carol")
        return RoundRobinPattern(initial_agent=b, agents=[a, b, c], context_variables=ContextVariables(data={"n": 1}))

    spec = pattern_spec(build())
    rebuilt = round_trip(spec)
    assert pattern_spec(rebuilt.pattern) == spec and rebuilt.pattern.initial_agent.name == "bob"
    reference = run(build(), rounds=6)
    assert [n for n, _ in reference][1:4] == ["bob", "alice", "carol"]
    assert run(rebuilt.pattern, rounds=6) == reference


def test_an_auto_pattern_keeps_its_selection_message_and_manager_config() -> None:
    a, b = agent("alice"), agent("bob")
    pattern = AutoPattern(
        initial_agent=a, agents=[a, b], user_agent=ConversableAgent("customer", llm_config=False,
                                                                     human_input_mode="NEVER"),
        group_manager_args={"llm_config": scripted_config(["alice"], api_key="sk-manager-0123456789abc")},
        selection_message=GroupManagerSelectionMessageString(message="Pick the next expert."),
    )
    spec = pattern_spec(pattern)
    assert spec["group_after_work"] == {"type": "GroupManagerTarget", "message": "Pick the next expert."}
    assert "sk-manager-0123456789abc" not in json.dumps(spec) and spec["user_agent"]["name"] == "customer"
    rebuilt = round_trip(spec, secrets={"api_key": "sk-manager-0123456789abc"})
    assert isinstance(rebuilt.pattern, AutoPattern)
    again = pattern_spec(rebuilt.pattern)
    assert again == spec
    cfg = rebuilt.pattern.group_manager_args["llm_config"]
    assert cfg["config_list"][0]["api_key"] == "sk-manager-0123456789abc"


def test_a_pattern_session_rebuilds_from_its_checkpoint() -> None:
    spec = pattern_spec(support_desk())
    messages = [{"role": "user", "name": "_User", "content": "my printer is on fire"}]
    cp = Checkpoint(checkpoint_id="000001-0000001", session_id="s", run_id="run-000001", step=1,
                    messages=messages, manager_state={"pattern": spec})
    rebuilt = rebuild_pattern(cp, functions={"route": route})
    assert rebuilt.messages == messages and pattern_spec(rebuilt.pattern) == spec
    with pytest.raises(ResumeError, match="no pattern"):
        rebuild_pattern(Checkpoint(checkpoint_id="000001-0000001", session_id="s", run_id="run-000001", step=0))
