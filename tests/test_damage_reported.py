"""Damage is reported as damage, never as an empty-looking session (issue #13, "Sessions that look empty").

Redis's orphan index ids and partial eviction are in test_redis_provider.py; the bit flips of every
backend in test_bitflips.py; a damaged info line in test_filesystem_provider.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persistency import CorruptCheckpointError, provider_from_url
from persistency.testing import make_chain
from tests.every_backend import backend, storage_url

__all__ = ["backend", "storage_url"]  # fixtures: every backend of tests/conftest.py and SQLite


def test_stray_files_in_a_session_folder_do_not_hide_the_session(tmp_path: Path) -> None:
    p = provider_from_url(str(tmp_path))
    chain = make_chain(p, "s", 3)
    folder = tmp_path / "s" / "checkpoints"
    (folder / "notes.txt").write_text("a person's notes")
    (folder / "copy of 000001-0000001.json").write_text("{}")
    (tmp_path / "s" / "README").write_text("hello")
    (folder / "subdir").mkdir()
    fresh = provider_from_url(str(tmp_path))
    assert fresh.list_sessions() == ["s"]
    assert [i.checkpoint_id for i in fresh.list_checkpoints("s")] == [c.checkpoint_id for c in chain]
    latest = fresh.get_latest_checkpoint("s")
    assert latest is not None and latest.checkpoint_id == chain[-1].checkpoint_id


def test_a_broken_session_does_not_hide_the_others(tmp_path: Path) -> None:
    p = provider_from_url(str(tmp_path))
    make_chain(p, "good", 2)
    make_chain(p, "bad", 2)
    (tmp_path / "bad" / "checkpoints" / "000001-0000002.json").write_bytes(b"garbage")
    fresh = provider_from_url(str(tmp_path))
    assert fresh.list_sessions() == ["bad", "good"]
    assert fresh.list_checkpoint_ids("bad") == ["000001-0000001", "000001-0000002"]
    with pytest.raises(CorruptCheckpointError, match="000001-0000002"):
        fresh.list_checkpoints("bad")
    assert len(fresh.list_checkpoints("good")) == 2


def test_s3_junk_pack_and_index_are_damage_not_hidden_records(s3_url: str, s3_server: Any) -> None:
    p = provider_from_url(s3_url)
    chain = make_chain(p, "junk", 5)
    prefix = s3_url.split("/", 3)[3].split("?")[0]
    client = s3_server.client()
    name = f"{chain[0].checkpoint_id}~{chain[-1].checkpoint_id}"
    for suffix in (".pack.gz", ".index.gz"):
        client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/junk/packs/{name}{suffix}", Body=b"junk")
    fresh = provider_from_url(s3_url)
    assert fresh.list_sessions() == ["junk"]
    assert fresh.list_checkpoint_ids("junk") == [c.checkpoint_id for c in chain]  # verify can name them all
    latest = fresh.get_latest_checkpoint("junk")  # the intact records are read, not hidden by the junk
    assert latest is not None and latest.messages == chain[-1].messages
    for cp in chain:
        assert fresh.get_checkpoint("junk", cp.checkpoint_id).messages == cp.messages
    # a record that needs the junk (its object emptied, as compaction does) is damage, naming the pack
    client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/junk/checkpoints/{chain[2].checkpoint_id}.json", Body=b"")
    with pytest.raises(CorruptCheckpointError, match=r"packs/.*\.(pack|index)\.gz"):
        provider_from_url(s3_url).get_checkpoint("junk", chain[2].checkpoint_id)


@pytest.mark.parametrize("target", ["self", "head", "missing"])
def test_sqlite_a_looping_base_id_column_never_hangs_nor_alters_a_load(tmp_path: Path, target: str) -> None:
    """The chain query follows the base_id column; a damaged one that loops (a record its own base, or
    the head's) used to return a million rows. Now a load reads at most the session's records, and
    each record's own base id decides what it extends: the data read is the data written."""
    import sqlite3

    url = f"sqlite://{tmp_path}/loop.db"
    with provider_from_url(url) as p:
        chain = make_chain(p, "s", 6)
    victim = chain[3].checkpoint_id
    loop_to = {"self": victim, "head": chain[-1].checkpoint_id, "missing": "000009-0000009"}[target]
    with sqlite3.connect(tmp_path / "loop.db") as raw:
        raw.execute("UPDATE records SET base_id = ? WHERE checkpoint_id = ?", (loop_to, victim))
        raw.execute("UPDATE records SET base_id = ? WHERE checkpoint_id = ?", (victim, chain[-1].checkpoint_id))
    with provider_from_url(url, cache_size=0) as fresh:
        for cp in chain:
            assert fresh.get_checkpoint("s", cp.checkpoint_id) == cp
        assert fresh.get_latest_checkpoint("s") == chain[-1]


# -- one damaged info line, every backend: verify names it, copy and prune handle the other sessions -------
def _damage_info_line(backend: str, url: str, request: pytest.FixtureRequest, sid: str, cid: str) -> None:
    """Add one byte (a space, still valid JSON) to the info line of ``sid``/``cid`` wherever it is stored:
    only its checksum can tell."""
    from tests.test_bitflips import _cells

    needle = f'"checkpoint_id":"{cid}","session_id":"{sid}"'.encode()
    hits = 0
    for cell in _cells(backend, url, request):
        data = cell.get()
        if needle in data:
            cell.put(data.replace(needle, needle + b" ", 1))
            hits += 1
    assert hits == 1, hits


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from persistency.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "PERSISTENCY_URL": "",
                                                    "PERSISTENCY_ENCRYPTION_KEY": ""})


