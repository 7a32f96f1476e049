"""What an owned step costs on S3 (#15), counted at the test's moto server: the generation read the
feature makes before each save, then the save's conditional PUT (S3 has no cross-object condition to
fold it into; docs/reliability.md, limit 4)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from autogen import Agent

from persistency import Persistency, provider_from_url
from tests.helpers_ag2 import build_chat
from tests.servers.s3_server import S3Server

ROUNDS = 8


@pytest.fixture
def prefix(s3_server: S3Server) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex}"
    yield name
    s3_server.clear(name)


def test_an_owned_step_is_the_generation_read_and_the_put(s3_server: S3Server, prefix: str) -> None:
    provider = provider_from_url(s3_server.url(prefix))
    assert not getattr(provider, "checks_generation_on_write", False)  # the feature reads it itself
    chat = build_chat(max_round=ROUNDS, silent=True)
    marks: list[int] = []

    def mark(recipient: Any, messages: Any = None, sender: Agent | None = None, config: Any = None) -> Any:
        marks.append(s3_server.mark())
        return False, None

    for agent in [chat.user, *chat.agents]:
        agent.register_reply([Agent, None], mark, position=0)
    Persistency(provider, "owned").attach(chat.manager)
    try:
        chat.user.initiate_chat(chat.manager, message="go", silent=True)
    finally:
        provider.close()
    steps = [s3_server.requests[a:b] for a, b in itertools.pairwise(marks)]  # every request of each step
    assert len(steps) == ROUNDS - 2
    for used in steps:
        assert [(r.method, ".generations/" in r.path) for r in used] == [("GET", True), ("PUT", False)], used
