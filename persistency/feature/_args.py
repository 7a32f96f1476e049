"""Argument checks at construction: a wrong type is a TypeError, a wrong value a ValueError, each naming
the argument, so a misconfigured Persistency fails where it is built, not at the first chat."""

from __future__ import annotations

from typing import Any

from persistency.policies import ResumePolicy

__all__ = ["DURABILITIES", "ON_ERRORS", "check_arguments"]

DURABILITIES = ("sync", "async", "exit")
ON_ERRORS = ("raise", "continue")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


def check_arguments(*, policy: Any, durability: Any, on_error: Any, max_pending: Any, on_checkpoint: Any) -> None:
    """Refuse a bad policy, durability, on_error, max_pending or on_checkpoint."""
    if policy is not None and not isinstance(policy, ResumePolicy):
        hint = f" (use ResumePolicy.{policy}())" if isinstance(policy, str) and hasattr(ResumePolicy, policy) else ""
        raise TypeError(f"policy must be a ResumePolicy, not {type(policy).__name__}{hint}")
    _choice("durability", durability, DURABILITIES)
    _choice("on_error", on_error, ON_ERRORS)
    if not isinstance(max_pending, int) or isinstance(max_pending, bool):
        raise TypeError(f"max_pending must be an int, not {type(max_pending).__name__}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, not {max_pending}")
    if on_checkpoint is not None and not callable(on_checkpoint):
        raise TypeError(f"on_checkpoint must be callable, not {type(on_checkpoint).__name__}")
