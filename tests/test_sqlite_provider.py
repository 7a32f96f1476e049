"""The SQLite provider: the conformance kit (file and ``:memory:``), URLs and options, query counts,
create-only across processes, generations, and ``persistency copy`` to and from it."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from persistency.providers.sqlite import SqliteStorageProvider

from persistency import PersistencyStorageProvider, provider_from_url
from persistency.errors import (
    ProviderConfigError,
    SessionDeletedError,
    StorageUnavailableError,
)
from persistency.ids import checkpoint_id_for
from persistency.testing import ProviderConformance, make_chain, make_checkpoint, race_in_processes
from persistency.testing._lease_suite import LeaseConformance
from tests.test_cli import populate, run


class _Kit(ProviderConformance):
    """The kit, less one case that cannot arise here (see below)."""

    # read_chain returns a whole chain in one query and listing reads info lines, so with a warm cache no
    # contract call reaches read_records here; its failure is checked with the cache off, below.
    @pytest.mark.parametrize("primitive", ["write_record", "read_chain", "read_info_lines", "list_ids",
                                           "list_session_ids", "delete_records"])
    def test_a_backend_failure_is_a_persistency_error_naming_the_backend(
        self, provider: PersistencyStorageProvider, primitive: str
    ) -> None:
        super().test_a_backend_failure_is_a_persistency_error_naming_the_backend(provider, primitive)


class TestSqliteFileConformance(_Kit, LeaseConformance):
    """The shipped contract, and the lease contract, on a SQLite file."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[SqliteStorageProvider]:
        with SqliteStorageProvider(f"sqlite://{tmp_path}/c.db") as p:
            yield p  # type: ignore[misc]

    @pytest.fixture
    def provider_factory(self, tmp_path: Path) -> Callable[[], PersistencyStorageProvider]:
        """Another instance on the same file, as a second worker process would open it."""
        return lambda: provider_from_url(f"sqlite://{tmp_path}/c.db")

    @pytest.fixture
    def stored_bytes(self, tmp_path: Path) -> Callable[[], int]:
        """Bytes of the records' columns (what a save adds; the file grows by whole pages)."""
        def count() -> int:
            with sqlite3.connect(f"{tmp_path}/c.db") as raw:
                row = raw.execute("SELECT COALESCE(SUM(LENGTH(info) + LENGTH(payload)), 0) FROM records").fetchone()
            return int(row[0])
        return count


def test_a_failing_read_records_is_a_storage_error_naming_sqlite(tmp_path: Path) -> None:
    with SqliteStorageProvider(f"sqlite://{tmp_path}/r.db", cache_size=0) as p:
        [first] = make_chain(p, "s", 1)

        def broken(*args: Any) -> Any:
            raise OSError("simulated backend failure")

        p.read_records = broken  # type: ignore[method-assign]
        with pytest.raises(StorageUnavailableError, match="sqlite") as caught:  # the parent is read: no cache
            p.save_checkpoint(make_checkpoint("s", 2, parent_id=first.checkpoint_id))
        assert isinstance(caught.value.__cause__, OSError)


class TestSqliteMemoryConformance(_Kit):
    """The shipped contract on ``sqlite:///:memory:`` (one connection, locked; one process by nature)."""

    @pytest.fixture
    def provider(self) -> Iterator[SqliteStorageProvider]:
        with provider_from_url("sqlite:///:memory:") as p:
            yield p  # type: ignore[misc]


