"""A termination condition read from source, kept as a small JSON expression tree and run by a tiny interpreter.

The tree has a fixed set of nodes (content access, constants, ``and``/``or``/``not``, comparisons,
``str()``, a few string methods); stored trees are validated against it before use, and the
interpreter applies the very Python operations the original code did, on the same values. So the
restored condition returns what the original returned, and raises where the original raised (a
``KeyError`` for ``x["content"]`` without content, an ``AttributeError`` for ``None.rstrip()``,
a ``TypeError`` for ``"T" in None``). Nothing stored is ever compiled or evaluated as code.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from autogen.code_utils import content_str

from persistency.termination._helpers import Message, TerminationCondition

__all__ = ["COMPARE_OPS", "FUNCTIONS", "METHODS", "Expression", "check_tree"]

_MISSING = object()

COMPARE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "is": operator.is_,
    "is not": operator.is_not,
}
"""Comparison operators a tree may use, by their Python spelling."""

METHODS: dict[str, tuple[int, int]] = {
    "strip": (0, 1),
    "rstrip": (0, 1),
    "lstrip": (0, 1),
    "lower": (0, 0),
    "upper": (0, 0),
    "startswith": (1, 1),
    "endswith": (1, 1),
    "find": (1, 1),
}
"""String methods a tree may call, with their (min, max) number of arguments."""

FUNCTIONS: dict[str, Callable[[Any], Any]] = {"str": str, "content_str": content_str}
"""Functions a tree may call (one argument each): the builtin ``str`` and AG2's ``content_str``."""

_MAX_NODES = 200
_MAX_DEPTH = 32


def _const_ok(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return value is None or type(value) in (str, int)


def check_tree(tree: Any) -> str | None:
    """Why ``tree`` is not a valid expression tree, or None when it is (never runs anything)."""
    count = 0

    def check(node: Any, depth: int) -> str | None:
        nonlocal count
        count += 1
        if count > _MAX_NODES or depth > _MAX_DEPTH:
            return "the expression is too large"
        if not isinstance(node, Mapping):
            return f"a node is a {type(node).__name__}, not an object"
        op = node.get("op")
        if op == "content":
            if node.get("access") == "index":
                return None
            if node.get("access") == "get":
                return None if _const_ok(node.get("default")) else "a content default is not a constant"
            return f"unknown content access {node.get('access')!r}"
        if op == "const":
            return None if _const_ok(node.get("value")) else "a constant is not a string, int or None"
        if op in ("and", "or"):
            args = node.get("args")
            if not isinstance(args, list) or len(args) < 2:
                return f"{op} needs two or more operands"
            return next((e for e in (check(a, depth + 1) for a in args) if e), None)
        if op == "not":
            return check(node.get("arg"), depth + 1)
        if op == "compare":
            ops, rights = node.get("ops"), node.get("rights")
            if not isinstance(ops, list) or not isinstance(rights, list) or not ops or len(ops) != len(rights):
                return "a comparison needs as many operators as right-hand sides"
            bad = [o for o in ops if o not in COMPARE_OPS]
            if bad:
                return f"unknown comparison {bad[0]!r}"
            return next((e for e in (check(a, depth + 1) for a in [node.get("left"), *rights]) if e), None)
        if op == "call":
            if node.get("func") not in FUNCTIONS:
                return f"unknown function {node.get('func')!r}"
            return check(node.get("arg"), depth + 1)
        if op == "method":
            name, args = node.get("name"), node.get("args")
            if name not in METHODS or not isinstance(args, list):
                return f"unknown method {name!r}"
            low, high = METHODS[str(name)]
            if not low <= len(args) <= high:
                return f"{name}() takes {low} to {high} arguments"
            return next((e for e in (check(a, depth + 1) for a in [node.get("obj"), *args]) if e), None)
        return f"unknown node {op!r}"

    return check(tree, 0)


def _run(node: Mapping[str, Any], message: Any) -> Any:
    op = node["op"]
    if op == "content":
        if node["access"] == "index":
            return message["content"]
        default = node.get("default", _MISSING)
        if default is _MISSING:
            return message.get("content")
        return message.get("content", tuple(default) if isinstance(default, list) else default)
    if op == "const":
        value = node["value"]
        return tuple(value) if isinstance(value, list) else value
    if op == "and":
        result: Any = None
        for arg in node["args"]:
            result = _run(arg, message)
            if not result:
                return result
        return result
    if op == "or":
        for arg in node["args"]:
            result = _run(arg, message)
            if result:
                return result
        return result
    if op == "not":
        return not _run(node["arg"], message)
    if op == "compare":  # chained like Python: a < b < c is a < b and b < c, each side computed once
        left = _run(node["left"], message)
        outcome: Any = True
        for name, right_node in zip(node["ops"], node["rights"], strict=True):
            right = _run(right_node, message)
            outcome = COMPARE_OPS[name](left, right)
            if not outcome:
                return outcome
            left = right
        return outcome
    if op == "call":
        return FUNCTIONS[node["func"]](_run(node["arg"], message))
    if op == "method":
        target = _run(node["obj"], message)
        args = [_run(a, message) for a in node["args"]]
        return getattr(target, node["name"])(*args)
    raise ValueError(f"unknown node {op!r}")  # pragma: no cover - check_tree refuses it first


class Expression(TerminationCondition):
    """A termination condition read from a lambda's or function's source, as a checked expression tree."""

    kind = "expr"

    def __init__(self, tree: Mapping[str, Any], name: str = "<lambda>") -> None:
        problem = check_tree(tree)
        if problem is not None:
            raise ValueError(f"not a termination expression: {problem}")
        self.tree = dict(tree)
        self.name = str(name)

    def __call__(self, message: Message) -> Any:
        return _run(self.tree, message)

    def _args(self) -> dict[str, Any]:
        return {"expr": self.tree, "name": self.name}
