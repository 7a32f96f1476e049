"""Choosing a provider by URL: defaults, environment, schemes, plug-ins and the errors for bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from persistency.providers.filesystem import FilesystemStorageProvider

from persistency import DEFAULT_URL, MissingDependencyError, ProviderConfigError, provider_from_url
from persistency.registry import ENV_VAR, known_schemes, redact_url


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

    ep = EntryPoint(name="myfs", value="persistency.providers.filesystem:FilesystemStorageProvider",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_PLUGINS", None)
    assert "myfs" in known_schemes()
    with pytest.raises(ProviderConfigError):
        # the plug-in is found; fsspec then refuses the unknown protocol with a typed error
        provider_from_url("myfs://x")


def test_a_plugin_that_is_not_a_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import persistency.registry as registry

    ep = EntryPoint(name="bogus", value="json:JSONDecoder", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    monkeypatch.setattr(registry, "_PLUGINS", None)
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


def _plugins(monkeypatch: pytest.MonkeyPatch, *eps: tuple[str, str]) -> list[str]:
    """Install fake entry points; returns a list that counts how often they are read."""
    from importlib.metadata import EntryPoint

    import persistency.registry as registry

    reads: list[str] = []

    def fake(group: str) -> list[EntryPoint]:
        reads.append(group)
        return [EntryPoint(name=n, value=v, group=group) for n, v in eps]

    monkeypatch.setattr(registry, "entry_points", fake)
    monkeypatch.setattr(registry, "_PLUGINS", None)
    monkeypatch.setattr(registry, "_RUNTIME", {})
    return reads


def test_entry_points_are_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reads = _plugins(monkeypatch)
    for _ in range(5):
        provider_from_url(str(tmp_path))
    known_schemes()
    assert len(reads) == 1


def test_a_plugin_may_not_shadow_a_built_in_scheme_unless_it_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    target = "tests.test_registry:_Shadow"
    _plugins(monkeypatch, ("file", target))
    with pytest.raises(ProviderConfigError, match=r"claims the built-in scheme 'file'.*\[replace\]"):
        provider_from_url("file:///tmp/x")
    assert isinstance(provider_from_url("/tmp/plain-path"), FilesystemStorageProvider)  # other schemes unaffected
    _plugins(monkeypatch, ("file", target + " [replace]"))
    assert isinstance(provider_from_url("file:///tmp/x"), _Shadow)


def test_register_provider_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from persistency.storage import register_provider

    _plugins(monkeypatch)
    register_provider("shadowy", _Shadow)
    assert isinstance(provider_from_url("shadowy://anything"), _Shadow)
    assert "shadowy" in known_schemes()
    with pytest.raises(ProviderConfigError, match="already served"):
        register_provider("shadowy", "tests.test_registry:_Shadow")
    with pytest.raises(ProviderConfigError, match="replace=True"):
        register_provider("redis", _Shadow)
    register_provider("redis", "tests.test_registry:_Shadow", replace=True)
    assert isinstance(provider_from_url("redis://host/0"), _Shadow)
    with pytest.raises(ProviderConfigError, match="not a PersistencyStorageProvider"):
        register_provider("other", dict)  # type: ignore[arg-type]
    with pytest.raises(ProviderConfigError, match="scheme"):
        register_provider("bad scheme", _Shadow)


def test_environment_key_reaches_only_providers_that_declare_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from persistency.encryption import generate_key
    from persistency.storage import register_provider

    _plugins(monkeypatch)
    monkeypatch.setenv("PERSISTENCY_ENCRYPTION_KEY", generate_key())
    register_provider("shadowy", _Shadow)
    assert isinstance(provider_from_url("shadowy://x"), _Shadow)  # _Shadow takes no encryption_key


def test_chained_fsspec_urls_are_parsed_by_fsspec(tmp_path: Path) -> None:
    from persistency.testing import make_chain

    url = f"simplecache::file://{tmp_path}/chained"
    with pytest.raises(ProviderConfigError, match="single_writer=True"):
        provider_from_url(url)
    p = provider_from_url(url, single_writer=True)
    make_chain(p, "s", 3)
    assert [i.step for i in p.list_checkpoints("s")] == [1, 2, 3]
    assert (tmp_path / "chained" / "s" / "checkpoints").is_dir()


@pytest.mark.parametrize("query", ["?fsync=false", "?fsync=0&cache_size=8"])
def test_file_url_query_options_are_honoured_not_a_folder_name(tmp_path: Path, query: str) -> None:
    p = provider_from_url(f"file://{tmp_path}/q{query}")
    assert isinstance(p, FilesystemStorageProvider)
    from persistency.testing import make_chain

    make_chain(p, "s", 1)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["q"]


@pytest.mark.parametrize("query", ["?bogus=1", "?fsync=maybe", "?cache_size=-1"])
def test_file_url_query_unknown_or_bad_options_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(ProviderConfigError):
        provider_from_url(f"file://{tmp_path}/q{query}")
    assert not (tmp_path / f"q{query}").exists()


class _Shadow(FilesystemStorageProvider):
    """A plug-in provider for the tests above (no encryption_key option)."""

    def __init__(self, url: str) -> None:
        super().__init__("memory://shadow")

    @classmethod
    def accepted_options(cls) -> frozenset[str] | None:
        return frozenset()