# -- URLs and options ---------------------------------------------------------------------------------------
def test_urls_name_the_file_and_the_query_carries_options(tmp_path: Path) -> None:
    p = provider_from_url(f"sqlite://{tmp_path}/a/b.db?busy_timeout=2.5&fsync=false&cache_size=7")
    assert isinstance(p, SqliteStorageProvider) and p.path == f"{tmp_path}/a/b.db" and (tmp_path / "a/b.db").exists()
    with sqlite3.connect(p.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    p.close()
    relative = tmp_path / "rel"
    relative.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(relative)
        q = provider_from_url("sqlite://here.db")
        make_chain(q, "s", 1)
        q.close()
    finally:
        os.chdir(cwd)
    assert (relative / "here.db").exists()
    assert provider_from_url("sqlite://:memory:").in_memory  # type: ignore[attr-defined]


@pytest.mark.parametrize(("url", "needle"), [
    ("sqlite:///tmp/x.db?fsync=maybe", "fsync"),
    ("sqlite:///tmp/x.db?busy_timeout=-1", "busy_timeout"),
    ("sqlite:///tmp/x.db?busy_timeout=soon", "busy_timeout"),
    ("sqlite:///tmp/x.db?journal=delete", "journal: unknown option"),
    ("sqlite:///tmp/x.db?cache_size=-3", "cache_size"),
    ("sqlite://", "names a database file"),
    ("sqlite:///tmp/folder/", "names a database file"),
])
def test_bad_options_are_refused_naming_the_option(url: str, needle: str) -> None:
    with pytest.raises(ProviderConfigError, match=needle):
        provider_from_url(url)


def test_a_keyword_wins_over_the_query_and_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="fsync"):
        SqliteStorageProvider(f"sqlite://{tmp_path}/k.db", fsync="yes")  # type: ignore[arg-type]
    with pytest.raises(ProviderConfigError, match="busy_timeout"):
        provider_from_url(f"sqlite://{tmp_path}/k.db?busy_timeout=1", busy_timeout=0)


def test_a_file_that_is_not_a_database_and_a_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ProviderConfigError, match=r"junk\.db"):
        provider_from_url(f"sqlite://{tmp_path}/junk.db")
    with pytest.raises(ProviderConfigError, match="folder"):
        provider_from_url(f"sqlite://{tmp_path}")


