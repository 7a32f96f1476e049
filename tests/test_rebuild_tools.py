"""Functions (tools) survive a rebuild: stored by name, description and schema, put back from callables.

The caller's model (a scripted client that answers with tool calls) proposes ``add``, ``mul`` and
``sub``; the runner executes them. They reach the agents each way AG2 offers: ``register_function``
(caller + executor), ``functions=`` (llm only), ``register_for_execution`` and ``function_map=``.
A run that crashes between two tool calls is continued from storage alone and must end with the
very transcript of an uninterrupted run."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager, register_function

from persistency import Persistency, ResumeError, continue_chat, provider_from_url, rebuild_chat
from persistency.rebuild import acontinue_chat, capture_functions
from persistency.rebuild._tools import restore_functions
from tests.helpers_ag2 import Crash


def add(a: Annotated[int, "the first number"], b: int) -> int:
    return a + b


def mul(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def sub(a: int, b: int) -> int:
    return a - b


FUNCTIONS = {"add": add, "mul": mul, "sub": sub}


class _Response:
    def __init__(self, choices: list[Any], model: str) -> None:
        self.choices, self.model, self.cost = choices, model, 0.0

    @staticmethod
    def message_retrieval_function(response: _Response) -> list[Any]:
        return list(response.choices)


class ToolCallingClient:
    """A model client whose script entries ``call:NAME:JSON`` answer with one tool call, others with text."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        self.script = list(config["script"])
        self.model = "tool-script"

    def create(self, params: dict[str, Any]) -> Any:
        turn = sum(1 for m in params.get("messages") or [] if m.get("role") == "assistant")
        entry = self.script[turn] if turn < len(self.script) else "nothing more"
        if entry.startswith("call:"):
            _, name, args = entry.split(":", 2)
            reply: Any = {"content": None, "role": "assistant", "tool_calls": [
                {"id": f"call_{turn}", "type": "function", "function": {"name": name, "arguments": args}}
            ]}
        else:
            reply = entry
        return _Response([reply], self.model)

    def message_retrieval(self, response: Any) -> list[Any]:
        return list(response.choices)

    def cost(self, response: Any) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "model": response.model}


SCRIPT = ['call:add:{"a": 2, "b": 3}', 'call:mul:{"a": 4, "b": 5}', 'call:sub:{"a": 9, "b": 1}', "all computed"]


