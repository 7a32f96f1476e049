"""Nested chats resume exactly: a member's inner conversations are part of its state (#10 item 6).

``alice`` answers through a nested chat (``register_nested_chats``): with an inner agent whose
replies hash its own history, or with a nested GroupChatManager that has a Persistency of its own.
With ``clear_history`` False the inner memory shapes every later reply, so any loss shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import Persistency
from tests.helpers_ag2 import Faults, digest, scripted_reply


class Nested:
    """user + alice (nested) + bob in round robin; ``inner`` agents behind alice."""

    def __init__(self, *, clear: bool, group: bool, is_async: bool, faults: Faults | None, inner_url: str | None):
        reply = scripted_reply(None, faults)
        self.user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
        self.alice = ConversableAgent("alice", llm_config=False, human_input_mode="NEVER")
        self.bob = ConversableAgent("bob", llm_config=False, human_input_mode="NEVER")
        for a in (self.user, self.bob):
            a.register_reply([Agent, None], reply, position=0)
        self.inner = [ConversableAgent(n, llm_config=False, human_input_mode="NEVER") for n in ("inner1", "inner2")]

        def inner_reply(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            return True, f"{recipient.name} saw {digest(messages or [])}"

        for a in self.inner:
            a.register_reply([Agent, None], inner_reply, position=0)
        self.inner_manager: GroupChatManager | None = None
        self.inner_feature: Persistency | None = None
        if group:
            gc = GroupChat(agents=list(self.inner), messages=[], max_round=3, speaker_selection_method="round_robin")
            self.inner_manager = GroupChatManager(gc, name="inner_manager", llm_config=False)
            if inner_url is not None:
                self.inner_feature = Persistency(inner_url, "inner").attach(self.inner_manager)
            recipient: Agent = self.inner_manager
            chat: dict[str, Any] = {"recipient": recipient, "summary_method": "last_msg", "clear_history": clear}
            chat["sender"] = self.inner[0]
        else:
            chat = {"recipient": self.inner[0], "summary_method": "last_msg", "max_turns": 1, "clear_history": clear}
        chat["chat_id"] = 1  # AG2 requires one for async nested chats
        self.alice.register_nested_chats([chat], trigger=lambda sender: sender not in self.inner, use_async=is_async)
        gc = GroupChat(
            agents=[self.user, self.alice, self.bob], messages=[], max_round=7, speaker_selection_method="round_robin"
        )
        self.manager = GroupChatManager(gc, name="manager", llm_config=False)

        def check(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            if faults is not None and sender is self.manager:
                faults.check(len(gc.messages) + 1)
            return False, None

        self.alice.register_reply([Agent, None], check, position=0)
        self.groupchat = gc

    def go(self, is_async: bool) -> Any:
        if is_async:
            return asyncio.run(self.user.a_initiate_chat(self.manager, message="hello", silent=True))
        return self.user.initiate_chat(self.manager, message="hello", silent=True)

    def state(self) -> Any:
        agents: list[ConversableAgent] = [self.user, self.alice, self.bob, *self.inner, self.manager]
        if self.inner_manager is not None:
            agents.append(self.inner_manager)
        hist = {a.name: {p.name: [dict(m) for m in ms] for p, ms in a.chat_messages.items()} for a in agents}
        inner_transcript = [dict(m) for m in self.inner_manager.groupchat.messages] if self.inner_manager else None
        return [dict(m) for m in self.groupchat.messages], hist, inner_transcript


KS = [3, 4, 5, 6, 7]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("clear", [False, True], ids=["keep", "clear"])
@pytest.mark.parametrize("group", [False, True], ids=["agent", "groupchat"])
def test_nested_chats_without_a_crash_are_plain_ag2(tmp_path: Path, group: bool, clear: bool, is_async: bool) -> None:
    plain = Nested(clear=clear, group=group, is_async=is_async, faults=None, inner_url=None)
    plain.go(is_async)
    chat = Nested(clear=clear, group=group, is_async=is_async, faults=None, inner_url=f"file://{tmp_path / 'inner'}")
    with Persistency(f"file://{tmp_path / 'outer'}", "s").attach(chat.manager):
        chat.go(is_async)
    assert chat.state() == plain.state()
    if chat.inner_feature is not None:  # the nested manager stored its own runs, one per nested chat
        assert len({c.run_id for c in chat.inner_feature.checkpoints()}) == 2


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("clear", [False, True], ids=["keep", "clear"])
@pytest.mark.parametrize("group", [False, True], ids=["agent", "groupchat"])
def test_nested_chats_resume_exactly(tmp_path: Path, group: bool, clear: bool, is_async: bool, k: int) -> None:
    plain = Nested(clear=clear, group=group, is_async=is_async, faults=None, inner_url=None)
    plain.go(is_async)
    inner = f"file://{tmp_path / 'inner'}"
    crashed = Nested(clear=clear, group=group, is_async=is_async, faults=Faults(raise_at=k), inner_url=inner)
    with Persistency(f"file://{tmp_path / 'outer'}", "s").attach(crashed.manager), pytest.raises(RuntimeError):
        crashed.go(is_async)
    resumed = Nested(clear=clear, group=group, is_async=is_async, faults=None, inner_url=inner)
    with Persistency(f"file://{tmp_path / 'outer'}", "s").attach(resumed.manager):
        resumed.go(is_async)
    assert resumed.state() == plain.state()
