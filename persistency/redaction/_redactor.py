"""The `Redactor`: built-in name and value rules plus the user's own, applied to values, text and errors.

One object holds every rule, so a configuration, a URL, an error message and an exception chain are
redacted alike. The module functions of `persistency.redaction` use a process-wide default
redactor; `persistency.redaction.add_rule` adds a rule to it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from persistency.redaction._exceptions import scrub_exception_with, secret_scrubber
from persistency.redaction._names import HEADER_CONTAINERS, QUERY_CONTAINERS, SAFE_HEADERS, is_secret_key
from persistency.redaction._names import is_secret_query_name as _is_query_secret
from persistency.redaction._text import TextRules, redact_text_with
from persistency.redaction._urls import URL_MASK, mask_urls_in_text

__all__ = ["REDACTED", "Redactor", "Rule"]

REDACTED = "**REDACTED**"
"""What a secret is replaced with in stored data."""

_MAX_DEPTH = 64


@dataclass(frozen=True)
class Rule:
    """A user's redaction rule: field names that are secret, and/or a way to recognise secret values.

    ``names``: field, header or query names (case-insensitive; a whole name, or a word of one:
    ``"tenant"`` matches ``tenant`` and ``x_tenant_id``). ``pattern``: a regular expression; every
    match in any text is replaced (keep it bounded: it runs on every stored string). ``match``: a
    callable given a string value (and each word of free text) that returns True for a secret.
    """

    names: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    match: Callable[[str], bool] | None = None


def _describe_object(value: object) -> dict[str, str]:
    cls = type(value)
    return {"__object__": f"{cls.__module__}.{cls.__qualname__}"}


def _llm_config_dict(llm_config: Any) -> Any:
    """A plain view of an LLMConfig / dict / False, not yet redacted."""
    if llm_config is None or llm_config is False:
        return llm_config
    dump = getattr(llm_config, "model_dump", None)
    if callable(dump):
        try:
            # model_dump() unwraps SecretStr into clear text: the result goes straight to redaction.
            return dump(exclude_none=True)
        except Exception:
            return _describe_object(llm_config)
    return llm_config


class Redactor:
    """Replaces secrets, by name and by value, in JSON-like values, text, URLs and exceptions."""

    def __init__(self, rules: Iterable[Rule] = (), *, mask: str = REDACTED) -> None:
        """A redactor with the built-in rules plus ``rules``; secrets become ``mask``."""
        self.mask = mask
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._text = TextRules(mask=mask)
        for rule in rules:
            self.add_rule(rule)

    # -- rules ------------------------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[Rule, ...]:
        """The user rules in force, in the order they were added."""
        return tuple(self._rules)

    def add_rule(
        self,
        rule: Rule | None = None,
        *,
        names: Iterable[str] = (),
        pattern: str | re.Pattern[str] | None = None,
        match: Callable[[str], bool] | None = None,
    ) -> Rule:
        """Add a rule (a `Rule`, or its parts as keywords) and return it, for `remove_rule`."""
        if rule is None:
            if isinstance(names, str):
                names = [names]
            compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
            rule = Rule(frozenset(n.lower() for n in names), compiled, match)
        if not isinstance(rule, Rule):
            raise TypeError(f"add_rule() takes a Rule or names=/pattern=/match=, not {type(rule).__name__}")
        if rule.match is not None and not callable(rule.match):
            raise TypeError("a rule's match must be a callable taking a string and returning a bool")
        if not (rule.names or rule.pattern or rule.match):
            raise ValueError("a redaction rule needs names, a pattern or a match callable")
        with self._lock:
            self._rules.append(rule)
            self._rebuild()
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Take back a rule `add_rule` returned (a rule not in force is ignored)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
                self._rebuild()

    def _rebuild(self) -> None:
        self._text = TextRules(
            mask=self.mask,
            names=frozenset(n for r in self._rules for n in r.names),
            patterns=tuple(r.pattern for r in self._rules if r.pattern is not None),
            predicates=tuple(r.match for r in self._rules if r.match is not None),
        )

    # -- names ------------------------------------------------------------------------------------------
    def is_secret_key(self, name: object) -> bool:
        """True when a field called ``name`` holds a secret under the built-in or the user's name rules."""
        return is_secret_key(name, self._text.names)

    # -- text -------------------------------------------------------------------------------------------
    def redact_text(self, text: str, found: list[str] | None = None) -> str:
        """``text`` (an error message, a log line) with every credential found by shape or label masked."""
        return redact_text_with(text, self._text, found)

    def redact_url(self, text: str, *, mask: str = URL_MASK) -> str:
        """``text`` with the user information and secret query values of every URL in it masked."""
        return mask_urls_in_text(text, mask=mask, extra_names=self._text.names)

    def _is_secret_value(self, value: str) -> bool:
        return any(p(value) for p in self._text.predicates)

    # -- values -----------------------------------------------------------------------------------------
    def redact(self, value: Any, found: list[str] | None = None) -> Any:
        """A JSON-safe copy of ``value`` with every secret replaced by the mask (by name and by value)."""
        return self._walk(value, None, "", 0, found)

    def redact_llm_config(self, llm_config: Any, found: list[str] | None = None) -> Any:
        """``llm_config`` (LLMConfig, dict, False or None) as JSON with every secret redacted."""
        return self.redact(_llm_config_dict(llm_config), found)

    def _secret(self, value: Any, found: list[str] | None) -> Any:
        if value is None:
            return None
        if found is not None:
            self._collect(value, found, 0)
        return self.mask

    def _collect(self, value: Any, found: list[str], depth: int) -> None:
        """Every string inside a value redacted as a whole (for scrubbing free text of it)."""
        get = getattr(value, "get_secret_value", None)
        if callable(get):
            value = get()
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping) and depth < _MAX_DEPTH:
            for v in value.values():
                self._collect(v, found, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)) and depth < _MAX_DEPTH:
            for v in value:
                self._collect(v, found, depth + 1)

    def _walk(self, value: Any, key: str | None, container: str, depth: int, found: list[str] | None) -> Any:
        if depth > _MAX_DEPTH:
            return self.mask
        if key is not None:
            if container in HEADER_CONTAINERS and key.lower() not in SAFE_HEADERS:
                return self._secret(value, found)
            if self.is_secret_key(key) or (container in QUERY_CONTAINERS and _is_query_secret(key, self._text.names)):
                return self._secret(value, found)
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        if isinstance(value, str):
            if self._is_secret_value(value):
                return self._secret(value, found)
            return self.redact_text(value, found)
        if isinstance(value, (bytes, bytearray)) or hasattr(value, "get_secret_value"):
            return self._secret(value, found)
        if isinstance(value, Mapping):
            inner = key.lower() if key is not None else ""
            out: dict[str, Any] = {}
            for k, v in value.items():
                name = self.redact_text(str(k))
                out[name] = self._walk(v, str(k), inner, depth + 1, found)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [self._walk(v, None, "", depth + 1, found) for v in items]
        return _describe_object(value)

    # -- secrets of a configuration, and scrubbing ------------------------------------------------------
    def secret_values(self, *configs: Any) -> frozenset[str]:
        """Every secret string inside ``configs`` (LLMConfig, dicts): what `scrub` removes from text."""
        found: list[str] = []
        for cfg in configs:
            self.redact_llm_config(cfg, found)
        # Very short values would scrub ordinary words out of messages; they are not real secrets.
        return frozenset(v for v in found if isinstance(v, str) and len(v) >= 6)

    def scrub(self, text: str, secrets: Iterable[str] = ()) -> str:
        """``text`` with each of ``secrets`` (whole and URL-decoded) and every credential by shape masked."""
        forms = {f for s in ([secrets] if isinstance(secrets, str) else secrets) for f in (s, unquote(s)) if f}
        for secret in sorted(forms, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, self.mask)
        return self.redact_text(text)

    def scrub_exception(
        self, exc: BaseException, secrets: Iterable[str] | Callable[[str], str] = ()
    ) -> BaseException:
        """``exc`` with its message, arguments and whole ``__cause__``/``__context__`` chain redacted.

        ``secrets`` are values known to be secret here (a password: also its pieces between URL
        delimiters), or a function that masks them. Returns the exception to raise or chain: ``exc``
        itself, or a `ScrubbedException` copy when its text could not be redacted in place.
        """
        if isinstance(secrets, str):
            secrets = [secrets]
        known = secrets if callable(secrets) else secret_scrubber(secrets)

        def fix(text: str) -> str:
            return self.redact_text(known(text))

        return scrub_exception_with(exc, fix)
