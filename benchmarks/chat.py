"""The scripted AG2 group chat every scenario runs, and the timers around it.

Three `ConversableAgent`s with ``llm_config=False`` answer from `benchmarks.stream` (so every
scenario sees the same ~500-character messages), round robin, ``max_round`` = steps. Step times
are taken at each `GroupChat.append` (once per step, terminal step included), so the interval
between two appends is everything a step costs: the agent's reply, AG2's bookkeeping and, when
attached, the feature's capture and save. Save times are taken around the provider's
``save_checkpoint``.

Without `persistency.Persistency` (before the feature lands) `drive_provider` replays the same
stream straight into a provider, checkpoint by checkpoint, as the feature would.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stream import AGENTS, make_text, speaker_of
from persistency.ids import checkpoint_id_for, run_id_for
from persistency.models import Checkpoint, utcnow
from persistency.provider import PersistencyStorageProvider

__all__ = ["RunTimes", "drive_provider", "feature_available", "run_chat", "time_saves"]


@dataclass
class RunTimes:
    """What one run measured (seconds)."""

    total: float = 0.0
    #: CPU seconds of the whole process (every thread: the chat, an async writer, s3fs's loop)
    cpu: float = 0.0
    step_marks: list[float] = field(default_factory=list)
    saves: list[float] = field(default_factory=list)
    messages: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def step_intervals(self) -> list[float]:
        """Time between consecutive steps."""
        m = self.step_marks
        return [b - a for a, b in itertools.pairwise(m)]


_ACTIVE: list[RunTimes] = []
_PATCHED = False


def _patch_append() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from autogen import GroupChat

    original = GroupChat.append

    def append(self: Any, message: Any, speaker: Any) -> Any:
        if _ACTIVE:
            _ACTIVE[-1].step_marks.append(time.perf_counter())
        return original(self, message, speaker)

    GroupChat.append = append  # type: ignore[method-assign]
    _PATCHED = True


def time_saves(provider: PersistencyStorageProvider, into: list[float]) -> None:
    """Record into ``into`` what storing each checkpoint took on this provider instance: the duration
    of a ``save_checkpoint``, or a ``save_checkpoints`` batch's divided among its checkpoints (the
    async writer stores what it finds queued as one batch), so there is one sample per checkpoint."""
    save = provider.save_checkpoint

    def timed(checkpoint: Checkpoint) -> None:
        t = time.perf_counter()
        try:
            save(checkpoint)
        finally:
            into.append(time.perf_counter() - t)

    provider.save_checkpoint = timed  # type: ignore[method-assign]
    save_many = getattr(provider, "save_checkpoints", None)
    if save_many is None:
        return

    def timed_many(checkpoints: Sequence[Checkpoint]) -> None:
        batch = list(checkpoints)
        t = time.perf_counter()
        try:
            save_many(batch)
        finally:
            into.extend([(time.perf_counter() - t) / max(len(batch), 1)] * len(batch))

    provider.save_checkpoints = timed_many  # type: ignore[attr-defined]


def feature_available() -> str | None:
    """None if `persistency.Persistency` exists, else why the AG2 chat cannot be persisted."""
    try:
        from persistency import Persistency  # noqa: F401
    except ImportError as exc:
        return f"persistency.Persistency not available yet ({exc})"
    return None


class _NullStream:
    """An AG2 IOStream that prints nothing (console output would dominate a 50 µs step)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        """Drop it."""

    def send(self, message: Any) -> None:
        """Drop it."""

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        """Nobody answers."""
        return ""


def _build(steps: int, step_delay: float = 0.0) -> tuple[list[Any], Any, Any]:
    from autogen import ConversableAgent, GroupChat, GroupChatManager

    agents: list[Any] = []
    for name in AGENTS:
        agent = ConversableAgent(name, llm_config=False, human_input_mode="NEVER",
                                 system_message=f"You are {name}, one of three scripted speakers.")

        def reply(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None,
                  _name: str = name) -> tuple[bool, str]:
            if step_delay:
                time.sleep(step_delay)  # a stand-in for a model's latency
            return True, make_text(len(messages or []), _name)

        agent.register_reply([ConversableAgent, None], reply, position=0)
        agents.append(agent)
    groupchat = GroupChat(agents=agents, messages=[], max_round=steps, speaker_selection_method="round_robin")
    manager = GroupChatManager(groupchat, llm_config=False)
    return agents, groupchat, manager


def run_chat(steps: int, provider: PersistencyStorageProvider | None = None, *, session_id: str = "bench",
             durability: str | None = None, step_delay: float = 0.0) -> RunTimes:
    """Run the scripted chat for ``steps`` messages, with the feature attached when ``provider`` is given.

    ``step_delay`` (seconds) makes every reply wait, as a model would: the view in which "async"
    durability can hide a save behind the next step.
    """
    from autogen.io.base import IOStream

    _patch_append()
    times = RunTimes()
    if provider is not None:
        time_saves(provider, times.saves)
    agents, groupchat, manager = _build(steps, step_delay)
    feature = None
    with IOStream.set_default(_NullStream()):  # type: ignore[arg-type]
        if provider is not None:
            from persistency import Persistency

            kwargs: dict[str, Any] = {"session_id": session_id}
            if durability is not None:
                kwargs["durability"] = durability
            feature = Persistency(provider, **kwargs)
        _ACTIVE.append(times)
        t, c = time.perf_counter(), time.process_time()
        try:
            if feature is not None:
                feature.attach(manager)
            agents[0].initiate_chat(manager, message=make_text(0, speaker_of(0)), silent=True)
            if feature is not None:
                feature.detach()  # flushes an async writer: part of the run's cost
        finally:
            times.total = time.perf_counter() - t
            times.cpu = time.process_time() - c
            _ACTIVE.pop()
    times.messages = len(groupchat.messages)
    return times


def _checkpoint(session_id: str, messages: list[dict[str, Any]], parent: str | None) -> Checkpoint:
    step = len(messages)
    return Checkpoint.model_construct(
        schema_version=1, checkpoint_id=checkpoint_id_for(1, step), session_id=session_id, run_id=run_id_for(1),
        parent_id=parent, step=step, kind="step", end_reason=None, error=None,
        created_at=utcnow(),
        metadata={"benchmark": True},
        messages=messages,
        agent_states={n: {"name": n, "system_message": f"You are {n}, one of three scripted speakers.",
                          "llm_config": False, "human_input_mode": "NEVER"} for n in AGENTS},
        manager_state={"rounds_used": step, "max_round": 10**6, "last_speaker": messages[-1]["name"]},
    )


def drive_provider(steps: int, provider: PersistencyStorageProvider, *, session_id: str = "bench") -> RunTimes:
    """Replay the stream into ``provider`` directly: one checkpoint per step, each the child of the last."""
    times = RunTimes()
    time_saves(provider, times.saves)
    messages: list[dict[str, Any]] = []
    parent: str | None = None
    t = time.perf_counter()
    for i in range(steps):
        who = speaker_of(i)
        messages.append({"content": make_text(i, who), "role": "user" if i == 0 else "assistant", "name": who})
        cp = _checkpoint(session_id, list(messages), parent)
        times.step_marks.append(time.perf_counter())
        provider.save_checkpoint(cp)
        parent = cp.checkpoint_id
    times.total = time.perf_counter() - t
    times.messages = len(messages)
    return times
