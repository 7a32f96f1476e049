"""The Persistency feature: attach it to a GroupChatManager and every step of its chats is stored.

Two interceptors are installed on the manager. The *before-start* one (a reply function at
position 0, sync and async) applies the run's `ResumePolicy`: it loads what the policy needs,
restores the transcript and every agent's history, then runs AG2's own group-chat loop on a wrapped
shallow copy of the group chat. The *after-step* one (the copy's ``append``) stores a checkpoint
after every message, before the next speaker runs. A run ends with a "run_end" checkpoint saying
why (termination message, max rounds, error, cancelled, superseded).

Concurrency: checkpoint ids are deterministic per (run, step) and every save is create-only, so two
workers continuing the same run race for the same ids and exactly one wins; the other stops with
`CheckpointConflictError` and writes nothing more. A new run's first checkpoint (its opening
message), and the "cancelled" run end that closes a dead attempt before it is continued, are both
written before any agent is asked for a reply, so in those cases the loser never calls a model.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import _ag2
from persistency._capture import chat_secrets, restore_histories
from persistency.errors import CheckpointNotFoundError, PersistencyError, ResumeError, SerializationError
from persistency.feature import _pattern
from persistency.feature._nested import NestedState
from persistency.feature._pattern import PatternHook, is_pattern, pattern_spec
from persistency.feature._plan import Incoming, RunPlan, needs, plan_run
from persistency.feature._run import Run
from persistency.feature._writer import LostCheckpoint, OnError, RunWriter
from persistency.ids import parse_checkpoint_id, validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.policies import ResumePolicy
from persistency.provider import PersistencyStorageProvider
from persistency.registry import provider_from_url

__all__ = ["Durability", "LostCheckpoint", "OnError", "Persistency"]

log = logging.getLogger("persistency")

_OUTER_RUNS: contextvars.ContextVar[int] = contextvars.ContextVar("persistency_outer_runs", default=0)
"""How many recorded chats are running around this point: above zero, a chat starting is nested."""

Durability = Literal["sync", "async", "exit"]
_DURABILITIES = ("sync", "async", "exit")


class Persistency:
    """Checkpoints a GroupChatManager's chats after every step and resumes them under a policy.

    Args:
        provider: where checkpoints go: a provider, or a URL for `provider_from_url`.
        session_id: the conversation; every run of the manager is stored under it.
        policy: the policy of every run (default `ResumePolicy.resume_latest()`); `next_run`
            overrides it for one run.
        metadata: JSON stored with every checkpoint (never a secret).
        durability: "sync" (default: a step is stored before the next speaker runs), "async"
            (a bounded background writer, flushed at the run's end; a failed write is raised at a
            later step or at the run's end, never dropped) or "exit" (only the run's end is stored).
        on_error: "raise" (default: a checkpoint that cannot be stored stops the chat with the
            provider's `PersistencyError`) or "continue" (the chat goes on; `lost_checkpoints`
            lists what was not stored, and the next stored checkpoint carries the missing messages).
        max_pending: the background writer's queue bound ("async" durability).
    """

    def __init__(
        self,
        provider: PersistencyStorageProvider | str | os.PathLike[str],
        session_id: str,
        *,
        policy: ResumePolicy | None = None,
        metadata: Mapping[str, Any] | None = None,
        durability: Durability = "sync",
        on_error: OnError = "raise",
        max_pending: int = 64,
    ) -> None:
        self._owns_provider = isinstance(provider, (str, os.PathLike))
        if isinstance(provider, (str, os.PathLike)):
            provider = provider_from_url(provider)
        if not isinstance(provider, PersistencyStorageProvider):
            raise TypeError(f"provider must be a PersistencyStorageProvider or a URL, not {type(provider).__name__}")
        if durability not in _DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(_DURABILITIES)}, not {durability!r}")
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', not {on_error!r}")
        self.provider = provider
        self.session_id = validate_id(session_id, "session_id")
        self.policy = policy or ResumePolicy.resume_latest()
        self.metadata = _json_metadata(metadata)
        self.durability: Durability = durability
        self.on_error: OnError = on_error
        self.max_pending = max_pending
        self._next_policy: ResumePolicy | None = None
        self._manager: GroupChatManager | None = None
        self._pattern_hook: PatternHook | None = None
        self._hooks: tuple[Callable[..., Any], Callable[..., Any]] | None = None
        self._active: Run | None = None
        self._last_checkpoint_id: str | None = None
        self._last_run_id: str | None = None
        self._lost: list[LostCheckpoint] = []

    def __repr__(self) -> str:
        return f"Persistency({self.provider!r}, session_id={self.session_id!r}, policy={self.policy})"

    # -- public surface ---------------------------------------------------------------------------------
    @property
    def manager(self) -> GroupChatManager | None:
        """The manager this feature is attached to, if any."""
        return self._manager

    @property
    def last_checkpoint_id(self) -> str | None:
        """The id of the last checkpoint this feature stored."""
        return self._last_checkpoint_id

    @property
    def last_run_id(self) -> str | None:
        """The run id of the last run this feature started."""
        return self._last_run_id

    @property
    def lost_checkpoints(self) -> list[LostCheckpoint]:
        """Checkpoints not stored while chats went on (``on_error="continue"``), oldest first."""
        return list(self._lost)

    @property
    def pattern(self) -> Any:
        """The group pattern this feature is attached to, if any."""
        return None if self._pattern_hook is None else self._pattern_hook.pattern

    def attach(self, target: GroupChatManager | Any) -> Persistency:
        """Install the interceptors on a GroupChatManager, or on every manager a group ``Pattern`` builds.

        With a pattern (``autogen.agentchat.group.patterns``), the manager that
        ``pattern.prepare_group_chat`` builds for each chat (``initiate_group_chat``,
        ``run_group_chat`` and their async twins) is attached before the chat starts.
        Returns the feature (usable as a context manager).
        """
        if is_pattern(target):
            if self._pattern_hook is not None and self._pattern_hook.pattern is target:
                return self
            if self._manager is not None or self._pattern_hook is not None:
                raise PersistencyError("this Persistency is attached already; detach() it first")
            self._pattern_hook = PatternHook(target, self._on_pattern_manager)
            return self
        if not isinstance(target, GroupChatManager):
            raise TypeError(f"attach() takes a GroupChatManager or a group Pattern, not {type(target).__name__}")
        if self._pattern_hook is not None:
            raise PersistencyError("this Persistency is attached to a pattern; detach() it first")
        return self._attach_manager(target)

    def _on_pattern_manager(self, manager: GroupChatManager) -> None:
        """A pattern built a new manager for its next chat: move the interceptors onto it."""
        if self._active is not None:
            raise PersistencyError("a pattern chat started inside another chat of the same Persistency")
        self._detach_manager()
        self._attach_manager(manager)

    def _attach_manager(self, manager: GroupChatManager) -> Persistency:
        if self._manager is not None:
            if self._manager is manager:
                return self
            raise PersistencyError("this Persistency is attached to another manager; detach() it first")
        for entry in _ag2.reply_funcs(manager):
            if getattr(entry["reply_func"], "__name__", "") == "persistency_before_start":
                raise PersistencyError(f"manager {manager.name!r} already has a Persistency attached")

        def persistency_before_start(
            recipient: ConversableAgent,
            messages: list[dict[str, Any]] | None = None,
            sender: Agent | None = None,
            config: Any = None,
        ) -> tuple[bool, Any]:
            return self._before_start(recipient, messages, sender)

        async def a_persistency_before_start(
            recipient: ConversableAgent,
            messages: list[dict[str, Any]] | None = None,
            sender: Agent | None = None,
            config: Any = None,
        ) -> tuple[bool, Any]:
            return await self._a_before_start(recipient, messages, sender)

        manager.register_reply([Agent, None], persistency_before_start, position=0)
        manager.register_reply([Agent, None], a_persistency_before_start, position=0, ignore_async_in_sync_chat=True)
        self._hooks = (persistency_before_start, a_persistency_before_start)
        self._manager = manager
        return self

    def detach(self) -> None:
        """Remove the interceptors (and a pattern's hook); everything behaves as plain AG2 again. Idempotent."""
        self._detach_manager()
        if self._pattern_hook is not None:
            self._pattern_hook.remove()
            self._pattern_hook = None

    def _detach_manager(self) -> None:
        if self._manager is not None and self._hooks is not None:
            funcs = _ag2.reply_funcs(self._manager)
            funcs[:] = [e for e in funcs if e["reply_func"] not in self._hooks]
        self._manager = None
        self._hooks = None

    def next_run(self, policy: ResumePolicy) -> Persistency:
        """Use ``policy`` for the next run only; later runs use the feature's policy again."""
        if not isinstance(policy, ResumePolicy):
            raise TypeError("next_run() takes a ResumePolicy")
        self._next_policy = policy
        return self

    def checkpoints(self, run_id: str | None = None) -> list[CheckpointInfo]:
        """This session's checkpoints, oldest first, without payloads."""
        return self.provider.list_checkpoints(self.session_id, run_id=run_id)

    def latest(self) -> Checkpoint | None:
        """This session's latest checkpoint, or None."""
        return self.provider.get_latest_checkpoint(self.session_id)

    def close(self) -> None:
        """Detach, and close the provider if this feature opened it from a URL."""
        self.detach()
        if self._owns_provider:
            self.provider.close()

    def __enter__(self) -> Persistency:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the before-start interceptor -----------------------------------------------------------------
    def _take_policy(self) -> ResumePolicy:
        policy = self._next_policy or self.policy
        self._next_policy = None
        return policy

    def _require_loop(self, manager: GroupChatManager, is_async: bool) -> tuple[Callable[..., Any], GroupChat]:
        """The manager's group-chat loop; refuses to let a chat run unrecorded when there is none."""
        found = _ag2.find_loop(manager, is_async)
        if found is None:
            name = "a_run_chat" if is_async else "run_chat"
            raise PersistencyError(
                f"manager {manager.name!r} has no {name} reply function with its GroupChat; the chat would run "
                "without checkpoints. Keep AG2's own loop registered (do not replace it) to use Persistency."
            )
        return found

    def _applies(
        self, recipient: ConversableAgent, messages: list[dict[str, Any]] | None, sender: Agent | None
    ) -> bool:
        return self._active is None and recipient is self._manager and sender is not None and bool(messages)

    @staticmethod
    def _max_seq(latest: CheckpointInfo | None, infos: list[CheckpointInfo] | None = None) -> int | None:
        """The greatest run number, from the latest checkpoint (or, if its id is foreign, all ``infos``)."""
        if latest is None:
            return 0
        parsed = parse_checkpoint_id(latest.checkpoint_id)
        if parsed is not None:
            return parsed[0]
        if infos is None:
            return None  # the caller lists the session and asks again
        return max((p[0] for i in infos if (p := parse_checkpoint_id(i.checkpoint_id)) is not None), default=0)

    def _plan(
        self,
        policy: ResumePolicy,
        incoming: Incoming,
        registered: GroupChat,
        loaded: tuple[CheckpointInfo | None, Checkpoint | None, int],
    ) -> RunPlan:
        latest, target, max_seq = loaded
        return plan_run(
            policy,
            incoming=incoming,
            latest=latest,
            target=target,
            max_run_seq=max_seq,
            fresh_budget=int(registered.max_round),
            live=list(registered.messages),
            own_latest=self._last_checkpoint_id,
            nested=_OUTER_RUNS.get() > 0,
        )

    def _target_missing(self, policy: ResumePolicy, target_id: str) -> ResumeError:
        return ResumeError(f"{policy}: no checkpoint {target_id!r} in session {self.session_id!r}")

    def _load(self, policy: ResumePolicy) -> tuple[CheckpointInfo | None, Checkpoint | None, int]:
        """What ``policy`` needs from storage (sync chats)."""
        want_latest, target_id = needs(policy)
        if want_latest:
            latest: CheckpointInfo | None = self.provider.get_latest_checkpoint(self.session_id)
        else:
            infos = self.provider.list_checkpoints(self.session_id, limit=1)
            latest = infos[-1] if infos else None
        target = None
        if target_id is not None:
            try:
                target = self.provider.get_checkpoint(self.session_id, target_id)
            except CheckpointNotFoundError as exc:
                raise self._target_missing(policy, target_id) from exc
        max_seq = self._max_seq(latest)
        if max_seq is None:
            max_seq = self._max_seq(latest, self.provider.list_checkpoints(self.session_id)) or 0
        return latest, target, max_seq

    async def _aload(self, policy: ResumePolicy) -> tuple[CheckpointInfo | None, Checkpoint | None, int]:
        """What ``policy`` needs from storage, through the provider's async twins (async chats)."""
        want_latest, target_id = needs(policy)
        if want_latest:
            latest: CheckpointInfo | None = await self.provider.aget_latest_checkpoint(self.session_id)
        else:
            infos = await self.provider.alist_checkpoints(self.session_id, limit=1)
            latest = infos[-1] if infos else None
        target = None
        if target_id is not None:
            try:
                target = await self.provider.aget_checkpoint(self.session_id, target_id)
            except CheckpointNotFoundError as exc:
                raise self._target_missing(policy, target_id) from exc
        max_seq = self._max_seq(latest)
        if max_seq is None:
            max_seq = self._max_seq(latest, await self.provider.alist_checkpoints(self.session_id)) or 0
        return latest, target, max_seq

    def _start(
        self,
        manager: GroupChatManager,
        registered: GroupChat,
        messages: list[dict[str, Any]],
        sender: Agent,
        plan: RunPlan,
        *,
        is_async: bool,
    ) -> tuple[Run, list[dict[str, Any]], Agent]:
        """Restore the plan's state into the agents and build the run (no I/O)."""
        agents: dict[str, Agent] = {a.name: a for a in registered.agents}
        agents.setdefault(sender.name, sender)
        source_state = plan.source.manager_state if plan.source is not None else {}
        nested = NestedState(list(agents.values()), manager)
        if nested and plan.source is not None and not plan.live:
            nested.restore(source_state.get("nested"))
        if plan.live:
            loop_messages, loop_sender = messages, sender
        elif plan.mode == "continue":
            assert plan.pending is not None
            speaker = agents.get(str(plan.pending.get("name")))
            if speaker is None:
                raise ResumeError(
                    f"cannot continue: the last saved message is from {plan.pending.get('name')!r}, "
                    f"which is not an agent of this group chat ({', '.join(agents)})"
                )
            intro = plan.opening_step if registered.send_introductions else None
            clears = source_state.get("clears") or []
            start = restore_histories(
                manager, registered, agents, plan.history, pending=plan.pending, intro_step=intro, clears=clears
            )
            assert start is not None
            counts = plan.source.manager_state.get("auto_replies") if plan.source is not None else None
            for name, count in (counts or {}).items():
                agent = agents.get(name)
                if isinstance(agent, ConversableAgent) and isinstance(count, int):
                    agent._consecutive_auto_reply_counter[manager] = count
            loop_messages, loop_sender = [start], speaker
            _pattern.restore(registered, source_state.get("pattern_state"), whole=True)
            self._warn_unrestorable(registered)
        else:
            clears = source_state.get("clears") or []
            restore_histories(manager, registered, agents, plan.history, keep_opening_from=sender, clears=clears)
            loop_messages, loop_sender = messages, sender
            if plan.source is not None:
                _pattern.restore(registered, source_state.get("pattern_state"), whole=False)
        secrets = chat_secrets(manager, agents.values())
        opening = source_state.get("opening") if plan.mode == "continue" else None
        if not isinstance(opening, dict):
            opening = {"name": sender.name, "content": messages[-1].get("content")} if plan.mode == "new" else None
        run = Run(
            self, manager, registered, plan, sender, is_async=is_async, secrets=secrets, opening=opening, nested=nested
        )
        self._last_run_id = run.run_id
        return run, loop_messages, loop_sender

    def _warn_unrestorable(self, registered: GroupChat) -> None:
        """One warning per resume naming what a resume cannot put back (random or stateful selection)."""
        why = _pattern.unrestorable_selection(registered)
        if why is not None:
            log.warning(
                "session %s resumed, but the next speakers may differ from the original run: %s",
                self.session_id,
                why,
            )

    def _before_start(
        self, recipient: ConversableAgent, messages: list[dict[str, Any]] | None, sender: Agent | None
    ) -> tuple[bool, Any]:
        if not self._applies(recipient, messages, sender):
            return False, None
        assert isinstance(recipient, GroupChatManager) and messages and sender is not None
        loop, registered = self._require_loop(recipient, is_async=False)
        policy = self._take_policy()
        incoming = Incoming(messages[-1], sender.name)
        plan = self._plan(policy, incoming, registered, self._load(policy))
        if plan.closing is not None:
            RunWriter(self.provider, plan.closing.parent_id, "raise").save(plan.closing)
        run, loop_messages, loop_sender = self._start(recipient, registered, messages, sender, plan, is_async=False)
        self._active = run
        token = _OUTER_RUNS.set(_OUTER_RUNS.get() + 1)
        try:
            run.run(loop, loop_messages, loop_sender)
        finally:
            _OUTER_RUNS.reset(token)
            self._active = None
        return True, None

    async def _a_before_start(
        self, recipient: ConversableAgent, messages: list[dict[str, Any]] | None, sender: Agent | None
    ) -> tuple[bool, Any]:
        if not self._applies(recipient, messages, sender):
            return False, None
        assert isinstance(recipient, GroupChatManager) and messages and sender is not None
        loop, registered = self._require_loop(recipient, is_async=True)
        policy = self._take_policy()
        incoming = Incoming(messages[-1], sender.name)
        plan = self._plan(policy, incoming, registered, await self._aload(policy))
        if plan.closing is not None:
            await RunWriter(self.provider, plan.closing.parent_id, "raise").asave(plan.closing)
        run, loop_messages, loop_sender = self._start(recipient, registered, messages, sender, plan, is_async=True)
        self._active = run
        token = _OUTER_RUNS.set(_OUTER_RUNS.get() + 1)
        try:
            await run.arun(loop, loop_messages, loop_sender)
        finally:
            _OUTER_RUNS.reset(token)
            self._active = None
        return True, None


def _pattern_spec(pattern: Any) -> dict[str, Any]:
    """The description of a pattern stored as ``manager_state["pattern"]`` (kind, initial agent, agents).

    A hook: the rebuild (``persistency.rebuild.pattern_spec``) may supply a richer one.
    """
    return pattern_spec(pattern)


def _json_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(metadata or {})
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"metadata must be JSON-serialisable: {exc}") from exc
    return data
