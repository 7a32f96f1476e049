"""Capture and restore: AG2 objects to checkpoint state and back, with no storage I/O.

Capture reads what a checkpoint keeps of each agent and of the manager (secrets redacted, JSON
only). Restore rebuilds every agent's conversation with the manager from the transcript, the way
AG2's own loop built it (speaker -> manager, manager -> everyone else), so per-agent histories are
never stored twice. Nothing here fires the feature's step hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import _ag2, termination
from persistency.rebuild._tools import capture_functions
from persistency.redaction import redact, redact_llm_config, secret_values

__all__ = [
    "agent_state",
    "chat_secrets",
    "groupchat_state",
    "manager_base_state",
    "restore_histories",
    "speaker_selection_state",
]

_AG2_CLASSES = frozenset({"ConversableAgent", "AssistantAgent", "UserProxyAgent", "GroupChatManager"})


def _class_name(agent: object) -> str:
    cls = type(agent)
    return (
        cls.__name__
        if cls.__module__.startswith("autogen.") and cls.__name__ in _AG2_CLASSES
        else (f"{cls.__module__}.{cls.__qualname__}")
    )


def _json_text(value: Any) -> Any:
    """A system message / description / default reply as JSON (str, list of parts, or a description)."""
    return redact(value)


def agent_state(agent: Agent, *, participant: bool = True) -> dict[str, Any]:
    """What a checkpoint keeps of one agent: configuration, redacted, JSON only."""
    state: dict[str, Any] = {
        "name": agent.name,
        "class": _class_name(agent),
        "participant": participant,
        "description": _json_text(getattr(agent, "description", None)),
    }
    if isinstance(agent, ConversableAgent):
        settings = _ag2.agent_settings(agent)
        state.update(
            {
                "system_message": _json_text(agent.system_message),
                "llm_config": redact_llm_config(agent.llm_config),
                "human_input_mode": agent.human_input_mode,
                "termination": termination.describe(_ag2.termination_check(agent)),
                "code_execution_config": redact(settings["code_execution_config"]),
                "max_consecutive_auto_reply": settings["max_consecutive_auto_reply"],
                "default_auto_reply": _json_text(settings["default_auto_reply"]),
                "functions": capture_functions(agent),
            }
        )
    return state


def speaker_selection_state(method: Any) -> Any:
    """The speaker selection method as JSON: its name, or ``{"custom": qualname}`` for a function."""
    if isinstance(method, str):
        return method
    name = getattr(method, "__qualname__", None) or type(method).__qualname__
    return {"custom": str(name), "module": str(getattr(method, "__module__", "?")), "restorable": False}


def groupchat_state(groupchat: GroupChat) -> dict[str, Any]:
    """The group chat's settings a rebuild needs (participants in order, selection, limits)."""
    allow_repeat = groupchat.allow_repeat_speaker
    transitions = groupchat.allowed_or_disallowed_speaker_transitions
    return {
        "agents": [a.name for a in groupchat.agents],
        "max_round": groupchat.max_round,
        "admin_name": groupchat.admin_name,
        "speaker_selection_method": speaker_selection_state(groupchat.speaker_selection_method),
        "allow_repeat_speaker": ([a.name for a in allow_repeat] if isinstance(allow_repeat, list) else allow_repeat),
        "allowed_or_disallowed_speaker_transitions": (
            {str(getattr(k, "name", k)): [str(getattr(a, "name", a)) for a in v] for k, v in transitions.items()}
            if transitions
            else None
        ),
        "speaker_transitions_type": groupchat.speaker_transitions_type,
        "func_call_filter": groupchat.func_call_filter,
        "send_introductions": groupchat.send_introductions,
        "enable_clear_history": groupchat.enable_clear_history,
        "max_retries_for_selecting_speaker": groupchat.max_retries_for_selecting_speaker,
        "role_for_select_speaker_messages": groupchat.role_for_select_speaker_messages,
        "select_speaker_auto_llm_config": redact_llm_config(groupchat.select_speaker_auto_llm_config),
    }


def manager_base_state(manager: GroupChatManager, groupchat: GroupChat) -> dict[str, Any]:
    """The manager's state that does not change during a run (the counters are added per step)."""
    return {
        "name": manager.name,
        "class": _class_name(manager),
        "description": _json_text(manager.description),
        "system_message": _json_text(manager.system_message),
        "llm_config": redact_llm_config(manager.llm_config),
        "termination": termination.describe(_ag2.termination_check(manager)),
        "groupchat": groupchat_state(groupchat),
        "max_round": groupchat.max_round,
        "speaker_selection_method": speaker_selection_state(groupchat.speaker_selection_method),
    }


