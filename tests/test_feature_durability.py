"""Durability modes, storage outages (on_error), concurrent workers, and the async event loop.

- "sync" stores a step before the next speaker runs (sync and async chats), without blocking the
  event loop of an async chat;
- "async" writes in the background and surfaces a failed write as an error;
- "exit" stores only the run's end;
- an outage stops the chat with the provider's error (default) or is reported as lost checkpoints
  (on_error="continue"); either way resume_latest continues from the last stored checkpoint;
- two workers continuing the same run: exactly one wins, the other gets CheckpointConflictError.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from persistency import (
    Checkpoint,
    CheckpointConflictError,
    CheckpointInfo,
    Persistency,
    PersistencyStorageProvider,
    StorageUnavailableError,
    provider_from_url,
)
from tests.helpers_ag2 import Chat, Crash, Faults, build_chat, histories


class Wrapped(PersistencyStorageProvider):
    """Delegates to ``inner``; ``before_save`` may sleep or raise (a slow or failing backend)."""

    def __init__(self, inner: PersistencyStorageProvider, before_save: Any = None) -> None:
        self.inner = inner
        self.before_save = before_save
        self.saved: list[str] = []

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.before_save is not None:
            self.before_save(checkpoint)
        self.inner.save_checkpoint(checkpoint)
        self.saved.append(checkpoint.checkpoint_id)

    def get_checkpoint(self, session_id: str, checkpoint_id: str) -> Checkpoint:
        return self.inner.get_checkpoint(session_id, checkpoint_id)

    def list_checkpoints(self, session_id: str, **kw: Any) -> list[CheckpointInfo]:
        return self.inner.list_checkpoints(session_id, **kw)

    def list_sessions(self) -> list[str]:
        return self.inner.list_sessions()

    def delete_session(self, session_id: str) -> None:
        self.inner.delete_session(session_id)


@pytest.fixture
def store(tmp_path: Path) -> PersistencyStorageProvider:
    return provider_from_url(str(tmp_path / "store"))


def run(chat: Chat, *, is_async: bool, message: str = "hello") -> None:
    if is_async:
        asyncio.run(chat.user.a_initiate_chat(chat.manager, message=message, silent=True))
    else:
        chat.user.initiate_chat(chat.manager, message=message, silent=True)


def reference(max_round: int = 9) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chat = build_chat(max_round=max_round)
    Persistency(provider_from_url(f"memory://r-{uuid.uuid4().hex}"), "r").attach(chat.manager)
    run(chat, is_async=False)
    return chat.transcript(), histories(chat)


class StoredBeforeNextSpeaker(Faults):
    """Checks, as each speaker starts, that the previous step's checkpoint is already stored."""

    def __init__(self, provider: PersistencyStorageProvider) -> None:
        super().__init__()
        self.provider = provider

    def check(self, step: int) -> None:
        latest = self.provider.list_checkpoints("s", limit=1)
        assert latest and latest[-1].step == step - 1, (step, latest)
        super().check(step)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_sync_durability_stores_each_step_before_the_next_speaker(
    store: PersistencyStorageProvider, is_async: bool
) -> None:
    faults = StoredBeforeNextSpeaker(store)
    chat = build_chat(faults=faults)
    Persistency(store, "s").attach(chat.manager)
    run(chat, is_async=is_async)
    assert faults.calls == list(range(2, 10))


def test_async_chat_never_blocks_its_event_loop(store: PersistencyStorageProvider) -> None:
    delay = 0.15
    slow = Wrapped(store, before_save=lambda cp: time.sleep(delay))  # a slow, blocking backend
    chat = build_chat(max_round=8)
    Persistency(slow, "s").attach(chat.manager)
    gaps: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await chat.user.a_initiate_chat(chat.manager, message="hello", silent=True)
        stop.set()
        await tick

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert len(slow.saved) == 9  # 8 steps and the run end, each taking `delay`
    assert elapsed >= 9 * delay
    # A loop blocked by storage would stall once per save (9 times >= delay); allow one stall of
    # scheduling noise on a loaded machine.
    stalls = [round(g, 3) for g in gaps if g > delay / 2]
    assert len(stalls) <= 1, f"the event loop stalled: {stalls}"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_async_durability_stores_everything_by_the_run_end(store: PersistencyStorageProvider, is_async: bool) -> None:
    slow = Wrapped(store, before_save=lambda cp: time.sleep(0.01))
    chat = build_chat()
    Persistency(slow, "s", durability="async", max_pending=2).attach(chat.manager)
    run(chat, is_async=is_async)
    infos = store.list_checkpoints("s")
    assert [i.step for i in infos] == [*range(1, 10), 9] and infos[-1].end_reason == "max_rounds"
    transcript, hist = reference()
    assert chat.transcript() == transcript and histories(chat) == hist


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_async_durability_surfaces_a_failed_write(store: PersistencyStorageProvider, is_async: bool) -> None:
    def fail(cp: Checkpoint) -> None:
        if cp.step == 3 and cp.kind == "step":
            raise StorageUnavailableError("backend test: down")

    chat = build_chat()
    Persistency(Wrapped(store, before_save=fail), "s", durability="async").attach(chat.manager)
    with pytest.raises(StorageUnavailableError, match="backend test"):
        run(chat, is_async=is_async)
    latest = store.get_latest_checkpoint("s")  # the failure is recorded with everything the run had
    assert latest is not None and latest.end_reason == "error" and "backend test" in (latest.error or "")
    assert "000001-0000003" not in {i.checkpoint_id for i in store.list_checkpoints("s")}
    resumed = build_chat()
    Persistency(store, "s").attach(resumed.manager)
    run(resumed, is_async=is_async)
    assert resumed.transcript() == reference()[0]


