"""The Persistency feature: attach it to a GroupChatManager and every step of its chats is stored.

Two interceptors are installed on the manager. The *before-start* one (a reply function at
position 0, sync and async) applies the run's `ResumePolicy`: it loads what the policy needs,
restores the transcript and every agent's history, then runs AG2's own group-chat loop on a wrapped
shallow copy of the group chat. The *after-step* one (the copy's ``append``) stores a checkpoint
after every message, before the next speaker runs. A run ends with a "run_end" checkpoint saying
why (termination message, max rounds, error, cancelled, superseded).

Concurrency: by default a run is started under the session's lease (`Ownership`), so a second
worker waits or stops before it reads anything and never calls a model. Underneath, checkpoint ids
are deterministic per (run, step) and every save is create-only, so two workers continuing the same
run race for the same ids and exactly one wins; the other stops with `CheckpointConflictError` and
writes nothing more. Without a lease (``ownership=None``) a new run's first checkpoint (its opening
message), and the "cancelled" run end that closes a dead attempt before it is continued, are both
written before any agent is asked for a reply, so the loser never calls a model; with the lease
held, that run end is stored in one batch with the run's first new checkpoint instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

# isort: off
from persistency._ag2 import AG2_VERSION  # first: refuses a missing or untested AG2 before importing it

# isort: on
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import _ag2
from persistency.errors import PersistencyError, SerializationError
from persistency.feature._args import check_arguments
from persistency.feature._drive import run_async, run_sync
from persistency.feature._ownership import Ownership, resolve
from persistency.feature._pattern import PatternHook, is_pattern, pattern_spec
from persistency.feature._run import Run
from persistency.feature._start import start_plan
from persistency.feature._writer import LostCheckpoint, OnError
from persistency.ids import validate_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.policies import ResumePolicy
from persistency.provider import PersistencyStorageProvider
from persistency.registry import provider_from_url

__all__ = ["AG2_VERSION", "Durability", "LostCheckpoint", "OnError", "Persistency"]

log = logging.getLogger(__name__)

Durability = Literal["sync", "async", "exit"]


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
        max_pending: the background writer's queue bound ("async" durability), a positive integer.
        on_checkpoint: called with the `CheckpointInfo` of each checkpoint once it is stored (from the
            writer's thread with "async" durability); an exception in it is logged, never breaks the chat.
        ownership: who owns a run (see `Ownership`). "auto" (default): each run holds the session's lease,
            ``Ownership()``, where the provider has leases (every built-in one), and runs without one, with
            a single warning per provider class, where it has none; an `Ownership` tunes it (and needs a
            provider with leases); None turns it off. Storage-side only: a chat alone on its session
            behaves exactly as without it. Kept as the ``ownership`` attribute.

    Every argument is checked here: a wrong type is a `TypeError`, a wrong value a `ValueError`,
    each naming the argument.
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
        on_checkpoint: Callable[[CheckpointInfo], None] | None = None,
        ownership: Ownership | Literal["auto"] | None = "auto",
    ) -> None:
        check_arguments(
            policy=policy,
            durability=durability,
            on_error=on_error,
            max_pending=max_pending,
            on_checkpoint=on_checkpoint,
        )
        session_id = validate_id(session_id, "session_id")
        metadata_json = _json_metadata(metadata)
        self._owns_provider = isinstance(provider, (str, os.PathLike))
        if isinstance(provider, (str, os.PathLike)):
            provider = provider_from_url(provider)
        if not isinstance(provider, PersistencyStorageProvider):
            raise TypeError(f"provider must be a PersistencyStorageProvider or a URL, not {type(provider).__name__}")
        self.provider = provider
        self.session_id = session_id
        self.on_checkpoint = on_checkpoint
        self.policy = policy or ResumePolicy.resume_latest()
        self.metadata = metadata_json
        self.durability: Durability = durability
        self.on_error: OnError = on_error
        self.max_pending = max_pending
        self.ownership: Ownership | None = resolve(ownership, provider)
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
            return run_sync(start_plan(self, recipient, messages, sender, is_async=False))

        async def a_persistency_before_start(
            recipient: ConversableAgent,
            messages: list[dict[str, Any]] | None = None,
            sender: Agent | None = None,
            config: Any = None,
        ) -> tuple[bool, Any]:
            return await run_async(start_plan(self, recipient, messages, sender, is_async=True))

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

def _pattern_spec(pattern: Any) -> dict[str, Any]:
    """The description of a pattern stored as ``manager_state["pattern"]``: the rebuild's full spec
    (handoffs, conditions, context; what `persistency.rebuild.rebuild_pattern` needs), or, should a
    pattern defeat it, the short one (kind, initial agent, agents) so the chat itself never stops."""
    from persistency.rebuild import pattern_spec as full_spec

    try:
        return full_spec(pattern)
    except Exception as exc:  # a description must never stop the chat it describes
        log.warning("pattern %s stored in short form (no rebuild spec): %s", type(pattern).__name__, exc)
        return pattern_spec(pattern)


def _json_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of JSON values, not {type(metadata).__name__}")
    data = dict(metadata or {})
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"metadata must be JSON-serialisable: {exc}") from exc
    return data
