"""Deterministic scripted AG2 group chats for tests and benchmarks (no model, no network).

Each scripted agent replies with a line that names the step it is producing and a digest of its own
conversation history, so two runs give equal transcripts only if every agent saw exactly the same
history. `Faults` stops a run at a chosen step: by an exception, or by SIGKILL of the process.

- `build_chat`: ``user`` + ``alice`` + ``bob`` in round robin (any selection method, intros, ...);
- `build_tool_chat`: a round robin whose turns are tool calls and tool results;
- `histories`: every agent's conversations by name, to compare two runs;
- `on_run_end`: make a provider raise or die instead of storing a run end;
- ``python -m tests.helpers_ag2 URL SESSION KILL_AT [--async]``: a chat in its own process that
  SIGKILLs itself before producing step KILL_AT (above 10,000: while storing its run end).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

__all__ = [
    "Chat",
    "Crash",
    "Faults",
    "build_chat",
    "build_tool_chat",
    "digest",
    "histories",
    "on_run_end",
    "scripted_reply",
]


class Crash(RuntimeError):
    """The exception `Faults` raises to stop a run (stands for any failure in an agent)."""


@dataclass
class Faults:
    """Where a scripted chat stops: ``raise_at``/``kill_at`` is the step about to be produced."""

    raise_at: int | None = None
    kill_at: int | None = None
    exc: Callable[[str], BaseException] = Crash
    calls: list[int] = field(default_factory=list)

    def check(self, step: int) -> None:
        """Called by every scripted reply before it answers."""
        self.calls.append(step)
        if self.kill_at == step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.raise_at == step:
            self.raise_at = None
            raise self.exc(f"injected failure before step {step}")


def digest(messages: list[dict[str, Any]]) -> str:
    """A short hash of a history: role, name and content of each message, in order."""
    data = json.dumps([(m.get("role"), m.get("name"), m.get("content")) for m in messages], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:10]


def scripted_reply(terminate_at: int | None, faults: Faults | None) -> Callable[..., tuple[bool, Any]]:
    """A reply function: ``"<name> step <n> saw <digest>"``; exactly "TERMINATE" at ``terminate_at``."""

    def reply(
        recipient: ConversableAgent,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: Any = None,
    ) -> tuple[bool, Any]:
        history = messages or []
        step = len(history) + 1
        if faults is not None:
            faults.check(step)
        if terminate_at is not None and step >= terminate_at:
            return True, "TERMINATE"
        return True, f"{recipient.name} step {step} saw {digest(history)}"

    return reply


@dataclass
class Chat:
    """A scripted group chat: the initiating user, the participants, the group chat and its manager."""

    user: ConversableAgent
    agents: list[ConversableAgent]
    groupchat: GroupChat
    manager: GroupChatManager

    def transcript(self) -> list[dict[str, Any]]:
        """The group chat transcript (a copy)."""
        return [dict(m) for m in self.groupchat.messages]


def build_chat(
    *,
    max_round: int = 9,
    names: tuple[str, ...] = ("alice", "bob"),
    terminate_at: int | None = None,
    faults: Faults | None = None,
    speaker_selection_method: Any = "round_robin",
    user_in_group: bool = True,
    llm_config: Any = False,
    manager_llm_config: Any = False,
    send_introductions: bool = False,
    groupchat_kwargs: dict[str, Any] | None = None,
    **manager_kwargs: Any,
) -> Chat:
    """Three agents (``user`` + ``names``) in round robin; every reply scripted and deterministic."""
    reply = scripted_reply(terminate_at, faults)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", code_execution_config=False)
    agents = [
        ConversableAgent(n, system_message=f"You are {n}.", llm_config=llm_config, human_input_mode="NEVER")
        for n in names
    ]
    for agent in [user, *agents]:
        agent.register_reply([Agent, None], reply, position=0)
    members: list[Agent] = [user, *agents] if user_in_group else list(agents)
    gc = GroupChat(
        agents=members,
        messages=[],
        max_round=max_round,
        speaker_selection_method=speaker_selection_method,
        send_introductions=send_introductions,
        **(groupchat_kwargs or {}),
    )
    manager = GroupChatManager(gc, name="manager", llm_config=manager_llm_config, **manager_kwargs)
    return Chat(user, agents, gc, manager)


def build_tool_chat(*, max_round: int = 9, faults: Faults | None = None) -> Chat:
    """A round robin of ``user`` (talks), ``caller`` (makes a tool call) and ``runner`` (answers it).

    Tool calls are where AG2's own resume breaks (autogen #3408): the transcript and the speaker's
    own history hold a call differently, and both must come back exactly.
    """
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    caller = ConversableAgent("caller", llm_config=False, human_input_mode="NEVER")
    runner = ConversableAgent(
        "runner", llm_config=False, human_input_mode="NEVER", function_map={"add": lambda a, b: a + b}
    )

    def check(messages: list[dict[str, Any]] | None) -> int:
        n = len(messages or [])
        if faults is not None:
            faults.check(n + 1)
        return n

    def talk(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        n = check(messages)
        return True, f"user {n + 1} saw {digest(messages)}"

    def call(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        n = check(messages)
        arguments = json.dumps({"a": n, "b": len(digest(messages))})
        return True, {
            "content": None,
            "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": "add", "arguments": arguments}}
            ],
        }

    def answer(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        n = check(messages)
        call_id = messages[-1]["tool_calls"][0]["id"]
        text = f"result {n + 1} saw {digest(messages)}"
        return True, {
            "role": "tool",
            "content": text,
            "tool_responses": [{"tool_call_id": call_id, "role": "tool", "content": text}],
        }

    for agent, fn in ((user, talk), (caller, call), (runner, answer)):
        agent.register_reply([Agent, None], fn, position=0)
    gc = GroupChat(
        agents=[user, caller, runner], messages=[], max_round=max_round, speaker_selection_method="round_robin"
    )
    manager = GroupChatManager(gc, name="manager", llm_config=False, silent=True)
    return Chat(user, [caller, runner], gc, manager)


def histories(chat: Chat) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every agent's (and the manager's) conversations, keyed by names, for equality checks."""
    out = {}
    for agent in [chat.user, *chat.agents, chat.manager]:
        out[agent.name] = {peer.name: [dict(m) for m in msgs] for peer, msgs in agent.chat_messages.items() if msgs}
    return out