def test_exit_durability_stores_only_the_run_end(store: PersistencyStorageProvider) -> None:
    chat = build_chat()
    Persistency(store, "s", durability="exit").attach(chat.manager)
    run(chat, is_async=False)
    infos = store.list_checkpoints("s")
    assert [(i.kind, i.step) for i in infos] == [("run_end", 9)] and infos[0].parent_id is None
    assert store.get_checkpoint("s", infos[0].checkpoint_id).messages == reference()[0]


def test_exit_durability_keeps_a_failed_run_resumable(store: PersistencyStorageProvider) -> None:
    with pytest.raises(Crash):
        chat = build_chat(faults=Faults(raise_at=5))
        Persistency(store, "s", durability="exit").attach(chat.manager)
        run(chat, is_async=False)
    assert [(i.kind, i.step) for i in store.list_checkpoints("s")] == [("run_end", 4)]
    chat = build_chat()
    Persistency(store, "s", durability="exit").attach(chat.manager)
    run(chat, is_async=False)
    assert chat.transcript() == reference()[0]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_outage_stops_the_chat_then_resume_continues(store: PersistencyStorageProvider, is_async: bool) -> None:
    down = {"on": False}

    def outage(cp: Checkpoint) -> None:
        if cp.step >= 4:
            down["on"] = True
        if down["on"]:
            raise StorageUnavailableError("redis://127.0.0.1:1: connection refused")

    chat = build_chat()
    Persistency(Wrapped(store, before_save=outage), "s").attach(chat.manager)
    with pytest.raises(StorageUnavailableError, match="redis://"):
        run(chat, is_async=is_async)
    assert store.get_latest_checkpoint("s").step == 3  # type: ignore[union-attr]
    resumed = build_chat()  # the server is back
    Persistency(store, "s").attach(resumed.manager)
    run(resumed, is_async=is_async)
    transcript, hist = reference()
    assert resumed.transcript() == transcript and histories(resumed) == hist


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_outage_with_on_error_continue_reports_lost_checkpoints(
    store: PersistencyStorageProvider, is_async: bool
) -> None:
    def outage(cp: Checkpoint) -> None:
        if cp.step in (3, 4) and cp.kind == "step":
            raise StorageUnavailableError("s3://bucket: service unavailable")

    chat = build_chat()
    feature = Persistency(Wrapped(store, before_save=outage), "s", on_error="continue").attach(chat.manager)
    run(chat, is_async=is_async)
    assert [(lost.step, lost.checkpoint_id) for lost in feature.lost_checkpoints] == [
        (3, "000001-0000003"),
        (4, "000001-0000004"),
    ]
    infos = {i.checkpoint_id: i for i in store.list_checkpoints("s")}
    assert infos["000001-0000005"].parent_id == "000001-0000002"  # linked to the last stored one
    assert store.get_checkpoint("s", "000001-0000005").messages == reference()[0][:5]
    assert store.get_latest_checkpoint("s").run_complete  # type: ignore[union-attr]


