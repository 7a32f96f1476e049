"""Resume equivalence: a run stopped after any step k and resumed ends exactly like an uninterrupted one.

Stopped by an exception (in process) and by SIGKILL (forked child for the per-k sweep; a real
subprocess for a subset on every backend), sync and async, ending by max rounds and by a
termination message. "Exactly" means the transcript, every agent's history (the scripted replies
embed a digest of the speaker's history), and the run's round count.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from persistency import Persistency, PersistencyStorageProvider, provider_from_url
from persistency.scripted import ScriptedModelClient, scripted_config
from tests.helpers_ag2 import Chat, Crash, Faults, build_chat, histories, on_run_end

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "max_rounds": {"max_round": 9, "terminate_at": None, "n": 9},
    "termination": {"max_round": 20, "terminate_at": 8, "n": 8},
}


def start(chat: Chat, *, is_async: bool, message: str = "hello") -> None:
    """Initiate the chat as a user would, sync or async."""
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message=message, silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message=message, silent=True)


def run_once(
    provider: PersistencyStorageProvider, session: str, *, is_async: bool, faults: Faults | None = None, **kw: Any
) -> Chat:
    chat = build_chat(faults=faults, **kw)
    Persistency(provider, session).attach(chat.manager)
    start(chat, is_async=is_async)
    return chat


@pytest.fixture(params=["file", "memory"])
def fast_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The backends the per-step sweeps run on (cheap and local)."""
    return str(tmp_path / "store") if request.param == "file" else f"memory://t-{uuid.uuid4().hex}"


_REFERENCE: dict[tuple[str, bool], tuple[list[dict[str, Any]], dict[str, Any], int]] = {}


