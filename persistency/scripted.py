"""A deterministic model client for AG2: scripted replies, no network, no key.

Registered with AG2's custom model client API, it lets the example, the tests and ``persistency
continue`` run a real group chat offline::

    llm_config = {"config_list": [{"model": "scripted", "model_client_cls": "ScriptedModelClient",
                                   "script": ["first reply", "second reply"]}]}
    agent = ConversableAgent("solver", llm_config=llm_config)
    agent.register_model_client(ScriptedModelClient)

Reply *n* is ``script[n]``, where *n* is how many times the agent has already spoken in the
conversation it is answering (its ``assistant`` messages). The reply depends only on the history,
never on a counter in the process, so a resumed chat answers exactly as the original would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCRIPTED_MODEL", "ScriptedModelClient", "scripted_config"]

SCRIPTED_MODEL = "scripted"


@dataclass
class _Message:
    content: str
    role: str = "assistant"
    function_call: None = None
    tool_calls: None = None


@dataclass
class _Choice:
    message: _Message
    index: int = 0
    finish_reason: str = "stop"


@dataclass
class _Response:
    choices: list[_Choice]
    model: str
    cost: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)


class ScriptedModelClient:
    """AG2 ``ModelClient`` answering from the ``script`` list of its config entry, by turn."""

    RESPONSE_USAGE_KEYS: list[str] = ["prompt_tokens", "completion_tokens", "total_tokens", "cost", "model"]

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        script = config.get("script") or []
        if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
            raise ValueError("ScriptedModelClient needs a 'script' list of strings in its config entry")
        self.script: list[str] = list(script)
        self.model = str(config.get("model", SCRIPTED_MODEL))
        self.when_done = str(config.get("when_done", "I have nothing to add."))

    def create(self, params: dict[str, Any]) -> _Response:
        """The scripted reply for the conversation in ``params["messages"]``."""
        messages = params.get("messages") or []
        turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        text = self.script[turn] if turn < len(self.script) else self.when_done
        return _Response([_Choice(_Message(text))], self.model)

    def message_retrieval(self, response: _Response) -> list[str]:
        """The reply texts."""
        return [c.message.content for c in response.choices]

    def cost(self, response: _Response) -> float:
        """Always free."""
        return 0.0

    @staticmethod
    def get_usage(response: _Response) -> dict[str, Any]:
        """Zero usage, in AG2's shape."""
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "model": response.model}


def scripted_config(script: list[str], **extra: Any) -> dict[str, Any]:
    """An ``llm_config`` dict for an agent answering with ``script`` through `ScriptedModelClient`."""
    entry = {"model": SCRIPTED_MODEL, "model_client_cls": "ScriptedModelClient", "script": list(script), **extra}
    return {"config_list": [entry], "cache_seed": None}
