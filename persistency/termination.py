"""Termination conditions that can be written down and restored: helpers, recognition, specs.

AG2 keeps an agent's termination condition as a private callable, which a checkpoint cannot hold.
This module turns one into a JSON *spec* and back:

- AG2's default (content equal to ``"TERMINATE"``) becomes ``{"kind": "default"}``;
- the serialisable helpers here (`contains`, `equals`, `endswith`, `any_of`) describe themselves;
- the common one-line lambdas (``lambda m: "DONE" in (m.get("content") or "")``,
  ``lambda x: x.get("content", "").rstrip().endswith("TERMINATE")`` and their close variants) are
  recognised by comparing their bytecode with reference shapes: exact structure, never a guess;
- anything else becomes ``{"kind": "custom", "restorable": false, ...}`` naming the function only
  (no source code is stored, and nothing stored is ever executed).
"""

from __future__ import annotations

import builtins
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from autogen.code_utils import content_str

from persistency.errors import ResumeError

__all__ = [
    "TerminationCondition",
    "any_of",
    "contains",
    "describe",
    "endswith",
    "equals",
    "from_spec",
    "is_restorable",
]

Message = Mapping[str, Any]


def _text(message: Message) -> str | None:
    content = message.get("content") if isinstance(message, Mapping) else None
    if content is None:
        return None
    return content if isinstance(content, str) else content_str(content)


class TerminationCondition:
    """Base of the serialisable conditions: callable on a message dict, and describable as JSON."""

    kind: str = ""

    def __call__(self, message: Message) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_spec(self) -> dict[str, Any]:
        """The JSON description `from_spec` turns back into an equal condition."""
        return {"kind": self.kind, **self._args()}

    def _args(self) -> dict[str, Any]:
        return {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TerminationCondition) and self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{self.kind}({args})"


class _Text(TerminationCondition):
    def __init__(self, text: str, strip: bool = True) -> None:
        if not isinstance(text, str) or not text:
            raise ValueError("the termination text must be a non-empty string")
        self.text = text
        self.strip = bool(strip)

    def _args(self) -> dict[str, Any]:
        return {"text": self.text, "strip": self.strip}


class _Contains(_Text):
    kind = "contains"

    def __call__(self, message: Message) -> bool:
        text = _text(message)
        return text is not None and self.text in text


class _EndsWith(_Text):
    kind = "endswith"

    def __call__(self, message: Message) -> bool:
        text = _text(message)
        if text is None:
            return False
        return (text.rstrip() if self.strip else text).endswith(self.text)


class _Equals(_Text):
    kind = "equals"

    def __call__(self, message: Message) -> bool:
        text = _text(message)
        if text is None:
            return False
        return (text.strip() if self.strip else text) == self.text


class _AnyOf(TerminationCondition):
    kind = "any_of"

    def __init__(self, *conditions: TerminationCondition) -> None:
        if not conditions or not all(isinstance(c, TerminationCondition) for c in conditions):
            raise ValueError("any_of takes one or more conditions from persistency.termination")
        self.conditions = tuple(conditions)

    def __call__(self, message: Message) -> bool:
        return any(c(message) for c in self.conditions)

    def _args(self) -> dict[str, Any]:
        return {"conditions": [c.to_spec() for c in self.conditions]}


def contains(text: str) -> TerminationCondition:
    """A condition true when the message content contains ``text`` (e.g. ``contains("SOLUTION_FOUND")``)."""
    return _Contains(text, strip=False)


def endswith(text: str, *, strip: bool = True) -> TerminationCondition:
    """A condition true when the content ends with ``text`` (trailing whitespace ignored unless ``strip=False``)."""
    return _EndsWith(text, strip=strip)


def equals(text: str, *, strip: bool = False) -> TerminationCondition:
    """A condition true when the content equals ``text`` (surrounding whitespace ignored with ``strip=True``)."""
    return _Equals(text, strip=strip)


def any_of(*conditions: TerminationCondition) -> TerminationCondition:
    """A condition true when any of ``conditions`` is."""
    return _AnyOf(*conditions)


