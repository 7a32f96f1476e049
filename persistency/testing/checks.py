"""Assertions and harnesses of the kit that explain themselves: expected/got, thread and process races.

Every failure names what the contract asks and what the provider did, so a third-party author
reads the fix from the message, not from the kit's source.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from persistency.models import Checkpoint
from persistency.provider import PersistencyStorageProvider

__all__ = ["expect_same", "race_in_processes", "run_threads"]


def _first_difference(expected: Any, got: Any, path: str = "") -> str:
    """Where two JSON-like values first differ, as ``path: expected X, got Y``."""
    if type(expected) is not type(got):
        return (f"{path or 'value'}: expected {type(expected).__name__} {_short(expected)}, "
                f"got {type(got).__name__} {_short(got)}")
    if isinstance(expected, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got:
                return f"{path}.{key}: missing (expected {_short(expected[key])})"
            if key not in expected:
                return f"{path}.{key}: unexpected (got {_short(got[key])})"
            if expected[key] != got[key]:
                return _first_difference(expected[key], got[key], f"{path}.{key}")
    if isinstance(expected, list):
        if len(expected) != len(got):
            return f"{path}: expected {len(expected)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            if e != g:
                return _first_difference(e, g, f"{path}[{i}]")
    return f"{path or 'value'}: expected {_short(expected)}, got {_short(got)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def expect_same(expected: Checkpoint, got: Checkpoint, what: str = "the loaded checkpoint") -> None:
    """Fail with the first differing field unless ``got`` is ``expected`` exactly (as JSON)."""
    e, g = expected.model_dump(mode="json"), got.model_dump(mode="json")
    if e != g:
        raise AssertionError(
            f"{what} ({expected.checkpoint_id!r} of {expected.session_id!r}) is not what was saved: "
            f"{_first_difference(e, g)}"
        )


def run_threads(target: Callable[[int], Any], n: int, *, timeout: float = 120.0) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads released together; their results, in order.

    A thread that raises fails the caller with the thread's traceback (never just a warning),
    and a thread that does not finish within ``timeout`` seconds fails it too.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = target(i)
        except BaseException:
            errors.append(f"helper thread {i} failed:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        errors.append(f"{sum(t.is_alive() for t in threads)} helper thread(s) still running after {timeout} s")
    if errors:
        raise AssertionError("\n".join(errors))
    return results


def _race_child(factory: Callable[[], PersistencyStorageProvider], checkpoint: Checkpoint, start: float,
                out: Any, i: int) -> None:
    from persistency.errors import CheckpointConflictError

    try:
        provider = factory()
        cp = checkpoint.model_copy(update={"metadata": {"writer": i}})
        while time.time() < start:  # released together: the save calls start within the same instant
            time.sleep(0.0005)
        try:
            provider.save_checkpoint(cp)
            out.put((i, "won"))
        except CheckpointConflictError:
            out.put((i, "lost"))
        provider.close()
    except BaseException:
        out.put((i, "error: " + traceback.format_exc()))


def race_in_processes(factory: Callable[[], PersistencyStorageProvider], checkpoint: Checkpoint, n: int,
                      *, timeout: float = 120.0) -> dict[int, str]:
    """``n`` processes, each with its own provider from ``factory``, save ``checkpoint`` at once.

    Returns writer -> "won" / "lost". A process that fails or hangs fails the caller. Uses ``fork``
    (so ``factory`` may be a closure) where the platform has it, else ``spawn``.
    """
    methods = multiprocessing.get_all_start_methods()
    ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out = ctx.Queue()
    start = time.time() + 1.0 + 0.2 * n  # time for every process to start and connect first
    procs = [ctx.Process(target=_race_child, args=(factory, checkpoint, start, out, i), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    outcomes: dict[int, str] = {}
    deadline = time.time() + timeout
    try:
        while len(outcomes) < n:
            try:
                i, outcome = out.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                raise AssertionError(
                    f"only {len(outcomes)} of {n} racing processes reported within {timeout} s"
                ) from None
            outcomes[i] = outcome
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    failed = {i: o for i, o in outcomes.items() if o.startswith("error")}
    if failed:
        raise AssertionError("racing process(es) failed:\n" + "\n".join(failed.values()))
    return outcomes