def tool_chat(crash_at: int | None = None) -> tuple[ConversableAgent, GroupChatManager]:
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", default_auto_reply="go on")
    caller = ConversableAgent(
        "caller",
        llm_config={"config_list": [{"model": "tool-script", "model_client_cls": "ToolCallingClient",
                                     "script": SCRIPT}], "cache_seed": None},
        human_input_mode="NEVER",
        functions=[mul],
    )
    runner = ConversableAgent("runner", llm_config=False, human_input_mode="NEVER", default_auto_reply="noted",
                              function_map={"sub": sub})
    register_function(add, caller=caller, executor=runner, description="Add two numbers.")
    caller.register_for_llm(name="sub", description="Subtract b from a.")(sub)
    runner.register_for_execution(name="mul")(mul)
    caller.register_model_client(ToolCallingClient)  # after the tools: registering one rebuilds the client
    if crash_at is not None:
        def crash(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            if len(messages or []) + 1 == crash_at:
                raise Crash("down between two tool calls")
            return False, None

        caller.register_reply([Agent, None], crash, position=0)
    gc = GroupChat([user, caller, runner], messages=[], max_round=11, speaker_selection_method="round_robin")
    return user, GroupChatManager(gc, name="manager", llm_config=False)


def transcript(messages: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(m.get("name"), m.get("content"), json.dumps(m.get("tool_calls"), sort_keys=True)) for m in messages]


@pytest.fixture
def crashed() -> tuple[Any, list[tuple[Any, Any, Any]]]:
    user, manager = tool_chat()
    user.initiate_chat(manager, message="compute", silent=True)
    reference = transcript(manager.groupchat.messages)
    assert [m[1] for m in reference if m[0] == "runner"][:3] == ["5", "20", "8"]  # the tools really ran
    provider = provider_from_url(f"memory://tools-{uuid.uuid4().hex}")
    user, manager = tool_chat(crash_at=5)
    Persistency(provider, "s").attach(manager)
    with pytest.raises(Crash):
        user.initiate_chat(manager, message="compute", silent=True)
    return provider, reference


def test_every_function_is_stored_by_name_description_and_schema(crashed: Any) -> None:
    provider, _ = crashed
    cp = provider.get_latest_checkpoint("s")
    caller = {f["name"]: f for f in cp.agent_states["caller"]["functions"]}
    runner = {f["name"]: f for f in cp.agent_states["runner"]["functions"]}
    assert sorted(caller) == ["add", "mul", "sub"] and all(f["roles"] == ["llm"] for f in caller.values())
    assert caller["add"]["description"] == "Add two numbers."
    live = {t["function"]["name"]: t["function"] for t in tool_chat()[1].groupchat.agents[1].llm_config["tools"]}
    assert all(caller[n]["parameters"] == live[n]["parameters"] for n in live) and "b" in live["add"]["parameters"][
        "properties"
    ]
    assert caller["mul"]["description"] == "Multiply two numbers."  # functions=: the docstring
    assert sorted(runner) == ["add", "mul", "sub"] and all(f["roles"] == ["execution"] for f in runner.values())
    assert runner["sub"]["wrapped"] is False and runner["add"]["wrapped"] is True  # function_map= is not wrapped
    assert cp.agent_states["user"]["functions"] == []
    assert json.loads(json.dumps(capture_functions(tool_chat()[1].groupchat.agents[1]))) == capture_functions(
        tool_chat()[1].groupchat.agents[1]
    )


def test_strict_names_every_missing_function_lenient_warns(crashed: Any) -> None:
    provider, _ = crashed
    cp = provider.get_latest_checkpoint("s")
    with pytest.raises(ResumeError) as info:
        rebuild_chat(cp, model_clients=[ToolCallingClient])
    for name in ("'add' (of caller, runner)", "'mul'", "'sub'"):
        assert name in str(info.value)
    with pytest.raises(ResumeError, match="'sub'"):
        rebuild_chat(cp, model_clients=[ToolCallingClient], functions={"add": add, "mul": mul})
    lenient = rebuild_chat(cp, model_clients=[ToolCallingClient], strict=False, functions={"add": add})
    assert any("'mul'" in w and "'sub'" in w for w in lenient.warnings)
    assert "add" in lenient.agents["runner"].function_map and "mul" not in lenient.agents["runner"].function_map


def test_the_callables_go_back_on_the_same_agents_in_the_same_roles(crashed: Any) -> None:
    provider, _ = crashed
    cp = provider.get_latest_checkpoint("s")
    chat = rebuild_chat(cp, model_clients=[ToolCallingClient], functions=FUNCTIONS)
    caller, runner = chat.agents["caller"], chat.agents["runner"]
    assert sorted(t.name for t in caller.tools) == ["add", "mul", "sub"] and caller.function_map == {}
    assert sorted(runner.function_map) == ["add", "mul", "sub"] and runner.tools == []
    assert capture_functions(caller) == cp.agent_states["caller"]["functions"]
    assert capture_functions(runner) == cp.agent_states["runner"]["functions"]
    assert chat.agents["user"].function_map == {} and chat.warnings == []


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_crashed_tool_chat_continues_to_the_same_transcript(crashed: Any, is_async: bool) -> None:
    provider, reference = crashed
    kwargs: dict[str, Any] = {"functions": FUNCTIONS, "model_clients": [ToolCallingClient]}
    if is_async:
        chat = asyncio.run(acontinue_chat(provider, "s", **kwargs))
    else:
        chat = continue_chat(provider, "s", **kwargs)
    assert transcript(chat.groupchat.messages) == reference
    end = provider.get_latest_checkpoint("s")
    assert end is not None and end.end_reason == "max_rounds" and transcript(end.messages) == reference


def test_a_schema_written_into_llm_config_needs_no_callable() -> None:
    schema = {"type": "function", "function": {"name": "lookup", "description": "Look up.", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    config = {"config_list": [{"model": "tool-script", "model_client_cls": "ToolCallingClient", "script": ["x"]}],
              "tools": [schema]}
    agent = ConversableAgent("caller", llm_config=config, human_input_mode="NEVER")
    assert capture_functions(agent) == [{"name": "lookup", "description": "Look up.", "parameters": schema["function"][
        "parameters"], "roles": ["llm"], "api_style": "tool", "registered": False}]
    again = ConversableAgent("caller", llm_config=config, human_input_mode="NEVER")
    assert restore_functions(again, capture_functions(agent), {}) == []  # nothing missing, nothing to register
    assert again.tools == [] and again.function_map == {}
