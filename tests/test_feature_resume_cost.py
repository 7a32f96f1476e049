"""What a resume costs, counted (never timed): storage reads, saves before the first model call,
and AG2 message conversions while the histories are restored.

- one read of the latest checkpoint per resume, nothing else read (no second load for the restore);
- a resume whose latest run is closed stores nothing before its first model call but the run's own
  first step (its opening message); continuing a dead run stores nothing before it: the "cancelled"
  run end closing the dead attempt goes with the first new step, in one call (without a lease, with
  ``ownership=None``, it is the claim and is stored first);
- restoring N messages converts each one with AG2's conversion at most twice whatever the number
  of agents (one shallow copy per other conversation), and gives the same histories as appending
  every entry through each agent, as AG2's loop does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager
from autogen.agentchat import conversable_agent

from persistency import Persistency, PersistencyStorageProvider, provider_from_url
from persistency._capture import restore_histories
from tests.helpers_ag2 import Chat, Crash, Faults, build_chat

READS = ("get_latest_checkpoint", "get_checkpoint", "list_checkpoints", "list_checkpoint_ids")


def counting(provider: PersistencyStorageProvider) -> dict[str, list[Any]]:
    """Record every read (sync and async twin) and every save of this provider instance."""
    calls: dict[str, list[Any]] = {}

    def wrap(name: str, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def arecorded(*args: Any, **kwargs: Any) -> Any:
                calls.setdefault(name, []).append(args)
                return await fn(*args, **kwargs)

            return arecorded

        def recorded(*args: Any, **kwargs: Any) -> Any:
            calls.setdefault(name, []).append(args)
            return fn(*args, **kwargs)

        return recorded

    for name in (*READS, "save_checkpoint", "save_checkpoints"):
        for method, is_async in ((name, False), (f"a{name}", True)):
            fn = getattr(provider, method, None)
            if fn is not None:
                setattr(provider, method, wrap(name, fn, is_async))
    return calls


def start(chat: Chat, *, is_async: bool, message: str) -> None:
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message=message, silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message=message, silent=True)


def saved(calls: dict[str, list[Any]]) -> list[Any]:
    out = [args[0] for args in calls.get("save_checkpoint", [])]
    for args in calls.get("save_checkpoints", []):
        out.extend(args[0])
    return out


def spy_first_reply(chat: Chat, calls: dict[str, list[Any]]) -> list[list[Any]]:
    """What had been saved when the first agent was asked for a reply (filled at that moment)."""
    before_first_reply: list[list[Any]] = []
    for agent in [chat.user, *chat.agents]:

        def spy(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            if not before_first_reply:
                before_first_reply.append(saved(calls))
            return False, None

        agent.register_reply([Agent, None], spy, position=0)
    return before_first_reply


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("latest", ["closed", "dead"])
def test_one_read_per_resume_and_no_save_before_the_first_step(latest: str, is_async: bool) -> None:
    url = f"memory://cost-{uuid.uuid4().hex}"
    first = build_chat(max_round=9, faults=Faults(raise_at=6) if latest == "dead" else None)
    Persistency(provider_from_url(url), "s").attach(first.manager)
    if latest == "dead":
        with pytest.raises(Crash):
            start(first, is_async=is_async, message="hello")
        # a run whose process died leaves a step as the latest: drop the "error" run end it stored
        provider = provider_from_url(url)
        steps = [i for i in provider.list_checkpoints("s") if i.kind == "step"]
        url2 = f"memory://cost-{uuid.uuid4().hex}"
        copy = provider_from_url(url2)
        for info in steps:
            copy.save_checkpoint(provider.get_checkpoint("s", info.checkpoint_id))
        url = url2
    else:
        start(first, is_async=is_async, message="hello")
    provider = provider_from_url(url)
    calls = counting(provider)
    chat = build_chat(max_round=9)
    before_first_reply = spy_first_reply(chat, calls)
    Persistency(provider, "s").attach(chat.manager)
    start(chat, is_async=is_async, message="hello" if latest == "dead" else "next request")
    reads = {name: len(calls.get(name, [])) for name in READS}
    assert reads == {"get_latest_checkpoint": 1, "get_checkpoint": 0, "list_checkpoints": 0,
                     "list_checkpoint_ids": 0}
    assert before_first_reply, "no agent was asked for a reply"
    stored = before_first_reply[0]
    if latest == "closed":  # the new run's own first step (its opening message), nothing before it
        assert [(c.kind, c.messages[-1]["content"]) for c in stored] == [("step", "next request")]
    else:  # the lease is the claim: nothing before the first reply (the re-appended message is not stored)
        assert stored == []
        # the "cancelled" run end closing the dead attempt goes with the first new step: one call
        first = calls["save_checkpoints"][0][0]
        assert [(c.kind, c.end_reason) for c in first[:2]] == [("run_end", "cancelled"), ("step", None)]
        assert first[1].parent_id == first[0].checkpoint_id
        singles = [args[0] for args in calls.get("save_checkpoint", [])]
        assert not any(c.kind == "run_end" and c.end_reason == "cancelled" for c in singles)
    kinds = [(i.kind, i.end_reason) for i in provider_from_url(url).list_checkpoints("s")]
    if latest == "dead":
        assert kinds.count(("run_end", "cancelled")) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_without_ownership_the_cancelled_claim_is_stored_before_the_first_reply(is_async: bool) -> None:
    """With ``ownership=None`` no lease guards the start: the create-only "cancelled" run end is the
    claim, so it is stored before any model call (a second worker starting the same way fails first)."""
    url = f"memory://cost-{uuid.uuid4().hex}"
    first = build_chat(max_round=9, faults=Faults(raise_at=6))
    Persistency(provider_from_url(url), "s", ownership=None).attach(first.manager)
    with pytest.raises(Crash):
        start(first, is_async=is_async, message="hello")
    provider = provider_from_url(url)
    steps = [i for i in provider.list_checkpoints("s") if i.kind == "step"]
    copy = provider_from_url(url2 := f"memory://cost-{uuid.uuid4().hex}")
    for info in steps:
        copy.save_checkpoint(provider.get_checkpoint("s", info.checkpoint_id))
    provider = provider_from_url(url2)
    calls = counting(provider)
    chat = build_chat(max_round=9)
    before_first_reply = spy_first_reply(chat, calls)
    Persistency(provider, "s", ownership=None).attach(chat.manager)
    start(chat, is_async=is_async, message="hello")
    assert [(c.kind, c.end_reason) for c in before_first_reply[0]] == [("run_end", "cancelled")]


class _OwnAppend(ConversableAgent):
    """An agent that appends through its own ``_append_oai_message`` (as a subclass may override it)."""

    def _append_oai_message(self, message: Any, conversation_id: Agent, role: str = "assistant",
                            name: str | None = None) -> bool:
        return super()._append_oai_message(message, conversation_id, role=role, name=name)


def _transcript(names: list[str], n: int) -> list[dict[str, Any]]:
    """Talk, a tool call (no content), its result, and a nameless message, over ``n`` messages."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        who = names[i % len(names)]
        if i % 7 == 3:
            out.append({"content": "None", "role": "assistant", "name": who,
                        "tool_calls": [{"id": f"c{i}", "type": "function",
                                        "function": {"name": "f", "arguments": "{}"}}]})
        elif i % 7 == 4:
            out.append({"content": "ok", "role": "tool", "name": who,
                        "tool_responses": [{"tool_call_id": f"c{i - 1}", "role": "tool", "content": "ok"}]})
        elif i % 11 == 5:
            out.append({"content": f"nameless {i}", "role": "user"})
        else:
            out.append({"content": f"{who} says {i}", "role": "user" if i == 0 else "assistant", "name": who})
    return out


