"""Secrets never reach storage, a screen, a log or an exception: one redactor, by name and by value.

``LLMConfig.model_dump()`` prints ``api_key`` in clear text and ``llm_config`` may hold callables
(``azure_ad_token_provider``), clients (``http_client``) and any parameter a custom model client
takes, so nothing is stored as it comes. The rules (see ``docs/security.md``):

- **by name** (`persistency.redaction._names`): a value under a secret-like field (``api_key``,
  ``aws_secret_key``, ``user_pass``, ``licence_key``, ``credentials``, ...) becomes `REDACTED`, and
  so does every header value (``default_headers``) but a few harmless ones, and ``code``/``sig``/
  ``key``/... in query parameters (``default_query``);
- **by value** (`persistency.redaction._text`): in every string, wherever it is (``extra_body``,
  custom client parameters, nested lists, error text), private key blocks, JWTs, well-known key
  formats, ``Bearer`` tokens, ``Password=``/``Pwd=`` connection-string segments, the value after a
  secret label (``password: x``), and the user information and secret query values of any URL
  (`persistency.redaction._urls`, raw-text based, never ``urlsplit``);
- objects that are not JSON become ``{"__object__": "module.Class"}`` and are never ``repr``-ed;
- **exceptions** (`persistency.redaction._exceptions`): `scrub_exception` redacts the message,
  the arguments and the whole ``__cause__``/``__context__`` chain;
- **your own rules**: `add_rule` (names, a pattern and/or a callable) on the process-wide default
  redactor that the library uses everywhere, or a `Redactor` object of your own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from persistency.redaction._exceptions import ScrubbedException, secret_scrubber
from persistency.redaction._redactor import REDACTED, Redactor, Rule
from persistency.redaction._urls import URL_MASK, mask_url

__all__ = [
    "REDACTED",
    "URL_MASK",
    "Redactor",
    "Rule",
    "ScrubbedException",
    "add_rule",
    "default_redactor",
    "is_secret_key",
    "mask_url",
    "redact",
    "redact_llm_config",
    "redact_text",
    "redact_url",
    "remove_rule",
    "scrub",
    "scrub_exception",
    "secret_scrubber",
    "secret_values",
]

_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """The process-wide redactor behind the module functions (storage, CLI, providers' errors)."""
    return _DEFAULT


def add_rule(
    rule: Rule | None = None,
    *,
    names: Iterable[str] = (),
    pattern: str | re.Pattern[str] | None = None,
    match: Callable[[str], bool] | None = None,
) -> Rule:
    """Add a rule to the default redactor: secret field ``names``, a ``pattern``, a ``match`` callable."""
    return _DEFAULT.add_rule(rule, names=names, pattern=pattern, match=match)


def remove_rule(rule: Rule) -> None:
    """Take back a rule that `add_rule` returned."""
    _DEFAULT.remove_rule(rule)


def is_secret_key(name: object) -> bool:
    """True when a field called ``name`` may hold a secret (``api_key``, ``aws_session_token``, ...)."""
    return _DEFAULT.is_secret_key(name)


def redact(value: Any) -> Any:
    """JSON-safe copy of ``value`` with every secret replaced by `REDACTED`, by name and by value."""
    return _DEFAULT.redact(value)


def redact_llm_config(llm_config: Any) -> Any:
    """``llm_config`` (LLMConfig, dict, False or None) as JSON with every secret redacted."""
    return _DEFAULT.redact_llm_config(llm_config)


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every credential found by shape or label masked."""
    return _DEFAULT.redact_text(text)


def redact_url(text: str, *, mask: str = URL_MASK) -> str:
    """``text`` with the user information and secret query values of every URL in it masked (raw text)."""
    return _DEFAULT.redact_url(text, mask=mask)


def secret_values(*configs: Any) -> frozenset[str]:
    """Every secret string inside ``configs`` (LLMConfig, dicts): what `scrub` removes from text."""
    return _DEFAULT.secret_values(*configs)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` and without any credential found by shape (`redact_text`)."""
    return _DEFAULT.scrub(text, secrets)


def scrub_exception(exc: BaseException, secrets: Iterable[str] | Callable[[str], str] = ()) -> BaseException:
    """``exc`` with its message, args and whole ``__cause__``/``__context__`` chain redacted (in place).

    Returns the exception to raise or chain (``exc``, or a `ScrubbedException` copy when its text
    could not be redacted in place): ``raise ProviderError(...) from scrub_exception(exc)``.
    """
    return _DEFAULT.scrub_exception(exc, secrets)