def chat_secrets(manager: GroupChatManager, agents: Iterable[Agent]) -> frozenset[str]:
    """Every secret in the chat's llm_configs, to scrub from free text (error messages) before storing."""
    configs = [getattr(a, "llm_config", None) for a in agents]
    configs.append(manager.llm_config)
    gc = getattr(manager, "groupchat", None)
    if gc is not None:
        configs.append(getattr(gc, "select_speaker_auto_llm_config", None))
    return secret_values(*configs)


def _as_sent(message: dict[str, Any]) -> dict[str, Any]:
    """The message as its speaker sent it, before ``GroupChat.append`` changed it.

    ``append`` names the speaker and turns a ``None`` content into ``"None"`` (``str(None)``); a
    tool or function call keeps neither in the speaker's own history (AG2 adds no name to a call).
    """
    if not (message.get("tool_calls") or message.get("function_call")):
        return message
    sent = {k: v for k, v in message.items() if k != "name"}
    if sent.get("content") == "None":
        sent["content"] = None
    return sent


class _Replayer:
    """Puts transcript messages into the histories the way the group chat loop did, in one pass.

    AG2 turns a message into one entry per conversation (``_append_oai_message``); the entries of
    one message differ only by role and, for a message without a name, by the sender's name. Each
    distinct entry is made once per message with AG2's own conversion and copied (a shallow copy,
    as AG2's entries share their values) into the other conversations, so the work per message is
    two conversions plus one dict copy per agent, not one conversion per agent and side. When an
    agent overrides ``_append_oai_message`` each entry goes through that agent, as in AG2.
    """

    def __init__(self, manager: GroupChatManager, participants: Sequence[Agent]) -> None:
        self.manager = manager
        self.participants = list(participants)
        self.others = [a for a in participants if isinstance(a, ConversableAgent)]
        self.entry = _ag2.oai_normalizer([manager, *self.others])
        self.conversions = 0
        """Messages converted with AG2's conversion (a property the tests count)."""

    def _made(
        self, cache: dict[tuple[str, str | None], dict[str, Any] | None], message: dict[str, Any], role: str, name: str
    ) -> dict[str, Any] | None:
        """AG2's entry for ``message`` in a conversation (None: AG2 appends nothing), made once per
        message and role (and sender name, which only a message without a name takes)."""
        assert self.entry is not None
        key = (role, name if message.get("name") is None else None)
        if key not in cache:
            self.conversions += 1
            cache[key] = self.entry(message, role, name)
        return cache[key]

    def replay(
        self, message: dict[str, Any], speaker: Agent | None, *, send: bool = True, broadcast: bool = True
    ) -> None:
        """One transcript message: ``send``, the speaker's send to the manager (before the loop
        appended it); ``broadcast``, the manager's copies to everyone else (after the append)."""
        manager = self.manager
        if self.entry is None:
            self._replay_through_agents(message, speaker, send=send, broadcast=broadcast)
            return
        cache: dict[tuple[str, str | None], dict[str, Any] | None] = {}
        conversations = _ag2.oai_messages(manager)
        if send and isinstance(speaker, ConversableAgent) and speaker is not manager:
            sent = _as_sent(message)
            mine = self._made(cache if sent is message else {}, sent, "assistant", speaker.name)
            if mine is not None:
                _ag2.oai_messages(speaker)[manager].append(dict(mine))
            theirs = self._made(cache, message, "user", speaker.name)
            if theirs is not None:
                conversations[speaker].append(dict(theirs))
        if broadcast:
            out = back = None
            for agent in self.others:
                if agent is speaker:
                    continue
                if out is None and back is None:
                    out = self._made(cache, message, "assistant", manager.name)
                    back = self._made(cache, message, "user", manager.name)
                if out is not None:
                    conversations[agent].append(dict(out))
                if back is not None:
                    _ag2.oai_messages(agent)[manager].append(dict(back))

    def _replay_through_agents(
        self, message: dict[str, Any], speaker: Agent | None, *, send: bool, broadcast: bool
    ) -> None:
        """`replay` with each entry made by the agent that holds it (an agent overrides the append)."""
        manager = self.manager
        if send and isinstance(speaker, ConversableAgent) and speaker is not manager:
            _ag2.append_oai_message(speaker, _as_sent(message), manager, role="assistant", name=speaker.name)
            _ag2.append_oai_message(manager, message, speaker, role="user", name=speaker.name)
        if broadcast:
            for agent in self.others:
                if agent is not speaker:
                    _ag2.append_oai_message(manager, message, agent, role="assistant", name=manager.name)
                    _ag2.append_oai_message(agent, message, manager, role="user", name=manager.name)

    def introduce(self, groupchat: GroupChat) -> None:
        """The introductions the loop sends every participant when a run starts (``send_introductions``)."""
        intro = groupchat.introductions_msg()
        manager = self.manager
        for agent in groupchat.agents:
            if isinstance(agent, ConversableAgent):
                _ag2.append_oai_message(manager, intro, agent, role="assistant", name=manager.name)
                _ag2.append_oai_message(agent, intro, manager, role="user", name=manager.name)