def reference(scenario: str, is_async: bool) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Transcript, histories and round count of an uninterrupted run (computed once)."""
    key = (scenario, is_async)
    if key not in _REFERENCE:
        sc = SCENARIOS[scenario]
        p = provider_from_url(f"memory://ref-{uuid.uuid4().hex}")
        chat = run_once(p, "ref", is_async=is_async, max_round=sc["max_round"], terminate_at=sc["terminate_at"])
        end = p.get_latest_checkpoint("ref")
        assert end is not None and end.kind == "run_end" and end.run_complete
        assert len(chat.groupchat.messages) == sc["n"]
        _REFERENCE[key] = (chat.transcript(), histories(chat), end.manager_state["rounds_used"])
    return _REFERENCE[key]


def resume_and_check(provider: PersistencyStorageProvider, session: str, scenario: str, is_async: bool) -> None:
    sc = SCENARIOS[scenario]
    transcript, hist, rounds = reference(scenario, is_async)
    faults = Faults()
    chat = run_once(
        provider, session, is_async=is_async, faults=faults, max_round=sc["max_round"], terminate_at=sc["terminate_at"]
    )
    assert chat.transcript() == transcript
    assert histories(chat) == hist
    end = provider.get_latest_checkpoint(session)
    assert end is not None and end.run_complete and end.run_id == "run-000001"
    assert end.manager_state["rounds_used"] == rounds
    assert end.messages == transcript
    # nothing appended twice, nothing re-generated that was already stored
    stored_steps = sorted({i.step for i in provider.list_checkpoints(session) if i.kind == "step"})
    assert stored_steps == list(range(1, sc["n"] + 1))
    assert len(faults.calls) == len(set(faults.calls))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("k", range(1, 10))
def test_resume_after_exception_at_every_step(fast_url: str, scenario: str, is_async: bool, k: int) -> None:
    n = SCENARIOS[scenario]["n"]
    if k > n:
        pytest.skip("beyond the run")
    sc = SCENARIOS[scenario]
    provider = provider_from_url(fast_url)
    if k < n:
        with pytest.raises(Crash):
            run_once(
                provider,
                "s",
                is_async=is_async,
                faults=Faults(raise_at=k + 1),
                max_round=sc["max_round"],
                terminate_at=sc["terminate_at"],
            )
        end = provider.get_latest_checkpoint("s")
        assert end is not None and end.kind == "run_end" and end.end_reason == "error"
        assert end.step == k and "injected failure" in (end.error or "")
    else:  # the last step stored, the run end not: the process died in between
        dying = provider_from_url(fast_url)

        def die() -> None:
            raise Crash("died before the run end")

        on_run_end(dying, die)
        with pytest.raises(Crash):
            run_once(dying, "s", is_async=is_async, max_round=sc["max_round"], terminate_at=sc["terminate_at"])
        latest = provider.get_latest_checkpoint("s")
        assert latest is not None and latest.kind == "step" and latest.step == n
    resume_and_check(provider, "s", scenario, is_async)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_resume_in_same_process_with_same_objects(fast_url: str, is_async: bool) -> None:
    provider = provider_from_url(fast_url)
    faults = Faults(raise_at=5)
    chat = build_chat(faults=faults)
    Persistency(provider, "s").attach(chat.manager)
    with pytest.raises(Crash):
        start(chat, is_async=is_async)
    start(chat, is_async=is_async)  # the same agents, retried after the failure
    transcript, hist, _ = reference("max_rounds", is_async)
    assert chat.transcript() == transcript
    assert histories(chat) == hist


def test_failing_twice_at_the_same_step_gets_a_second_run_end(fast_url: str) -> None:
    provider = provider_from_url(fast_url)
    for _ in range(2):
        with pytest.raises(Crash):
            run_once(provider, "s", is_async=False, faults=Faults(raise_at=4))
    ends = [i.checkpoint_id for i in provider.list_checkpoints("s") if i.kind == "run_end"]
    assert ends == ["000001-0000003-end1", "000001-0000003-end2"]
    resume_and_check(provider, "s", "max_rounds", False)


def _fork_and_kill(url: str, session: str, kill_at: int, is_async: bool, sc: dict[str, Any]) -> None:
    pid = os.fork()
    if pid == 0:  # child: run until the scripted agent kills the process
        try:
            provider = provider_from_url(url)
            if kill_at > sc["n"]:
                on_run_end(provider, lambda: os.kill(os.getpid(), signal.SIGKILL))
            chat = build_chat(
                faults=Faults(kill_at=kill_at), max_round=sc["max_round"], terminate_at=sc["terminate_at"]
            )
            Persistency(provider, session).attach(chat.manager)
            start(chat, is_async=is_async)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("k", range(1, 10))
def test_resume_after_sigkill_at_every_step(tmp_path: Path, scenario: str, is_async: bool, k: int) -> None:
    sc = SCENARIOS[scenario]
    if k > sc["n"]:
        pytest.skip("beyond the run")
    url = str(tmp_path / "store")
    _fork_and_kill(url, "s", k + 1 if k < sc["n"] else 10**6, is_async, sc)
    provider = provider_from_url(url)
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None and latest.kind == "step" and latest.step == k  # a killed run leaves no run end
    resume_and_check(provider, "s", scenario, is_async)


@pytest.mark.parametrize(("k", "is_async"), [(5, False), (5, True), (9, False)], ids=["k5-sync", "k5-async", "k9-sync"])
def test_resume_after_sigkill_of_a_real_subprocess(storage_url: str, backend: str, is_async: bool, k: int) -> None:
    if backend == "memory":
        pytest.skip("memory:// does not outlive its process")
    kill_at = k + 1 if k < 9 else 10**6
    cmd = [sys.executable, "-m", "tests.helpers_ag2", storage_url, "s", str(kill_at)] + (
        ["--async"] if is_async else []
    )
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    provider = provider_from_url(storage_url)
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None and latest.step == k and latest.kind == "step"
    resume_and_check(provider, "s", "max_rounds", is_async)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_introductions_are_restored_where_the_run_sent_them(is_async: bool) -> None:
    provider = provider_from_url(f"memory://intro-{uuid.uuid4().hex}")
    ref = build_chat(send_introductions=True)
    Persistency(provider, "ref").attach(ref.manager)
    start(ref, is_async=is_async)
    assert histories(ref)["alice"]["manager"][0]["content"].startswith("Hello everyone")
    for k in (1, 2, 5):
        chat = build_chat(send_introductions=True, faults=Faults(raise_at=k + 2))  # agents also saw the intro
        Persistency(provider, f"s{k}").attach(chat.manager)
        with pytest.raises(Crash):
            start(chat, is_async=is_async)
        resumed = build_chat(send_introductions=True)
        Persistency(provider, f"s{k}").attach(resumed.manager)
        start(resumed, is_async=is_async)
        assert resumed.transcript() == ref.transcript(), k
        assert histories(resumed) == histories(ref), k


def test_custom_speaker_selection_resumes_exactly() -> None:
    def backwards(last_speaker: Any, groupchat: Any) -> Any:  # bob, alice, user, bob, ...
        agents = groupchat.agents
        return agents[(agents.index(last_speaker) - 1) % len(agents)]

    provider = provider_from_url(f"memory://sel-{uuid.uuid4().hex}")
    ref = build_chat(speaker_selection_method=backwards)
    Persistency(provider, "ref").attach(ref.manager)
    start(ref, is_async=False)
    assert [m["name"] for m in ref.groupchat.messages[:4]] == ["user", "bob", "alice", "user"]
    for k in (2, 6):
        chat = build_chat(speaker_selection_method=backwards, faults=Faults(raise_at=k + 1))
        Persistency(provider, f"s{k}").attach(chat.manager)
        with pytest.raises(Crash):
            start(chat, is_async=False)
        resumed = build_chat(speaker_selection_method=backwards)
        Persistency(provider, f"s{k}").attach(resumed.manager)
        start(resumed, is_async=False)
        assert resumed.transcript() == ref.transcript() and histories(resumed) == histories(ref)


class CyclingSelector(ScriptedModelClient):
    """AG2's "auto" speaker selection, offline: the next name depends on how long the context is."""

    def create(self, params: dict[str, Any]) -> Any:
        names = ["alice", "bob", "user", "bob", "alice"]
        response = super().create(params)
        response.choices[0].message.content = names[len(params.get("messages") or []) % len(names)]
        return response


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_auto_speaker_selection_resumes_exactly(is_async: bool) -> None:
    def chat(faults: Faults | None = None) -> Chat:
        config = scripted_config(["unused"], model_client_cls="CyclingSelector")
        return build_chat(
            faults=faults,
            speaker_selection_method="auto",
            groupchat_kwargs={
                "select_speaker_auto_llm_config": config,
                "select_speaker_auto_model_client_cls": CyclingSelector,
            },
        )

    provider = provider_from_url(f"memory://auto-{uuid.uuid4().hex}")
    ref = chat()
    Persistency(provider, "ref").attach(ref.manager)
    start(ref, is_async=is_async)
    assert len({m["name"] for m in ref.groupchat.messages}) == 3  # the selector really varies
    for k in range(1, 9):
        stopped = chat(Faults(raise_at=k + 1))
        Persistency(provider, f"s{k}").attach(stopped.manager)
        with pytest.raises(Crash):
            start(stopped, is_async=is_async)
        resumed = chat()
        Persistency(provider, f"s{k}").attach(resumed.manager)
        start(resumed, is_async=is_async)
        assert resumed.transcript() == ref.transcript() and histories(resumed) == histories(ref), k


