"""The SQLite provider of docs/storage.md, extracted from the page and run through the conformance kit.

It uses the public API only (`persistency.storage`, `persistency.errors`): this test checks that
too, so the example cannot start leaning on a private module.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from persistency import PersistencyStorageProvider
from persistency.testing import ProviderConformance, make_chain

DOC = Path(__file__).resolve().parents[1] / "docs" / "storage.md"


def _example_source() -> str:
    text = DOC.read_text()
    block = re.search(r"<!-- sqlite-example:start -->\n```python\n(.*?)```\n<!-- sqlite-example:end -->", text, re.S)
    assert block, "docs/storage.md lost its sqlite-example block"
    return block.group(1)


def _example_module() -> types.ModuleType:
    module = types.ModuleType("docs_sqlite_example")
    exec(compile(_example_source(), str(DOC), "exec"), module.__dict__)
    return module


SQLiteStorageProvider = _example_module().SQLiteStorageProvider


def test_the_example_uses_the_public_api_only_and_is_about_a_hundred_lines() -> None:
    src = _example_source()
    imports = re.findall(r"^(?:from|import) (\S+)", src, re.M)
    assert not [m for m in imports if m != "__future__" and re.search(r"(^|\.)_", m)], imports
    assert 60 <= len(src.splitlines()) <= 130


class TestSQLiteExample(ProviderConformance):
    """The docs' SQLite provider keeps the whole contract."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[PersistencyStorageProvider]:
        with SQLiteStorageProvider(str(tmp_path / "c.db")) as p:
            yield p

    @pytest.fixture
    def provider_factory(self, tmp_path: Path) -> Callable[[], PersistencyStorageProvider]:
        return lambda: SQLiteStorageProvider(str(tmp_path / "c.db"))

    @pytest.fixture
    def stored_bytes(self, provider: PersistencyStorageProvider) -> Callable[[], int]:
        def count() -> int:
            db = provider._db()  # type: ignore[attr-defined]
            row = db.execute("SELECT coalesce(sum(length(data)), 0) FROM records").fetchone()
            return int(row[0])

        return count


def test_loading_the_latest_of_a_long_session_is_one_query_for_the_chain(tmp_path: Path) -> None:
    p = SQLiteStorageProvider(str(tmp_path / "c.db"))
    chain = make_chain(p, "long", 300)
    fresh = SQLiteStorageProvider(str(tmp_path / "c.db"))
    calls: list[str] = []
    for name in ("read_chain", "read_records", "read_record"):
        inner = getattr(fresh, name)
        setattr(fresh, name, lambda *a, _n=name, _f=inner: (calls.append(_n), _f(*a))[1])
    latest = fresh.get_latest_checkpoint("long")
    assert latest is not None and latest.messages == chain[-1].messages
    assert calls.count("read_chain") == 1 and calls.count("read_records") <= 1, calls


def test_the_example_registers_under_its_own_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from persistency import provider_from_url, registry
    from persistency.errors import ProviderConfigError
    from persistency.storage import register_provider

    monkeypatch.setattr(registry, "_RUNTIME", {})  # this test's registration only
    with pytest.raises(ProviderConfigError, match="already served"):
        register_provider("sqlite", SQLiteStorageProvider)  # the built-in's scheme is refused
    register_provider("minisqlite", SQLiteStorageProvider)  # what docs/storage.md says to write
    with provider_from_url(f"minisqlite://{tmp_path / 'c.db'}") as p:
        assert isinstance(p, SQLiteStorageProvider)
        make_chain(p, "s", 3)
        assert [c for c, _ in p.iter_checkpoints("s")] == p.list_checkpoint_ids("s")