def _group(n_agents: int, cls: type[ConversableAgent] = ConversableAgent) -> tuple[GroupChatManager, GroupChat,
                                                                                     dict[str, Agent]]:
    agents = [cls(f"a{i}", llm_config=False, human_input_mode="NEVER") for i in range(n_agents)]
    gc = GroupChat(agents=list(agents), messages=[], max_round=10)
    manager = GroupChatManager(gc, name="manager", llm_config=False)
    return manager, gc, {a.name: a for a in agents}


def _conversations(manager: GroupChatManager, agents: dict[str, Agent]) -> dict[str, Any]:
    out = {f"manager->{a.name}": manager.chat_messages.get(a) for a in agents.values()}
    out.update({f"{a.name}->manager": a.chat_messages.get(manager) for a in agents.values()
                if isinstance(a, ConversableAgent)})
    return out


@pytest.mark.parametrize("n_agents", [3, 6])
def test_restore_converts_each_message_at_most_twice(n_agents: int, monkeypatch: pytest.MonkeyPatch) -> None:
    conversions = [0]
    original = conversable_agent.normilize_message_to_oai

    def counted(*args: Any, **kwargs: Any) -> Any:
        conversions[0] += 1
        return original(*args, **kwargs)

    n = 200
    names = [f"a{i}" for i in range(n_agents)]
    manager, gc, agents = _group(n_agents)
    monkeypatch.setattr(conversable_agent, "normilize_message_to_oai", counted)
    restore_histories(manager, gc, agents, _transcript(names, n))
    # two per message, plus one for the speaker's own copy of a tool call (AG2 drops its name)
    assert conversions[0] <= 2 * n + n // 7 + 1
    monkeypatch.setattr(conversable_agent, "normilize_message_to_oai", original)

    # the same histories as appending every entry through each agent (AG2's loop and resume())
    slow_manager, slow_gc, slow_agents = _group(n_agents, _OwnAppend)
    restore_histories(slow_manager, slow_gc, slow_agents, _transcript(names, n))
    assert _conversations(manager, agents) == _conversations(slow_manager, slow_agents)
    assert gc.messages == slow_gc.messages


def test_restore_matches_ag2_resume() -> None:
    """Plain named messages: the histories AG2's own ``resume()`` builds, entry for entry, in separate dicts."""
    names = ["a0", "a1", "a2", "a3"]
    messages = [{"content": f"{names[i % 4]} says {i}", "role": "user" if i == 0 else "assistant",
                 "name": names[i % 4]} for i in range(40)]
    ours, gc, agents = _group(4)
    restore_histories(ours, gc, agents, [dict(m) for m in messages[:-1]])
    theirs, _, their_agents = _group(4)
    theirs.resume([dict(m) for m in messages], silent=True)
    assert _conversations(ours, agents) == _conversations(theirs, their_agents)
    entries = [id(e) for conv in _conversations(ours, agents).values() for e in conv]
    assert len(entries) == len(set(entries))  # no entry shared between two conversations
