"""Deterministic group-pattern chats (``autogen.agentchat.group``) for the pattern tests, offline.

- `build`: a fresh pattern of a kind ("default": the support desk of the example, with tool
  handoffs, context and LLM conditions; "round_robin"; "auto" with a scripted speaker selector;
  "manual" with scripted human selection), whose every agent reports the step it is about to
  produce to a `Turns` (to raise or SIGKILL there) and whose models log each call to a file;
- `drive`: run it through one of AG2's four entry points and return what must match;
- ``python -m tests.helpers_pattern URL SESSION KIND ENTRY KILL_AT CALL_LOG``: the same in a child
  process that SIGKILLs itself before producing step KILL_AT.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

from autogen import ConversableAgent, GroupChat
from autogen.agentchat.group import ContextVariables
from autogen.agentchat.group.multi_agent_chat import (
    a_initiate_group_chat,
    a_run_group_chat,
    initiate_group_chat,
    run_group_chat,
)
from autogen.agentchat.group.patterns import AutoPattern, ManualPattern, RoundRobinPattern
from autogen.events.agent_events import InputRequestEvent

from persistency.scripted import ScriptedModelClient, scripted_config
from tests.helpers_ag2 import Crash as Crash  # re-exported for the pattern tests
from tests.helpers_ag2 import Faults

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("default", "round_robin", "auto", "manual")
ENTRIES = ("initiate", "a_initiate", "run", "a_run")
QUESTION = "I was charged twice for order 42. Can I get the $30 back?"
MAX_ROUNDS = {"default": 20, "round_robin": 7, "auto": 7, "manual": 7}


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("support_desk_pattern", ROOT / "examples" / "support_desk_pattern.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("support_desk_pattern", module)
    spec.loader.exec_module(module)
    return module


desk = _load_example()


class Turns(Faults):
    """`Faults` called with the step about to be produced (raises `Crash`, or SIGKILLs the process)."""

    def __call__(self, step: int) -> None:
        self.check(step)


class SelectorClient(ScriptedModelClient):
    """A speaker selector for 'auto' selection: names ``agents[len(messages) % n]`` (history only)."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__({**config, "script": []}, **kwargs)
        self.agents = [str(a) for a in config.get("agents") or []]

    def create(self, params: dict[str, Any]) -> Any:
        """The next speaker's name, a function of the conversation's length."""
        messages = params.get("messages") or []
        if self.call_log is not None:
            with open(self.call_log, "a", encoding="utf-8") as fh:
                fh.write(f"selector {len(messages)}\n")
        from persistency.scripted import _Choice, _Message, _Response

        return _Response([_Choice(_Message(self.agents[len(messages) % len(self.agents)]))], self.model)


def _text_agent(name: str, call_log: str, n: int = 8) -> ConversableAgent:
    script: list[str | dict[str, Any]] = [f"{name} says #{i}" for i in range(n)]
    llm = scripted_config(script, model=f"scripted-{name}", speaker=name, digest=True, call_log=call_log)
    return ConversableAgent(name, system_message=f"You are {name}.", llm_config=llm, human_input_mode="NEVER")


class _Reporting:
    """Mixed into a pattern class: after AG2's preparation, report each step and keep clients registered."""

    turns: Turns | None = None
    call_log: str = ""
    kind: str = ""
    groupchat: GroupChat | None = None

    def prepare_group_chat(self, max_rounds: int, messages: Any) -> Any:
        prepared = super().prepare_group_chat(max_rounds=max_rounds, messages=messages)  # type: ignore[misc]
        groupchat, manager = prepared[7], prepared[8]
        self.groupchat = groupchat
        desk.report_steps(self.agents, groupchat, self.turns)  # type: ignore[attr-defined]
        if self.kind == "auto":  # the loop runs on the manager's copy of the group chat: set both
            names = [a.name for a in self.agents]  # type: ignore[attr-defined]
            selector = scripted_config([], model="selector", agents=names, call_log=self.call_log)
            selector["config_list"][0]["model_client_cls"] = "SelectorClient"
            copies = [e["config"] for e in manager._reply_func_list if isinstance(e["config"], GroupChat)]
            for gc in [groupchat, *copies]:
                gc.select_speaker_auto_llm_config = selector
                gc.select_speaker_auto_model_client_cls = SelectorClient
        return prepared


def _cls(base: type, kind: str) -> type:
    return type(f"Reporting{base.__name__}", (_Reporting, base), {"kind": kind})