def test_consecutive_auto_reply_limits_count_on_after_a_resume() -> None:
    """AG2 stops an agent after max_consecutive_auto_reply replies; a resumed run must stop it at the same step."""
    from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

    def chat(crash_at: int | None = None) -> Chat:
        user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", default_auto_reply="go on")
        solver = ConversableAgent(
            "solver",
            llm_config=scripted_config([f"step {i}" for i in range(9)]),
            human_input_mode="NEVER",
            max_consecutive_auto_reply=2,
        )
        solver.register_model_client(ScriptedModelClient)
        checker = ConversableAgent(
            "checker", llm_config=scripted_config([f"ok {i}" for i in range(9)]), human_input_mode="NEVER"
        )
        checker.register_model_client(ScriptedModelClient)
        if crash_at is not None:

            def crash(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
                if len(messages or []) + 1 == crash_at:
                    raise Crash("down")
                return False, None

            checker.register_reply([Agent, None], crash, position=0)
        gc = GroupChat([user, solver, checker], messages=[], max_round=12, speaker_selection_method="round_robin")
        return Chat(user, [solver, checker], gc, GroupChatManager(gc, name="manager", llm_config=False, silent=True))

    provider = provider_from_url(f"memory://limit-{uuid.uuid4().hex}")
    ref = chat()
    Persistency(provider, "ref").attach(ref.manager)
    start(ref, is_async=False)
    assert len(ref.groupchat.messages) == 7  # the solver's third turn (step 8) gives no reply: the chat ends
    end = provider.get_latest_checkpoint("ref")
    assert end is not None and end.manager_state["end_detail"]
    stopped = chat(crash_at=6)
    Persistency(provider, "s").attach(stopped.manager)
    with pytest.raises(Crash):
        start(stopped, is_async=False)
    resumed = chat()
    Persistency(provider, "s").attach(resumed.manager)
    start(resumed, is_async=False)
    assert resumed.transcript() == ref.transcript()
