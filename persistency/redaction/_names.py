"""Redaction by name: which field, header or query parameter names hold a secret whatever the value.

A name is split into words (``aws_secret_key`` -> aws, secret, key; ``apiKey`` -> api, key) and is
secret when one word is a secret word (`SECRET_WORDS`) or the whole name is one of `SECRET_NAMES`.
Query parameters (``default_query``, a URL's ``?a=b``) also treat `QUERY_NAMES` as secret: ``code``
is an Azure Functions key there, but an ordinary word in a field name such as
``code_execution_config``.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = [
    "HEADER_CONTAINERS",
    "QUERY_CONTAINERS",
    "QUERY_NAMES",
    "SAFE_HEADERS",
    "SECRET_NAMES",
    "SECRET_WORDS",
    "STRONG_WORDS",
    "is_secret_key",
    "is_secret_query_name",
    "name_words",
]

SECRET_WORDS = frozenset(
    {
        "key", "apikey", "secret", "secrets", "token", "password", "passwd", "pwd", "pass", "pw", "passphrase",
        "passcode", "credential", "credentials", "creds", "auth", "authorization", "cookie", "cookies",
        "signature", "bearer", "sas", "sig", "jwt", "pem", "privatekey", "licence", "license", "otp", "hmac",
    }
)  # fmt: skip
"""A name holding one of these words holds a secret (``user_pass``, ``licence_key``, ``x-auth``)."""

STRONG_WORDS = frozenset(
    {"apikey", "secret", "secrets", "token", "password", "passwd", "pwd", "passphrase", "credential",
     "credentials", "authorization", "bearer", "privatekey"}
)  # fmt: skip
"""Words strong enough to redact ``name: value`` in free text (``key: be brief`` is left alone)."""

SECRET_NAMES = frozenset({"http_client", "azure_ad_token_provider", "google_application_credentials"})
"""Whole names that are secret though none of their words is (objects and providers of credentials)."""

QUERY_NAMES = frozenset({"code", "sig", "sv_sig", "signature", "key", "token", "secret", "password", "auth"})
"""Extra names that are secret as query parameters (``?code=`` is an Azure Functions key)."""

HEADER_CONTAINERS = frozenset({"default_headers", "headers", "extra_headers", "http_headers"})
"""Fields whose every value is a header: all redacted but `SAFE_HEADERS`."""

QUERY_CONTAINERS = frozenset({"default_query", "extra_query", "query", "query_params", "params"})
"""Fields whose keys are query parameters: `QUERY_NAMES` count as secret there."""

SAFE_HEADERS = frozenset(
    {"user-agent", "content-type", "accept", "accept-encoding", "openai-beta", "anthropic-version",
     "anthropic-beta", "x-title", "http-referer", "openai-organization", "openai-project"}
)  # fmt: skip
"""Headers that never carry a credential and are worth keeping for a rebuild."""

_KEY_NOT_SECRET = frozenset(
    {"prefix", "prefixes", "type", "types", "name", "names", "field", "fields", "order", "pattern", "func",
     "length", "size", "count", "spec", "path", "style", "format", "mode", "case", "column", "separator"}
)
"""Words that, after ``key``, make a name about keys of a table or cache rather than a credential."""

_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def _after(words: list[str], word: str) -> list[str]:
    """The word after each occurrence of ``word`` ('' at the end)."""
    return [words[i + 1] if i + 1 < len(words) else "" for i, w in enumerate(words) if w == word]


def name_words(name: str) -> set[str]:
    """The lower-case words of a field name (``aws_secretKey`` -> {aws, secret, key})."""
    return {w.lower() for w in _SPLIT.split(name[:200]) if w}


def is_secret_key(name: object, extra: Collection[str] = ()) -> bool:
    """True when a field called ``name`` may hold a secret (``api_key``, ``user_pass``, ...).

    ``extra`` are more names (lower case, whole name or word) that a user declared secret.
    """
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    if lowered in SECRET_NAMES or lowered in extra:
        return True
    ordered = [w.lower() for w in _SPLIT.split(name[:200]) if w]
    words = set(ordered)
    if extra and not words.isdisjoint(extra):
        return True
    hits = words & SECRET_WORDS
    if hits == {"key"} and all(n in _KEY_NOT_SECRET for n in _after(ordered, "key")):
        return False  # key_prefix, sort_key_name: a key of a table, not a credential
    if hits:
        return True
    squashed = lowered.replace("_", "").replace("-", "")
    return "apikey" in squashed or "privatekey" in squashed or "accesskey" in squashed


def is_secret_query_name(name: str, extra: Collection[str] = ()) -> bool:
    """True when a query parameter called ``name`` may hold a secret (``code``, ``sig``, ``api-key``)."""
    return name.lower() in QUERY_NAMES or is_secret_key(name, extra)


def is_strong_name(name: str, extra: Collection[str] = ()) -> bool:
    """True when ``name`` in ``name: value`` free text is surely a secret's label (``password: x``)."""
    lowered = name.lower()
    if lowered.endswith(("error", "exception", "warning")):
        return False
    words = name_words(name)
    squashed = lowered.replace("_", "").replace("-", "")
    return bool(words & STRONG_WORDS) or not words.isdisjoint(extra) or lowered in extra or "apikey" in squashed
