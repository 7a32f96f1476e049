"""One body for sync and async redis-py calls: generators yield zero-argument calls, a driver makes them.

A generator here yields a callable (``client.execute_command`` with its arguments bound, say)
and receives its result, or has its exception thrown back in. `drive` calls it; `adrive` calls
it and awaits the result when it is awaitable (redis.asyncio). The logic around the calls (EVALSHA
then EVAL, a pipeline, probing for a cluster) is written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Calls", "adrive", "drive"]

T = TypeVar("T")
Calls = Generator[Callable[[], Any], Any, T]


class _Stepper(Generic[T]):
    """Iterates the calls of a generator, feeding each one's result or exception back in."""

    def __init__(self, gen: Calls[T]) -> None:
        self._gen = gen
        self._value: Any = None
        self._error: BaseException | None = None
        self.result: T

    def __iter__(self) -> Iterator[Callable[[], Any]]:
        while True:
            try:
                call = self._gen.throw(self._error) if self._error is not None else self._gen.send(self._value)
            except StopIteration as stop:
                self.result = stop.value
                return
            self._value, self._error = None, None
            yield call

    def call(self, call: Callable[[], Any]) -> None:
        """Make a sync call."""
        try:
            self._value = call()
        except Exception as exc:
            self._error = exc

    async def acall(self, call: Callable[[], Any]) -> None:
        """Make a call, awaiting its result when it is awaitable."""
        try:
            value = call()
            self._value = await value if inspect.isawaitable(value) else value
        except Exception as exc:
            self._error = exc


def drive(gen: Calls[T]) -> T:
    """Run ``gen``'s calls synchronously; its return value."""
    stepper = _Stepper(gen)
    for call in stepper:
        stepper.call(call)
    return stepper.result


async def adrive(gen: Calls[T]) -> T:
    """Run ``gen``'s calls, awaiting the awaitable results; its return value."""
    stepper = _Stepper(gen)
    for call in stepper:
        await stepper.acall(call)
    return stepper.result
