"""Choosing a provider by URL: a scheme -> class table kept as data and imported on first use.

Built-in schemes are listed in `_BUILTIN`; third parties add theirs through the entry-point group
``persistency.providers`` (``scheme = package.module:Class``). Each provider parses its own URL in
a ``from_url`` classmethod: the registry never learns a backend's URL syntax.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import Any

from persistency.errors import MissingDependencyError, ProviderConfigError
from persistency.provider import PersistencyStorageProvider
from persistency.redaction import redact_url  # the one URL masker, re-exported here for old callers

__all__ = ["DEFAULT_URL", "ENTRY_POINT_GROUP", "ENV_VAR", "known_schemes", "provider_from_url", "redact_url"]

ENV_VAR = "PERSISTENCY_URL"
DEFAULT_URL = "./.persistency"
"""The embedded default: a folder in the working directory, used when no URL is configured."""
ENTRY_POINT_GROUP = "persistency.providers"
ENCRYPTION_ENV_VAR = "PERSISTENCY_ENCRYPTION_KEY"
"""When set, every provider built by URL seals payloads with this key (see `persistency.encryption`)."""

_FS = {"class": "providers.filesystem:FilesystemStorageProvider"}
_BUILTIN: dict[str, dict[str, str]] = {
    "": _FS,
    "file": _FS,
    "local": _FS,
    "memory": _FS,
    "s3": {"class": "providers.s3:S3StorageProvider", "extra": "s3", "module": "s3fs"},
    "s3a": {"class": "providers.s3:S3StorageProvider", "extra": "s3", "module": "s3fs"},
    "redis": {"class": "providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
    "rediss": {"class": "providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
    "unix": {"class": "providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _fsspec_protocols() -> set[str]:
    from fsspec.registry import known_implementations, registry

    return set(known_implementations) | set(registry)


def known_schemes() -> list[str]:
    """Every scheme `provider_from_url` accepts: built-in, plug-in, and fsspec's protocols."""
    return sorted({s for s in _BUILTIN if s} | set(_plugins()))


def _scheme(url: str) -> str:
    if "://" not in url:
        # A plain path (including Windows drive letters such as C:\\...).
        return ""
    return url.split("://", 1)[0].lower()


def _load(target: str, scheme: str, extra: str | None, module: str | None) -> type[PersistencyStorageProvider]:
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"the {scheme}:// provider needs the '{extra}' extra: pip install 'ag2-persistency[{extra}]'"
            ) from exc
    mod_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ProviderConfigError(f"cannot load the provider for {scheme}:// ({target}): {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, PersistencyStorageProvider)):
        raise ProviderConfigError(f"{target} is not a PersistencyStorageProvider")
    return cls


def provider_from_url(url: str | os.PathLike[str] | None = None, **options: Any) -> PersistencyStorageProvider:
    """Build the storage provider a URL names.

    ``encryption_key`` (or the ``PERSISTENCY_ENCRYPTION_KEY`` environment variable) seals payloads.
    ``None`` reads ``PERSISTENCY_URL`` and, without it, uses the local folder `DEFAULT_URL`.
    A plain path, ``file://`` and ``memory://`` (and any other fsspec protocol) give the
    filesystem provider; ``s3://`` the S3 provider; ``redis://``, ``rediss://`` and ``unix://``
    the Redis provider; other schemes come from the ``persistency.providers`` entry points.
    Keyword ``options`` go to the provider's ``from_url``; where they and the URL's query disagree,
    the keyword wins.

    Raises:
        ProviderConfigError: unknown scheme (the message lists the known ones) or bad options.
        MissingDependencyError: the provider's extra is not installed (the message names it).
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ProviderConfigError("empty storage URL")
    scheme = _scheme(url)
    plugins = _plugins()
    if scheme in plugins:
        cls = _load(plugins[scheme], scheme, None, None)
    elif scheme in _BUILTIN:
        spec = _BUILTIN[scheme]
        cls = _load(spec["class"], scheme, spec.get("extra"), spec.get("module"))
    elif scheme in _fsspec_protocols():
        cls = _load(_FS["class"], scheme, None, None)
    else:
        raise ProviderConfigError(
            f"unknown storage URL scheme {scheme!r} in {redact_url(url)!r}; known schemes: "
            f"{', '.join(known_schemes())}, a plain path, or any installed fsspec protocol"
        )
    if "encryption_key" not in options and os.environ.get(ENCRYPTION_ENV_VAR):
        options["encryption_key"] = os.environ[ENCRYPTION_ENV_VAR]
    from_url = getattr(cls, "from_url", None)
    try:
        return from_url(url, **options) if from_url is not None else cls(url, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ProviderConfigError(f"{cls.__name__} does not accept these options ({exc})") from exc

