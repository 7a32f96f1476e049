"""The session generation checked inside the Redis save script (#15: one round trip per owned step).

On a real redis-server and a real three-node Redis Cluster: an owned feature step (ownership on, the
default) is one request to Redis, sync and async; a delete by another provider instance between two
saves stops the chat with `SessionDeletedError` naming the session, and nothing is stored after it;
two instances with a delete and a re-creation in between never splice, through the single save, the
batch and the async twin.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from autogen import Agent
from persistency.providers.redis import RedisStorageProvider

from persistency import Persistency, provider_from_url
from persistency.errors import SessionDeletedError
from persistency.testing import make_chain, make_checkpoint
from tests.helpers_ag2 import build_chat
from tests.test_redis_provider import admin_client, round_trips, session_keys

ROUNDS = 10


@pytest.fixture(params=["redis", "redis_cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def _owned_chat(provider: Any, sid: str, marks: list[int], counter: list[int],
                on_step: Callable[[int], None] | None = None) -> Any:
    """A scripted round robin owned by the feature (the default ``ownership="auto"``); ``marks`` gets the
    request count at each reply, so two neighbours differ by what storing one step cost."""
    chat = build_chat(max_round=ROUNDS, silent=True)

    def mark(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
        marks.append(counter[0])
        if on_step is not None:
            on_step(len(messages or []) + 1)
        return False, None  # the scripted reply answers

    for agent in [chat.user, *chat.agents]:
        agent.register_reply([Agent, None], mark, position=0)
    feature = Persistency(provider, sid)
    assert feature.ownership is not None  # owned: the default on Redis
    feature.attach(chat.manager)
    return chat


def _run(chat: Any, is_async: bool) -> None:
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message="go", silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message="go", silent=True)


def _message(step: int) -> dict[str, Any]:
    return {"content": f"A {step}", "role": "assistant", "name": "bob"}


# -- round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_an_owned_step_is_one_round_trip(url: str, is_async: bool) -> None:
    provider = provider_from_url(url)
    assert getattr(provider, "checks_generation_on_write", False)  # the feature reads no generation itself
    marks: list[int] = []
    try:
        with round_trips() as counter:
            chat = _owned_chat(provider, "owned", marks, counter)
            _run(chat, is_async)
    finally:
        provider.close()
    steps = [b - a for a, b in itertools.pairwise(marks)]
    assert len(steps) == ROUNDS - 2, marks
    # the first step (the script's first EVALSHA on this connection, the cluster's index) aside:
    # each further step is its save script alone, the generation checked inside it
    assert steps[1:] == [1] * (ROUNDS - 3), steps
    with provider_from_url(url) as p:
        assert len(p.list_checkpoint_ids("owned")) >= ROUNDS


# -- a delete under a live chat ------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_delete_between_two_owned_saves_stops_the_chat_and_stores_nothing(url: str, is_async: bool) -> None:
    provider, other = provider_from_url(url), provider_from_url(url)
    marks: list[int] = []

    def delete_at_5(step: int) -> None:
        if step == 5:
            other.delete_session("live")

    try:
        with round_trips() as counter:
            chat = _owned_chat(provider, "live", marks, counter, delete_at_5)
            with pytest.raises(SessionDeletedError, match="session 'live'") as caught:
                _run(chat, is_async)
    finally:
        provider.close()
    assert "generation 0 -> 1" in str(caught.value)
    assert other.list_checkpoint_ids("live") == [] and "live" not in other.list_sessions()
    admin = admin_client(url)
    try:  # no record, no index: only the generation counter outlives the session (the lease was released)
        assert [k for k in session_keys(admin, url, "live") if not k.endswith(b":gen")] == []
    finally:
        admin.close()
    other.close()


def _two_instances(url: str) -> tuple[Any, Any, Any, list[Any]]:
    """A saves 3 steps; B deletes the session and saves 3 steps again under the same ids."""
    a, b = provider_from_url(url), provider_from_url(url)
    first = make_chain(a, "s", 3)
    b.delete_session("s")
    again = make_chain(b, "s", 3, run_seq=1)
    nxt = make_checkpoint("s", 4, parent_id=first[-1].checkpoint_id, messages=[*first[-1].messages, _message(3)])
    return a, b, nxt, again


@pytest.mark.parametrize("how", ["save", "batch", "async"])
def test_two_instances_with_a_delete_in_between_never_splice(url: str, how: str) -> None:
    a, b, nxt, again = _two_instances(url)
    after = make_checkpoint("s", 5, parent_id=nxt.checkpoint_id, messages=[*nxt.messages, _message(4)])
    with pytest.raises(SessionDeletedError, match=r"session 's'.*generation 0 -> 1"):
        if how == "save":
            a.save_checkpoint(nxt)
        elif how == "batch":
            a.save_checkpoints([nxt, after])
        else:
            asyncio.run(a.asave_checkpoint(nxt))
    assert b.list_checkpoint_ids("s") == [c.checkpoint_id for c in again]  # B's session, nothing of A's
    latest = b.get_latest_checkpoint("s")
    assert latest is not None and latest.messages == again[-1].messages
    # A reloads (a new turn of its worker): it works in the new generation from then on
    start = a.get_latest_checkpoint("s")
    assert start is not None
    make_chain(a, "s", 1, start=start)
    assert len(b.list_checkpoint_ids("s")) == 4
    for p in (a, b):
        p.close()


def test_a_delete_after_the_lease_was_taken_refuses_the_next_child(url: str) -> None:
    """The generation a provider expects is the one it last saw: here, the one its lease was taken in."""
    a, b = provider_from_url(url), provider_from_url(url)
    assert isinstance(a, RedisStorageProvider)
    chain = make_chain(b, "l", 2)
    b.delete_session("l")  # generation 1
    lease = a.acquire_lease("l", "me", 30)
    assert lease is not None and lease.generation == 1
    b.delete_session("l")  # generation 2, under A's lease
    make_chain(b, "l", 2)
    child = make_checkpoint("l", 3, parent_id=chain[-1].checkpoint_id, messages=[*chain[-1].messages, _message(2)])
    with pytest.raises(SessionDeletedError, match="generation 1 -> 2"):
        a.save_checkpoint(child)
    assert len(b.list_checkpoint_ids("l")) == 2
    a.release_lease(lease)
    for p in (a, b):
        p.close()


def test_a_first_save_depends_on_nothing_and_is_not_refused(url: str) -> None:
    """A save without a parent (a session's first) cannot orphan or splice: it starts the current generation."""
    a, b = provider_from_url(url), provider_from_url(url)
    make_chain(a, "r", 2)
    b.delete_session("r")
    fresh = make_chain(a, "r", 2)  # A saw generation 0; its new first save starts generation 1's session
    assert b.list_checkpoint_ids("r") == [c.checkpoint_id for c in fresh]
    for p in (a, b):
        p.close()


def test_a_delete_and_a_lease_are_one_script_each(url: str) -> None:
    """The delete advances the generation in its own script (no window where the keys are gone but the
    generation is not advanced); the lease is taken with the generation in one script."""
    with provider_from_url(url) as p:
        assert isinstance(p, RedisStorageProvider)
        make_chain(p, "d", 2)
        cluster = p._conn.cluster
        with round_trips() as n:
            p.delete_session("d")
        assert n[0] == (3 if cluster else 1)  # a cluster also removes, re-checks and keeps the index entry
        assert p.session_generation("d") == 1
        with round_trips() as n:
            lease = p.acquire_lease("d", "me", 30)
        assert n[0] == 1 and lease is not None and lease.generation == 1
        held = p.current_lease("d")
        assert held is not None and held.token == lease.token and held.generation == 1
        with round_trips() as n:
            assert p.acquire_lease("d", "other", 30) is None
        assert n[0] == 1
        p.release_lease(lease)
