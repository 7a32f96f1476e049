"""Running a plan: the loop shared by the sync and the async driver (no I/O here).

`StorageBackend._run` and `_arun` differ only in calling a primitive or awaiting its twin; the
stepping, the replies and the error translation live here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from persistency.errors import PersistencyError, StorageUnavailableError
from persistency.storage.ops import PRIMITIVES, Plan, StaleParent

__all__ = ["Call", "PlanDriver"]

T = TypeVar("T")


class Call:
    """One primitive call a plan asks for: its name and arguments."""

    __slots__ = ("args", "name")

    def __init__(self, name: str, args: tuple[Any, ...]) -> None:
        self.name = name
        self.args = args


class PlanDriver(Generic[T]):
    """Iterate the calls of ``plan``; set `reply` after each; read `result` at the end."""

    def __init__(self, backend_name: str, plan: Plan[T]) -> None:
        self._backend = backend_name
        self._plan = plan
        self.reply: Any = None
        self._signal: StaleParent | None = None
        self.result: T

    def __iter__(self) -> Iterator[Call]:
        while True:
            try:
                signal, self._signal = self._signal, None
                op = self._plan.throw(signal) if signal is not None else self._plan.send(self.reply)
            except StopIteration as stop:
                self.result = stop.value
                return
            name, args = PRIMITIVES[type(op)]
            self.reply = None
            yield Call(name, args(op))

    def failed(self, call: Call, exc: Exception) -> None:
        """What a failed primitive call means, decided once for both drivers (called from their
        ``except``, so the common, successful call enters no context manager): a stale-parent signal
        is kept to be thrown back into the plan, a typed error goes on as it is, and a backend's raw
        failure becomes `StorageUnavailableError` naming the backend, its cause kept."""
        if isinstance(exc, StaleParent):
            self._signal = exc
            return
        if isinstance(exc, PersistencyError):
            raise exc
        from persistency.registry import redact_url

        raise StorageUnavailableError(
            f"{self._backend} backend failed in {call.name}: {type(exc).__name__}: {redact_url(str(exc))[:300]}"
        ) from exc
