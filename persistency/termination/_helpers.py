"""The serialisable termination helpers: `contains`, `equals`, `endswith`, `any_of`.

Each describes itself as a JSON spec (``to_spec``) that `persistency.termination.from_spec` turns
back into an equal condition, so a chat built with them is rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autogen.code_utils import content_str

__all__ = ["Message", "TerminationCondition", "any_of", "contains", "endswith", "equals", "text_condition"]

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


def text_condition(kind: str, text: str, strip: bool) -> TerminationCondition:
    """The helper condition of a stored ``contains`` / ``endswith`` / ``equals`` spec."""
    cls = {"contains": _Contains, "endswith": _EndsWith, "equals": _Equals}[kind]
    return cls(text, strip=strip)
