"""Nested chats (``register_nested_chats``): the inner conversations are part of a member's state.

A member with nested chats talks to its inner agents outside the group transcript; with
``"clear_history": False`` those conversations shape its later replies, and with a nested
GroupChatManager the inner group has a transcript and histories of its own. Each step checkpoint
stores them (``manager_state["nested"]``, only re-read when one of them changed), and a resume
puts them back before the loop runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autogen import Agent, ConversableAgent, GroupChatManager

from persistency import _ag2

__all__ = ["NestedState"]

Pair = tuple[ConversableAgent, ConversableAgent]


def _pairs(agents: Iterable[Agent], outer: GroupChatManager) -> list[Pair]:
    pairs: list[Pair] = []
    seen: set[tuple[int, int]] = set()

    def add(a: Any, b: Any) -> None:
        if isinstance(a, ConversableAgent) and isinstance(b, ConversableAgent) and a is not b:
            if b is outer or a is outer or (id(a), id(b)) in seen:
                return
            seen.add((id(a), id(b)))
            pairs.append((a, b))

    for agent in agents:
        for queue in _ag2.nested_chat_queues(agent):
            for chat in queue:
                recipient, sender = chat.get("recipient"), chat.get("sender") or agent
                add(sender, recipient)
                add(recipient, sender)
                if isinstance(recipient, GroupChatManager):
                    for member in recipient.groupchat.agents:
                        add(member, recipient)
                        add(recipient, member)
    return pairs


def _key(message: Any) -> Any:
    if not isinstance(message, dict):
        return repr(message)
    return (message.get("role"), message.get("name"), repr(message.get("content")), repr(message.get("tool_calls")))


class NestedState:
    """The inner conversations of a group chat's members, captured per step and restored on resume."""

    def __init__(self, agents: Iterable[Agent], outer: GroupChatManager) -> None:
        self.pairs = _pairs(agents, outer)
        self.managers = [b for _, b in self.pairs if isinstance(b, GroupChatManager)]
        self.managers = list({id(m): m for m in self.managers}.values())
        self._sig: tuple[Any, ...] | None = None
        self._snapshot: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def _signature(self) -> tuple[Any, ...]:
        """Cheap change detection: each conversation's length and first and last message (a cleared
        and refilled conversation has the same length)."""
        lists = [_ag2.oai_messages(a).get(b, []) for a, b in self.pairs]
        lists += [m.groupchat.messages for m in self.managers]
        return tuple((len(ms), _key(ms[0]), _key(ms[-1])) if ms else (0,) for ms in lists)

    def capture(self) -> dict[str, Any]:
        """JSON of every inner conversation (the same object as last time when nothing changed)."""
        sig = self._signature()
        if sig != self._sig or self._snapshot is None:
            conversations: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for a, b in self.pairs:
                conversations.setdefault(a.name, {})[b.name] = [dict(m) for m in _ag2.oai_messages(a).get(b, [])]
            transcripts = {m.name: [dict(x) for x in m.groupchat.messages] for m in self.managers}
            self._snapshot = {"conversations": conversations, "transcripts": transcripts}
            self._sig = sig
        return self._snapshot

    def restore(self, saved: Any) -> None:
        """Put stored inner conversations back (agents matched by name)."""
        if not isinstance(saved, dict):
            return
        conversations = saved.get("conversations") or {}
        for a, b in self.pairs:
            messages = (conversations.get(a.name) or {}).get(b.name)
            if isinstance(messages, list):
                _ag2.oai_messages(a)[b] = [dict(m) for m in messages]
        transcripts = saved.get("transcripts") or {}
        for m in self.managers:
            messages = transcripts.get(m.name)
            if isinstance(messages, list):
                m.groupchat.messages[:] = [dict(x) for x in messages]
