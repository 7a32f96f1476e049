"""Redis URL and options: parsed and checked with no I/O, so a bad one fails at construction.

The provider's own options come from the URL's query or keyword arguments (the keyword wins);
everything else goes to redis-py. What a message may show of the URL is decided here too: the
password, any unknown query value and the fragment are masked, and every masked piece is
scrubbed from error text (`Config.scrub`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

from persistency.errors import ProviderConfigError

__all__ = ["DEFAULT_KEY_PREFIX", "OPTIONS", "Config", "parse_config"]

DEFAULT_KEY_PREFIX = "persistency"
_PREFIX_RE = re.compile(r"[A-Za-z0-9._:@+=/|-]{1,200}")
_COMPRESS_MIN = 256
_MAX_TTL = 10 * 365 * 86400
_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0}


# -- options ----------------------------------------------------------------------------------------
def _parse_bool_or_auto(value: object) -> bool | None:
    """``cluster``: True, False, or None for auto-detect."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true, false or auto, not {value!r}")


def _parse_ttl(value: object) -> float | None:
    """``ttl``: seconds (a number, text or timedelta); None, 0 or "none" for no expiry."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and value.strip().lower() in ("", "none", "0"):
        return None
    else:
        seconds = _parse_seconds(value)
    if not 0 <= seconds <= _MAX_TTL:
        raise ValueError(f"must be between 0 and {_MAX_TTL} seconds")
    if 0 < seconds < 0.001:  # Redis expires in whole milliseconds: less would silently mean "never"
        raise ValueError("must be at least 0.001 seconds (1 ms), or 0/none for no expiry")
    return seconds or None


def _parse_prefix(value: object) -> str:
    """``key_prefix``: braces would break the hash tag, so they are refused."""
    text = str(value)
    if not _PREFIX_RE.fullmatch(text):
        raise ValueError("must be 1-200 characters of letters, digits and . _ : @ + = / | - (no braces)")
    return text


def _parse_compression(value: object) -> str:
    """``compression``: zlib or none."""
    text = str(value).strip().lower()
    if text in ("zlib", "true", "1", "yes", "on"):
        return "zlib"
    if text in ("none", "false", "0", "no", "off", ""):
        return "none"
    raise ValueError("expected zlib or none")


def _parse_int(value: object) -> int:
    """A non-negative whole count (retries, cache size, replicas): 2.5 or True is refused, not rounded."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"must be a whole number, not {value!r}")
    if isinstance(value, str) and not value.strip().isdigit():
        raise ValueError(f"must be a whole number, not {value!r}")
    n: int = int(value)  # type: ignore[call-overload]
    if not 0 <= n <= 10_000_000:
        raise ValueError("must be between 0 and 10,000,000")
    return n


def _parse_seconds(value: object) -> float:
    """A finite, non-negative number of seconds."""
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x) or x < 0:
        raise ValueError("must be a finite number >= 0")
    return x


#: The provider's own options, as URL query parameters or keyword arguments (the keyword wins).
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "key_prefix": _parse_prefix,
    "ttl": _parse_ttl,
    "cluster": _parse_bool_or_auto,
    "retries": _parse_int,
    "retry_backoff_base": _parse_seconds,
    "retry_backoff_cap": _parse_seconds,
    "cache_size": _parse_int,
    "compression": _parse_compression,
    "min_replicas": _parse_int,
    "replica_timeout": _parse_seconds,
}
_OPTION_DEFAULTS: dict[str, Any] = {
    "key_prefix": DEFAULT_KEY_PREFIX,
    "ttl": None,
    "cluster": None,
    "retries": 3,
    "retry_backoff_base": 0.05,
    "retry_backoff_cap": 1.0,
    "cache_size": 512,
    "compression": "zlib",
    "min_replicas": 0,
    "replica_timeout": 1.0,
}
#: Query parameters redis-py itself understands besides its parser table.
_REDIS_QUERY_EXTRA = frozenset({"username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs",
                                "ssl_certfile", "ssl_keyfile", "ssl_ca_path", "ssl_password"})


#: Query options whose values are shown in messages; every other value (password, a typo of it,
#: anything unknown) is masked, so no spelling of a secret reaches a message or a repr.
_SHOWN_QUERY = frozenset({
    "key_prefix", "ttl", "cluster", "retries", "retry_backoff_base", "retry_backoff_cap", "cache_size",
    "compression", "min_replicas", "replica_timeout", "db", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "max_connections", "health_check_interval", "protocol", "ssl_check_hostname",
    "ssl_cert_reqs", "client_name", "timeout", "retry_on_timeout",
})


