"""Opening a store for a command: connect/read timeouts, what a local path must be, and how a
timeout is told to a person (the URL with its password masked, and the option that raises it).

A command that talks to a server which accepts connections and never answers must fail in
seconds with one line, not hang for the client library's defaults times its retries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from persistency.errors import ProviderConfigError
from persistency.provider import PersistencyStorageProvider
from persistency.registry import DEFAULT_URL, ENV_VAR, provider_from_url, redact_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV_VAR",
    "describe_timeout",
    "open_provider",
    "set_timeout",
    "timeout_options",
]

TIMEOUT_ENV_VAR = "PERSISTENCY_TIMEOUT"
DEFAULT_TIMEOUT = 5.0
"""Seconds the command line waits to connect and for each reply, unless the URL or --timeout says."""

#: per scheme: the provider options that bound one attempt, and the one that bounds the attempts
_TIMEOUT_OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, int]]] = {
    "redis": (("socket_connect_timeout", "socket_timeout"), ("retries", 1)),
    "rediss": (("socket_connect_timeout", "socket_timeout"), ("retries", 1)),
    "unix": (("socket_connect_timeout", "socket_timeout"), ("retries", 1)),
    "s3": (("connect_timeout", "read_timeout"), ("max_attempts", 2)),
    "s3a": (("connect_timeout", "read_timeout"), ("max_attempts", 2)),
}

_state: dict[str, Any] = {"timeout": None, "urls": []}


def set_timeout(seconds: float | None) -> None:
    """Set the timeout for this invocation (None: `DEFAULT_TIMEOUT`, the URL's own values win)."""
    _state["timeout"] = seconds
    _state["urls"] = []


def effective_timeout() -> float:
    """The connect/read timeout in force, in seconds."""
    value = _state["timeout"]
    return DEFAULT_TIMEOUT if value is None else float(value)


def _scheme_and_query(url: str) -> tuple[str, set[str]]:
    if "://" not in url:
        return "", set()
    scheme, _, rest = url.partition("://")
    query = rest.partition("?")[2].partition("#")[0]
    return scheme.lower(), {pair.partition("=")[0] for pair in query.split("&") if pair}


def timeout_options(url: str, seconds: float | None) -> dict[str, Any]:
    """The provider options that bound how long ``url``'s backend may take to connect and answer.

    ``seconds`` given (``--timeout``): it wins over the URL's query. None: `DEFAULT_TIMEOUT`, for the
    options the URL does not set itself. Backends without network timeouts get no options.
    """
    scheme, in_query = _scheme_and_query(url)
    if scheme not in _TIMEOUT_OPTIONS:
        return {}
    names, (attempts, tries) = _TIMEOUT_OPTIONS[scheme]
    value = DEFAULT_TIMEOUT if seconds is None else seconds
    options: dict[str, Any] = {name: value for name in names}
    options[attempts] = tries
    if seconds is None:
        options = {k: v for k, v in options.items() if k not in in_query}
    return options


def _check_local(url: str) -> None:
    """A local path that exists must be a folder: a file (``/etc/passwd``) is not a store."""
    scheme, _ = _scheme_and_query(url)
    if scheme not in ("", "file", "local"):
        return
    path = url.partition("://")[2].partition("?")[0] if scheme else url
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ProviderConfigError(f"{redact_url(url)} is a file, not a store (a store is a folder, or a URL)")


@contextmanager
def open_provider(url: str | None, **options: Any) -> Iterator[PersistencyStorageProvider]:
    """The provider for ``url`` (None: ``$PERSISTENCY_URL``, then the default folder), closed after use,
    with this invocation's connect/read timeouts."""
    resolved = url if url is not None else (os.environ.get(ENV_VAR) or DEFAULT_URL)
    _check_local(resolved)
    _state["urls"].append(resolved)
    provider = provider_from_url(resolved, **{**timeout_options(resolved, _state["timeout"]), **options})
    try:
        yield provider
    finally:
        provider.close()


def _is_timeout(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TimeoutError) or "timeout" in type(cur).__name__.lower():
            return True
        if "timeout" in str(cur).lower() or "timed out" in str(cur).lower():
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def describe_timeout(exc: BaseException, text: str) -> str | None:
    """One line for a backend that did not answer in time, naming its URL and how to wait longer;
    None when ``exc`` is not a timeout."""
    if not _is_timeout(exc):
        return None
    urls = [redact_url(u) for u in _state["urls"]]
    named = [u for u in urls if u in text] or urls
    where = " or ".join(dict.fromkeys(named)) or "the store"
    return (f"storage unavailable: {where} did not answer within {effective_timeout():g} s a try ({text}); "
            f"wait longer with: persistency --timeout SECONDS ... (or ${TIMEOUT_ENV_VAR})")