def build(kind: str, call_log: str, turns: Turns | None = None) -> Any:
    """A fresh pattern of ``kind`` (what each process builds)."""
    if kind == "default":
        pattern, _ = desk.build_desk(call_log, turns)
        pattern.kind, pattern.call_log, pattern.turns = kind, call_log, None  # DeskPattern reports itself
        return pattern
    agents = [_text_agent(n, call_log) for n in ("alice", "bob", "carol")]
    context = ContextVariables(data={"topic": "refunds"})
    if kind == "round_robin":
        pattern = _cls(RoundRobinPattern, kind)(initial_agent=agents[0], agents=agents, context_variables=context)
    elif kind == "auto":
        manager_llm = scripted_config(["unused"], model="manager")
        manager_args = {"llm_config": manager_llm}
        pattern = _cls(AutoPattern, kind)(
            initial_agent=agents[0], agents=agents, context_variables=context, group_manager_args=manager_args
        )
    elif kind == "manual":
        user = ConversableAgent("customer", llm_config=False, human_input_mode="NEVER", default_auto_reply="ok")
        pattern = _cls(ManualPattern, kind)(
            initial_agent=agents[0], agents=agents, user_agent=user, context_variables=context
        )
    else:
        raise ValueError(kind)
    pattern.turns, pattern.call_log = turns, call_log
    return pattern


def _answer(pattern: Any) -> str:
    """The human's choice in manual selection: a function of the transcript's length."""
    gc = pattern.groupchat
    n = len(gc.messages) if gc is not None else 0
    return str(1 + n % 3)


class _ScriptedInput:
    """An IOStream whose ``input`` answers from `_answer` and whose output is dropped."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        with open(self.pattern.call_log, "a", encoding="utf-8") as fh:
            fh.write(f"human {prompt[:10]}\n")
        return _answer(self.pattern)


def drive(pattern: Any, entry: str, question: Any = QUESTION) -> dict[str, Any]:
    """Run ``pattern`` through ``entry`` and return summary, last speaker and context (raises the chat's error)."""
    rounds = MAX_ROUNDS[pattern.kind]
    if entry in ("initiate", "a_initiate"):
        from autogen.io.base import IOStream

        with IOStream.set_default(_ScriptedInput(pattern)):  # type: ignore[arg-type]
            if entry == "initiate":
                result, ctx, last = initiate_group_chat(pattern, messages=question, max_rounds=rounds)
            else:
                result, ctx, last = asyncio.run(a_initiate_group_chat(pattern, messages=question, max_rounds=rounds))
        return {"chat_history": result.chat_history, "summary": result.summary, "last": last.name, "ctx": ctx.to_dict()}
    if entry == "run":
        response = run_group_chat(pattern, messages=question, max_rounds=rounds)
        for event in response.events:
            if isinstance(event, InputRequestEvent):
                event.content.respond(_answer(pattern))  # type: ignore[attr-defined]
        ctx = response.context_variables
        return {"summary": response.summary, "last": response.last_speaker, "ctx": ctx.to_dict() if ctx else None}

    async def go() -> dict[str, Any]:
        response = await a_run_group_chat(pattern, messages=question, max_rounds=rounds)
        async for event in response.events:
            if isinstance(event, InputRequestEvent):
                await event.content.respond(_answer(pattern))  # type: ignore[attr-defined]
        ctx = await response.context_variables
        summary, last = await response.summary, await response.last_speaker
        return {"summary": summary, "last": last, "ctx": ctx.to_dict() if ctx else None}

    return asyncio.run(go())


def state(pattern: Any, manager: Any) -> dict[str, Any]:
    """Transcript, every agent's histories (by peer name) and the pattern's context variables."""
    agents = [*manager.groupchat.agents, manager]
    return {
        "transcript": [dict(m) for m in manager.groupchat.messages],
        "histories": {a.name: {p.name: [dict(m) for m in ms] for p, ms in a.chat_messages.items()} for a in agents},
        "context": pattern.context_variables.to_dict(),
    }


def calls(call_log: str) -> list[str]:
    """The model (and human selection) calls logged, in order."""
    path = Path(call_log)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _child(argv: list[str]) -> int:
    from persistency import Persistency

    url, session, kind, entry, kill_at, call_log = argv
    pattern = build(kind, call_log, Turns(kill_at=int(kill_at)))
    Persistency(url, session).attach(pattern)
    drive(pattern, entry)
    return 3  # not killed: the test fails on this exit code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
