"""Termination conditions that can be written down and restored: helpers, source reading, specs.

AG2 keeps an agent's termination condition as a private callable, which a checkpoint cannot hold.
This package turns one into a JSON *spec* and back:

- AG2's default (content equal to ``"TERMINATE"``) becomes ``{"kind": "default"}``;
- the serialisable helpers (`contains`, `equals`, `endswith`, `any_of`) describe themselves;
- a lambda or one-``return`` function written the way AG2's docs write them
  (``lambda x: x.get("content", "").find("TERMINATE") >= 0``, ``"DONE" in (m.get("content") or "")``,
  ``x["content"].rstrip().endswith(WORD)``, ``and``/``or``/``not`` of such tests, ...) is read from
  its source with ``ast`` into ``{"kind": "expr", "expr": <tree>}``; the restored condition applies
  the same operations to the same values, so it also fails where the original fails (see `_expr`);
- anything else becomes ``{"kind": "custom", "restorable": false, ...}`` naming the function only
  (no source code is stored, and nothing stored is ever executed).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from persistency.errors import ResumeError
from persistency.termination._expr import Expression, check_tree
from persistency.termination._helpers import (
    Message,
    TerminationCondition,
    any_of,
    contains,
    endswith,
    equals,
    text_condition,
)
from persistency.termination._read import read_condition

__all__ = [
    "Expression",
    "TerminationCondition",
    "any_of",
    "contains",
    "describe",
    "endswith",
    "equals",
    "from_spec",
    "is_restorable",
]


@functools.cache
def _default_code() -> types.CodeType:
    from autogen import ConversableAgent

    return ConversableAgent("persistency_probe", llm_config=False)._is_termination_msg.__code__  # type: ignore[no-any-return]


def _name(condition: Any) -> tuple[str, str]:
    name = getattr(condition, "__qualname__", None) or type(condition).__qualname__
    module = getattr(condition, "__module__", None) or type(condition).__module__
    return str(name), str(module)


def describe(condition: Callable[..., Any] | None) -> dict[str, Any]:
    """The JSON spec of a termination condition: a restorable kind, or ``custom`` (named, not restorable)."""
    if condition is None:
        return {"kind": "none"}
    if isinstance(condition, TerminationCondition):
        return condition.to_spec()
    code = getattr(condition, "__code__", None)
    if code is not None and code is _default_code():
        return {"kind": "default"}
    name, module = _name(condition)
    tree = read_condition(condition)
    if tree is not None:
        return {"kind": "expr", "expr": tree, "name": name}
    return {"kind": "custom", "restorable": False, "name": name, "module": module}


def is_restorable(spec: Mapping[str, Any]) -> bool:
    """True when `from_spec` can rebuild the condition ``spec`` describes."""
    kind = spec.get("kind")
    if kind == "any_of":
        conditions = spec.get("conditions")
        return isinstance(conditions, list) and bool(conditions) and all(
            isinstance(s, Mapping) and is_restorable(s) for s in conditions
        )
    if kind == "expr":
        return check_tree(spec.get("expr")) is None
    if kind in ("contains", "endswith", "equals"):
        return isinstance(spec.get("text"), str) and bool(spec.get("text"))
    return kind in ("none", "default")


def from_spec(spec: Mapping[str, Any]) -> Callable[[Message], Any] | None:
    """The condition ``spec`` describes; None means AG2's default. `ResumeError` for a custom one."""
    kind = spec.get("kind")
    if not is_restorable(spec):
        if kind == "expr":
            raise ResumeError(f"termination condition {spec.get('name', '?')!r}: {check_tree(spec.get('expr'))}")
        raise ResumeError(
            f"termination condition {spec.get('name', '?')!r} ({spec.get('module', '?')}) is custom code and cannot "
            "be restored from a checkpoint; pass it explicitly, or use persistency.termination.contains()/endswith()"
        )
    if kind in ("none", "default"):
        return None
    if kind == "expr":
        return Expression(spec["expr"], str(spec.get("name", "<lambda>")))
    if kind == "any_of":
        parts = [from_spec(s) for s in spec["conditions"]]
        return any_of(*[p for p in parts if isinstance(p, TerminationCondition)])
    return text_condition(str(kind), str(spec["text"]), bool(spec.get("strip", False)))
