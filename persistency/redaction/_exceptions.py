"""Exceptions without secrets: the message, the arguments and the whole ``__cause__``/``__context__`` chain.

A library error often quotes what it choked on: redis-py's URL parser says ``Port could not be cast
to integer value as 'pa'`` for a password ``pa/ss``, and ``logging.exception`` or a traceback
prints every exception of the chain, not only the one the provider raised. `scrub_exception` walks
the chain and rewrites each exception's ``args`` (and the text attributes of ``OSError``,
``UnicodeError`` and ``SyntaxError``, and ``__notes__``) in place. An exception whose text still
holds a secret after that (its ``__str__`` does not read ``args``) is replaced in the chain by a
`ScrubbedException` that carries the redacted text, the original type's name and the traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

__all__ = ["ScrubbedException", "scrub_exception_with", "secret_scrubber"]

_SPLITTERS = (re.compile(r"[/?#@&=:;]"), re.compile(r"[/?#]"), re.compile(r"@"))
"""How a URL parser may cut a password: at any delimiter, where the netloc ends, or at an ``@``."""
_TEXT_ATTRS = ("strerror", "filename", "filename2", "reason", "msg", "text", "message", "detail")
_MAX_CHAIN = 200


class ScrubbedException(Exception):
    """Stands in a ``__cause__``/``__context__`` chain for an exception whose text could not be redacted."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text}" if text else type_name)
        #: ``module.QualName`` of the exception this one replaces
        self.original_type = type_name


def secret_scrubber(secrets: Iterable[str], *, mask: str = "****") -> Callable[[str], str]:
    """A function masking each of ``secrets`` in a text: whole, URL-decoded, and each piece between URL
    delimiters (a parser's error may quote just the part it choked on, or connect to it as a host).

    Pieces shorter than three characters are masked where they stand alone (``'pa'``, ``to ss:6379``)
    but not inside words, so a password ``pa/ss`` is not shown as its first two letters while the
    rest of the message stays readable; a piece of punctuation only where it stands quoted.
    """
    long: set[str] = set()
    short: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, unquote(secret)}:
            for splitter in _SPLITTERS:
                for piece in (form, *splitter.split(form)):
                    if len(piece) >= 3:
                        long.add(piece)
                    elif piece:
                        short.add(piece)
    ordered = sorted(long, key=len, reverse=True)
    words = sorted((p for p in short if p.isalnum()), key=len, reverse=True)
    pattern = r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9])"
    alone = re.compile(pattern) if words else None
    quoted = [(f"{q}{s}{q}", f"{q}{mask}{q}") for s in sorted(short, key=len, reverse=True) for q in "'\""]

    def scrub(text: str) -> str:
        for form in ordered:
            if form in text:
                text = text.replace(form, mask)
        for old, new in quoted:
            if old in text:
                text = text.replace(old, new)
        return alone.sub(mask, text) if alone is not None else text

    return scrub


def _fix_value(value: Any, fix: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
        fixed = fix(text)
        return value if fixed == text else fixed.encode()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_fix_value(v, fix) for v in value)
    try:
        text = repr(value)
    except Exception:
        return "<unprintable>"
    fixed = fix(text)
    return value if fixed == text else fixed


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""


def _scrub_in_place(exc: BaseException, fix: Callable[[str], str]) -> None:
    try:
        exc.args = tuple(_fix_value(a, fix) for a in exc.args)
    except (TypeError, AttributeError):
        pass
    for name in _TEXT_ATTRS:
        value = getattr(exc, name, None)
        if isinstance(value, (str, bytes)):
            fixed = _fix_value(value, fix)
            if fixed is not value:
                try:
                    setattr(exc, name, fixed)
                except (TypeError, AttributeError):
                    pass
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [fix(n) if isinstance(n, str) else n for n in notes]


def _leaks(exc: BaseException, fix: Callable[[str], str]) -> bool:
    text = _text_of(exc)
    return fix(text) != text


def _replacement(exc: BaseException, fix: Callable[[str], str]) -> BaseException:
    cls = type(exc)
    copy = ScrubbedException(f"{cls.__module__}.{cls.__qualname__}", fix(_text_of(exc)))
    copy.__cause__, copy.__context__ = exc.__cause__, exc.__context__
    copy.__suppress_context__ = exc.__suppress_context__
    return copy.with_traceback(exc.__traceback__)


def scrub_exception_with(exc: BaseException, fix: Callable[[str], str]) -> BaseException:
    """``exc`` and its whole chain redacted by ``fix`` (in place where possible): the exception to raise."""
    seen: dict[int, BaseException] = {}

    def visit(e: BaseException, depth: int) -> BaseException:
        if id(e) in seen:
            return seen[id(e)]
        seen[id(e)] = e
        _scrub_in_place(e, fix)
        if depth < _MAX_CHAIN:
            if e.__cause__ is not None:
                e.__cause__ = visit(e.__cause__, depth + 1)
            if e.__context__ is not None:
                e.__context__ = visit(e.__context__, depth + 1)
            for sub in getattr(e, "exceptions", None) or ():
                if isinstance(sub, BaseException):
                    visit(sub, depth + 1)
        if _leaks(e, fix):
            seen[id(e)] = _replacement(e, fix)
        return seen[id(e)]

    return visit(exc, 0)