def _redact(url: str) -> tuple[str, list[str]]:
    """The URL safe to show, and the secret-looking pieces it left out (to scrub from other text).

    Works on the raw text, not on urlsplit: a password holding an unencoded ``/``, ``?`` or ``#``
    moves urlsplit's idea of where the host starts. Everything before the last ``@`` is user
    information (only a plain user name is kept), a fragment is dropped, and query values are
    shown only for `_SHOWN_QUERY` options.
    """
    hidden: list[str] = []
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>", [url]
    user = ""
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        name, colon, secret = userinfo.partition(":")
        if colon and not any(c in name for c in "/?#"):
            user, hidden = f"{name}:****@", [secret]
        else:
            user, hidden = "****@", [userinfo]
    rest, hash_, fragment = rest.partition("#")
    if hash_:
        hidden.append(fragment)
    base, q, query = rest.partition("?")
    shown_query = []
    for pair in query.split("&") if q else []:
        name, eq, value = pair.partition("=")
        if value and name not in _SHOWN_QUERY:
            hidden.append(value)
            value = "****"
        shown_query.append(f"{name}{eq}{value}")
    shown = f"{scheme}://{user}{base}" + (f"?{'&'.join(shown_query)}" if q else "") + ("#****" if hash_ else "")
    return shown, sorted({h for h in hidden if h}, key=len, reverse=True)


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    """A function masking every one of ``secrets`` in a text: whole, URL-decoded, and each piece
    between URL delimiters (a parser's error may quote just the part it choked on)."""
    pieces = {p for s in secrets for p in re.split(r"[/?#@&=:;]", s) if len(p) >= 3}
    forms = sorted({f for s in {*secrets, *pieces} for f in (s, unquote(s)) if f}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for form in forms:
            text = text.replace(form, "****")
        return text

    return scrub


@dataclass(frozen=True)
class Config:
    """A parsed URL plus options: what the provider needs, and what redis-py gets."""

    display_url: str
    client_url: str
    redis_options: dict[str, Any]
    settings: dict[str, Any]
    scrub: Callable[[str], str]


def parse_config(url: str, options: dict[str, Any]) -> Config:
    """Split ``url`` and keyword ``options`` into the provider's settings and redis-py's (no I/O).

    The keyword wins over the URL. redis-py lets the URL win, so whatever a keyword overrides is
    taken out of the URL that redis-py sees. Raises `ProviderConfigError` naming the bad option.
    """
    shown, hidden = _redact(url)
    secret_values = [str(options[k]) for k in ("password",) if options.get(k)]
    scrub = _scrubber(hidden + secret_values)
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        username, password, _ = parts.username, parts.password, parts.port
    except ValueError as exc:
        raise ProviderConfigError(f"malformed Redis URL {shown!r}: {scrub(str(exc))}") from exc
    options = dict(options)
    ours = dict(q for q in query if q[0] in OPTIONS)
    settings: dict[str, Any] = {}
    for name, parser in OPTIONS.items():
        raw = options.pop(name) if name in options else ours.get(name, _OPTION_DEFAULTS[name])
        try:
            settings[name] = parser(raw) if raw is not None else None
        except (TypeError, ValueError) as exc:
            raise ProviderConfigError(scrub(f"Redis option {name}={raw!r} in {shown!r}: {exc}")) from exc
    if any(k == "encryption_key" for k, _ in query):
        raise ProviderConfigError(
            f"{shown!r}: never put encryption_key in a URL; pass it as a keyword or set PERSISTENCY_ENCRYPTION_KEY"
        )
    unknown = sorted({k for k, _ in query} - set(OPTIONS) - set(URL_QUERY_ARGUMENT_PARSERS) - _REDIS_QUERY_EXTRA)
    if unknown:
        raise ProviderConfigError(
            f"unknown option(s) {', '.join(unknown)} in {shown!r}; the provider's options are "
            f"{', '.join(OPTIONS)}, and redis-py's are {', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))}"
        )
    redis_options = options
    netloc = parts.netloc
    if {"username", "password"} & set(redis_options) and "@" in netloc:
        # A keyword credential overrides the URL's: move both out of the URL, keyword first.
        if username and "username" not in redis_options:
            redis_options["username"] = unquote(username)
        if password and "password" not in redis_options:
            redis_options["password"] = unquote(password)
        netloc = netloc.rsplit("@", 1)[1]
    path = "" if "db" in redis_options and parts.scheme != "unix" else parts.path
    rest = urlencode([(k, v) for k, v in query if k not in OPTIONS and k not in redis_options], quote_via=quote)
    # Joined by hand: urlunsplit drops the "//" of "unix:///path" (an empty host).
    client_url = f"{parts.scheme}://{netloc}{path}" + (f"?{rest}" if rest else "")
    try:
        url_kwargs: dict[str, Any] = parse_url(client_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ProviderConfigError(f"malformed Redis URL {shown!r}: {scrub(str(exc))}") from exc
    for name, value in _DEFAULTS.items():
        if name not in url_kwargs and name not in redis_options:
            redis_options[name] = value
    redis_options["decode_responses"] = False  # records are bytes; the codec decodes them
    if settings["cluster"] and "path" in url_kwargs:
        raise ProviderConfigError(f"{shown!r}: Redis Cluster cannot be reached over a unix socket")
    if settings["cluster"] and (redis_options.get("db") or url_kwargs.get("db") or 0) != 0:
        raise ProviderConfigError(f"{shown!r}: Redis Cluster has only database 0")
    for name in ("socket_timeout", "socket_connect_timeout"):
        value = redis_options.get(name, url_kwargs.get(name))
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value > 0):
            raise ProviderConfigError(f"Redis option {name}={value!r} in {shown!r}: must be a number of seconds > 0")
    secrets = [str(redis_options.get("password") or ""), str(url_kwargs.get("password") or "")]
    return Config(shown, client_url, redis_options, settings, _scrubber(hidden + secrets))
