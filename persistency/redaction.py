"""Secrets never reach storage: turn agent configuration into JSON with every secret replaced.

``LLMConfig.model_dump()`` prints ``api_key`` in clear text and ``llm_config`` may hold callables
(``azure_ad_token_provider``) and clients (``http_client``), so nothing is stored as it comes.
`redact` walks any value and returns JSON-safe data where

- a value under a secret-like key (``api_key``, ``aws_secret_key``, ``aws_session_token``,
  ``gcp_auth_token``, ``credentials``, ``password``, ``authorization``, ...) becomes `REDACTED`;
- every header value (``default_headers``, ``headers``) becomes `REDACTED` unless the header is
  on a short list of harmless ones (``User-Agent``, ``Content-Type``, ...);
- URLs lose their password and secret-like query values;
- strings that look like credentials wherever they are (``sk-...``, ``AKIA...``, ``Bearer ...``)
  become `REDACTED`;
- objects that are not JSON (clients, callables) become ``{"__object__": "module.Class"}`` and
  are never ``repr``-ed, since a repr may print a secret.

`secret_values` collects the secret strings themselves so that free text (an error message) can be
scrubbed with `scrub` before it is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_llm_config", "scrub", "secret_values"]

REDACTED = "**REDACTED**"
"""What a secret is replaced with in stored data."""

_SECRET_WORDS = frozenset(
    {
        "key", "apikey", "secret", "secrets", "token", "password", "passwd", "pwd", "passphrase",
        "credential", "credentials", "auth", "authorization", "cookie", "cookies", "signature", "bearer",
        "sas", "sig",
    }
)  # fmt: skip
_SECRET_KEYS = frozenset({"http_client", "azure_ad_token_provider", "google_application_credentials"})
_HEADER_KEYS = frozenset({"default_headers", "headers", "extra_headers"})
_SAFE_HEADERS = frozenset(
    {"user-agent", "content-type", "accept", "accept-encoding", "openai-beta", "anthropic-version",
     "anthropic-beta", "x-title", "http-referer", "openai-organization", "openai-project"}
)  # fmt: skip
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_CREDENTIAL_LIKE = re.compile(
    r"^\s*(?:sk-[A-Za-z0-9_-]{12,}|sk_[A-Za-z0-9_]{12,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|"
    r"(?:Bearer|Basic)\s+\S{8,}|xox[abprs]-\S{10,}|gh[pousr]_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{30,})"
)


def is_secret_key(name: object) -> bool:
    """True when a field called ``name`` may hold a secret (``api_key``, ``aws_session_token``, ...)."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    if lowered in _SECRET_KEYS:
        return True
    words = {w.lower() for w in _SPLIT.split(name) if w}
    return bool(words & _SECRET_WORDS) or "apikey" in lowered.replace("_", "").replace("-", "")


def _redact_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_key(k) else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_str(value: str) -> str:
    if _CREDENTIAL_LIKE.match(value):
        return REDACTED
    if "://" in value:
        return _redact_url(value)
    return value


def _describe_object(value: object) -> dict[str, str]:
    cls = type(value)
    return {"__object__": f"{cls.__module__}.{cls.__qualname__}"}


def redact(value: Any, *, _key: str | None = None, _depth: int = 0) -> Any:
    """JSON-safe copy of ``value`` with every secret replaced by `REDACTED` (see the module doc)."""
    if _depth > 50:
        return REDACTED
    if _key is not None and is_secret_key(_key):
        return None if value is None else REDACTED
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return _redact_str(value)
    if isinstance(value, bytes):
        return REDACTED
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr / SecretBytes
        return REDACTED
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        headers = _key is not None and _key.lower() in _HEADER_KEYS
        for k, v in value.items():
            key = str(k)
            if headers and key.lower() not in _SAFE_HEADERS:
                out[key] = REDACTED
            else:
                out[key] = redact(v, _key=key, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [redact(v, _key=None, _depth=_depth + 1) for v in items]
    return _describe_object(value)


def _llm_config_dict(llm_config: Any) -> Any:
    """A plain view of an LLMConfig / dict / False, not yet redacted."""
    if llm_config is None or llm_config is False:
        return llm_config
    dump = getattr(llm_config, "model_dump", None)
    if callable(dump):
        try:
            # model_dump() unwraps SecretStr into clear text: the result goes straight to redact().
            return dump(exclude_none=True)
        except Exception:
            return _describe_object(llm_config)
    return llm_config


def redact_llm_config(llm_config: Any) -> Any:
    """``llm_config`` (LLMConfig, dict, False or None) as JSON with every secret redacted."""
    return redact(_llm_config_dict(llm_config))


def _collect(value: Any, key: str | None, out: set[str], depth: int) -> None:
    if depth > 50:
        return
    secret_get = getattr(value, "get_secret_value", None)
    if callable(secret_get):
        raw = secret_get()
        if isinstance(raw, str) and raw:
            out.add(raw)
        return
    if isinstance(value, str):
        if value and ((key is not None and is_secret_key(key)) or _CREDENTIAL_LIKE.match(value)):
            out.add(value)
        elif "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                out.add(password)
        return
    if isinstance(value, Mapping):
        headers = key is not None and key.lower() in _HEADER_KEYS
        for k, v in value.items():
            if headers and isinstance(v, str) and str(k).lower() not in _SAFE_HEADERS and v:
                out.add(v)
            _collect(v, str(k), out, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _collect(v, key, out, depth + 1)


def secret_values(*configs: Any) -> frozenset[str]:
    """Every secret string inside ``configs`` (LLMConfig, dicts): what `scrub` removes from text."""
    out: set[str] = set()
    for cfg in configs:
        _collect(_llm_config_dict(cfg), None, out, 0)
    # Very short values would scrub ordinary words out of messages; they are not real secrets.
    return frozenset(v for v in out if len(v) >= 6)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by `REDACTED` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