def test_one_damaged_info_line_is_named_and_never_stops_the_other_sessions(
    backend: str, storage_url: str, request: pytest.FixtureRequest
) -> None:
    import json
    import uuid

    with provider_from_url(storage_url) as p:
        good1 = make_chain(p, "good", 3)
        good2 = make_chain(p, "good", 2, run_seq=2, start=good1[0])
        bad = make_chain(p, "bad", 3)
        last = make_chain(p, "zlast", 2)
    _damage_info_line(backend, storage_url, request, "bad", bad[1].checkpoint_id)

    verify = _cli("verify", "--url", storage_url, "--json")
    assert verify.exit_code == 1, verify.output
    report = json.loads(verify.stdout)
    damaged = {d["checkpoint_id"] for d in report["damaged"]}
    assert bad[1].checkpoint_id in damaged and damaged <= {c.checkpoint_id for c in bad}, report
    assert {d["session_id"] for d in report["damaged"]} == {"bad"}
    assert all(d["error"] == "CorruptCheckpointError" for d in report["damaged"]), report

    dst = f"memory://copy-{uuid.uuid4().hex}"
    copy = _cli("copy", storage_url, dst)
    assert copy.exit_code == 1 and bad[1].checkpoint_id in copy.output, copy.output
    with provider_from_url(dst) as d:
        assert d.list_checkpoint_ids("good") == sorted(c.checkpoint_id for c in [*good1, *good2])
        assert d.list_checkpoint_ids("zlast") == [c.checkpoint_id for c in last]
        assert d.get_latest_checkpoint("zlast") == last[-1]

    prune = _cli("prune", "--url", storage_url, "--keep-last-runs", "1", "--yes", "--json")
    assert prune.exit_code == 1 and "bad" in prune.stderr, (prune.stdout, prune.stderr)
    with provider_from_url(storage_url) as p:
        kept = p.list_checkpoint_ids("good")
        assert kept == sorted([good1[0].checkpoint_id, *(c.checkpoint_id for c in good2)]), kept  # run 1 pruned
        assert p.get_latest_checkpoint("zlast") == last[-1]
        assert p.list_checkpoint_ids("bad") == [c.checkpoint_id for c in bad]  # left as it is
