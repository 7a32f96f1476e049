"""JSON text for records: compact, UTF-8, exact for every string AG2 accepts, refused cleanly otherwise.

Messages are Python strings, and a Python string may hold a lone surrogate (``"\\ud83d"``, half
of an emoji cut by a tokenizer or a slice) that UTF-8 cannot encode. Such text is written with
JSON escapes (``\\ud83d``), which read back to the same string, so every message round-trips
exactly. Nesting deeper than the interpreter can walk is refused before anything is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from persistency.errors import CorruptCheckpointError, SerializationError

__all__ = ["dumps", "loads"]

_COMPACT: dict[str, Any] = {"allow_nan": False, "separators": (",", ":")}


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; lone surrogates escaped; `SerializationError` if not JSON."""
    try:
        text = json.dumps(value, ensure_ascii=False, **_COMPACT)
    except RecursionError as exc:
        raise SerializationError("nested too deeply to store as JSON") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape non-ASCII text instead (same value on read)
        return json.dumps(value, ensure_ascii=True, **_COMPACT).encode("ascii")


_fast_loads: Callable[[bytes | str], Any] | None
try:  # the ``fast`` extra: ~2x faster parsing; anything it refuses is parsed by the standard library
    from orjson import JSONDecodeError as _FastError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None


def loads(data: bytes | str, where: str) -> Any:
    """Parse stored JSON; `CorruptCheckpointError` naming ``where`` if it does not parse.

    With ``orjson`` installed it parses first (same values for every document it accepts); what it
    refuses (a lone surrogate escape, an integer beyond 64 bits, very deep nesting) goes to `json`.
    """
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except _FastError:
            pass
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = exc if isinstance(exc, ValueError) else type(exc).__name__
        raise CorruptCheckpointError(f"{where}: not valid UTF-8 JSON ({why})") from exc
