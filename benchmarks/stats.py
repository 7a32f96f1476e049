"""Small, dependency-free statistics: medians and percentiles over timing samples (seconds)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["percentile", "summarize_steps", "window"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def window(values: Sequence[float]) -> dict[str, Any]:
    """Median and p99 of a window of samples (seconds), plus its size."""
    return {
        "n": len(values),
        "median": statistics.median(values) if values else None,
        "p99": percentile(values, 99),
    }


def summarize_steps(samples: Sequence[float], edge: int = 100) -> dict[str, Any]:
    """First-``edge`` and last-``edge`` windows of per-step samples and the ratio of their medians."""
    first = window(samples[:edge])
    last = window(samples[-edge:]) if len(samples) >= 2 * edge else window(samples[edge:])
    ratio = None
    if first["median"] and last["median"] is not None:
        ratio = last["median"] / first["median"]
    return {"first": first, "last": last, "ratio": ratio, "count": len(samples)}
