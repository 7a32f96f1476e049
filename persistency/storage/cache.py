"""A small thread-safe LRU for immutable values (records never change once written)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["LRUCache"]


class LRUCache:
    """Keeps the ``size`` most recently used values; keys are tuples whose first item is a session id."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Hashable, ...]) -> Any:
        """The value under ``key`` (now the most recent), or None."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[Hashable, ...], value: Any) -> None:
        """Keep ``value`` under ``key``, forgetting the least recently used beyond the size."""
        if self._size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def drop_session(self, session_id: str) -> None:
        """Forget every value of one session (after a delete)."""
        with self._lock:
            for key in [k for k in self._data if k[0] == session_id]:
                del self._data[key]
