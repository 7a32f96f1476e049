"""Attaching to a group Pattern: invisible when nothing crashes, AG2's own resume kept, detach undoes it.

Also what a resume cannot restore (#10 item 8): random selection and custom selection functions
are named in one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from persistency import Persistency, PersistencyError
from persistency.feature._pattern import PatternHook
from tests import helpers_pattern as hp


def _plain_and_attached(kind: str, entry: str, tmp: Path, question: Any = hp.QUESTION) -> tuple[Any, Any, Any]:
    plain = hp.build(kind, str(tmp / "plain.log"))
    plain_out = hp.drive(plain, entry, question)
    attached = hp.build(kind, str(tmp / "attached.log"))
    feature = Persistency(f"file://{tmp / 'store'}", "s").attach(attached)
    out = hp.drive(attached, entry, question)
    return (plain, plain_out), (attached, out), feature


@pytest.mark.parametrize("entry", hp.ENTRIES)
@pytest.mark.parametrize("kind", ["default", "round_robin", "auto"])
def test_a_pattern_chat_that_never_crashes_is_plain_ag2(tmp_path: Path, kind: str, entry: str) -> None:
    (plain, plain_out), (attached, out), feature = _plain_and_attached(kind, entry, tmp_path)
    assert out == plain_out
    assert attached.context_variables.to_dict() == plain.context_variables.to_dict()
    assert hp.calls(str(tmp_path / "attached.log")) == hp.calls(str(tmp_path / "plain.log"))
    latest = feature.latest()
    assert latest is not None and latest.run_complete
    spec = latest.manager_state["pattern"]
    kinds = {"default": "DefaultPattern", "round_robin": "RoundRobinPattern", "auto": "AutoPattern"}
    assert spec["kind"] == kinds[kind] and spec["agents"] == [a.name for a in attached.agents]
    assert spec["initial_agent"] == attached.initial_agent.name
    assert latest.manager_state["pattern_state"]["context_variables"] == attached.context_variables.to_dict()
    assert [m["content"] for m in latest.messages] == [m["content"] for m in feature.manager.groupchat.messages]


def test_a_second_chat_on_the_same_pattern_is_plain_ag2(tmp_path: Path) -> None:
    def twice(pattern: Any) -> list[Any]:
        return [hp.drive(pattern, "initiate"), hp.drive(pattern, "initiate", "And my address?")]

    plain = hp.build("default", str(tmp_path / "plain.log"))
    expected = twice(plain)
    attached = hp.build("default", str(tmp_path / "attached.log"))
    with Persistency(f"file://{tmp_path / 'store'}", "s").attach(attached) as feature:
        assert twice(attached) == expected
        assert len({c.run_id for c in feature.checkpoints()}) == 2
    assert attached.context_variables.to_dict() == plain.context_variables.to_dict()


@pytest.mark.parametrize("entry", ["initiate", "a_initiate"])
def test_ag2_resume_with_messages_on_an_empty_session_is_plain_ag2_and_stored(tmp_path: Path, entry: str) -> None:
    saved = [
        {"role": "user", "name": "customer", "content": hp.QUESTION},
        {"role": "user", "name": "triage", "content": "Let me look at order 42."},
        {"role": "user", "name": "customer", "content": "Thanks, it was $30."},
    ]
    (_plain, plain_out), (_attached, out), feature = _plain_and_attached("default", entry, tmp_path, saved)
    assert out == plain_out
    latest = feature.latest()
    assert latest is not None
    assert [m["content"] for m in latest.messages[:3]] == [m["content"] for m in saved]
    assert latest.messages == [dict(m) for m in feature.manager.groupchat.messages]


def test_detach_gives_the_pattern_back(tmp_path: Path) -> None:
    pattern = hp.build("round_robin", str(tmp_path / "calls.log"))
    feature = Persistency(f"file://{tmp_path / 'store'}", "s").attach(pattern)
    assert feature.pattern is pattern and "prepare_group_chat" in pattern.__dict__
    with pytest.raises(PersistencyError):
        PatternHook(pattern, lambda m: None)  # one Persistency per pattern
    feature.detach()
    assert "prepare_group_chat" not in pattern.__dict__ and feature.pattern is None and feature.manager is None
    hp.drive(pattern, "initiate")
    assert feature.checkpoints() == []  # plain AG2: nothing stored


def test_attach_refuses_what_it_cannot_attach(tmp_path: Path) -> None:
    feature = Persistency(f"file://{tmp_path / 'store'}", "s")
    with pytest.raises(TypeError, match="GroupChatManager or a group Pattern"):
        feature.attach(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["random", "custom"])
def test_a_resume_names_the_selection_it_cannot_restore_in_one_warning(
    tmp_path: Path, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers_ag2 import Faults, build_chat

    def custom(last: Any, groupchat: Any) -> Any:
        return groupchat.agents[(groupchat.agents.index(last) + 1) % len(groupchat.agents)]

    selection: Any = "random" if method == "random" else custom
    crashed = build_chat(max_round=6, faults=Faults(raise_at=3), speaker_selection_method=selection)
    with Persistency(f"file://{tmp_path}", "s").attach(crashed.manager), pytest.raises(RuntimeError):
        crashed.user.initiate_chat(crashed.manager, message="hi", silent=True)
    resumed = build_chat(max_round=6, speaker_selection_method=selection)
    with caplog.at_level(logging.WARNING, logger="persistency"), Persistency(f"file://{tmp_path}", "s").attach(
        resumed.manager
    ):
        resumed.user.initiate_chat(resumed.manager, message="hi", silent=True)
    warnings = [r for r in caplog.records if "next speakers may differ" in r.getMessage()]
    assert len(warnings) == 1
    assert ("random" if method == "random" else "custom") in warnings[0].getMessage()