# -- recognising lambdas by their bytecode -------------------------------------------------------
_P = "\x00persistency-placeholder\x00"
# (spec kind, strip flag, reference): each reference has the exact shape of a common user lambda,
# with the placeholder where the user has their text. Python compiles them at import time.
_SHAPES: list[tuple[str, bool, Callable[[Any], Any]]] = [
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in (m.get("content") or "")),
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in m.get("content", "")),
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in (m.get("content", "") or "")),
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in m["content"]),
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in str(m.get("content"))),
    ("contains", False, lambda m: "\x00persistency-placeholder\x00" in content_str(m.get("content"))),
    ("contains", False, lambda m: m.get("content") is not None and "\x00persistency-placeholder\x00" in m["content"]),
    ("endswith", True, lambda m: m.get("content", "").rstrip().endswith("\x00persistency-placeholder\x00")),
    ("endswith", True, lambda m: (m.get("content") or "").rstrip().endswith("\x00persistency-placeholder\x00")),
    (
        "endswith",
        True,
        lambda m: m.get("content") is not None and m["content"].rstrip().endswith("\x00persistency-placeholder\x00"),
    ),
    (
        "endswith",
        True,
        lambda m: m.get("content") and m.get("content").rstrip().endswith("\x00persistency-placeholder\x00"),
    ),
    ("endswith", False, lambda m: m.get("content", "").endswith("\x00persistency-placeholder\x00")),
    ("endswith", False, lambda m: (m.get("content") or "").endswith("\x00persistency-placeholder\x00")),
    ("equals", False, lambda m: m.get("content") == "\x00persistency-placeholder\x00"),
    ("equals", False, lambda m: content_str(m.get("content")) == "\x00persistency-placeholder\x00"),
    ("equals", True, lambda m: m.get("content", "").strip() == "\x00persistency-placeholder\x00"),
    ("equals", True, lambda m: (m.get("content") or "").strip() == "\x00persistency-placeholder\x00"),
]
# Globals a shape may call, and what they must resolve to in the user's module.
_GLOBALS: dict[str, Any] = {"str": builtins.str, "content_str": content_str}


def _placeholder_swap(code: types.CodeType, ref: types.CodeType) -> str | None:
    """The string the user's ``code`` has where ``ref`` has the placeholder, if all else is equal."""
    if (
        code.co_code != ref.co_code
        or code.co_names != ref.co_names
        or code.co_argcount != 1
        or code.co_kwonlyargcount
        or code.co_posonlyargcount
        or code.co_freevars
        or len(code.co_consts) != len(ref.co_consts)
    ):
        return None
    found: str | None = None
    for mine, theirs in zip(code.co_consts, ref.co_consts, strict=True):
        if theirs == _P:
            if not isinstance(mine, str) or not mine:
                return None
            found = mine
        elif type(mine) is not type(theirs) or mine != theirs:
            return None
    return found


@functools.cache
def _default_code() -> types.CodeType:
    from autogen import ConversableAgent

    return ConversableAgent("persistency_probe", llm_config=False)._is_termination_msg.__code__  # type: ignore[no-any-return]


def _recognise(fn: Callable[..., Any]) -> dict[str, Any] | None:
    if not isinstance(fn, types.FunctionType) or fn.__defaults__ or fn.__kwdefaults__ or fn.__closure__:
        return None
    code = fn.__code__
    for kind, strip, shape in _SHAPES:
        ref = shape.__code__
        text = _placeholder_swap(code, ref)
        if text is None:
            continue
        # Every global the shape calls must be the real one, not a same-named function of the user's.
        g = fn.__globals__
        if all(g.get(n, getattr(builtins, n, None)) is _GLOBALS[n] for n in code.co_names if n in _GLOBALS):
            return {"kind": kind, "text": text, "strip": strip}
    return None


def describe(condition: Callable[..., Any] | None) -> dict[str, Any]:
    """The JSON spec of a termination condition: restorable kinds, or ``custom`` (named, not restorable)."""
    if condition is None:
        return {"kind": "none"}
    if isinstance(condition, TerminationCondition):
        return condition.to_spec()
    code = getattr(condition, "__code__", None)
    if code is not None and code is _default_code():
        return {"kind": "default"}
    spec = _recognise(condition)
    if spec is not None:
        return spec
    name = getattr(condition, "__qualname__", None) or type(condition).__qualname__
    module = getattr(condition, "__module__", None) or type(condition).__module__
    return {"kind": "custom", "restorable": False, "name": str(name), "module": str(module)}


def is_restorable(spec: Mapping[str, Any]) -> bool:
    """True when `from_spec` can rebuild the condition ``spec`` describes."""
    kind = spec.get("kind")
    if kind == "any_of":
        return all(is_restorable(s) for s in spec.get("conditions", []))
    return kind in ("none", "default", "contains", "endswith", "equals")


def from_spec(spec: Mapping[str, Any]) -> Callable[[Message], bool] | None:
    """The condition ``spec`` describes; None means AG2's default. `ResumeError` for a custom one."""
    kind = spec.get("kind")
    if kind in ("none", "default"):
        return None
    if kind in ("contains", "endswith", "equals"):
        cls = {"contains": _Contains, "endswith": _EndsWith, "equals": _Equals}[str(kind)]
        return cls(str(spec.get("text")), strip=bool(spec.get("strip", False)))
    if kind == "any_of":
        parts = [from_spec(s) for s in spec.get("conditions", [])]
        return _AnyOf(*[p for p in parts if isinstance(p, TerminationCondition)])
    raise ResumeError(
        f"termination condition {spec.get('name', '?')!r} ({spec.get('module', '?')}) is custom code and cannot be "
        "restored from a checkpoint; pass it explicitly, or use persistency.termination.contains()/endswith()"
    )
