"""The contract on one provider instance: round trips, create-only, latest, listing, walks, errors, async twins."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from persistency.errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    InvalidIdentifierError,
    ProviderConfigError,
    SerializationError,
)
from persistency.ids import checkpoint_id_for, run_id_for
from persistency.provider import PersistencyStorageProvider
from persistency.testing.builders import HOSTILE_IDS, make_chain, make_checkpoint, message
from persistency.testing.checks import expect_same, run_threads

__all__ = ["ContractTests"]


class ContractTests:
    """Round trips, create-only, latest, listing and errors: the contract on one instance."""

    # -- round trips ------------------------------------------------------------------------------------
    def test_save_then_get_returns_the_same_checkpoint(self, provider: PersistencyStorageProvider) -> None:
        chain = make_chain(provider, "s1", 5)
        for cp in chain:
            expect_same(provider.get_checkpoint("s1", cp.checkpoint_id), cp)

    def test_long_chain_materializes_every_step(self, provider: PersistencyStorageProvider) -> None:
        chain = make_chain(provider, "long", 120)
        for cp in (chain[0], chain[57], chain[-1]):
            expect_same(provider.get_checkpoint("long", cp.checkpoint_id), cp)

    def test_changing_states_and_metadata_round_trip(self, provider: PersistencyStorageProvider) -> None:
        states: list[dict[str, dict[str, Any]]] = [
            {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}},
            {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}},
            {"a": {"x": 9}, "b": {"y": 2}, "c": {"z": 3}},
            {"a": {"x": 9}, "c": {"z": 3}},
            {"d": {"w": 4}},
            {},
            {"a": {"x": 1}},
        ]
        parent = None
        msgs: list[dict[str, Any]] = []
        saved = []
        for i, st in enumerate(states, start=1):
            msgs.append(message(i))
            cp = make_checkpoint("st", i, parent_id=parent, messages=list(msgs), agent_states=st,
                                 manager_state={"rounds_used": i, "last": f"n{i % 2}", "max_round": 9},
                                 metadata={"k": i // 3, "fixed": "same"} if i % 4 else {})
            provider.save_checkpoint(cp)
            saved.append(cp)
            parent = cp.checkpoint_id
        for cp in saved:
            expect_same(provider.get_checkpoint("st", cp.checkpoint_id), cp)
        infos = provider.list_checkpoints("st")
        assert [i.metadata for i in infos] == [c.metadata for c in saved]

    def test_branch_from_the_middle_keeps_both_histories(self, provider: PersistencyStorageProvider) -> None:
        main = make_chain(provider, "br", 10)
        branch = make_chain(provider, "br", 4, run_seq=2, start=main[4])
        expect_same(provider.get_checkpoint("br", main[-1].checkpoint_id), main[-1])
        got = provider.get_checkpoint("br", branch[-1].checkpoint_id)
        expect_same(got, branch[-1])
        assert got.messages[:5] == main[4].messages
        assert got.step == 9

    def test_a_child_that_rewrites_history_is_still_stored_exactly(
        self, provider: PersistencyStorageProvider
    ) -> None:
        chain = make_chain(provider, "rw", 3)
        rewritten: list[dict[str, Any]] = [dict(m, content="changed") for m in chain[-1].messages]
        rewritten.append(message(3))
        cp = make_checkpoint("rw", 4, parent_id=chain[-1].checkpoint_id, messages=rewritten)
        provider.save_checkpoint(cp)
        expect_same(provider.get_checkpoint("rw", cp.checkpoint_id), cp)

    def test_run_end_round_trips_with_its_reason(self, provider: PersistencyStorageProvider) -> None:
        chain = make_chain(provider, "end", 3)
        end = make_checkpoint("end", 3, parent_id=chain[-1].checkpoint_id, messages=chain[-1].messages,
                              kind="run_end", end_reason="termination_message", end_seq=1)
        provider.save_checkpoint(end)
        latest = provider.get_latest_checkpoint("end")
        assert latest is not None
        expect_same(latest, end)
        assert latest.run_complete

    def test_unicode_and_nested_content_round_trip(self, provider: PersistencyStorageProvider) -> None:
        msgs: list[dict[str, Any]] = [
            {"content": "héllo ✓ 日本語 🎉 \"quotes\" \\ back\nslash", "role": "user", "name": "alice"},
            {"content": [{"type": "text", "text": "multi"}], "role": "assistant", "name": "bob",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"content": None, "role": "tool", "tool_call_id": "c1", "name": "carol"},
        ]
        cp = make_checkpoint("uni", 3, messages=msgs)
        provider.save_checkpoint(cp)
        expect_same(provider.get_checkpoint("uni", cp.checkpoint_id), cp)

    # -- create-only ------------------------------------------------------------------------------------
    def test_saving_an_existing_id_conflicts_and_keeps_the_original(
        self, provider: PersistencyStorageProvider
    ) -> None:
        cp = make_checkpoint("c", 1)
        provider.save_checkpoint(cp)
        other = cp.model_copy(update={"metadata": {"other": True}})
        with pytest.raises(CheckpointConflictError):
            provider.save_checkpoint(other)
        expect_same(provider.get_checkpoint("c", cp.checkpoint_id), cp)

    def test_racing_writers_exactly_one_wins(self, provider: PersistencyStorageProvider) -> None:
        base = make_chain(provider, "race", 2)
        n = 8

        def writer(i: int) -> str:
            msgs = [*base[-1].messages, {"content": f"writer {i}", "role": "assistant", "name": "bob"}]
            cp = make_checkpoint("race", 3, parent_id=base[-1].checkpoint_id, messages=msgs, metadata={"writer": i})
            try:
                provider.save_checkpoint(cp)
            except CheckpointConflictError:
                return "lost"
            return f"won:{i}"

        results = run_threads(writer, n)
        winners = [r for r in results if r.startswith("won")]
        assert len(winners) == 1, (
            f"{len(winners)} of {n} threads saving the same checkpoint id won; create-only means exactly one wins "
            f"and the others get CheckpointConflictError (outcomes: {results})"
        )
        got = provider.get_checkpoint("race", checkpoint_id_for(1, 3))
        winner = int(winners[0].split(":")[1])
        assert got.metadata == {"writer": winner}, f"stored {got.metadata}, but writer {winner} won"
        assert got.messages[-1]["content"] == f"writer {winner}"

    # -- latest, listing, sessions ----------------------------------------------------------------------
    def test_latest_is_the_greatest_id_and_none_when_empty(self, provider: PersistencyStorageProvider) -> None:
        assert provider.get_latest_checkpoint("nothing") is None
        chain = make_chain(provider, "lat", 4)
        branch = make_chain(provider, "lat", 2, run_seq=2, start=chain[1])
        latest = provider.get_latest_checkpoint("lat")
        assert latest is not None
        assert latest.checkpoint_id == branch[-1].checkpoint_id

    def test_list_is_oldest_first_and_filters(self, provider: PersistencyStorageProvider) -> None:
        chain = make_chain(provider, "ls", 6)
        branch = make_chain(provider, "ls", 3, run_seq=2, start=chain[2])
        ids = [c.checkpoint_id for c in chain + branch]
        infos = provider.list_checkpoints("ls")
        assert [i.checkpoint_id for i in infos] == ids
        assert all(not hasattr(i, "messages") for i in infos)
        assert [i.step for i in infos] == [c.step for c in chain + branch]
        assert [i.checkpoint_id for i in provider.list_checkpoints("ls", run_id=run_id_for(2))] == ids[6:]
        assert [i.checkpoint_id for i in provider.list_checkpoints("ls", limit=2)] == ids[-2:]
        assert [i.checkpoint_id for i in provider.list_checkpoints("ls", before=ids[3])] == ids[:3]
        assert [i.checkpoint_id for i in provider.list_checkpoints("ls", before=ids[3], limit=1)] == ids[2:3]
        assert provider.list_checkpoints("ls", limit=0) == []
        for bad in ("x", -1, 1.5, True):
            with pytest.raises(ProviderConfigError, match="limit"):
                provider.list_checkpoints("ls", limit=bad)  # type: ignore[arg-type]
        assert provider.list_checkpoint_ids("ls") == sorted(ids)
        assert provider.list_checkpoint_ids("unknown-session") == []
        assert provider.list_checkpoints("unknown-session") == []
        assert infos[0].created_at.tzinfo is not None

    def test_sessions_list_and_delete(self, provider: PersistencyStorageProvider) -> None:
        assert provider.list_sessions() == []
        make_chain(provider, "b-session", 2)
        make_chain(provider, "a-session", 1)
        assert provider.list_sessions() == ["a-session", "b-session"]
        provider.delete_session("b-session")
        assert provider.list_sessions() == ["a-session"]
        assert provider.get_latest_checkpoint("b-session") is None
        provider.delete_session("b-session")  # idempotent
        with pytest.raises(CheckpointNotFoundError):
            provider.get_checkpoint("b-session", checkpoint_id_for(1, 1))
        # a deleted session can start again from scratch
        again = make_chain(provider, "b-session", 1)
        expect_same(provider.get_checkpoint("b-session", again[0].checkpoint_id), again[0])

    # -- walking a session -----------------------------------------------------------------------------
    def test_iter_checkpoints_gives_what_get_checkpoint_gives(self, provider: PersistencyStorageProvider) -> None:
        main = make_chain(provider, "walk", 9)
        make_chain(provider, "walk", 3, run_seq=2, start=main[3])  # a branch from step 4
        make_chain(provider, "walk", 2, run_seq=3, start=main[-1])  # a continuation
        ids = provider.list_checkpoint_ids("walk")
        walked = list(provider.iter_checkpoints("walk"))
        assert [cid for cid, _ in walked] == ids, (
            "iter_checkpoints(session) must yield (id, checkpoint) for every id of the session, oldest first "
            f"(list_checkpoint_ids); got ids {[cid for cid, _ in walked]}, expected {ids}"
        )
        for cid, got in walked:
            assert not isinstance(got, Exception), (
                f"iter_checkpoints yielded {got!r} for {cid!r}, which get_checkpoint loads")
            expect_same(provider.get_checkpoint("walk", cid), got, f"iter_checkpoints' checkpoint {cid!r}")
        missing = checkpoint_id_for(1, 99)
        chosen = [ids[10], ids[1], missing]  # given ids, in their order; one is not stored
        some = list(provider.iter_checkpoints("walk", chosen))
        assert [cid for cid, _ in some] == chosen, (
            f"iter_checkpoints(session, ids) must yield the ids given, in their order; got {[c for c, _ in some]}")
        for (cid, got), expected in zip(some[:2], (ids[10], ids[1]), strict=True):
            assert not isinstance(got, Exception), f"iter_checkpoints yielded {got!r} for {cid!r}"
            expect_same(provider.get_checkpoint("walk", expected), got, f"iter_checkpoints' checkpoint {cid!r}")
        assert isinstance(some[2][1], CheckpointNotFoundError), (
            "for an id that is not stored, iter_checkpoints must yield the CheckpointNotFoundError that "
            f"get_checkpoint raises (not raise it, so the walk goes on); got {some[2][1]!r}"
        )
        assert list(provider.iter_checkpoints("no-such-session")) == []

    @pytest.mark.asyncio
    async def test_aiter_checkpoints_gives_what_the_sync_walk_gives(
        self, provider: PersistencyStorageProvider
    ) -> None:
        main = make_chain(provider, "awalk", 5)
        make_chain(provider, "awalk", 2, run_seq=2, start=main[1])
        expected = list(provider.iter_checkpoints("awalk"))
        got = [item async for item in provider.aiter_checkpoints("awalk")]
        assert got == expected, "aiter_checkpoints must yield what iter_checkpoints yields"
        backwards = [cid for cid, _ in reversed(expected)]
        assert [item async for item in provider.aiter_checkpoints("awalk", backwards)] == expected[::-1]

    # -- errors ----------------------------------------------------------------------------------------
    def test_missing_checkpoint_and_foreign_session(self, provider: PersistencyStorageProvider) -> None:
        chain = make_chain(provider, "mine", 2)
        with pytest.raises(CheckpointNotFoundError):
            provider.get_checkpoint("mine", checkpoint_id_for(1, 99))
        with pytest.raises(CheckpointNotFoundError):
            provider.get_checkpoint("theirs", chain[0].checkpoint_id)

    def test_parent_must_exist_in_the_same_session(self, provider: PersistencyStorageProvider) -> None:
        other = make_chain(provider, "other", 1)
        cp = make_checkpoint("orphan", 2, parent_id=other[0].checkpoint_id)
        with pytest.raises(CheckpointNotFoundError):
            provider.save_checkpoint(cp)
        assert provider.get_latest_checkpoint("orphan") is None

    @pytest.mark.parametrize("bad", HOSTILE_IDS)
    def test_hostile_ids_are_refused_everywhere(self, provider: PersistencyStorageProvider, bad: str) -> None:
        good = make_checkpoint("ok", 1)
        with pytest.raises(InvalidIdentifierError):
            provider.get_checkpoint(bad, good.checkpoint_id)
        with pytest.raises(InvalidIdentifierError):
            provider.get_checkpoint("ok", bad)
        with pytest.raises(InvalidIdentifierError):
            provider.get_latest_checkpoint(bad)
        with pytest.raises(InvalidIdentifierError):
            provider.list_checkpoints(bad)
        with pytest.raises(InvalidIdentifierError):
            provider.delete_session(bad)
        with pytest.raises(InvalidIdentifierError):
            list(provider.iter_checkpoints(bad))
        with pytest.raises(InvalidIdentifierError):
            list(provider.iter_checkpoints("ok", [bad]))
        with pytest.raises(InvalidIdentifierError):
            provider.save_checkpoint(good.model_copy(update={"session_id": bad}))
        with pytest.raises(InvalidIdentifierError):
            provider.save_checkpoint(good.model_copy(update={"checkpoint_id": bad}))
        assert provider.list_sessions() == []

    def test_unserialisable_message_is_named_and_nothing_is_stored(
        self, provider: PersistencyStorageProvider
    ) -> None:
        msgs = [message(0), {"content": object(), "role": "assistant", "name": "bob"}]
        with pytest.raises(SerializationError, match=r"message at step 2 from 'bob'"):
            provider.save_checkpoint(make_checkpoint("ser", 2, messages=msgs))
        deep: Any = "leaf"
        for _ in range(5000):
            deep = {"d": deep}
        with pytest.raises(SerializationError, match="message at step 1"):
            provider.save_checkpoint(make_checkpoint("ser", 1, messages=[{"content": deep, "role": "user"}]))
        assert provider.get_latest_checkpoint("ser") is None

    def test_lone_surrogates_round_trip_exactly(self, provider: PersistencyStorageProvider) -> None:
        """Unpaired UTF-16 code units (model output holds them) are stored escaped and read back exactly."""
        texts = ["\ud83d", "half \ud83d emoji", "\udc00 low", "a\ud800\ud800b"]
        msgs = [{"content": t, "role": "user", "name": "alice"} for t in texts]
        cp = make_checkpoint("sur", len(msgs), messages=msgs, metadata={"note": "\ud83d"})
        provider.save_checkpoint(cp)
        got = provider.get_checkpoint("sur", cp.checkpoint_id)
        assert [m["content"] for m in got.messages] == texts
        assert got.metadata == {"note": "\ud83d"}

    # -- async twins and lifecycle ---------------------------------------------------------------------
    @pytest.mark.asyncio  # users run pytest-asyncio in its default strict mode
    async def test_async_twins(self, provider: PersistencyStorageProvider) -> None:
        cp = make_checkpoint("as", 1)
        await provider.asave_checkpoint(cp)
        with pytest.raises(CheckpointConflictError):
            await provider.asave_checkpoint(cp)
        child = make_checkpoint("as", 2, parent_id=cp.checkpoint_id)
        await asyncio.gather(provider.asave_checkpoint(child), asyncio.sleep(0))
        expect_same(await provider.aget_checkpoint("as", cp.checkpoint_id), cp)
        latest = await provider.aget_latest_checkpoint("as")
        assert latest is not None and latest.checkpoint_id == child.checkpoint_id
        assert [i.checkpoint_id for i in await provider.alist_checkpoints("as")] == [
            cp.checkpoint_id,
            child.checkpoint_id,
        ]
        assert await provider.alist_sessions() == ["as"]
        await provider.adelete_session("as")
        assert await provider.alist_sessions() == []

    def test_context_manager_and_close_is_idempotent(self, provider: PersistencyStorageProvider) -> None:
        with provider as p:
            assert p is provider
        provider.close()
