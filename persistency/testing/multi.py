"""The contract across instances and processes: what one writes another reads; one racer wins.

These tests need the ``provider_factory`` fixture: a zero-argument callable that opens another
instance on the same store as ``provider`` (how a second worker would). Without it they skip
with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from persistency.errors import CheckpointConflictError, CheckpointNotFoundError
from persistency.provider import PersistencyStorageProvider
from persistency.testing.builders import make_chain, make_checkpoint, message
from persistency.testing.checks import expect_same, race_in_processes, run_threads

__all__ = ["MultiInstanceTests"]

Factory = Callable[[], PersistencyStorageProvider]
RACERS = 6


class MultiInstanceTests:
    """Two instances on one store, and processes racing for one id."""

    @pytest.fixture
    def provider_factory(self, provider: PersistencyStorageProvider) -> Factory:
        """Override: open another instance on ``provider``'s store (picklable where fork is missing)."""
        pytest.skip("supply a provider_factory fixture (another instance on the same store) to run this test")

    def test_what_one_instance_writes_another_reads(self, provider: PersistencyStorageProvider,
                                                    provider_factory: Factory) -> None:
        chain = make_chain(provider, "two", 3)
        other = provider_factory()
        try:
            latest = other.get_latest_checkpoint("two")
            assert latest is not None, "a second instance on the same store sees no checkpoint of the session"
            expect_same(chain[-1], latest, "the latest checkpoint read by a second instance")
            child = make_checkpoint("two", 4, parent_id=chain[-1].checkpoint_id,
                                    messages=[*chain[-1].messages, message(3)])
            other.save_checkpoint(child)
            again = provider.get_latest_checkpoint("two")
            assert again is not None and again.checkpoint_id == child.checkpoint_id, (
                f"the first instance still sees {again and again.checkpoint_id!r} as latest after a second one "
                f"saved {child.checkpoint_id!r}: a cache hides what other instances write"
            )
            expect_same(child, again, "a checkpoint saved by another instance")
            assert [i.checkpoint_id for i in provider.list_checkpoints("two")][-1] == child.checkpoint_id
        finally:
            other.close()

    def test_instances_racing_for_one_id_exactly_one_wins(self, provider: PersistencyStorageProvider,
                                                          provider_factory: Factory) -> None:
        instances = [provider_factory() for _ in range(4)]
        try:
            def save(i: int) -> str:
                try:
                    instances[i].save_checkpoint(make_checkpoint("irace", 1, metadata={"writer": i}))
                except CheckpointConflictError:
                    return "lost"
                return "won"

            outcomes = run_threads(save, len(instances))
        finally:
            for p in instances:
                p.close()
        assert outcomes.count("won") == 1, (
            f"{outcomes.count('won')} of {len(outcomes)} instances on one store won the same checkpoint id: "
            "create-only must hold between instances, not only within one"
        )

    def test_a_delete_by_another_instance_is_seen(self, provider: PersistencyStorageProvider,
                                                  provider_factory: Factory) -> None:
        chain = make_chain(provider, "gone", 2)
        other = provider_factory()
        try:
            other.delete_session("gone")
        finally:
            other.close()
        assert provider.get_latest_checkpoint("gone") is None, "a session deleted by another instance still loads"
        assert "gone" not in provider.list_sessions()
        with pytest.raises(CheckpointNotFoundError):
            provider.get_checkpoint("gone", chain[0].checkpoint_id)

    def test_processes_racing_for_one_id_exactly_one_wins(self, provider: PersistencyStorageProvider,
                                                          provider_factory: Factory) -> None:
        if not getattr(provider, "shared_across_processes", True):
            pytest.skip(f"{provider!r} is one process's store by nature (shared_across_processes=False)")
        cp = make_checkpoint("prace", 1)
        outcomes = race_in_processes(provider_factory, cp, RACERS)
        winners = sorted(i for i, o in outcomes.items() if o == "won")
        assert len(winners) == 1, (
            f"{len(winners)} of {RACERS} processes won the create-only race for checkpoint {cp.checkpoint_id!r}: "
            "the provider's create-only write does not hold across processes (an in-process lock or an "
            "exists-then-write check is not enough; use the store's own conditional create)"
        )
        got = provider.get_checkpoint("prace", cp.checkpoint_id)
        assert got.metadata == {"writer": winners[0]}, (
            f"process {winners[0]} won, but the stored checkpoint is writer {got.metadata.get('writer')!r}'s: "
            "a losing writer overwrote the winner"
        )
