"""``persistency continue`` offline: a feature-written chat of scripted model clients is rebuilt from
its checkpoint alone and runs on as a new run of the same session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import provider_from_url
from persistency.feature import Persistency
from persistency.scripted import ScriptedModelClient, scripted_config
from tests.test_cli import SECRET, assert_one_line_error, run


class Boom(RuntimeError):
    """An agent failing in the original process (the rebuilt chat has no such fault)."""


def chat_session(url: str, session: str, *, max_round: int, fail_at: int | None = None) -> list[dict[str, Any]]:
    """Run a three-agent round-robin chat of scripted model clients under the feature; its transcript."""
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", code_execution_config=False)
    agents = []
    for name in ("alice", "bob"):
        agent = ConversableAgent(name, system_message=f"You are {name}.", human_input_mode="NEVER",
                                 llm_config=scripted_config([f"{name} says {i}" for i in range(20)], api_key=SECRET))
        agent.register_model_client(ScriptedModelClient)  # type: ignore[arg-type]
        agents.append(agent)
    if fail_at is not None:
        def fail(recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            if len(messages or []) + 1 >= fail_at:
                raise Boom(f"failure before step {fail_at}")
            return False, None

        agents[0].register_reply([Agent, None], fail, position=0)
    gc = GroupChat(agents=[user, *agents], messages=[], max_round=max_round, speaker_selection_method="round_robin")
    manager = GroupChatManager(gc, name="manager", llm_config=False)
    feature = Persistency(provider_from_url(url), session, metadata={"problem": "2+2"}).attach(manager)
    try:
        user.initiate_chat(manager, message="What is 2+2?", silent=True)
    except Boom:
        pass
    finally:
        feature.detach()
    return [dict(m) for m in gc.messages]


def _content(messages: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(m.get("name"), m.get("content")) for m in messages]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def test_a_finished_run_continues_with_a_new_message(store: str) -> None:
    chat_session(store, "math", max_round=4)
    refused = run("continue", "math", "--rounds", "3", "-u", store)
    assert_one_line_error(refused, "is finished (max_rounds)", "--message")

    r = run("continue", "math", "--rounds", "3", "--message", "And 3+3?", "-u", store, "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()  # stdout is the report alone: AG2's own printing is kept off it
    assert out["run_id"] == "run-000002" and out["end_reason"] == "max_rounds"
    assert _content(out["messages"]) == [("user", "And 3+3?"), ("alice", "alice says 1"), ("bob", "bob says 1")]
    p = provider_from_url(store)
    new = p.list_checkpoints("math", run_id="run-000002")
    assert new[0].parent_id == "000001-0000004-end1"
    assert [i.step for i in new] == [5, 6, 7, 7]
    latest = p.get_latest_checkpoint("math")
    assert latest is not None and latest.run_complete and len(latest.messages) == 7
    assert SECRET not in run("show", "math", "latest", "-u", store).stdout


def test_a_failed_run_continues_where_it_stopped(store: str) -> None:
    reference = chat_session(store, "ref", max_round=7)
    chat_session(store, "s", max_round=7, fail_at=5)
    p = provider_from_url(store)
    latest = p.get_latest_checkpoint("s")
    assert latest is not None and latest.end_reason == "error" and latest.step == 4
    r = run("continue", "s", "--rounds", "3", "-u", store)
    assert r.exit_code == 0, r.stderr
    assert "run-000002" in r.stdout and "bob says 1" in r.stdout
    final = p.get_latest_checkpoint("s")
    assert final is not None and final.run_id == "run-000002"
    assert _content(final.messages) == _content(reference)


def test_continue_from_an_earlier_checkpoint_branches(store: str) -> None:
    chat_session(store, "math", max_round=6)
    r = run("continue", "math", "000001-0000002", "--rounds", "2", "-u", store, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["checkpoints"][0] == "000002-0000003"
    runs = run("show", "math", "-u", store, "--json").json()["runs"]
    assert runs[1]["branch"] is True and runs[1]["origin_checkpoint"] == "000001-0000002"
    assert runs[0]["status"] == "finished"  # the original run is untouched


def test_continue_errors_are_one_line(store: str) -> None:
    chat_session(store, "math", max_round=3)
    assert_one_line_error(run("continue", "nope", "-u", store), "no session 'nope'")
    assert_one_line_error(run("continue", "math", "000009-0000009", "-u", store), "no checkpoint")
    assert run("continue", "math", "--rounds", "0", "-u", store).exit_code == 2
