"""The before-start interceptor's one body: load what the policy needs, plan, restore, run the loop.

Written once as a plan (`persistency.feature._drive`): sync chats run it with the provider's sync
methods and AG2's ``run_chat``, async chats with the ``a``-twins and ``a_run_chat``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import TYPE_CHECKING, Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import _ag2
from persistency._capture import chat_secrets, restore_histories
from persistency.errors import CheckpointNotFoundError, ResumeError
from persistency.feature import _ownership, _pattern
from persistency.feature._drive import Plan, io
from persistency.feature._nested import NestedState
from persistency.feature._observe import size_of, span, timed_debug
from persistency.feature._plan import Incoming, RunPlan, needs, plan_run
from persistency.feature._run import Run
from persistency.feature._writer import RunWriter, can_batch
from persistency.ids import parse_checkpoint_id
from persistency.models import Checkpoint, CheckpointInfo
from persistency.policies import ResumePolicy

if TYPE_CHECKING:
    from persistency.feature import Persistency

__all__ = ["OUTER_RUNS", "start_plan"]

log = logging.getLogger(__name__)

OUTER_RUNS: contextvars.ContextVar[int] = contextvars.ContextVar("persistency_outer_runs", default=0)
"""How many recorded chats are running around this point: above zero, a chat starting is nested."""

Loaded = tuple[CheckpointInfo | None, Checkpoint | None, int]


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


def _payload(cp: Any) -> Any:
    return getattr(cp, "messages", None)


def load_plan(feature: Persistency, policy: ResumePolicy) -> Plan[Loaded]:
    """What ``policy`` needs from storage: the latest checkpoint, a target, the greatest run number."""
    sid = feature.session_id
    want_latest, target_id = needs(policy)
    latest: CheckpointInfo | None
    with span("load", session=sid, policy=str(policy)):
        if want_latest:
            with timed_debug(log, f"loaded the latest checkpoint of session {sid}", lambda: size_of(_payload(latest))):
                latest = yield io(feature.provider, "get_latest_checkpoint", sid)
        else:
            infos = yield io(feature.provider, "list_checkpoints", sid, limit=1)
            latest = infos[-1] if infos else None
        target = None
        if target_id is not None:
            try:
                what = f"loaded checkpoint {target_id} of session {sid}"
                with timed_debug(log, what, lambda: size_of(_payload(target))):
                    target = yield io(feature.provider, "get_checkpoint", sid, target_id)
            except CheckpointNotFoundError as exc:
                raise ResumeError(f"{policy}: no checkpoint {target_id!r} in session {sid!r}") from exc
    max_seq = _max_seq(latest)
    if max_seq is None:
        max_seq = _max_seq(latest, (yield io(feature.provider, "list_checkpoints", sid))) or 0
    return latest, target, max_seq


def _warn_unrestorable(feature: Persistency, registered: GroupChat) -> None:
    """One warning per resume naming what a resume cannot put back (random or stateful selection)."""
    why = _pattern.unrestorable_selection(registered)
    if why is not None:
        log.warning(
            "session %s resumed, but the next speakers may differ from the original run: %s", feature.session_id, why
        )


def _continue(
    manager: GroupChatManager, registered: GroupChat, agents: dict[str, Agent], plan: RunPlan, state: dict[str, Any]
) -> tuple[list[dict[str, Any]], Agent]:
    assert plan.pending is not None
    speaker = agents.get(str(plan.pending.get("name")))
    if speaker is None:
        raise ResumeError(
            f"cannot continue: the last saved message is from {plan.pending.get('name')!r}, "
            f"which is not an agent of this group chat ({', '.join(agents)})"
        )
    intro = plan.opening_step if registered.send_introductions else None
    clears = state.get("clears") or []
    start = restore_histories(
        manager, registered, agents, plan.history, pending=plan.pending, intro_step=intro, clears=clears
    )
    assert start is not None
    for name, count in (state.get("auto_replies") or {}).items():
        agent = agents.get(name)
        if isinstance(agent, ConversableAgent) and isinstance(count, int):
            _ag2.auto_reply_counts(agent)[manager] = count
    _pattern.restore(registered, state.get("pattern_state"), whole=True)
    return [start], speaker


def start_run(
    feature: Persistency,
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
    state = plan.source.manager_state if plan.source is not None else {}
    nested = NestedState(list(agents.values()), manager)
    if nested and plan.source is not None and not plan.live:
        nested.restore(state.get("nested"))
    loop_messages, loop_sender = messages, sender
    if plan.mode == "continue":
        loop_messages, loop_sender = _continue(manager, registered, agents, plan, state)
        _warn_unrestorable(feature, registered)
    elif not plan.live:
        restore_histories(
            manager, registered, agents, plan.history, keep_opening_from=sender, clears=state.get("clears") or []
        )
        if plan.source is not None:
            _pattern.restore(registered, state.get("pattern_state"), whole=False)
    opening = state.get("opening") if plan.mode == "continue" else None
    if not isinstance(opening, dict):
        opening = {"name": sender.name, "content": messages[-1].get("content")} if plan.mode == "new" else None
    secrets = chat_secrets(manager, agents.values())
    run = Run(
        feature, manager, registered, plan, sender, is_async=is_async, secrets=secrets, opening=opening, nested=nested
    )
    feature._last_run_id = run.run_id
    return run, loop_messages, loop_sender


def start_plan(
    feature: Persistency,
    recipient: ConversableAgent,
    messages: list[dict[str, Any]] | None,
    sender: Agent | None,
    *,
    is_async: bool,
) -> Plan[tuple[bool, Any]]:
    """The before-start interceptor: apply the run's policy, then run AG2's loop under the step hook."""
    if not feature._applies(recipient, messages, sender):
        return False, None
    assert isinstance(recipient, GroupChatManager) and messages and sender is not None
    loop, registered = feature._require_loop(recipient, is_async=is_async)
    policy = feature._take_policy()
    # p12 (#12): unless feature.ownership is None, the session's lease is taken before anything is read
    claim = yield from _ownership.claim_plan(feature.provider, feature.session_id, feature.ownership)
    try:
        return (yield from _owned_start(feature, recipient, messages, sender, loop, registered, policy, claim,
                                        is_async=is_async))
    finally:
        if claim is not None:
            yield from claim.release_plan()


def _owned_start(
    feature: Persistency, recipient: GroupChatManager, messages: list[dict[str, Any]], sender: Agent,
    loop: Any, registered: GroupChat, policy: ResumePolicy, claim: _ownership.Claim | None, *, is_async: bool,
) -> Plan[tuple[bool, Any]]:
    """`start_plan` once the lease (if any) is held: load, decide, restore, run."""
    latest, target, max_seq = yield from load_plan(feature, policy)
    incoming = Incoming(messages[-1], sender.name)
    done = yield from _ownership.duplicate_plan(  # p12: a request another worker just answered
        feature.provider, feature.session_id, claim, policy, incoming, latest, feature._last_checkpoint_id)
    if done is not None:
        _ownership.show_finished(recipient, registered, sender, done)
        feature._last_checkpoint_id = done.checkpoint_id
        return True, None
    plan = plan_run(
        policy,
        incoming=incoming,
        latest=latest,
        target=target,
        max_run_seq=max_seq,
        fresh_budget=int(registered.max_round),
        live=list(registered.messages),
        own_latest=feature._last_checkpoint_id,
        nested=OUTER_RUNS.get() > 0,
    )
    # With the lease held, the closing run_end is no claim any more: it goes with the first step's save
    fold = plan.closing is not None and claim is not None and can_batch(feature.provider, feature.on_error)
    if plan.closing is not None and not fold:
        writer = RunWriter(feature.provider, plan.closing.parent_id, "raise", feature.on_checkpoint)
        yield io(writer, "save", plan.closing)
    resuming = span("resume", session=feature.session_id, checkpoint=plan.parent_id or "", step=len(plan.history) + 1)
    with resuming if plan.mode == "continue" else contextlib.nullcontext():
        run, loop_messages, loop_sender = start_run(
            feature, recipient, registered, messages, sender, plan, is_async=is_async
        )
    if fold:
        assert plan.closing is not None
        run.writer.defer(plan.closing)
    if claim is not None:  # p12: each save checks the lease and the generation; the run keeps its request id
        run.writer.guard = claim
        if claim.request_id is not None:
            run.manager_base[_ownership.REQUEST_KEY] = claim.request_id
    feature._active = run
    token = OUTER_RUNS.set(OUTER_RUNS.get() + 1)
    try:
        yield from run.run_plan(loop, loop_messages, loop_sender)
    finally:
        OUTER_RUNS.reset(token)
        feature._active = None
    return True, None
