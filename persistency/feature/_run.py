"""One run of a group chat under the feature: the step hook, the checkpoints it builds, the run end.

The AG2 loop runs on our own shallow copy of the group chat (sharing ``messages`` and the agents),
whose ``append`` is wrapped: after each message the copy saves a "step" checkpoint before the next
speaker runs. In async chats the save is an awaited task (drained before the next speaker is
selected), so storage never blocks the event loop. The hot path is flat: a snapshot of the message
list, a small manager-state dict, and agent states computed once per run.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager

from persistency import _ag2
from persistency._capture import agent_state, manager_base_state
from persistency.errors import CheckpointConflictError, PersistencyError
from persistency.feature import _pattern, _select
from persistency.feature._drive import Call, Plan, io, run_async, run_sync
from persistency.feature._nested import NestedState
from persistency.feature._plan import RunPlan
from persistency.feature._writer import BackgroundWriter, RunWriter
from persistency.ids import checkpoint_id_for, run_id_for
from persistency.models import SCHEMA_VERSION, Checkpoint, EndReason, utcnow
from persistency.redaction import scrub

if TYPE_CHECKING:
    from persistency.feature import Persistency

__all__ = ["Run"]

log = logging.getLogger(__name__)
_END_RETRIES = 5


def _volatile(agent: Agent) -> tuple[Any, Any]:
    """The parts of an agent's state that AG2 hooks may change between steps."""
    return getattr(agent, "system_message", None), getattr(agent, "description", None)


