"""One body for sync and async: I/O-free plans driven by a sync or an async driver.

A plan is a generator that yields `Call`s (an operation with a sync and an async form: a
provider method and its ``a``-twin, a loop and its async loop) and gets each result sent back, or
the operation's exception thrown in. `run_sync` runs the sync forms, `run_async` awaits the async
ones; the decisions (what to load, what to store, what to do on a failure) are written once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Call", "Plan", "io", "run_async", "run_sync"]

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One operation of a plan, in both forms."""

    sync: Callable[..., Any]
    async_: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


Plan = Generator[Call, Any, T]


def io(target: Any, name: str, *args: Any, **kwargs: Any) -> Call:
    """``target.name(*args)`` in sync chats, ``await target.a<name>(*args)`` in async ones."""
    return Call(getattr(target, name), getattr(target, f"a{name}"), args, tuple(kwargs.items()))


async def _sync_form(call: Call) -> Any:
    return call.sync(*call.args, **dict(call.kwargs))


async def _async_form(call: Call) -> Any:
    return await call.async_(*call.args, **dict(call.kwargs))


async def _drive(plan: Plan[T], form: Callable[[Call], Awaitable[Any]]) -> T:
    """The one driver loop: each call's result goes back into the plan, or its exception."""
    try:
        call = next(plan)
        while True:
            try:
                result = await form(call)
            except BaseException as exc:  # the plan decides; what it does not catch propagates
                call = plan.throw(exc)
            else:
                call = plan.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def run_sync(plan: Plan[T]) -> T:
    """Run ``plan`` with the sync form of every call (the driver coroutine never suspends)."""
    coro = _drive(plan, _sync_form)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a sync plan suspended")  # pragma: no cover - only sync forms run here


async def run_async(plan: Plan[T]) -> T:
    """Run ``plan`` awaiting the async form of every call."""
    return await _drive(plan, _async_form)
