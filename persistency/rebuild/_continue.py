"""`continue_chat` / `acontinue_chat`: rebuild a session's chat from storage alone and run it on.

The decision is written once, as a generator that asks for what it needs from storage (`_Get`,
`_List`) and returns the rebuilt chat, the message and the resume policy; a sync and an async
driver answer its requests and run the chat. A step that ended its run (see `_closed`) is never
continued: without a new message that is refused with `RunFinishedError`, and a new message
starts a new run from that step's history, whatever termination condition the rebuilt manager has.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from persistency.errors import ResumeError
from persistency.models import Checkpoint, CheckpointInfo
from persistency.policies import ResumePolicy
from persistency.provider import PersistencyStorageProvider
from persistency.rebuild._chat import RebuiltChat, rebuild_chat
from persistency.rebuild._closed import closed_reason

if TYPE_CHECKING:
    from persistency.feature import Persistency

__all__ = ["RunFinishedError", "acontinue_chat", "continue_chat"]


class RunFinishedError(ResumeError):
    """The checkpoint's run is finished at its step: continuing it needs a new message."""

    def __init__(self, session_id: str, cp: Checkpoint, reason: str) -> None:
        self.session_id, self.run_id, self.checkpoint_id, self.reason = session_id, cp.run_id, cp.checkpoint_id, reason
        super().__init__(
            f"run {cp.run_id} of session {session_id!r} is finished at checkpoint {cp.checkpoint_id} ({reason}); "
            "give a message to start the next turn"
        )


@dataclass(frozen=True)
class _Get:
    session_id: str
    checkpoint_id: str | None
    """None: the session's latest checkpoint."""


@dataclass(frozen=True)
class _List:
    session_id: str
    run_id: str


@dataclass
class _Ready:
    chat: RebuiltChat
    message: Any
    policy: ResumePolicy
    source: Checkpoint

    def attach(self, provider: PersistencyStorageProvider) -> Persistency:
        from persistency.feature import Persistency

        return Persistency(
            provider, self.source.session_id, policy=self.policy, metadata=self.source.metadata
        ).attach(self.chat.manager)


_Plan = Generator["_Get | _List", Any, _Ready]


def _plan(
    session_id: str, checkpoint_id: str | None, message: Any, max_rounds: int | None, rebuild_kwargs: dict[str, Any]
) -> _Plan:
    cp = yield _Get(session_id, checkpoint_id)
    if cp is None:
        raise ResumeError(f"session {session_id!r} has no checkpoints to continue")
    infos: list[CheckpointInfo] = yield _List(session_id, cp.run_id)
    ends = [i for i in infos if i.is_run_end]
    reason = closed_reason(cp, ends)
    if reason is not None and message is None:
        raise RunFinishedError(session_id, cp, reason)
    chat = rebuild_chat(cp, **rebuild_kwargs)
    if reason is None:
        reason = closed_reason(cp, ends, chat.manager._is_termination_msg)
        if reason is not None and message is None:
            raise RunFinishedError(session_id, cp, reason)
    if reason is not None:  # a new turn after a finished step: a new run from its history, never a continuation
        return _Ready(chat, message, ResumePolicy.fresh_with_history(cp.checkpoint_id, max_rounds), cp)
    if message is None:
        message = chat.opening_message
    policy = (
        ResumePolicy.resume_from(checkpoint_id, max_rounds)
        if checkpoint_id is not None
        else ResumePolicy.resume_latest(max_rounds)
    )
    return _Ready(chat, message, policy, cp)


class _Steps:
    """Steps a `_plan` generator: ``request`` is what it waits for, ``ready`` its result."""

    def __init__(self, plan: _Plan) -> None:
        self._plan = plan
        self.ready: _Ready | None = None
        self.request: _Get | _List | None = next(plan)

    def give(self, value: Any) -> None:
        try:
            self.request = self._plan.send(value)
        except StopIteration as done:
            self.request, self.ready = None, done.value


def _fetch(provider: PersistencyStorageProvider, request: _Get | _List) -> Any:
    if isinstance(request, _List):
        return provider.list_checkpoints(request.session_id, run_id=request.run_id)
    if request.checkpoint_id is None:
        return provider.get_latest_checkpoint(request.session_id)
    return provider.get_checkpoint(request.session_id, request.checkpoint_id)


async def _afetch(provider: PersistencyStorageProvider, request: _Get | _List) -> Any:
    if isinstance(request, _List):
        return await provider.alist_checkpoints(request.session_id, run_id=request.run_id)
    if request.checkpoint_id is None:
        return await provider.aget_latest_checkpoint(request.session_id)
    return await provider.aget_checkpoint(request.session_id, request.checkpoint_id)


def continue_chat(
    provider: PersistencyStorageProvider,
    session_id: str,
    *,
    checkpoint_id: str | None = None,
    message: Any = None,
    max_rounds: int | None = None,
    silent: bool = True,
    **rebuild_kwargs: Any,
) -> RebuiltChat:
    """Rebuild the chat of a session from its latest (or the given) checkpoint and run it on.

    Without ``message`` an unfinished run continues (resume_latest), or, with ``checkpoint_id``, a
    branch continues from that checkpoint (resume_from); a finished step refuses with
    `RunFinishedError`. With ``message`` it is the next turn. ``rebuild_kwargs`` go to
    `rebuild_chat` (``secrets``, ``model_clients``, ``functions``, ``strict``, ...).
    """
    steps = _Steps(_plan(session_id, checkpoint_id, message, max_rounds, rebuild_kwargs))
    while steps.request is not None:
        steps.give(_fetch(provider, steps.request))
    assert steps.ready is not None
    ready, feature = steps.ready, steps.ready.attach(provider)
    try:
        ready.chat.result = ready.chat.initiator.initiate_chat(ready.chat.manager, message=ready.message, silent=silent)
    finally:
        feature.detach()
    return ready.chat


async def acontinue_chat(provider: PersistencyStorageProvider, session_id: str, **options: Any) -> RebuiltChat:
    """Async `continue_chat`, with the same keyword arguments (``a_initiate_chat``; the provider's async twins)."""
    silent = bool(options.pop("silent", True))
    plan = _plan(session_id, options.pop("checkpoint_id", None), options.pop("message", None),
                 options.pop("max_rounds", None), options)
    steps = _Steps(plan)
    while steps.request is not None:
        steps.give(await _afetch(provider, steps.request))
    assert steps.ready is not None
    chat, feature = steps.ready.chat, steps.ready.attach(provider)
    try:
        chat.result = await chat.initiator.a_initiate_chat(chat.manager, message=steps.ready.message, silent=silent)
    finally:
        feature.detach()
    return chat