class Run:
    """The state of one run: its plan, its writer, and the wrapped group chat the loop runs on."""

    def __init__(
        self,
        feature: Persistency,
        manager: GroupChatManager,
        registered: GroupChat,
        plan: RunPlan,
        initiator: Agent,
        *,
        is_async: bool,
        secrets: frozenset[str],
        opening: dict[str, Any] | None = None,
        nested: NestedState | None = None,
    ) -> None:
        self.feature = feature
        self.manager = manager
        self.plan = plan
        self.is_async = is_async
        self.secrets = secrets
        self.run_id = run_id_for(plan.run_seq)
        self.writer = RunWriter(feature.provider, plan.parent_id, feature.on_error, feature.on_checkpoint)
        self.background = BackgroundWriter(self.writer, feature.max_pending) if feature.durability == "async" else None
        self._task: asyncio.Task[None] | None = None
        self._skip_next = plan.mode == "continue"
        self.loop_appends = 0
        self.rounds_used = plan.rounds_used
        self.id_step = plan.id_step if plan.mode == "continue" else len(plan.history)
        self.transcript_resets = int(plan.source.manager_state.get("transcript_resets", 0) or 0) if (
            plan.mode == "continue" and plan.source is not None
        ) else 0
        self._last_len = len(plan.history) + (1 if plan.pending is not None else 0)
        self.selected: str | None = None
        self.nested = nested
        kept = plan.source.manager_state.get("clears") if plan.source is not None and not plan.live else None
        self.clears: list[dict[str, Any]] = list(kept) if isinstance(kept, list) else []
        self.costly_selection = False
        chosen = plan.source.manager_state.get("selected") if plan.mode == "continue" and plan.source else None
        self.forced_speaker: str | None = chosen if isinstance(chosen, str) else None
        self.last_speaker: str | None = None
        participants = {a.name for a in registered.agents}
        everyone = list(registered.agents) + ([initiator] if initiator.name not in participants else [])
        self.agent_states = {a.name: agent_state(a, participant=a.name in participants) for a in everyone}
        # What may change during a run (hooks that update system messages): checked per step by identity.
        self._watched = [(a, a.name in participants, _volatile(a)) for a in everyone]
        self._counted = [a for a in everyone if isinstance(a, ConversableAgent) and a is not manager]
        self.manager_base = manager_base_state(manager, registered)
        self.manager_base.update(
            {
                "run_base_step": plan.base_step,
                "round_budget": plan.budget,
                "opening_step": plan.opening_step,
                "initiator": initiator.name,
                "opening": opening,
            }
        )
        if feature.pattern is not None:
            from persistency.feature import _pattern_spec

            self.manager_base["pattern"] = _pattern_spec(feature.pattern)
        self.groupchat = self._loop_groupchat(registered)
        self.pattern_state = _pattern.capture(registered, manager)
        """The pattern state as of the last append: a run end stores it, not the state after the next
        selection (which consumed a pending handoff and the transition's first-selection flag)."""

    # -- the group chat the loop runs on ------------------------------------------------------------
    def _loop_groupchat(self, registered: GroupChat) -> GroupChat:
        gc = copy.copy(registered)
        gc.max_round = self.plan.loop_rounds
        if self.plan.mode == "continue":
            gc.send_introductions = False
        original_append = gc.append

        def append(message: dict[str, Any], speaker: Agent) -> None:
            original_append(message, speaker)
            self.on_append(speaker)

        gc.append = append  # type: ignore[method-assign]
        _select.install(gc, self)
        return gc

    # -- checkpoints ------------------------------------------------------------------------------------
    def checkpoint(
        self,
        *,
        kind: str = "step",
        end_reason: EndReason | None = None,
        error: str | None = None,
        end_seq: int = 0,
        detail: str | None = None,
    ) -> Checkpoint:
        """A checkpoint of the current state, built without validation or deep copies (hot path)."""
        messages = list(self.groupchat.messages)
        step = len(messages)
        state = dict(self.manager_base)
        state["rounds_used"] = self.rounds_used
        state["run_step"] = self.id_step
        state["transcript_resets"] = self.transcript_resets
        if self.clears:
            state["clears"] = self.clears
        state["last_speaker"] = self.last_speaker
        state["selected"] = self.selected
        state["termination_held"] = bool(messages) and self._terminates(messages[-1])
        if self.pattern_state is not None:
            state["pattern_state"] = self.pattern_state
        if self.nested:
            state["nested"] = self.nested.capture()
        # AG2 counts each agent's consecutive auto-replies (max_consecutive_auto_reply, human input in
        # TERMINATE mode); a continued run must count on from the same numbers. O(agents).
        state["auto_replies"] = {a.name: _ag2.auto_reply_counts(a).get(self.manager, 0) for a in self._counted}
        if detail is not None:
            state["end_detail"] = detail
        return Checkpoint.model_construct(
            schema_version=SCHEMA_VERSION,
            checkpoint_id=checkpoint_id_for(self.plan.run_seq, self.id_step, end_seq),
            session_id=self.feature.session_id,
            run_id=self.run_id,
            parent_id=self.writer.last_stored,
            step=step,
            kind=kind,
            end_reason=end_reason,
            error=error,
            created_at=utcnow(),
            metadata=self.feature.metadata,
            messages=messages,
            agent_states=self.agent_states,
            manager_state=state,
        )

    def _refresh_agent_states(self) -> None:
        """Recapture an agent whose system message or description changed (O(agents), not O(transcript))."""
        for i, (agent, participant, seen) in enumerate(self._watched):
            now = _volatile(agent)
            if now[0] is seen[0] and now[1] is seen[1]:
                continue
            self._watched[i] = (agent, participant, now)
            if now != seen:
                states = dict(self.agent_states)  # never mutate a state an earlier checkpoint holds
                states[agent.name] = agent_state(agent, participant=participant)
                self.agent_states = states

    def _terminates_raw(self, message: dict[str, Any]) -> bool:
        check = _ag2.termination_check(self.manager)
        return bool(check(message)) if check is not None else False

    def _terminates(self, message: dict[str, Any]) -> bool:
        """Whether the live manager's termination condition holds for ``message`` (a user's may raise)."""
        try:
            return self._terminates_raw(message)
        except Exception:  # the loop itself will raise it; a checkpoint just says "no"
            return False

    def on_append(self, speaker: Agent) -> None:
        """The after-step hook: one message was appended to the transcript."""
        self.loop_appends += 1
        self.last_speaker = speaker.name
        if self.pattern_state is not None:
            self.pattern_state = _pattern.capture(self.groupchat, self.manager)
        length = len(self.groupchat.messages)
        if length <= self._last_len and not self._skip_next:  # "clear history": the transcript shrank
            self.transcript_resets += 1
        self._last_len = length
        if self._skip_next:  # the last saved message, appended again by a continued run
            self._skip_next = False
            return
        self.rounds_used += 1
        self.id_step = max(self.id_step + 1, length)
        self.selected = None
        self._store_step()

    def on_selected(self, speaker: Agent) -> None:
        """A selection that called a model or asked a human chose ``speaker``: store it before it speaks."""
        self.selected = speaker.name
        self.id_step += 1
        if self.pattern_state is not None:
            self.pattern_state = _pattern.capture(self.groupchat, self.manager)
        self._store_step()

    def _store_step(self) -> None:
        if self.feature.durability == "exit":
            return
        self._refresh_agent_states()
        cp = self.checkpoint()
        if self.background is not None:
            self.background.submit(cp, block=not self.is_async)
        elif self.is_async:
            previous = self._task
            self._task = asyncio.get_running_loop().create_task(self._asave_after(previous, cp))
        else:
            self.writer.save(cp)
        self.feature._last_checkpoint_id = self.writer.last_stored

    async def _asave_after(self, previous: asyncio.Task[None] | None, cp: Checkpoint) -> None:
        if previous is not None:
            await previous
        await self.writer.asave(cp)

    async def adrain(self, *, for_capacity: bool = False) -> None:
        """Wait for the pending save (async chats) so the next speaker runs after it is stored."""
        if self._task is not None:
            task, self._task = self._task, None
            await task
        if self.background is not None:
            if for_capacity:
                if self.background.pending >= self.background.max_pending:
                    await asyncio.to_thread(self.background.wait_capacity)
            else:
                await asyncio.to_thread(self.background.close)
        self.feature._last_checkpoint_id = self.writer.last_stored

    def drain(self) -> None:
        """Flush the background writer (sync chats); raises a write error it kept."""
        if self.background is not None:
            self.background.close()
        self.feature._last_checkpoint_id = self.writer.last_stored

    # -- the run's end ----------------------------------------------------------------------------------
    def loop_rounds(self) -> int:
        """The max_round the loop was given."""
        return int(self.groupchat.max_round)

    def end_reason(self) -> tuple[EndReason, str | None]:
        """Why a loop that returned normally stopped."""
        messages = self.groupchat.messages
        if messages and self.loop_appends and self._terminates_raw(messages[-1]):
            return "termination_message", None
        if self.loop_appends >= self.loop_rounds():
            return "max_rounds", None
        return "termination_message", "the group chat ended without a next speaker or reply"

    def _error_text(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, self.secrets)[:4000]

    def _end(self, reason: EndReason, exc: BaseException | None, detail: str | None) -> Checkpoint:
        end_seq = self.plan.end_seqs.get(self.id_step, 0) + 1
        self._refresh_agent_states()
        return self.checkpoint(
            kind="run_end",
            end_reason=reason,
            error=self._error_text(exc) if exc is not None and reason == "error" else None,
            end_seq=end_seq,
            detail=detail,
        )

    def _bump(self, cp: Checkpoint) -> None:
        seq = int(cp.checkpoint_id.rsplit("-end", 1)[1]) + 1
        cp.checkpoint_id = checkpoint_id_for(self.plan.run_seq, self.id_step, seq)

    def _finish_plan(self, reason: EndReason, exc: BaseException | None, detail: str | None) -> Plan[None]:
        """Store the run_end. With ``exc`` set, storage errors are logged, not raised."""
        try:
            yield Call(self.drain, self.adrain)
        except CheckpointConflictError:
            self.abandon()
            raise
        except PersistencyError as werr:
            if exc is None:
                yield from self._write_end("error", werr, detail, raise_errors=False)
                raise
        yield from self._write_end(reason, exc, detail, raise_errors=exc is None)

    def finish(self, reason: EndReason, exc: BaseException | None, detail: str | None = None) -> None:
        """Store the run_end (sync chats)."""
        run_sync(self._finish_plan(reason, exc, detail))

    async def afinish(self, reason: EndReason, exc: BaseException | None, detail: str | None = None) -> None:
        """Store the run_end (async chats), through the provider's async twin."""
        await run_async(self._finish_plan(reason, exc, detail))

    def _write_end(
        self, reason: EndReason, exc: BaseException | None, detail: str | None, *, raise_errors: bool
    ) -> Plan[None]:
        cp = self._end(reason, exc, detail)
        for _ in range(_END_RETRIES):
            try:
                yield io(self.writer, "save", cp)
                break
            except PersistencyError as err:
                if not self._end_retry(cp, err, raise_errors=raise_errors):
                    break
        self._done()

    def _end_retry(self, cp: Checkpoint, err: PersistencyError, *, raise_errors: bool) -> bool:
        """After a run_end save failed: True to try again under the next end id (a lost race for the
        id); otherwise re-raise the error, or log it when the run's own error is what reaches the caller."""
        if isinstance(err, CheckpointConflictError):
            self._bump(cp)
            return True
        if raise_errors:
            raise err
        log.exception("run_end of %s in session %s not stored", self.run_id, self.feature.session_id)
        return False

    def abandon(self) -> None:
        """A lost race: another worker owns this run. Stop the writer, store nothing more."""
        if self.background is not None:
            try:
                self.background.close()
            except PersistencyError:
                pass
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._done()

    def _done(self) -> None:
        self.feature._last_checkpoint_id = self.writer.last_stored
        self.feature._lost.extend(self.writer.lost)

    # -- driving the loop ---------------------------------------------------------------------------------
    def _watch_clears(self) -> Callable[[], None]:
        """Record each "clear history" AG2 applies (the transcript before it and the phrase): the
        manager keeps its histories while the agents lose theirs, so a resume must replay it."""

        def wrap(original: Callable[..., str]) -> Callable[..., str]:
            def clear_agents_history(reply: dict[str, Any], groupchat: GroupChat) -> str:
                before, content = list(groupchat.messages), reply.get("content")
                result = original(reply, groupchat)
                record = {"before": before, "content": content, "kept": len(groupchat.messages)}
                self.clears = [*self.clears, record]  # a new list: earlier checkpoints keep theirs
                return result

            return clear_agents_history

        return _ag2.wrap_clear_agents_history(self.manager, wrap)

    def run_plan(self, loop: Callable[..., Any], messages: list[dict[str, Any]], sender: Agent) -> Plan[None]:
        """Run AG2's loop (``run_chat`` or ``a_run_chat``) on our group chat and store the run's end."""
        kwargs = (("messages", messages), ("sender", sender), ("config", self.groupchat))
        unwatch = self._watch_clears()
        try:
            yield Call(loop, loop, (self.manager,), kwargs)
        except CheckpointConflictError:
            self.abandon()
            raise
        except Exception as exc:
            yield from self._finish_after(exc, "error")
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit, asyncio.CancelledError
            yield from self._finish_after(exc, "cancelled")
            raise
        finally:
            unwatch()
        reason, detail = self.end_reason()
        yield from self._finish_plan(reason, None, detail)

    def _finish_after(self, exc: BaseException, reason: EndReason) -> Plan[None]:
        """The run_end after the loop raised; in async chats nothing in it may replace the loop's error."""
        try:
            yield from self._finish_plan(reason, exc, None)
        except BaseException:
            if not self.is_async:
                raise
            log.exception("could not store the run_end of %s", self.run_id)