def test_a_locked_database_is_unavailable_after_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/busy.db?busy_timeout=0.2"
    p = provider_from_url(url)
    holder = sqlite3.connect(f"{tmp_path}/busy.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StorageUnavailableError, match="busy_timeout"):
            make_chain(p, "s", 1)
        with pytest.raises(StorageUnavailableError, match="busy"):
            p.acquire_lease("s", "w1", 5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    make_chain(p, "s", 1)  # and it works once the lock is released
    p.close()


# -- what each operation reads ---------------------------------------------------------------------------------
def _traced(p: SqliteStorageProvider) -> list[str]:
    statements: list[str] = []
    with p._db.connection() as conn:
        conn.set_trace_callback(statements.append)
    return statements


def test_latest_of_a_1000_step_session_takes_a_constant_number_of_queries(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/long.db"
    with provider_from_url(url) as w:
        chain = make_chain(w, "long", 1000)
    counts = {}
    for steps in (10, 1000):
        with SqliteStorageProvider(url) as p:  # a fresh process's view: nothing cached
            if steps == 10:
                make_chain(p, "short", 10)
                p = SqliteStorageProvider(url)
            statements = _traced(p)
            latest = p.get_latest_checkpoint("long" if steps == 1000 else "short")
            assert latest is not None and latest.step == steps
            counts[steps] = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert latest.messages == chain[-1].messages
    assert len(counts[1000]) == len(counts[10]) <= 3, counts[1000]


def test_listing_reads_the_info_column_only(tmp_path: Path) -> None:
    with SqliteStorageProvider(f"sqlite://{tmp_path}/l.db") as p:
        make_chain(p, "s", 30)
        statements = _traced(p)
        infos = p.list_checkpoints("s")
        assert [i.step for i in infos] == list(range(1, 31))
        assert statements and not any("payload" in s for s in statements), statements


# -- create-only across processes ---------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks writer processes")
def test_create_only_race_across_eight_processes(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/race.db"
    for attempt in range(3):
        with provider_from_url(url) as p:
            base = make_chain(p, f"race{attempt}", 2)
        msgs = [*base[-1].messages, {"content": "a reply", "role": "assistant", "name": "bob"}]
        cp = make_checkpoint(f"race{attempt}", 3, parent_id=base[-1].checkpoint_id, messages=msgs)
        outcomes = race_in_processes(lambda: provider_from_url(url), cp, 8)
        winners = [i for i, o in outcomes.items() if o == "won"]
        assert len(winners) == 1 and sorted(outcomes.values()).count("lost") == 7, outcomes
        with provider_from_url(url) as p:
            assert p.get_checkpoint(f"race{attempt}", checkpoint_id_for(1, 3)).metadata == {"writer": winners[0]}


# -- generations: a delete under a live chat, two instances ------------------------------------------------------
def test_two_instances_with_a_delete_in_between_never_splice(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/g.db"
    a, b = provider_from_url(url), provider_from_url(url)
    first = make_chain(a, "s", 3)
    assert a.session_generation("s") == 0  # type: ignore[attr-defined]
    b.delete_session("s")
    assert a.session_generation("s") == 1  # type: ignore[attr-defined]
    make_chain(b, "s", 3, run_seq=1)  # B writes steps 1..3 again, under the same ids
    nxt = make_checkpoint("s", 4, parent_id=first[-1].checkpoint_id,
                          messages=[*first[-1].messages, {"content": "A 3", "role": "assistant", "name": "bob"}])
    with pytest.raises(SessionDeletedError, match="deleted"):
        a.save_checkpoint(nxt)
    c = provider_from_url(url)
    latest = c.get_latest_checkpoint("s")
    assert latest is not None and latest.step == 3 and c.list_checkpoint_ids("s") == [f.checkpoint_id for f in first]
    # A reloads (a new turn of its worker): it now works in the new generation
    assert a.get_latest_checkpoint("s") is not None
    make_chain(a, "s", 1, start=c.get_latest_checkpoint("s"))
    for p in (a, b, c):
        p.close()


def test_a_session_deleted_under_a_live_chat_fails_the_next_save(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/d.db"
    live, other = provider_from_url(url), provider_from_url(url)
    chain = make_chain(live, "s", 2)
    other.delete_session("s")
    nxt = make_checkpoint("s", 3, parent_id=chain[-1].checkpoint_id,
                          messages=[*chain[-1].messages, {"content": "more", "role": "assistant", "name": "bob"}])
    with pytest.raises(SessionDeletedError):
        live.save_checkpoint(nxt)
    assert other.list_sessions() == [] and other.list_checkpoint_ids("s") == []  # no orphan was left
    live.close()
    other.close()


# -- persistency copy to and from SQLite ---------------------------------------------------------------------------
def _dump(url: str) -> dict[str, Any]:
    with provider_from_url(url) as p:
        return {sid: {i.checkpoint_id: p.get_checkpoint(sid, i.checkpoint_id).model_dump(mode="json")
                      for i in p.list_checkpoints(sid)} for sid in p.list_sessions()}


def test_cli_copy_to_and_from_sqlite(tmp_path: Path) -> None:
    src_url, lite_url, back_url = str(tmp_path / "src"), f"sqlite://{tmp_path}/copy.db", str(tmp_path / "back")
    with provider_from_url(src_url) as src:
        populate(src)
    first = run("copy", src_url, lite_url, "--json")
    assert first.exit_code == 0, first.stderr
    assert sum(s["copied"] for s in first.json()["sessions"]) == 12
    assert _dump(lite_url) == _dump(src_url)
    again = run("copy", src_url, lite_url, "--json")
    assert sum(s["copied"] for s in again.json()["sessions"]) == 0
    assert run("verify", "-u", lite_url).exit_code == 0
    back = run("copy", lite_url, back_url, "--json")
    assert back.exit_code == 0, back.stderr
    assert _dump(back_url) == _dump(src_url)
    listed = run("sessions", "-u", lite_url, "--json")
    assert listed.exit_code == 0 and {"conv-1", "conv-2"} <= {
        s["session_id"] if isinstance(s, dict) else s for s in json.loads(listed.stdout)}


def test_closing_while_another_thread_renews_a_lease_waits_for_its_statement(tmp_path: Path) -> None:
    """A lease renewer (a thread of its own) may be mid-statement when the chat closes the provider:
    closing must wait for that statement, and the renewer's next call gets a typed error, never a crash
    (closing a connection another thread is using crashed the interpreter)."""
    import threading
    import time

    from persistency.errors import StorageUnavailableError

    for i in range(200):
        p = SqliteStorageProvider(str(tmp_path / "close.db"))
        lease = p.acquire_lease(f"s{i}", "me", 30)
        assert lease is not None
        seen: list[BaseException] = []
        started = threading.Event()

        def renew(p: SqliteStorageProvider = p, lease: Any = lease, seen: list[BaseException] = seen) -> None:
            started.set()
            try:
                while True:
                    p.renew_lease(lease, 30)
            except BaseException as exc:  # what the renewer gets once closed
                seen.append(exc)

        worker = threading.Thread(target=renew)
        worker.start()
        started.wait()
        time.sleep(0.0005 * (i % 7))  # close at varied points of the renewer's statements
        p.close()
        worker.join(10)
        assert not worker.is_alive()
        assert len(seen) == 1 and isinstance(seen[0], StorageUnavailableError), seen
        assert "closed" in str(seen[0])
