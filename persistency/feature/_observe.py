"""Observability: a DEBUG line per save and load (duration, size), optional OpenTelemetry spans, the
``on_checkpoint`` callback.

Spans are made only when ``opentelemetry-api`` is importable (``persistency.save``,
``persistency.load``, ``persistency.resume``); without it every helper here is a no-op but the log
line. A callback that raises is logged and never breaks the chat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["notify", "span", "timed_debug"]

log = logging.getLogger(__name__)

_TRACER: Any = None
_NO_OTEL = False


def _tracer() -> Any:
    global _TRACER, _NO_OTEL
    if _TRACER is None and not _NO_OTEL:
        try:
            from opentelemetry import trace
        except ImportError:
            _NO_OTEL = True
            return None
        _TRACER = trace.get_tracer("persistency")
    return _TRACER


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """An OpenTelemetry span ``persistency.<name>`` when the API is installed; else nothing."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    attrs = {f"persistency.{k}": v for k, v in attributes.items() if isinstance(v, (str, int, float, bool))}
    with tracer.start_as_current_span(f"persistency.{name}", attributes=attrs):
        yield


def size_of(value: Any) -> int:
    """Approximate JSON size in bytes (computed only when DEBUG logging is on)."""
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return -1


@contextlib.contextmanager
def timed_debug(logger: logging.Logger, what: str, size: Callable[[], int]) -> Iterator[None]:
    """Log ``what`` at DEBUG with its duration and ``size()`` bytes, after the block succeeds."""
    if not logger.isEnabledFor(logging.DEBUG):
        yield
        return
    start = time.perf_counter()
    yield
    logger.debug("%s in %.2f ms, %d bytes", what, (time.perf_counter() - start) * 1000, size())


def notify(callback: Callable[[Any], None] | None, info: Any) -> None:
    """Call ``on_checkpoint``; an exception in it is logged, never raised into the chat."""
    if callback is None:
        return
    try:
        callback(info)
    except Exception:  # the user's callback must not break the chat
        log.exception("on_checkpoint callback failed for checkpoint %s", getattr(info, "checkpoint_id", "?"))