def test_two_workers_race_exactly_one_continues(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with pytest.raises(Crash):
        chat = build_chat(faults=Faults(raise_at=4))
        Persistency(provider_from_url(url), "s").attach(chat.manager)
        run(chat, is_async=False)
    barrier = threading.Barrier(2, timeout=30)

    class Meet(Faults):
        def check(self, step: int) -> None:
            if step == 4:  # both workers are about to produce the same next step
                barrier.wait()
            super().check(step)

    outcomes: list[Any] = [None, None]
    chats = [build_chat(faults=Meet()) for _ in range(2)]

    def worker(i: int) -> None:  # without leases (ownership=None): the create-only ids alone decide
        Persistency(provider_from_url(url), "s", ownership=None).attach(chats[i].manager)
        try:
            run(chats[i], is_async=False)
            outcomes[i] = "done"
        except CheckpointConflictError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(type, outcomes), key=str) == sorted([str, CheckpointConflictError], key=str)
    loser = next(o for o in outcomes if isinstance(o, CheckpointConflictError))
    assert "000001-0000004" in str(loser)
    provider = provider_from_url(url)
    transcript = reference()[0]
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None and latest.run_complete and latest.messages == transcript
    infos = provider.list_checkpoints("s")
    assert [i.checkpoint_id for i in infos if i.kind == "run_end"] == ["000001-0000003-end1", "000001-0000009-end1"]
    for info in infos:  # no history interleaves: every stored checkpoint is a prefix of the one transcript
        assert provider.get_checkpoint("s", info.checkpoint_id).messages == transcript[: info.step]


def test_a_system_message_changed_during_the_run_is_captured(store: PersistencyStorageProvider) -> None:
    class Update(Faults):
        def check(self, step: int) -> None:
            if step == 4:
                chat.agents[0].update_system_message("You are alice, now in phase two.")
            super().check(step)

    chat = build_chat(max_round=6, faults=Update())
    Persistency(store, "s").attach(chat.manager)
    run(chat, is_async=False)
    before = store.get_checkpoint("s", "000001-0000003").agent_states["alice"]["system_message"]
    after = store.get_checkpoint("s", "000001-0000005").agent_states["alice"]["system_message"]
    assert before == "You are alice." and after == "You are alice, now in phase two."


@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_lost_race_writes_nothing_more(store: PersistencyStorageProvider, durability: str, is_async: bool) -> None:
    def rival(cp: Checkpoint) -> None:  # another worker stores step 4 first
        if cp.checkpoint_id == "000001-0000004":
            raise CheckpointConflictError("checkpoint '000001-0000004' already exists")

    chat = build_chat()
    Persistency(Wrapped(store, before_save=rival), "s", durability=durability).attach(chat.manager)  # type: ignore[arg-type]
    with pytest.raises(CheckpointConflictError):
        run(chat, is_async=is_async)
    ids = [i.checkpoint_id for i in store.list_checkpoints("s")]
    assert not any("-end" in i for i in ids), ids  # no run_end: the run belongs to the winner


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_two_workers_resuming_a_dead_run_the_loser_stops_before_any_model_call(tmp_path: Path, is_async: bool) -> None:
    import os
    import signal

    url = str(tmp_path / "store")
    pid = os.fork()
    if pid == 0:  # a worker that dies after step 3
        try:
            chat = build_chat(faults=Faults(kill_at=4))
            Persistency(provider_from_url(url), "s").attach(chat.manager)
            run(chat, is_async=False)
        finally:
            os._exit(3)
    assert os.waitpid(pid, 0)[1] & 0x7F == signal.SIGKILL

    barrier = threading.Barrier(2, timeout=30)

    class Synchronized(Wrapped):  # both workers have read the session before either writes
        def get_latest_checkpoint(self, session_id: str) -> Checkpoint | None:
            latest = self.inner.get_latest_checkpoint(session_id)
            barrier.wait()
            return latest

    faults = [Faults(), Faults()]
    chats = [build_chat(faults=f) for f in faults]
    outcomes: list[Any] = [None, None]

    def worker(i: int) -> None:
        Persistency(Synchronized(provider_from_url(url)), "s").attach(chats[i].manager)
        try:
            run(chats[i], is_async=is_async)
            outcomes[i] = "done"
        except CheckpointConflictError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    loser = next(i for i, o in enumerate(outcomes) if isinstance(o, CheckpointConflictError))
    winner = 1 - loser
    assert outcomes[winner] == "done"
    assert faults[loser].calls == []  # stopped before any agent (model) was asked for a reply
    assert faults[winner].calls == list(range(4, 10))
    provider = provider_from_url(url)
    claim = provider.get_checkpoint("s", "000001-0000003-end1")
    assert claim.end_reason == "cancelled" and "stopped without ending" in claim.manager_state["end_detail"]
    latest = provider.get_latest_checkpoint("s")
    assert latest is not None and latest.run_complete and latest.messages == reference()[0]
