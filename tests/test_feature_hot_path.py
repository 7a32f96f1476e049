"""The hot path is flat: a step's checkpoint costs the same at step 1,000 as at step 10.

Checked structurally (the record a step writes does not grow with the transcript) and by time
(the after-step hook, building and storing, at the end of a long run vs. at its start)."""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from autogen import Agent

from persistency import Persistency, provider_from_url
from persistency.feature._run import Run
from tests.fs_records import record_file
from tests.helpers_ag2 import build_chat

N = 600


def long_chat(provider: Any) -> Any:
    chat = build_chat(max_round=N, silent=True)

    def reply(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
        return True, f"{recipient.name} {len(messages or []):04d} " + "x" * 400  # same size at every step

    for agent in [chat.user, *chat.agents]:
        agent.register_reply([Agent, None], reply, position=0)
    Persistency(provider, "flat").attach(chat.manager)
    return chat


def test_record_size_does_not_grow_with_the_transcript(tmp_path: Path) -> None:
    chat = long_chat(provider_from_url(str(tmp_path / "store")))
    chat.user.initiate_chat(chat.manager, message="go", silent=True)
    sizes = {n: record_file(tmp_path / "store", "flat", f"000001-{n:07d}").stat().st_size for n in (10, 300, N)}
    assert max(sizes.values()) - min(sizes.values()) < 200, sizes  # only the counters' digits differ


def test_after_step_hook_time_is_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    times: list[float] = []
    original = Run.on_append

    def timed(self: Run, speaker: Agent) -> None:
        started = time.perf_counter()
        original(self, speaker)
        times.append(time.perf_counter() - started)

    monkeypatch.setattr(Run, "on_append", timed)
    chat = long_chat(provider_from_url(f"memory://flat-{uuid.uuid4().hex}"))
    chat.user.initiate_chat(chat.manager, message="go", silent=True)
    early, late = statistics.median(times[10:60]), statistics.median(times[-50:])
    assert late < 3 * early + 0.0005, f"step ~{N}: {late * 1e3:.3f} ms vs step ~30: {early * 1e3:.3f} ms"
