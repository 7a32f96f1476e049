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

A script entry may also be a tool call, ``{"tool": "classify", "arguments": {...}}`` (optionally
with ``"content"``), for pattern chats with tools and LLM handoffs. Options of the config entry:
``"digest": True`` appends a hash of the history the reply answered (so two runs give equal
replies only if the agent saw the same history), and ``"call_log": path`` appends one line per
model call to a file (to count calls across processes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCRIPTED_MODEL", "ScriptedModelClient", "history_digest", "scripted_config"]

SCRIPTED_MODEL = "scripted"


@dataclass
class _Message:
    content: str | None
    role: str = "assistant"
    function_call: None = None
    tool_calls: list[dict[str, Any]] | None = None

    def model_dump(self) -> dict[str, Any]:
        """The message as AG2 stores a tool-call reply (AG2 calls this on non-text replies)."""
        out: dict[str, Any] = {"content": self.content, "role": self.role}
        if self.tool_calls:
            out["tool_calls"] = [dict(c, function=dict(c["function"])) for c in self.tool_calls]
        return out


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
        if not isinstance(script, list) or not all(_valid_entry(s) for s in script):
            raise ValueError(
                "ScriptedModelClient needs a 'script' list of strings or {'tool': name, 'arguments': {...}} "
                "entries in its config entry"
            )
        self.script: list[str | dict[str, Any]] = list(script)
        self.model = str(config.get("model", SCRIPTED_MODEL))
        self.when_done = str(config.get("when_done", "I have nothing to add."))
        self.digest = bool(config.get("digest", False))
        speaker = config.get("speaker")
        self.speaker = str(speaker) if speaker else None
        log = config.get("call_log")
        self.call_log = str(log) if log else None

    def create(self, params: dict[str, Any]) -> _Response:
        """The scripted reply for the conversation in ``params["messages"]``."""
        messages = params.get("messages") or []
        turn = sum(1 for m in messages if self._own(m))
        entry = self.script[turn] if turn < len(self.script) else self.when_done
        if self.call_log is not None:
            with open(self.call_log, "a", encoding="utf-8") as fh:
                fh.write(f"{self.model} {turn}\n")
        seen = f" [saw {history_digest(messages)}]" if self.digest else ""
        if isinstance(entry, str):
            return _Response([_Choice(_Message(entry + seen))], self.model)
        call = {
            "id": f"call_{turn}_{history_digest(messages)}",
            "type": "function",
            "function": {"name": entry["tool"], "arguments": json.dumps(entry.get("arguments") or {}, sort_keys=True)},
        }
        content = entry.get("content")
        return _Response([_Choice(_Message(content, tool_calls=[call]), finish_reason="tool_calls")], self.model)

    def _own(self, message: object) -> bool:
        """A message this agent spoke: an ``assistant`` message, in a group chat also under its name."""
        if not isinstance(message, dict) or message.get("role") != "assistant":
            return False
        return self.speaker is None or message.get("name") in (None, self.speaker)

    def message_retrieval(self, response: _Response) -> list[str | dict[str, Any]]:
        """The reply texts, or the message with its tool calls."""
        out: list[str | dict[str, Any]] = []
        for c in response.choices:
            if c.message.tool_calls:
                out.append({"content": c.message.content, "role": "assistant", "tool_calls": c.message.tool_calls})
            else:
                out.append(c.message.content or "")
        return out

    def cost(self, response: _Response) -> float:
        """Always free."""
        return 0.0

    @staticmethod
    def get_usage(response: _Response) -> dict[str, Any]:
        """Zero usage, in AG2's shape."""
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "model": response.model}


def _valid_entry(entry: object) -> bool:
    if isinstance(entry, str):
        return True
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("tool"), str)
        and isinstance(entry.get("arguments", {}), dict)
        and (entry.get("content") is None or isinstance(entry.get("content"), str))
    )


def history_digest(messages: list[Any]) -> str:
    """A short hash of what a model was sent: role, name, content and tool calls of each message."""
    rows = [
        (m.get("role"), m.get("name"), m.get("content"), m.get("tool_calls"), m.get("tool_call_id"))
        for m in messages
        if isinstance(m, dict)
    ]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:8]


def scripted_config(script: list[str | dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """An ``llm_config`` dict for an agent answering with ``script`` through `ScriptedModelClient`."""
    entry = {"model": SCRIPTED_MODEL, "model_client_cls": "ScriptedModelClient", "script": list(script), **extra}
    return {"config_list": [entry], "cache_seed": None}


def keep_registered(agent: Any) -> None:
    """Register `ScriptedModelClient` on ``agent`` now and whenever AG2 rebuilds its client.

    Group patterns re-add an agent's handoff functions before each reply, which rebuilds its
    model client from the config and drops a custom client; this re-registers it (AG2's own
    ``update_agent_state`` hook, run after the pattern's).
    """

    def reregister(target: Any, messages: Any) -> None:
        client = getattr(target, "client", None)
        clients = getattr(client, "_clients", None) or []
        if any(type(c).__name__ == "PlaceHolderClient" for c in clients):
            target.register_model_client(ScriptedModelClient)

    agent.register_model_client(ScriptedModelClient)
    agent.register_hook("update_agent_state", reregister)
