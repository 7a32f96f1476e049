"""Invisible in-process: with a Persistency attached (default policy), chats that never crash are plain AG2.

Each sequence runs twice on fresh objects, once plain and once attached, and must give the same
transcript, the same histories for every agent, and the same ChatResults. Then the run semantics:
checkpoint ids never collide when the transcript shrinks or is replaced (items 4 and 5 of #10).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from autogen import Agent, ConversableAgent

from persistency import Persistency, ResumePolicy
from persistency.ids import parse_checkpoint_id
from tests.helpers_ag2 import Chat, build_chat, histories

Sequence = Callable[[Chat, bool], list[Any]]


def _go(agent: ConversableAgent, chat: Chat, is_async: bool, message: Any, **kw: Any) -> Any:
    if is_async:
        return asyncio.run(agent.a_initiate_chat(chat.manager, message=message, silent=True, **kw))
    return agent.initiate_chat(chat.manager, message=message, silent=True, **kw)


def _result(r: Any) -> Any:
    return None if r is None else (r.chat_history, r.summary, r.cost, r.human_input)


def seq_reset(chat: Chat, a: bool) -> list[Any]:
    first = _go(chat.user, chat, a, "one")
    chat.manager.reset()
    return [first, _go(chat.user, chat, a, "two")]


def seq_clear_true(chat: Chat, a: bool) -> list[Any]:
    return [_go(chat.user, chat, a, "one"), _go(chat.user, chat, a, "two")]


def seq_clear_false(chat: Chat, a: bool) -> list[Any]:
    return [_go(chat.user, chat, a, "one"), _go(chat.user, chat, a, "two", clear_history=False)]


def seq_other_agent(chat: Chat, a: bool) -> list[Any]:
    return [_go(chat.user, chat, a, "one"), _go(chat.agents[0], chat, a, "from alice", clear_history=False)]


def seq_same_message_twice(chat: Chat, a: bool) -> list[Any]:
    first, second = _go(chat.user, chat, a, "same"), _go(chat.user, chat, a, "same")
    return [first, second, _go(chat.user, chat, a, "same", clear_history=False)]


def seq_ag2_resume(chat: Chat, a: bool) -> list[Any]:
    saved = [
        {"role": "user", "name": "user", "content": "earlier question"},
        {"role": "user", "name": "alice", "content": "earlier answer"},
        {"role": "user", "name": "bob", "content": "and a follow-up"},
    ]
    if a:
        last_agent, last = asyncio.run(chat.manager.a_resume(messages=saved, silent=True))
    else:
        last_agent, last = chat.manager.resume(messages=saved, silent=True)
    assert isinstance(last_agent, ConversableAgent)
    return [_go(last_agent, chat, a, last, clear_history=False)]


def seq_resume_after_a_run(chat: Chat, a: bool) -> list[Any]:
    first = _go(chat.user, chat, a, "one")
    saved = [dict(m) for m in chat.groupchat.messages[:4]]
    last_agent, last = chat.manager.resume(messages=saved, silent=True)
    return [first, _go(last_agent, chat, a, last, clear_history=False)]  # type: ignore[arg-type]


def _clearing(chat: Chat) -> None:
    """alice says "clear history" at step 5 (AG2 then empties the transcript and every history)."""

    def clear(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        if len(chat.groupchat.messages) + 1 == 5:
            return True, {"content": "clear history, please"}
        return False, None

    chat.agents[0].register_reply([Agent, None], clear, position=0)


def seq_clear_history_phrase(chat: Chat, a: bool) -> list[Any]:
    _clearing(chat)
    return [_go(chat.user, chat, a, "one"), _go(chat.user, chat, a, "two", clear_history=False)]


SEQUENCES: dict[str, tuple[Sequence, dict[str, Any]]] = {
    "reset": (seq_reset, {}),
    "clear_history_true": (seq_clear_true, {}),
    "clear_history_false": (seq_clear_false, {}),
    "second_call_by_another_agent": (seq_other_agent, {}),
    "same_message_twice": (seq_same_message_twice, {}),
    "send_introductions": (seq_clear_false, {"send_introductions": True}),
    "ag2_resume_on_empty_session": (seq_ag2_resume, {}),
    "ag2_resume_after_a_run": (seq_resume_after_a_run, {}),
    "enable_clear_history": (seq_clear_history_phrase, {"groupchat_kwargs": {"enable_clear_history": True}}),
}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_a_sequence_that_never_crashes_is_plain_ag2(tmp_path: Path, name: str, is_async: bool) -> None:
    sequence, kwargs = SEQUENCES[name]
    plain = build_chat(max_round=5, **kwargs)
    expected = [_result(r) for r in sequence(plain, is_async)]
    chat = build_chat(max_round=5, **kwargs)
    with Persistency(f"file://{tmp_path}", "s").attach(chat.manager) as feature:
        got = [_result(r) for r in sequence(chat, is_async)]
        infos = feature.checkpoints()
    assert got == expected
    assert chat.transcript() == plain.transcript()
    assert histories(chat) == histories(plain)
    ids = [i.checkpoint_id for i in infos]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)  # never a collision, always in order
    assert len({i.run_id for i in infos}) == len(expected)  # one run per initiate_chat


def test_ag2_resume_messages_on_an_empty_session_are_stored_as_the_runs_history(tmp_path: Path) -> None:
    chat = build_chat(max_round=5)
    with Persistency(f"file://{tmp_path}", "s").attach(chat.manager) as feature:
        seq_ag2_resume(chat, False)
        latest = feature.latest()
    assert latest is not None and latest.run_complete
    assert [m["content"] for m in latest.messages[:3]] == ["earlier question", "earlier answer", "and a follow-up"]
    assert latest.messages == chat.transcript()
    assert latest.manager_state["opening_step"] == 2  # the loop started at the last resumed message


def test_a_cleared_transcript_keeps_ids_growing_and_is_recorded(tmp_path: Path) -> None:
    chat = build_chat(max_round=7, groupchat_kwargs={"enable_clear_history": True})
    _clearing(chat)
    with Persistency(f"file://{tmp_path}", "s").attach(chat.manager) as feature:
        _go(chat.user, chat, False, "one")
        infos = feature.checkpoints()
        steps = [parse_checkpoint_id(i.checkpoint_id) for i in infos]
        latest = feature.latest()
    assert [s[1] for s in steps if s and not s[2]] == [1, 2, 3, 4, 5, 6, 7]  # the run numbers its own steps
    assert [i.step for i in infos if i.kind == "step"] == [1, 2, 3, 4, 1, 2, 3]  # transcript lengths
    assert latest is not None and latest.manager_state["transcript_resets"] == 1


@pytest.mark.parametrize("k", [4, 5, 6, 7])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_run_that_crashes_after_clearing_its_transcript_resumes_exactly(
    tmp_path: Path, k: int, is_async: bool
) -> None:
    def build(raise_at: int | None = None) -> Chat:
        chat = build_chat(max_round=7, groupchat_kwargs={"enable_clear_history": True})
        _clearing(chat)
        produced = [1]  # the run's own step count: the transcript's length says nothing after a clear

        def crash(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            produced[0] += 1
            if produced[0] == raise_at:
                raise RuntimeError(f"injected before step {raise_at}")
            return False, None

        for agent in [chat.user, *chat.agents]:
            agent.register_reply([Agent, None], crash, position=0)
        return chat

    plain = build()
    _go(plain.user, plain, is_async, "one")
    crashed = build(raise_at=k)
    with Persistency(f"file://{tmp_path}", "s").attach(crashed.manager), pytest.raises(RuntimeError):
        _go(crashed.user, crashed, is_async, "one")
    resumed = build()
    with Persistency(f"file://{tmp_path}", "s", policy=ResumePolicy.resume_latest()).attach(resumed.manager):
        _go(resumed.user, resumed, is_async, "one")
    assert resumed.transcript() == plain.transcript()
    assert histories(resumed) == histories(plain)
