"""S3 URLs and options: ``s3://bucket/prefix?option=value`` parsed with no I/O, every value checked.

Query values are converted through `URL_QUERY_OPTIONS`; keyword options are checked by the same
rules (`check_options`, pydantic), so ``max_concurrency=0`` (which would hang every load) or
``pack_every=2.5`` fail at construction with `ProviderConfigError` naming the option.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ConfigDict, Field, StrictBool, StrictInt

from persistency.errors import ProviderConfigError
from persistency.registry import redact_url
from persistency.storage import BackendOptions, validate_options

__all__ = ["BUCKET_RE", "URL_QUERY_OPTIONS", "S3Options", "check_options", "parse_s3_url"]

BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")

def _parse_bool(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value!r} is not a positive number")
    return number


#: URL query options and how each value is parsed (keyword arguments of the same name win).
URL_QUERY_OPTIONS: dict[str, Callable[[str], Any]] = {
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "anon": _parse_bool,
    "requester_pays": _parse_bool,
    "connect_timeout": _positive_float,
    "read_timeout": _positive_float,
    "max_attempts": _positive_int,
    "max_concurrency": _positive_int,
    "pack_every": _positive_int,
    "cache_size": _positive_int,
}


def parse_s3_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``s3://bucket/prefix?opt=value`` into (bucket, prefix, options), with no I/O.

    Raises `ProviderConfigError` for another scheme, a malformed bucket, credentials in the URL,
    or an unknown or unparseable query option (the message names it).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ProviderConfigError(f"malformed S3 URL: {exc}") from exc
    if parts.scheme.lower() not in ("s3", "s3a"):
        raise ProviderConfigError(f"not an S3 URL (s3://bucket/prefix): {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ProviderConfigError(
            "credentials do not belong in an S3 URL: use the standard AWS chain (environment, "
            "~/.aws profile, instance role) or the key=/secret= keyword arguments"
        )
    bucket = parts.netloc
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ProviderConfigError(
            f"malformed S3 bucket name {bucket!r} in {redact_url(url)!r}: 3-63 characters of "
            "lowercase letters, digits, '.' and '-'"
        )
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ProviderConfigError(f"S3 prefix must not contain '.' or '..' segments: {redact_url(url)!r}")
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        parser = URL_QUERY_OPTIONS.get(name)
        if parser is None:
            raise ProviderConfigError(
                f"unknown S3 URL option {name!r}; known: {', '.join(sorted(URL_QUERY_OPTIONS))}"
            )
        if name in options:
            raise ProviderConfigError(f"S3 URL option {name!r} given twice")
        try:
            options[name] = parser(raw)
        except ValueError as exc:
            raise ProviderConfigError(f"S3 URL option {name!r}: {exc}") from exc
    return bucket, "/".join(segments), options


class S3Options(BackendOptions):
    """The provider's own keyword options, checked strictly (what the constructor accepts)."""

    model_config = ConfigDict(strict=True, extra="allow")  # the rest goes to s3fs
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    anon: StrictBool = False
    requester_pays: StrictBool = False
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=10.0, gt=0)
    max_attempts: StrictInt = Field(default=3, ge=1)
    max_concurrency: StrictInt = Field(default=32, ge=1)
    pack_every: StrictInt = Field(default=64, ge=2)
    cache_size: StrictInt = Field(default=512, ge=0)
    pack_cache_bytes: StrictInt = Field(default=64 * 2**20, ge=0)


def check_options(values: dict[str, Any]) -> S3Options:
    """``values`` checked against `S3Options`; `ProviderConfigError` naming each bad option."""
    return validate_options(S3Options, values, "S3")
