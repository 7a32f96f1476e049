"""Choosing a provider by URL: defaults, environment, schemes, plug-ins and the errors for bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from persistency import DEFAULT_URL, MissingDependencyError, ProviderConfigError, provider_from_url
from persistency.registry import ENV_VAR, known_schemes, redact_url
from providers.filesystem import FilesystemStorageProvider


def test_default_is_a_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    p = provider_from_url()
    assert isinstance(p, FilesystemStorageProvider)
    assert p.url == DEFAULT_URL


def test_environment_variable_wins_over_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, f"file://{tmp_path}/from-env")
    p = provider_from_url()
    assert isinstance(p, FilesystemStorageProvider) and p.url.endswith("from-env")


@pytest.mark.parametrize("url", ["plain/path", "/abs/path", "file:///tmp/x", "memory://x", "local:///tmp/y"])
def test_paths_and_fsspec_urls_select_the_filesystem_provider(url: str) -> None:
    assert isinstance(provider_from_url(url), FilesystemStorageProvider)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ProviderConfigError) as err:
        provider_from_url("nosuch://host/x")
    msg = str(err.value)
    assert "'nosuch'" in msg
    for scheme in ("file", "memory", "redis", "s3"):
        assert scheme in msg
    assert set(known_schemes()) >= {"file", "memory", "redis", "rediss", "s3", "unix"}


def test_empty_url_is_refused() -> None:
    with pytest.raises(ProviderConfigError):
        provider_from_url("   ")


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_redis(name: str, *args: object, **kwargs: object) -> object:
        if name == "redis" or name.startswith("redis."):
            raise ImportError("No module named 'redis'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_redis)
    import sys

    for mod in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ag2-persistency\[redis\]'"):
        provider_from_url("redis://127.0.0.1:1/0")


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:****@host:6379/0"
    assert "s3cret" not in redact_url("rediss://:s3cret@host/0")
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"


def test_entry_point_plugins_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import persistency.registry as registry

    ep = EntryPoint(name="myfs", value="providers.filesystem:FilesystemStorageProvider",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    assert "myfs" in known_schemes()
    with pytest.raises(ProviderConfigError):
        # the plug-in is found; fsspec then refuses the unknown protocol with a typed error
        provider_from_url("myfs://x")


def test_a_plugin_that_is_not_a_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import persistency.registry as registry

    ep = EntryPoint(name="bogus", value="json:JSONDecoder", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    with pytest.raises(ProviderConfigError, match="not a PersistencyStorageProvider"):
        provider_from_url("bogus://x")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:p4ss#w0rd@127.0.0.1:6379/0",
        "redis://u:p4ss?w0rd@127.0.0.1:6379/0",
        "redis://u:p4ss/w0rd@127.0.0.1:6379/0",
        "redis://u:p4ss@w0rd@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=p4ssw0rd&key_prefix=app",
        "s3://bucket/prefix?key=p4ssw0rd&secret=p4ssw0rd",
        "redis://127.0.0.1/0?encryption_key=p4ssw0rd",
    ],
)
def test_redact_url_masks_passwords_a_parser_would_miss(url: str) -> None:
    shown = redact_url(url)
    assert "p4ss" not in shown and "w0rd" not in shown
    assert "127.0.0.1" in shown or "bucket" in shown
    assert "key_prefix=app" in shown or "key_prefix" not in url