def _replay_clears(
    replayer: _Replayer,
    groupchat: GroupChat,
    agents_by_name: Mapping[str, Agent],
    clears: Sequence[Mapping[str, Any]],
) -> int:
    """Replay each "clear history" of the run: the transcript before it, then AG2's own clearing.

    AG2 clears the agents' histories (all, one, or all but the last n) but not the manager's, so
    the transcript alone cannot say what each history holds. Returns how many messages at the
    start of the current transcript the last clearing kept (already in the histories).
    """
    skip = 0
    for clear in clears:
        before = list(clear.get("before") or [])
        for message in before[skip:]:
            replayer.replay(message, agents_by_name.get(str(message.get("name"))))
        groupchat.messages[:] = before
        _ag2.clear_agents_history(replayer.manager, {"content": clear.get("content")}, groupchat)
        skip = int(clear.get("kept") or 0)
    return skip


def restore_histories(
    manager: GroupChatManager,
    groupchat: GroupChat,
    agents_by_name: Mapping[str, Agent],
    history: Sequence[dict[str, Any]],
    *,
    pending: dict[str, Any] | None = None,
    keep_opening_from: Agent | None = None,
    intro_step: int | None = None,
    clears: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any] | None:
    """Reset the transcript and every agent's conversation with the manager to ``history``.

    ``history`` is replayed as fully broadcast. ``pending`` (continuing a run) is the last saved
    message, replayed only as its speaker's send: the loop appends and broadcasts it again, without a
    checkpoint. ``keep_opening_from`` (a new run) keeps the message that agent just sent to the
    manager as the last one of their conversation. Returns the message the loop starts with.
    """
    participants = list(groupchat.agents)
    everyone: list[Agent] = list(participants)
    for agent in agents_by_name.values():
        if agent not in everyone:
            everyone.append(agent)
    opening_pair: tuple[dict[str, Any], dict[str, Any]] | None = None
    if isinstance(keep_opening_from, ConversableAgent):
        mine = _ag2.oai_messages(keep_opening_from).get(manager) or []
        theirs = _ag2.oai_messages(manager).get(keep_opening_from) or []
        if mine and theirs:
            opening_pair = (mine[-1], theirs[-1])
    for agent in everyone:
        if isinstance(agent, ConversableAgent) and agent is not manager:
            _ag2.oai_messages(agent)[manager] = []
            _ag2.oai_messages(manager)[agent] = []
    groupchat.messages[:] = []
    replayer = _Replayer(manager, participants)
    skip = _replay_clears(replayer, groupchat, agents_by_name, clears)
    if clears:
        intro_step = None  # introductions were sent before the first clear: replayed with it
    for i in range(skip, len(history)):
        message = history[i]
        speaker = agents_by_name.get(str(message.get("name")))
        if i == intro_step:
            replayer.replay(message, speaker, broadcast=False)
            replayer.introduce(groupchat)
            replayer.replay(message, speaker, send=False)
        else:
            replayer.replay(message, speaker)
    groupchat.messages[:] = history
    if opening_pair is not None and isinstance(keep_opening_from, ConversableAgent):
        _ag2.oai_messages(keep_opening_from)[manager].append(opening_pair[0])
        _ag2.oai_messages(manager)[keep_opening_from].append(opening_pair[1])
        return opening_pair[1]
    if pending is not None:
        speaker = agents_by_name.get(str(pending.get("name")))
        if speaker is None or speaker is manager:
            return dict(pending)
        replayer.replay(pending, speaker, broadcast=False)
        start = _ag2.oai_messages(manager)[speaker][-1]
        if intro_step == len(history):
            replayer.introduce(groupchat)
        return start  # type: ignore[no-any-return]
    return None
