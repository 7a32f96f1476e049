"""Bad arguments and options fail when given, with a typed error naming the option (issue #13, item 4).

Every case here used to raise a raw exception, hang, or be accepted with the wrong meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persistency import ProviderConfigError, SerializationError, provider_from_url
from persistency.testing import make_chain, make_checkpoint


@pytest.mark.parametrize("limit", ["x", -1, 1.5, True, [1]])
def test_bad_limits_are_refused_on_every_backend(storage_url: str, limit: Any) -> None:
    with provider_from_url(storage_url) as p:
        make_chain(p, "s", 2)
        with pytest.raises(ProviderConfigError, match="limit"):
            p.list_checkpoints("s", limit=limit)


@pytest.mark.parametrize(
    ("url", "options", "names"),
    [
        ("{tmp}/fs", {"cache_size": -1}, "cache_size"),
        ("{tmp}/fs", {"fsync": "no"}, "fsync"),
        ("{tmp}/fs", {"bogus": 1}, "bogus"),
        ("file://{tmp}/fs?bogus=1", {}, "bogus"),
        ("{tmp}/nul\x00byte", {}, "NUL"),
        ("zip://x", {}, "zip"),
        ("redis://127.0.0.1:1/0", {"socket_timeout": -1}, "socket_timeout"),
        ("redis://127.0.0.1:1/0?socket_timeout=-1", {}, "socket_timeout"),
        ("redis://127.0.0.1:1/0", {"ttl": 0.0001}, "ttl"),
        ("redis://127.0.0.1:1/0", {"cache_size": -1}, "cache_size"),
        ("redis://127.0.0.1:1/0", {"min_replicas": 2.5}, "min_replicas"),
        ("redis://127.0.0.1:1/0?bogus=1", {}, "bogus"),
        ("redis://127.0.0.1:1/0", {"bogus": 1}, "bogus"),
        ("s3://bucket/p", {"max_concurrency": 0}, "max_concurrency"),
        ("s3://bucket/p?max_concurrency=0", {}, "max_concurrency"),
        ("s3://bucket/p", {"pack_every": 2.5}, "pack_every"),
        ("s3://bucket/p", {"cache_size": -1}, "cache_size"),
        ("s3://bucket/p", {"bogus": 1}, "bogus"),
        ("s3://bucket/p?bogus=1", {}, "bogus"),
    ],
)
def test_bad_options_are_refused_at_construction_naming_the_option(
    tmp_path: Path, url: str, options: dict[str, Any], names: str
) -> None:
    with pytest.raises(ProviderConfigError) as err:
        provider_from_url(url.replace("{tmp}", str(tmp_path)), **options)
    assert names in str(err.value)
    assert not (tmp_path / "fs").exists() or not any((tmp_path / "fs").iterdir())


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("where", ["messages", "metadata", "agent_states"])
def test_5000_deep_content_is_refused_before_anything_is_stored(storage_url: str, where: str) -> None:
    with provider_from_url(storage_url) as p:
        fields: dict[str, Any] = {
            "messages": {"messages": [{"content": _deep(5000), "role": "user"}]},
            "metadata": {"metadata": {"deep": _deep(5000)}},
            "agent_states": {"agent_states": {"a": {"deep": _deep(5000)}}},
        }[where]
        with pytest.raises(SerializationError):
            p.save_checkpoint(make_checkpoint("deep", 1, **fields))
        assert p.list_sessions() == []
        assert p.get_latest_checkpoint("deep") is None


def test_500_deep_content_round_trips(storage_url: str) -> None:
    with provider_from_url(storage_url) as p:
        cp = make_checkpoint("deep", 1, messages=[{"content": _deep(500), "role": "user"}], metadata={"d": _deep(500)})
        p.save_checkpoint(cp)
        got = p.get_checkpoint("deep", cp.checkpoint_id)
        assert got.messages == cp.messages and got.metadata == cp.metadata
