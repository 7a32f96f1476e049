"""Choosing a provider by URL: a scheme -> class table kept as data and imported on first use.

Built-in schemes are listed in `_BUILTIN`; third parties add theirs through the entry-point group
``persistency.providers`` (``scheme = package.module:Class``, read once per process) or at run
time with `register_provider`. Neither may take a built-in scheme without asking to replace it.
Each provider parses its own URL in its ``from_url`` classmethod (the base's default passes the
URL to the constructor): the registry never learns a backend's URL syntax.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from importlib.metadata import entry_points
from typing import Any

from persistency.errors import MissingDependencyError, ProviderConfigError
from persistency.provider import PersistencyStorageProvider
from persistency.redaction import redact_url  # the one URL masker, re-exported here for old callers

__all__ = [
    "DEFAULT_URL",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "known_schemes",
    "provider_from_url",
    "redact_url",
    "register_provider",
]

ENV_VAR = "PERSISTENCY_URL"
DEFAULT_URL = "./.persistency"
"""The embedded default: a folder in the working directory, used when no URL is configured."""
ENTRY_POINT_GROUP = "persistency.providers"
ENCRYPTION_ENV_VAR = "PERSISTENCY_ENCRYPTION_KEY"
"""When set, every provider built by URL seals payloads with this key (see `persistency.encryption`)."""

_FS = {"class": "persistency.providers.filesystem:FilesystemStorageProvider"}
_BUILTIN: dict[str, dict[str, str]] = {
    "": _FS,
    "file": _FS,
    "local": _FS,
    "memory": _FS,
    "s3": {"class": "persistency.providers.s3:S3StorageProvider", "extra": "s3", "module": "s3fs"},
    "s3a": {"class": "persistency.providers.s3:S3StorageProvider", "extra": "s3", "module": "s3fs"},
    "redis": {"class": "persistency.providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
    "rediss": {"class": "persistency.providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
    "unix": {"class": "persistency.providers.redis:RedisStorageProvider", "extra": "redis", "module": "redis"},
    "sqlite": {"class": "persistency.providers.sqlite:SqliteStorageProvider"},  # stdlib sqlite3: no extra (p12)
}


#: run-time registrations: scheme -> class or "module:Class" (see `register_provider`)
_RUNTIME: dict[str, type[PersistencyStorageProvider] | str] = {}
#: entry points, read once on first use: scheme -> (target, asks to replace a built-in, distribution)
_PLUGINS: dict[str, tuple[str, bool, str]] | None = None
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]{0,31}")


def _plugins() -> dict[str, tuple[str, bool, str]]:
    """The ``persistency.providers`` entry points, read once per process (reading them costs ms)."""
    global _PLUGINS
    if _PLUGINS is None:
        found: dict[str, tuple[str, bool, str]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            target, _, extras = ep.value.partition("[")
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
            found[ep.name.lower()] = (target.strip(), "replace" in extras, dist)
        _PLUGINS = found
    return _PLUGINS


def register_provider(scheme: str, provider: type[PersistencyStorageProvider] | str, *, replace: bool = False) -> None:
    """Serve ``scheme://`` URLs with ``provider`` (a class, or ``"package.module:Class"`` imported on first use).

    A built-in scheme, or one registered before, is refused with `ProviderConfigError` unless
    ``replace=True``. Entry points (group ``persistency.providers``) do the same at install time;
    one that names a built-in scheme must ask with the ``[replace]`` extra:
    ``file = "mypkg.store:MyProvider [replace]"``.
    """
    if not isinstance(scheme, str) or not _SCHEME_RE.fullmatch(scheme.lower()):
        raise ProviderConfigError(f"scheme must be letters, digits and + . - (a URL scheme), not {scheme!r}")
    scheme = scheme.lower()
    if isinstance(provider, str):
        if ":" not in provider:
            raise ProviderConfigError(f"provider path must be 'package.module:Class', not {provider!r}")
    elif not (isinstance(provider, type) and issubclass(provider, PersistencyStorageProvider)):
        raise ProviderConfigError(f"{provider!r} is not a PersistencyStorageProvider subclass")
    taken = scheme in _BUILTIN or scheme in _RUNTIME or scheme in _plugins()
    if taken and not replace:
        raise ProviderConfigError(
            f"scheme {scheme!r} is already served ({_served_by(scheme)}); pass replace=True to replace it"
        )
    _RUNTIME[scheme] = provider


def _served_by(scheme: str) -> str:
    if scheme in _RUNTIME:
        return "registered at run time"
    if scheme in _plugins():
        return f"plug-in from {_plugins()[scheme][2]}"
    return "built in"


def _fsspec_protocols() -> set[str]:
    from fsspec.registry import known_implementations, registry

    return set(known_implementations) | set(registry)


def known_schemes() -> list[str]:
    """Every scheme `provider_from_url` accepts: built-in, registered, plug-in (and fsspec's protocols)."""
    return sorted({s for s in _BUILTIN if s} | set(_RUNTIME) | set(_plugins()))


def _scheme(url: str) -> str:
    if "://" not in url:
        # A plain path (including Windows drive letters such as C:\\...).
        return ""
    head = url.split("://", 1)[0].lower()
    # a chained fsspec URL ("simplecache::file://...") is served by its outermost protocol
    return head.split("::", 1)[0]


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


def _provider_class(scheme: str, url: str) -> type[PersistencyStorageProvider]:
    """The class serving ``scheme``: run-time registration, then plug-in, then built-in, then fsspec."""
    if scheme in _RUNTIME:
        target = _RUNTIME[scheme]
        return target if isinstance(target, type) else _load(target, scheme, None, None)
    plugins = _plugins()
    if scheme in plugins:
        target, replaces, dist = plugins[scheme]
        if scheme in _BUILTIN and not replaces:
            raise ProviderConfigError(
                f"the plug-in {target!r} from {dist} claims the built-in scheme {scheme!r}; a plug-in may replace "
                "a built-in only by asking for it (entry point value 'module:Class [replace]')"
            )
        return _load(target, scheme, None, None)
    if scheme in _BUILTIN:
        spec = _BUILTIN[scheme]
        return _load(spec["class"], scheme, spec.get("extra"), spec.get("module"))
    if scheme in _fsspec_protocols():
        return _load(_FS["class"], scheme, None, None)
    raise ProviderConfigError(
        f"unknown storage URL scheme {scheme!r} in {redact_url(url)!r}; known schemes: "
        f"{', '.join(known_schemes())}, a plain path, or any installed fsspec protocol"
    )


def _accepts(cls: type[PersistencyStorageProvider], name: str) -> bool:
    """True if ``cls`` declares the keyword option ``name`` (so an option from the environment may reach it)."""
    accepted = getattr(cls, "accepted_options", None)
    if callable(accepted):
        names = accepted()
        return names is None or name in names
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def provider_from_url(url: str | os.PathLike[str] | None = None, **options: Any) -> PersistencyStorageProvider:
    """Build the storage provider a URL names.

    ``encryption_key`` (or the ``PERSISTENCY_ENCRYPTION_KEY`` environment variable) seals payloads.
    ``None`` reads ``PERSISTENCY_URL`` and, without it, uses the local folder `DEFAULT_URL`.
    A plain path, ``file://`` and ``memory://`` (and any other fsspec protocol, chained ones too)
    give the filesystem provider; ``s3://`` the S3 provider; ``redis://``, ``rediss://`` and
    ``unix://`` the Redis provider; other schemes come from `register_provider` or the
    ``persistency.providers`` entry points. Keyword ``options`` go to the provider's ``from_url``;
    where they and the URL's query disagree, the keyword wins. The environment's key reaches only
    a provider that declares an ``encryption_key`` option.

    Raises:
        ProviderConfigError: unknown scheme (the message lists the known ones) or bad options.
        MissingDependencyError: the provider's extra is not installed (the message names it).
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ProviderConfigError("empty storage URL")
    cls = _provider_class(_scheme(url), url)
    if "encryption_key" not in options and os.environ.get(ENCRYPTION_ENV_VAR) and _accepts(cls, "encryption_key"):
        options["encryption_key"] = os.environ[ENCRYPTION_ENV_VAR]
    try:
        return cls.from_url(url, **options)
    except TypeError as exc:
        raise ProviderConfigError(f"{cls.__name__} does not accept these options ({exc})") from exc

