"""Every message AG2 accepts is storable: lone surrogates round-trip, never a stopped chat (#10 item 7).

The codec stores unpaired code units escaped (p14's part); the feature's part is that no step is
lost and no chat stops for them, and that a resume gives them back exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from autogen import Agent

from persistency import Persistency
from tests.helpers_ag2 import Chat, Faults, build_chat, histories

LONE = "half an emoji \ud83d, a low one \udc00 and a pair \U0001f600"


def _chat(faults: Faults | None = None) -> Chat:
    chat = build_chat(max_round=6, faults=faults)

    def odd(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        if len(chat.groupchat.messages) + 1 == 3:
            if faults is not None:
                faults.check(3)
            return True, LONE
        return False, None

    chat.agents[1].register_reply([Agent, None], odd, position=0)
    return chat


def test_the_scripted_helpers_accept_lone_surrogates() -> None:
    chat = _chat()
    chat.user.initiate_chat(chat.manager, message="hi \ud800", silent=True)  # plain AG2 handles it
    assert chat.transcript()[2]["content"] == LONE


@pytest.mark.parametrize("on_error", ["raise", "continue"])
def test_a_lone_surrogate_is_stored_and_resumed_exactly(tmp_path: Path, on_error: str) -> None:
    plain = _chat()
    plain.user.initiate_chat(plain.manager, message="hi \ud800", silent=True)
    crashed = _chat(Faults(raise_at=5))
    with Persistency(f"file://{tmp_path}", "s", on_error=on_error).attach(crashed.manager) as feature:  # type: ignore[arg-type]
        with pytest.raises(RuntimeError):
            crashed.user.initiate_chat(crashed.manager, message="hi \ud800", silent=True)
        assert feature.lost_checkpoints == []
        latest = feature.latest()
    assert latest is not None and latest.messages[2]["content"] == LONE and latest.messages[0]["content"] == "hi \ud800"
    resumed = _chat()
    with Persistency(f"file://{tmp_path}", "s").attach(resumed.manager) as feature:
        resumed.user.initiate_chat(resumed.manager, message="hi \ud800", silent=True)
        end = feature.latest()
    assert resumed.transcript() == plain.transcript()
    assert histories(resumed) == histories(plain)
    assert end is not None and end.run_complete and len(end.messages) == 6
