"""Tool calls survive a resume: every step k of a tool-calling round robin, sync and async, gives the
transcript and every agent's history of an uninterrupted run (where AG2's own resume breaks)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from persistency import Persistency, provider_from_url
from tests.helpers_ag2 import Chat, Crash, Faults, build_tool_chat, histories


def start(chat: Chat, is_async: bool) -> None:
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message="add things", silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message="add things", silent=True)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_tool_call_chat_resumes_exactly_at_every_step(is_async: bool) -> None:
    provider = provider_from_url(f"memory://tools-{uuid.uuid4().hex}")
    ref = build_tool_chat()
    Persistency(provider, "ref").attach(ref.manager)
    start(ref, is_async)
    assert any(m.get("tool_calls") for m in ref.groupchat.messages)
    for k in range(1, 9):
        chat = build_tool_chat(faults=Faults(raise_at=k + 1))
        Persistency(provider, f"s{k}").attach(chat.manager)
        with pytest.raises(Crash):
            start(chat, is_async)
        resumed = build_tool_chat()
        Persistency(provider, f"s{k}").attach(resumed.manager)
        start(resumed, is_async)
        assert resumed.transcript() == ref.transcript(), k
        assert histories(resumed) == histories(ref), k
