"""Concurrent workers as real processes: two start the same unfinished session at once.

``tests/test_feature_durability.py`` races threads of one process; here each worker is its own
forked process with its own provider and client connections, on every persistent backend. A run
is SIGKILLed after step 3; both workers read the session before either writes (a cross-process
barrier). Exactly one finishes the run; the other stops with `CheckpointConflictError` naming the
session and the checkpoint, before any model call; every stored checkpoint is a prefix of the
winner's transcript (each worker tags its replies, so an interleaved history would show).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.campaign import race_trial

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the workers are forked processes")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("backend", ["file", "redis", "redis_cluster", "s3"])
def test_two_worker_processes_exactly_one_continues(
    backend: str, is_async: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "store") if backend == "file" else str(request.getfixturevalue(f"{backend}_url"))
    result = race_trial(backend, url, "shared", is_async=is_async)
    assert sorted(result.outcomes) == ["conflict", "done"]
    assert result.loser_calls == []  # stopped before any agent was asked for a reply
    assert "'shared'" in result.loser_message and "000001-0000003-end1" in result.loser_message
    assert result.conflict_reported
