"""The lease and generation contract (the ownership issue), as tests any backend's author can run.

Subclass `LeaseConformance` with the kit's fixtures (``provider``, ``provider_factory``). A backend
without leases (``acquire_lease`` raises `NotImplementedError`) is skipped, not failed. Races are
real processes (fork where the platform has it) released together; no test depends on timing:
expiry is waited for by watching the clock pass the lease's own ``expires_at``.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest

from persistency.errors import InvalidIdentifierError, ProviderConfigError
from persistency.provider import PersistencyStorageProvider
from persistency.storage import Lease
from persistency.testing.builders import make_chain

__all__ = ["LeaseConformance"]

Factory = Callable[[], PersistencyStorageProvider]


def _wait_past(deadline: float) -> None:
    """Sleep until the wall clock has passed ``deadline`` (bounded: leases here last under 2 s)."""
    limit = time.monotonic() + 30
    while time.time() <= deadline + 0.05:
        assert time.monotonic() < limit, "the clock did not reach the lease's expiry"
        time.sleep(0.05)


def _acquirer(factory: Factory, session: str, i: int, ttl: float, barrier: Any, results: Any) -> None:
    try:
        p: Any = factory()
        barrier.wait(60)
        got = p.acquire_lease(session, f"worker-{i}", ttl)
        results.put(f"won:{i}" if got is not None else "lost")
        p.close()
    except BaseException as exc:
        results.put(f"error: {type(exc).__name__}: {exc}")


class LeaseConformance:
    """The lease contract: one live holder, compare-the-holder renew/release, expiry, generations."""

    @pytest.fixture(autouse=True)
    def _needs_leases(self, provider: PersistencyStorageProvider) -> None:
        try:
            lease = provider.acquire_lease("probe", "probe", 1)  # type: ignore[attr-defined,unused-ignore]
        except NotImplementedError:
            pytest.skip(f"{provider!r} does not implement session leases")
        provider.release_lease(lease)  # type: ignore[attr-defined]

    def test_one_live_holder_and_renew_release_by_token(self, provider: PersistencyStorageProvider) -> None:
        a = provider.acquire_lease("s", "worker-a", 30)  # type: ignore[attr-defined]
        assert isinstance(a, Lease) and a.session_id == "s" and a.owner == "worker-a" and a.token
        assert a.expires_at > time.time()
        assert provider.acquire_lease("s", "worker-b", 30) is None  # type: ignore[attr-defined]
        assert provider.acquire_lease("other", "worker-b", 30) is not None  # type: ignore[attr-defined]
        renewed = provider.renew_lease(a, 60)  # type: ignore[attr-defined]
        assert renewed is not None and renewed.expires_at > a.expires_at and renewed.owner == "worker-a"
        forged = Lease("s", "worker-a", a.expires_at, a.generation, "not-the-token")
        assert provider.renew_lease(forged, 60) is None  # type: ignore[attr-defined]
        provider.release_lease(forged)  # type: ignore[attr-defined]  # a stranger cannot drop it
        assert provider.acquire_lease("s", "worker-b", 30) is None  # type: ignore[attr-defined]
        provider.release_lease(renewed)  # type: ignore[attr-defined]
        b = provider.acquire_lease("s", "worker-b", 30)  # type: ignore[attr-defined]
        assert b is not None and b.owner == "worker-b"
        assert provider.renew_lease(renewed, 30) is None  # type: ignore[attr-defined]  # released: gone

    def test_an_expired_lease_is_taken_over_and_the_old_holder_is_locked_out(
        self, provider: PersistencyStorageProvider
    ) -> None:
        old = provider.acquire_lease("s", "worker-a", 0.4)  # type: ignore[attr-defined]
        assert old is not None
        _wait_past(old.expires_at)
        new = provider.acquire_lease("s", "worker-b", 30)  # type: ignore[attr-defined]
        assert new is not None and new.owner == "worker-b"
        assert provider.renew_lease(old, 30) is None  # type: ignore[attr-defined]
        provider.release_lease(old)  # type: ignore[attr-defined]  # must not drop the new holder's
        assert provider.acquire_lease("s", "worker-c", 30) is None  # type: ignore[attr-defined]
        current = getattr(provider, "current_lease", None)
        if current is not None:
            seen = current("s")
            assert seen is not None and seen.owner == "worker-b" and seen.expires_at > time.time()

    def test_the_current_lease_is_a_snapshot_that_releases_only_itself(
        self, provider: PersistencyStorageProvider
    ) -> None:
        """``current_lease`` (optional) returns the live holding with its token; releasing that snapshot is a
        compare-and-delete: it frees the lease if it is still that holding and leaves a newer one alone
        (the feature relies on it to free, exactly once, a lease left by a dead process of its machine)."""
        current = getattr(provider, "current_lease", None)
        if current is None:
            pytest.skip(f"{provider!r} has no current_lease")
        assert current("snap") is None
        held = provider.acquire_lease("snap", "worker-a", 30)  # type: ignore[attr-defined]
        seen = current("snap")
        assert seen is not None and seen.owner == "worker-a" and seen.session_id == "snap"
        assert seen.generation == held.generation and abs(seen.expires_at - held.expires_at) < 1.0
        provider.release_lease(seen)  # type: ignore[attr-defined]
        assert current("snap") is None
        newer = provider.acquire_lease("snap", "worker-b", 30)  # type: ignore[attr-defined]
        assert newer is not None
        provider.release_lease(seen)  # type: ignore[attr-defined]  # stale: must not drop worker-b's
        assert provider.acquire_lease("snap", "worker-c", 30) is None  # type: ignore[attr-defined]
        assert provider.renew_lease(newer, 30) is not None  # type: ignore[attr-defined]

    def test_generation_advances_with_each_delete_and_leases_carry_it(
        self, provider: PersistencyStorageProvider
    ) -> None:
        assert provider.session_generation("g") == 0  # type: ignore[attr-defined]
        make_chain(provider, "g", 2)
        provider.delete_session("g")
        assert provider.session_generation("g") == 1  # type: ignore[attr-defined]
        provider.delete_session("g")  # deleting an absent session still advances: a delete happened
        assert provider.session_generation("g") == 2  # type: ignore[attr-defined]
        lease = provider.acquire_lease("g", "worker-a", 30)  # type: ignore[attr-defined]
        assert lease is not None and lease.generation == 2
        assert provider.list_sessions() == []  # neither leases nor generations look like sessions
        assert provider.session_generation("never") == 0  # type: ignore[attr-defined]

    @pytest.mark.parametrize(("owner", "ttl", "error"), [
        ("", 10, ProviderConfigError), ("a b", 10, ProviderConfigError), ("x" * 300, 10, ProviderConfigError),
        ("w", 0, ProviderConfigError), ("w", -1, ProviderConfigError), ("w", math.nan, ProviderConfigError),
        ("w", math.inf, ProviderConfigError), ("w", True, ProviderConfigError), ("w", "10", ProviderConfigError),
    ])
    def test_bad_owner_or_duration_is_refused_at_call_time(
        self, provider: PersistencyStorageProvider, owner: Any, ttl: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            provider.acquire_lease("s", owner, ttl)  # type: ignore[attr-defined]
        assert provider.acquire_lease("s", "w", 10) is not None  # type: ignore[attr-defined]  # nothing was taken

    @pytest.mark.parametrize("bad", ["", "../x", "a/b", "{tag}", "a:b"])
    def test_hostile_session_ids_are_refused(self, provider: PersistencyStorageProvider, bad: str) -> None:
        with pytest.raises(InvalidIdentifierError):
            provider.acquire_lease(bad, "w", 10)  # type: ignore[attr-defined]
        with pytest.raises(InvalidIdentifierError):
            provider.session_generation(bad)  # type: ignore[attr-defined]

    @pytest.mark.parametrize("state", ["absent", "expired"])
    def test_eight_processes_race_for_a_lease_exactly_one_wins(
        self, provider: PersistencyStorageProvider, provider_factory: Factory, state: str
    ) -> None:
        if not getattr(provider, "shared_across_processes", True):
            pytest.skip(f"{provider!r} is one process's store by nature")
        session = f"race-{state}"
        ttl = 60.0
        if state == "expired":
            dead = provider.acquire_lease(session, "dead-worker", 0.3)  # type: ignore[attr-defined]
            assert dead is not None
            _wait_past(dead.expires_at)
        ctx: Any = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        n = 8
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_acquirer, args=(provider_factory, session, i, ttl, barrier, results))
                 for i in range(n)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in range(n)]
        for proc in procs:
            proc.join(60)
        winners = [o for o in outcomes if o.startswith("won:")]
        assert len(winners) == 1 and outcomes.count("lost") == n - 1, outcomes
        holder = getattr(provider, "current_lease", None)
        if holder is not None:
            assert holder(session).owner == f"worker-{winners[0].split(':')[1]}"
