"""Every resume policy, as issue #3 defines it: resume_latest (incl. the Koog bug), resume_from,
fresh_with_history, fresh, max_rounds, next_run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from persistency import (
    Ownership,
    Persistency,
    PersistencyError,
    PersistencyStorageProvider,
    ResumeError,
    ResumePolicy,
    provider_from_url,
)
from tests.helpers_ag2 import Chat, Crash, Faults, build_chat


@pytest.fixture
def provider() -> PersistencyStorageProvider:
    return provider_from_url(f"memory://pol-{uuid.uuid4().hex}")


def go(
    provider: PersistencyStorageProvider,
    message: str = "hello",
    *,
    policy: ResumePolicy | None = None,
    faults: Faults | None = None,
    is_async: bool = False,
    ownership: Any = "auto",
    **kw: Any,
) -> tuple[Chat, Persistency]:
    chat = build_chat(faults=faults, **kw)
    feature = Persistency(provider, "s", policy=policy, ownership=ownership).attach(chat.manager)
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message=message, silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message=message, silent=True)
    return chat, feature


def contents(chat: Chat) -> list[str]:
    return [m["content"] for m in chat.groupchat.messages]


def runs(provider: PersistencyStorageProvider) -> list[str]:
    return sorted({i.run_id for i in provider.list_checkpoints("s")})


# -- resume_latest ------------------------------------------------------------------------------
def test_empty_session_starts_a_plain_run(provider: PersistencyStorageProvider) -> None:
    chat, feature = go(provider, max_round=5)
    assert len(chat.groupchat.messages) == 5
    infos = provider.list_checkpoints("s")
    assert [i.step for i in infos if i.kind == "step"] == [1, 2, 3, 4, 5]
    assert infos[0].parent_id is None
    assert infos[-1].kind == "run_end" and infos[-1].end_reason == "max_rounds"
    assert feature.last_checkpoint_id == infos[-1].checkpoint_id


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("same_message", [False, True])
def test_koog_bug_a_completed_run_is_never_rolled_back(
    provider: PersistencyStorageProvider, is_async: bool, same_message: bool
) -> None:
    first, _ = go(provider, terminate_at=6, max_round=20, is_async=is_async)
    done = contents(first)
    assert done[-1] == "TERMINATE"
    faults = Faults()
    message = "hello" if same_message else "and now?"
    # the same opening message again at once would be taken as the same request redelivered (the
    # dedupe test below); a window of 0 says this is a new question that happens to repeat the words
    second, _ = go(provider, message, faults=faults, terminate_at=10, max_round=20, is_async=is_async,
                   ownership=Ownership(dedupe_window=0))
    got = contents(second)
    assert got[:6] == done  # the whole transcript is the new run's history
    assert got[6] == message  # the new message is appended once; TERMINATE is not appended again
    assert got.count("TERMINATE") == 2 and got[-1] == "TERMINATE"
    assert min(faults.calls) == 8  # no step of the finished run was generated again
    assert runs(provider) == ["run-000001", "run-000002"]
    first_of_run2 = provider.list_checkpoints("s", run_id="run-000002")[0]
    assert first_of_run2.step == 7 and first_of_run2.parent_id == "000001-0000006-end1"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_same_opening_message_at_once_is_shown_the_finished_run(
    provider: PersistencyStorageProvider, is_async: bool
) -> None:
    """Issue #12 item 4: a start whose opening message is the one the run just finished answered (another
    Persistency, within dedupe_window) is the same request delivered twice: it is shown that run,
    nothing is rolled back, no model is called and no run is added."""
    first, _ = go(provider, terminate_at=6, max_round=20, is_async=is_async)
    faults = Faults()
    second, _ = go(provider, "hello", faults=faults, terminate_at=10, max_round=20, is_async=is_async)
    assert contents(second) == contents(first) and contents(first)[-1] == "TERMINATE"
    assert faults.calls == []
    assert runs(provider) == ["run-000001"]


def test_completed_run_gets_a_fresh_budget(provider: PersistencyStorageProvider) -> None:
    go(provider, max_round=4)
    chat, _ = go(provider, "more", max_round=4)
    assert len(chat.groupchat.messages) == 8
    end = provider.get_latest_checkpoint("s")
    assert end is not None and end.end_reason == "max_rounds" and end.manager_state["rounds_used"] == 4


def test_a_different_message_supersedes_an_interrupted_run(provider: PersistencyStorageProvider) -> None:
    with pytest.raises(Crash):
        go(provider, faults=Faults(raise_at=5))
    chat, _ = go(provider, "something else", max_round=3)
    got = contents(chat)
    assert got[4] == "something else" and len(got) == 4 + 3
    ids = [i.checkpoint_id for i in provider.list_checkpoints("s")]
    assert "000001-0000004-end1" in ids  # the error
    superseded = provider.get_checkpoint("s", "000001-0000004-end2")
    assert superseded.end_reason == "superseded" and superseded.parent_id == "000001-0000004-end1"
    assert provider.list_checkpoints("s", run_id="run-000002")[0].parent_id == "000001-0000004-end2"


def test_resume_latest_max_rounds_gives_n_more_messages(provider: PersistencyStorageProvider) -> None:
    with pytest.raises(Crash):
        go(provider, faults=Faults(raise_at=4), max_round=20)
    chat, _ = go(provider, policy=ResumePolicy.resume_latest(max_rounds=2), max_round=20)
    assert len(chat.groupchat.messages) == 3 + 2
    end = provider.get_latest_checkpoint("s")
    assert end is not None and end.run_id == "run-000001" and end.end_reason == "max_rounds"
    assert end.manager_state["rounds_used"] == 5 and end.manager_state["round_budget"] == 5


# -- resume_from --------------------------------------------------------------------------------
def test_resume_from_same_message_branches_and_replays_exactly(provider: PersistencyStorageProvider) -> None:
    ref, _ = go(provider, max_round=9)
    before = provider.list_checkpoints("s")
    chat, _ = go(provider, policy=ResumePolicy.resume_from("000001-0000004"), max_round=9)
    assert contents(chat) == contents(ref)  # the rest of the budget, from step 4, deterministically
    assert provider.list_checkpoints("s")[: len(before)] == before  # later checkpoints untouched
    run2 = provider.list_checkpoints("s", run_id="run-000002")
    assert run2[0].step == 5 and run2[0].parent_id == "000001-0000004"
    assert run2[-1].end_reason == "max_rounds"


def test_resume_from_different_message_is_the_next_turn(provider: PersistencyStorageProvider) -> None:
    ref, _ = go(provider, max_round=9)
    chat, _ = go(provider, "branch", policy=ResumePolicy.resume_from("000001-0000004"), max_round=9)
    got = contents(chat)
    assert got[:4] == contents(ref)[:4] and got[4] == "branch"
    assert len(got) == 4 + (9 - 4)  # the budget left at step 4


def test_resume_from_with_max_rounds(provider: PersistencyStorageProvider) -> None:
    go(provider, max_round=9)
    chat, _ = go(provider, policy=ResumePolicy.resume_from("000001-0000003", max_rounds=2), max_round=9)
    assert len(chat.groupchat.messages) == 5


def test_resume_from_unknown_checkpoint_is_a_resume_error(provider: PersistencyStorageProvider) -> None:
    go(provider, max_round=3)
    with pytest.raises(ResumeError):
        go(provider, policy=ResumePolicy.resume_from("000009-0000001"))


# -- fresh_with_history / fresh ---------------------------------------------------------------
def test_fresh_with_history_of_latest(provider: PersistencyStorageProvider) -> None:
    with pytest.raises(Crash):
        go(provider, faults=Faults(raise_at=6))
    chat, _ = go(provider, "again", policy=ResumePolicy.fresh_with_history(), max_round=4)
    got = contents(chat)
    assert got[5] == "again" and len(got) == 5 + 4
    assert provider.list_checkpoints("s", run_id="run-000002")[0].parent_id == "000001-0000005-end1"


def test_fresh_with_history_of_given_checkpoint(provider: PersistencyStorageProvider) -> None:
    go(provider, max_round=9)
    chat, _ = go(provider, "again", policy=ResumePolicy.fresh_with_history("000001-0000002", max_rounds=3))
    assert contents(chat)[2] == "again" and len(chat.groupchat.messages) == 2 + 3


def test_fresh_ignores_history_and_keeps_old_runs(provider: PersistencyStorageProvider) -> None:
    go(provider, max_round=5)
    n_before = len(provider.list_checkpoints("s"))
    chat, _ = go(provider, "new topic", policy=ResumePolicy.fresh(), max_round=3)
    assert contents(chat)[0] == "new topic" and len(chat.groupchat.messages) == 3
    run2 = provider.list_checkpoints("s", run_id="run-000002")
    assert run2[0].parent_id is None and run2[0].step == 1
    assert len(provider.list_checkpoints("s", run_id="run-000001")) == n_before


def test_next_run_applies_once(provider: PersistencyStorageProvider) -> None:
    chat = build_chat(max_round=3)
    feature = Persistency(provider, "s").attach(chat.manager)
    chat.user.initiate_chat(chat.manager, message="a", silent=True)
    feature.next_run(ResumePolicy.fresh())
    chat.user.initiate_chat(chat.manager, message="b", silent=True)
    assert len(chat.groupchat.messages) == 3  # fresh: no history
    chat.user.initiate_chat(chat.manager, message="c", silent=True, clear_history=False)
    assert len(chat.groupchat.messages) == 6  # back to resume_latest: run 2 completed here, AG2 keeps it
    feature.detach()
    chat.user.initiate_chat(chat.manager, message="d", silent=True)  # plain AG2 again
    assert len(chat.groupchat.messages) == 3 and len(runs(provider)) == 3


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        ResumePolicy.resume_latest(max_rounds=0)
    with pytest.raises(ValueError):
        ResumePolicy("resume_from")
    assert (
        str(ResumePolicy.resume_from("000001-0000002", 3)) == "ResumePolicy.resume_from('000001-0000002', max_rounds=3)"
    )


def test_a_message_that_is_not_json_stops_the_chat_with_a_clear_error(provider: PersistencyStorageProvider) -> None:
    from autogen import Agent

    from persistency import SerializationError

    chat = build_chat(max_round=6)

    def bad(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
        if len(messages or []) == 2:
            return True, {"content": "here", "context": {"handle": object()}}
        return False, None

    chat.agents[1].register_reply([Agent, None], bad, position=0)
    Persistency(provider, "s").attach(chat.manager)
    with pytest.raises(SerializationError, match="message at step 3 from 'bob'"):
        chat.user.initiate_chat(chat.manager, message="hello", silent=True)
    assert provider.get_latest_checkpoint("s").step == 2  # type: ignore[union-attr]


def test_continuing_when_the_last_speaker_no_longer_exists_is_a_resume_error(
    provider: PersistencyStorageProvider,
) -> None:
    with pytest.raises(Crash):
        go(provider, faults=Faults(raise_at=4))  # the last saved message is bob's
    with pytest.raises(ResumeError, match="'bob'"):
        go(provider, names=("alice", "robert"))
    assert [i.kind for i in provider.list_checkpoints("s")][-1] == "run_end"  # nothing written by the refusal


def test_the_feature_takes_a_url_and_checks_its_arguments(tmp_path: Any) -> None:
    feature = Persistency(str(tmp_path / "chats"), "s")
    chat = build_chat(max_round=3)
    with feature.attach(chat.manager):
        chat.user.initiate_chat(chat.manager, message="hi", silent=True)
    assert feature.manager is None and len(feature.checkpoints()) == 4
    with pytest.raises(ValueError):
        Persistency(str(tmp_path), "s", durability="later")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Persistency(object(), "s")  # type: ignore[arg-type]
    other = build_chat()
    Persistency(str(tmp_path), "a").attach(other.manager)
    with pytest.raises(PersistencyError, match="already has a Persistency"):
        Persistency(str(tmp_path), "b").attach(other.manager)


def test_every_policy_in_an_async_chat(provider: PersistencyStorageProvider) -> None:
    ref, _ = go(provider, max_round=9, is_async=True)
    branch, _ = go(provider, policy=ResumePolicy.resume_from("000001-0000004"), max_round=9, is_async=True)
    assert contents(branch) == contents(ref)
    with pytest.raises(ResumeError):
        go(provider, policy=ResumePolicy.resume_from("000007-0000001"), is_async=True)
    hist, _ = go(
        provider, "again", policy=ResumePolicy.fresh_with_history("000001-0000002", max_rounds=2), is_async=True
    )
    assert contents(hist)[2] == "again" and len(hist.groupchat.messages) == 4
    fresh, _ = go(provider, "new", policy=ResumePolicy.fresh(), max_round=2, is_async=True)
    assert contents(fresh)[0] == "new" and len(fresh.groupchat.messages) == 2
    with pytest.raises(Crash):
        go(provider, "x", faults=Faults(raise_at=5), max_round=9, is_async=True)
    other, _ = go(provider, "y", max_round=2, is_async=True)  # supersedes the failed run
    assert runs(provider)[-1] == "run-000006"
    assert provider.get_checkpoint("s", "000005-0000004-end2").end_reason == "superseded"
    assert contents(other)[-2] == "y"


def test_a_manager_without_the_group_chat_loop_is_refused_not_run_unrecorded(
    provider: PersistencyStorageProvider,
) -> None:
    chat = build_chat(max_round=3)
    chat.manager._reply_func_list[:] = [
        e for e in chat.manager._reply_func_list if getattr(e["reply_func"], "__name__", "") != "run_chat"
    ]
    Persistency(provider, "s").attach(chat.manager)
    with pytest.raises(PersistencyError, match="without checkpoints"):
        chat.user.initiate_chat(chat.manager, message="hi", silent=True)
