"""Objects a checkpoint cannot hold come back only from the caller, never replaced silently.

``response_format`` (a pydantic class), a code executor object, and a ``base_url`` whose query
carries a key (stored URL-encoded and masked): strict refuses naming all three in one error,
lenient warns about each, and the caller's values restore them exactly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat, GroupChatManager
from autogen.coding import LocalCommandLineCodeExecutor
from pydantic import BaseModel

from persistency import Persistency, ResumeError, provider_from_url, rebuild_chat
from persistency.models import Checkpoint
from persistency.scripted import ScriptedModelClient, scripted_config

KEY = "sk-query-0123456789abcdef"
URL = f"https://llm.example/v1?api-key={KEY}&region=eu"


class Answer(BaseModel):
    value: int


def stored(tmp_path: Path) -> Checkpoint:
    config = scripted_config(["forty-two"], api_key="sk-abcdefghijklmnop0123", base_url=URL)
    config["response_format"] = Answer
    solver = ConversableAgent(
        "solver",
        llm_config=config,
        human_input_mode="NEVER",
        code_execution_config={"executor": LocalCommandLineCodeExecutor(work_dir=str(tmp_path / "code"))},
    )
    solver.register_model_client(ScriptedModelClient)
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", default_auto_reply="ok")
    manager = GroupChatManager(
        GroupChat([user, solver], messages=[], max_round=2, speaker_selection_method="round_robin"), llm_config=False
    )
    provider = provider_from_url(f"memory://objects-{uuid.uuid4().hex}")
    Persistency(provider, "s").attach(manager)
    user.initiate_chat(manager, message="6*7?", silent=True)
    cp = provider.get_latest_checkpoint("s")
    assert cp is not None and KEY not in cp.model_dump_json()
    return cp


def test_strict_refuses_naming_every_object(tmp_path: Path) -> None:
    cp = stored(tmp_path)
    with pytest.raises(ResumeError) as info:
        rebuild_chat(cp, env={"OPENAI_API_KEY": "sk-env-0123456789"})
    text = str(info.value)
    assert "solver: response_format" in text and "response_formats=" in text
    assert "solver: code_execution_config['executor']" in text and "LocalCommandLineCodeExecutor" in text
    assert "solver: 'base_url' has a redacted part" in text
    assert KEY not in text


def test_lenient_warns_about_each_and_turns_code_execution_off(tmp_path: Path) -> None:
    cp = stored(tmp_path)
    chat = rebuild_chat(cp, env={"OPENAI_API_KEY": "sk-env-0123456789"}, strict=False)
    solver = chat.agents["solver"]
    joined = "\n".join(chat.warnings)
    assert "response_format" in joined and "code execution turned off" in joined and "base_url" in joined
    assert solver._code_execution_config is False  # not AG2's default (a Docker executor) in its place
    assert solver.llm_config.get("response_format") is None


def test_the_callers_objects_restore_them(tmp_path: Path) -> None:
    cp = stored(tmp_path)
    executor = LocalCommandLineCodeExecutor(work_dir=str(tmp_path / "again"))
    chat = rebuild_chat(
        cp,
        env={"OPENAI_API_KEY": "sk-env-0123456789"},
        secrets={"solver.base_url": URL},
        code_executors={"solver": executor},
        response_formats={"solver": Answer},
    )
    solver = chat.agents["solver"]
    assert chat.warnings == []
    assert solver.code_executor is executor
    assert solver.llm_config.get("response_format") is Answer
    entry: Any = solver.llm_config.config_list[0]
    assert str(entry.base_url) == URL
