"""Rebuilding a chat from a checkpoint alone, and continue_chat (what ``persistency continue`` runs).

The original chat is built by code the rebuild never sees; the rebuilt one must carry the same
agents, system messages, termination conditions, code execution settings and histories, take
secrets from the caller or the environment, and continue the session offline."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from autogen import AssistantAgent, ConversableAgent, GroupChat, GroupChatManager, UserProxyAgent

from persistency import (
    Persistency,
    PersistencyStorageProvider,
    ResumeError,
    continue_chat,
    provider_from_url,
    rebuild_chat,
    termination,
)
from persistency.rebuild import acontinue_chat
from persistency.redaction import REDACTED
from persistency.scripted import ScriptedModelClient, scripted_config
from tests.helpers_ag2 import Crash

SCRIPT = {
    "solver": ["step one", "step two", "step three", "step four"],
    "checker": ["looks right", "DONE: 42", "DONE again", "DONE thrice"],
}


def verdict_done(message: dict[str, Any]) -> bool:
    """A truly custom condition (a regular expression): no spec can describe it."""
    return re.match(r"DONE\b", message.get("content") or "") is not None


def original_chat(
    *, api_key: str = "sk-test-abcdefghijklmnop", crash_at: int | None = None, custom_termination: bool = False
) -> tuple[ConversableAgent, GroupChatManager]:
    student = UserProxyAgent(
        "student",
        human_input_mode="NEVER",
        code_execution_config={"work_dir": "coding", "use_docker": False, "timeout": 30},
        default_auto_reply="Please continue.",
        description="Asks questions.",
    )
    experts = []
    for name in ("solver", "checker"):
        agent = AssistantAgent(
            name,
            system_message=f"You are the {name}.",
            llm_config=scripted_config(SCRIPT[name], api_key=api_key),
            is_termination_msg=lambda m: "NEVER_MATCHES" in (m.get("content") or ""),
        )
        agent.register_model_client(ScriptedModelClient)
        experts.append(agent)
    if crash_at is not None:

        def crash(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
            if len(messages or []) + 1 == crash_at:
                raise Crash("down")
            return False, None

        experts[0].register_reply([ConversableAgent, None], crash, position=0)
    gc = GroupChat([student, *experts], messages=[], max_round=12, speaker_selection_method="round_robin")
    cond = verdict_done if custom_termination else termination.contains("DONE")
    manager = GroupChatManager(
        gc, name="boss", system_message="You run the meeting.", llm_config=False, is_termination_msg=cond
    )
    return student, manager


@pytest.fixture
def provider() -> PersistencyStorageProvider:
    return provider_from_url(f"memory://rb-{uuid.uuid4().hex}")


def test_rebuild_restores_agents_settings_and_histories(provider: PersistencyStorageProvider) -> None:
    student, manager = original_chat()
    Persistency(provider, "s").attach(manager)
    student.initiate_chat(manager, message="what is 6*7?", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None and cp.end_reason == "termination_message"
    assert cp.agent_states["solver"]["llm_config"]["config_list"][0]["api_key"] == REDACTED

    chat = rebuild_chat(cp, env={"OPENAI_API_KEY": "sk-from-env-0123456789"})
    assert list(chat.agents) == ["student", "solver", "checker"]
    assert isinstance(chat.agents["student"], UserProxyAgent) and isinstance(chat.agents["solver"], AssistantAgent)
    assert chat.agents["solver"].system_message == "You are the solver."
    assert chat.agents["student"].description == "Asks questions."
    assert chat.agents["student"]._code_execution_config == {"work_dir": "coding", "use_docker": False, "timeout": 30}
    assert chat.agents["solver"].llm_config.config_list[0].api_key.get_secret_value() == "sk-from-env-0123456789"
    assert chat.agents["solver"]._is_termination_msg({"content": "x NEVER_MATCHES"})  # a recognised lambda
    assert chat.manager.name == "boss" and chat.manager.system_message == "You run the meeting."
    assert chat.manager._is_termination_msg({"content": "DONE"}) and not chat.manager._is_termination_msg(
        {"content": "no"}
    )
    assert chat.groupchat.speaker_selection_method == "round_robin" and chat.groupchat.max_round == 12
    assert chat.initiator.name == "student" and chat.opening_message == "what is 6*7?"
    assert [m["content"] for m in chat.groupchat.messages] == [m["content"] for m in cp.messages]
    original = {a.name: {p.name: m for p, m in a.chat_messages.items() if m} for a in [student, manager]}
    rebuilt = {a.name: {p.name: m for p, m in a.chat_messages.items() if m} for a in [chat.initiator, chat.manager]}
    assert rebuilt["boss"].keys() == original["boss"].keys()
    assert chat.warnings == []


def test_secrets_from_the_caller_win_and_missing_ones_are_left_out(provider: PersistencyStorageProvider) -> None:
    student, manager = original_chat()
    Persistency(provider, "s").attach(manager)
    student.initiate_chat(manager, message="q", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None
    chat = rebuild_chat(cp, secrets={"checker.api_key": "sk-checker-0123456789"}, env={})
    assert chat.agents["checker"].llm_config.config_list[0].api_key.get_secret_value() == "sk-checker-0123456789"
    assert chat.agents["solver"].llm_config.config_list[0].api_key is None
    assert any("solver" in w and "api_key" in w for w in chat.warnings)


def test_custom_termination_is_reported_not_guessed(provider: PersistencyStorageProvider) -> None:
    student, manager = original_chat(custom_termination=True)
    Persistency(provider, "s").attach(manager)
    student.initiate_chat(manager, message="q", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None and cp.manager_state["termination"]["kind"] == "custom"
    with pytest.raises(ResumeError, match="custom code"):
        rebuild_chat(cp)
    chat = rebuild_chat(cp, termination={"boss": verdict_done})
    assert chat.manager._is_termination_msg({"content": "DONE!"})
    lenient = rebuild_chat(cp, strict=False)
    assert any("boss" in w for w in lenient.warnings)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_continue_chat_finishes_an_interrupted_run_from_storage_alone(storage_url: str, is_async: bool) -> None:
    provider = provider_from_url(storage_url)
    ref_provider = provider_from_url(f"memory://ref-{uuid.uuid4().hex}")
    student, manager = original_chat()
    Persistency(ref_provider, "ref").attach(manager)
    student.initiate_chat(manager, message="what is 6*7?", silent=True)
    reference = [m["content"] for m in manager.groupchat.messages]

    student, manager = original_chat(crash_at=5)
    Persistency(provider, "s").attach(manager)
    with pytest.raises(Crash):
        student.initiate_chat(manager, message="what is 6*7?", silent=True)
    if is_async:
        chat = asyncio.run(acontinue_chat(provider, "s"))
    else:
        chat = continue_chat(provider, "s")
    assert [m["content"] for m in chat.groupchat.messages] == reference
    end = provider.get_latest_checkpoint("s")
    assert end is not None and end.run_id == "run-000001" and end.end_reason == "termination_message"

    with pytest.raises(ResumeError, match="finished"):
        continue_chat(provider, "s")  # nothing left to continue without a new message
    chat = continue_chat(provider, "s", message="and 7*8?")
    assert chat.groupchat.messages[len(reference)]["content"] == "and 7*8?"
    assert provider.get_latest_checkpoint("s").run_id == "run-000002"  # type: ignore[union-attr]


def test_continue_chat_on_an_empty_session(provider: PersistencyStorageProvider) -> None:
    with pytest.raises(ResumeError, match="no checkpoints"):
        continue_chat(provider, "nothing-here")


def test_rebuild_keeps_the_auto_speaker_selection_model(provider: PersistencyStorageProvider) -> None:
    from tests.helpers_ag2 import build_chat
    from tests.test_feature_resume import CyclingSelector

    config = scripted_config(["unused"], model_client_cls="CyclingSelector", api_key="sk-selector-0123456789")
    chat = build_chat(
        speaker_selection_method="auto",
        groupchat_kwargs={
            "select_speaker_auto_llm_config": config,
            "select_speaker_auto_model_client_cls": CyclingSelector,
        },
    )
    Persistency(provider, "s").attach(chat.manager)
    chat.user.initiate_chat(chat.manager, message="hi", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None
    stored = cp.manager_state["groupchat"]["select_speaker_auto_llm_config"]
    assert stored["config_list"][0]["api_key"] == REDACTED
    with pytest.raises(ResumeError, match="CyclingSelector"):
        rebuild_chat(cp)
    rebuilt = rebuild_chat(cp, model_clients=[CyclingSelector], env={"OPENAI_API_KEY": "sk-env-0123456789"})
    assert rebuilt.groupchat.speaker_selection_method == "auto"
    assert rebuilt.groupchat.select_speaker_auto_model_client_cls == [CyclingSelector]


def test_a_partly_redacted_value_is_replaced_from_secrets_or_reported(provider: PersistencyStorageProvider) -> None:
    student, manager = original_chat()
    manager.groupchat.agents[1].llm_config.config_list[0].base_url = "https://bob:pw-0123456789@llm.example/v1"
    Persistency(provider, "s").attach(manager)
    student.initiate_chat(manager, message="q", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None
    assert cp.agent_states["solver"]["llm_config"]["config_list"][0]["base_url"].startswith(f"https://bob:{REDACTED}@")
    with pytest.raises(ResumeError, match=r"solver: 'base_url' has a redacted part"):
        rebuild_chat(cp, env={})  # strict: never a URL with a masked password
    chat = rebuild_chat(cp, env={}, strict=False)
    assert any("solver" in w and "base_url" in w for w in chat.warnings)
    url = "https://bob:pw-0123456789@llm.example/v1"
    chat = rebuild_chat(cp, env={}, secrets={"solver.base_url": url, "api_key": "sk-any-0123456789"})
    assert str(chat.agents["solver"].llm_config.config_list[0].base_url) == url