def on_run_end(provider: Any, action: Callable[[], None]) -> None:
    """Make ``provider`` call ``action`` (raise, or kill the process) instead of storing a run_end."""
    save, asave = provider.save_checkpoint, provider.asave_checkpoint

    def patched(cp: Any) -> None:
        if cp.kind == "run_end":
            action()
        save(cp)

    async def apatched(cp: Any) -> None:
        if cp.kind == "run_end":
            action()
        await asave(cp)

    provider.save_checkpoint = patched
    provider.asave_checkpoint = apatched


# -- a child process for kill tests: ``python -m tests.helpers_ag2 URL SESSION KILL_AT [options]`` ----------
def _child(argv: list[str]) -> int:
    import argparse
    import asyncio

    from persistency import Persistency, provider_from_url

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("session")
    parser.add_argument("kill_at", type=int, help="step about to be produced when the process kills itself")
    parser.add_argument("--async", dest="is_async", action="store_true")
    parser.add_argument("--max-round", type=int, default=9)
    parser.add_argument("--terminate-at", type=int, default=None)
    parser.add_argument("--message", default="hello")
    args = parser.parse_args(argv)
    chat = build_chat(max_round=args.max_round, terminate_at=args.terminate_at, faults=Faults(kill_at=args.kill_at))
    provider = provider_from_url(args.url)
    if args.kill_at > 10_000:  # kill while storing the run end, after the last step was stored
        on_run_end(provider, lambda: os.kill(os.getpid(), signal.SIGKILL))
    Persistency(provider, args.session).attach(chat.manager)
    if args.is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message=args.message, silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message=args.message, silent=True)
    return 3  # not killed: the test fails on this exit code


if __name__ == "__main__":
    import sys

    sys.exit(_child(sys.argv[1:]))
