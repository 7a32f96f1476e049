"""Deterministic scripted AG2 group chats for tests and benchmarks (no model, no network).

Each scripted agent replies with a line that names the step it is producing and a digest of its own
conversation history, so two runs give equal transcripts only if every agent saw exactly the same
history. `Faults` stops a run at a chosen step: by an exception, or by SIGKILL of the process.
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

__all__ = ["Chat", "Crash", "Faults", "build_chat", "digest", "histories", "scripted_reply"]


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

    def reply(recipient: ConversableAgent, messages: list[dict[str, Any]] | None = None,
              sender: Agent | None = None, config: Any = None) -> tuple[bool, Any]:
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
    gc = GroupChat(agents=members, messages=[], max_round=max_round, speaker_selection_method=speaker_selection_method)
    manager = GroupChatManager(gc, name="manager", llm_config=manager_llm_config, **manager_kwargs)
    return Chat(user, agents, gc, manager)


def histories(chat: Chat) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every agent's (and the manager's) conversations, keyed by names, for equality checks."""
    out = {}
    for agent in [chat.user, *chat.agents, chat.manager]:
        out[agent.name] = {peer.name: [dict(m) for m in msgs] for peer, msgs in agent.chat_messages.items() if msgs}
    return out
